/** keepLease: a renewal still in flight ends (with its retries) once the lease is lost or no longer kept. */
import { describe, expect, it, vi } from 'vitest';
import { LeaseLostError } from '../../sdk/errors';
import { Lease } from '../../sdk/lease';
import { keepLease } from '../../sdk/lease-keeper';
import { releaseStateOf, trackRelease } from '../../sdk/release-state';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A promise settled from outside. */
function deferred() {
  let resolve!: (value: string) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<string>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const lease = (ttlMs: number) =>
  new Lease(
    {
      lock: 'jobs/a',
      client_id: 'c',
      fencing_token: 1,
      expires_at: new Date(Date.now() + ttlMs).toISOString(),
      remaining_ms: ttlMs,
      ttl_ms: ttlMs,
    },
    performance.now(),
  );

/** A renewer whose calls never answer: each ends only when its signal aborts. */
function hanging() {
  const signals: AbortSignal[] = [];
  return {
    signals,
    renew: (_lease: Lease, options?: { signal?: AbortSignal }) =>
      new Promise<Lease>((_resolve, reject) => {
        const signal = options?.signal;
        if (!signal) return reject(new Error('no signal'));
        signals.push(signal);
        signal.addEventListener('abort', () => reject(signal.reason));
      }),
  };
}

describe('keepLease', () => {
  it('a renewal in flight when the lease is lost (unconfirmed by its deadline) is ended', async () => {
    const renewer = hanging();
    const kept = keepLease(renewer, lease(300), 50);
    await vi.waitFor(() => expect(renewer.signals).toHaveLength(1)); // a third of the ttl in
    expect(renewer.signals[0]?.aborted).toBe(false);
    await new Promise((resolve) => kept.signal.addEventListener('abort', resolve));
    expect(kept.signal.reason).toBeInstanceOf(LeaseLostError);
    expect(kept.signal.reason).toMatchObject({ lock: 'jobs/a', code: 'LEASE_LOST' });
    expect(renewer.signals[0]?.aborted).toBe(true);
  });

  it('a lease its holder released is not lost: no renewal, no abort; while a release is on its way, its answer decides', async () => {
    const refusing = { renew: vi.fn(async () => Promise.reject(new LeaseLostError('not the holder'))) };
    const released = lease(300);
    await trackRelease(
      released,
      async () => 'released',
      () => true,
    );
    const kept = keepLease(refusing, released, 50);
    await sleep(500); // past renewals and the deadline
    expect(refusing.renew).not.toHaveBeenCalled();
    expect(kept.signal.aborted).toBe(false);

    // Asked: nothing is decided while its answer is awaited; a release that failed leaves the
    // lease to its keeper, which finds it lost.
    const asked = lease(300);
    const answer = deferred();
    const releasing = trackRelease(
      asked,
      () => answer.promise,
      () => true,
    ).catch(() => 'failed');
    const watched = keepLease(refusing, asked, 50);
    await sleep(400);
    expect(refusing.renew).not.toHaveBeenCalled();
    expect(watched.signal.aborted).toBe(false);
    answer.reject(new Error('unavailable'));
    expect(await releasing).toBe('failed');
    await new Promise((resolve) => watched.signal.addEventListener('abort', resolve));
    expect(watched.signal.reason).toBeInstanceOf(LeaseLostError);
  });

  it('a renewal refused while the release is on its way: lost if that release fails, nothing if it applies', async () => {
    for (const applies of [false, true]) {
      const refusing = { renew: vi.fn(async () => Promise.reject(new LeaseLostError('force-released'))) };
      const held = lease(3_000);
      const answer = deferred();
      let releasing: Promise<unknown> = Promise.resolve();
      // The holder's own release is asked just as the keeper's renewal is refused.
      const renewer = {
        renew: async () => {
          releasing = trackRelease(
            held,
            () => answer.promise,
            () => true,
          ).catch(() => 'failed');
          return refusing.renew();
        },
      };
      const kept = keepLease(renewer, held, 50);
      await vi.waitFor(() => expect(refusing.renew).toHaveBeenCalled(), { timeout: 3_000 });
      await sleep(200);
      expect(kept.signal.aborted).toBe(false);
      if (applies) answer.resolve('released');
      else answer.reject(new Error('not the holder'));
      await releasing;
      await sleep(200);
      expect(kept.signal.aborted, `release applied: ${applies}`).toBe(!applies);
      kept.stop();
    }
  });

  it('a release that failed after one applied leaves it released (never back to held)', async () => {
    const l = lease(300);
    await trackRelease(
      l,
      async () => 'released',
      () => true,
    );
    await expect(
      trackRelease(
        l,
        async () => Promise.reject(new Error('not the holder')),
        () => true,
      ),
    ).rejects.toThrow();
    expect(releaseStateOf(l)).toBe('done');
    // A frozen lease object can be released (its state is kept beside it).
    const frozen = Object.freeze(lease(300));
    await trackRelease(
      frozen,
      async () => 'released',
      () => true,
    );
    expect(releaseStateOf(frozen)).toBe('done');
  });

  it('and one in flight when the holder stops keeping it', async () => {
    const renewer = hanging();
    const kept = keepLease(renewer, lease(3_000), 50);
    await vi.waitFor(() => expect(renewer.signals).toHaveLength(1), { timeout: 3_000 });
    kept.stop();
    expect(renewer.signals[0]?.aborted).toBe(true);
    expect(kept.signal.aborted).toBe(false); // stopping is not losing
  });
});
