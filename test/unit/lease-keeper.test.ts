/** keepLease: a renewal still in flight ends (with its retries) once the lease is lost or no longer kept. */
import { describe, expect, it, vi } from 'vitest';
import { LeaseLostError } from '../../sdk/errors';
import { Lease } from '../../sdk/lease';
import { keepLease } from '../../sdk/lease-keeper';

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
    expect(renewer.signals[0]?.aborted).toBe(true);
  });

  it('a lease its holder released is not lost: no renewal, no abort; while a release is on its way, its answer decides', async () => {
    const refusing = { renew: vi.fn(async () => Promise.reject(new LeaseLostError('not the holder'))) };
    const released = lease(300);
    released.releaseState = 'done';
    const kept = keepLease(refusing, released, 50);
    await new Promise((resolve) => setTimeout(resolve, 500)); // past renewals and the deadline
    expect(refusing.renew).not.toHaveBeenCalled();
    expect(kept.signal.aborted).toBe(false);

    // Asked: nothing is decided while its answer is awaited; a release that failed leaves the
    // lease to its keeper, which finds it lost.
    const asked = lease(300);
    asked.releaseState = 'asked';
    const watched = keepLease(refusing, asked, 50);
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(refusing.renew).not.toHaveBeenCalled();
    expect(watched.signal.aborted).toBe(false);
    asked.releaseState = 'none';
    await new Promise((resolve) => watched.signal.addEventListener('abort', resolve));
    expect(watched.signal.reason).toBeInstanceOf(LeaseLostError);
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
