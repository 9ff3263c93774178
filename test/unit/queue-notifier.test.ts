/**
 * What the stream notifier does about a lock's change (core/queue.ts
 * onLockChange): have a timer look at the lock when a lease with waiters
 * behind it ends, serve a free lock with waiters that nobody else will
 * serve, and leave a release to its releaser (with a backup timer). The
 * images are the lock item as the real services leave it at each point.
 * Whether the lock's timer covers that look already is core/lock-timer.ts
 * (test/unit/lock-timer.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { LockAttr as A, type Grant, leaseEnd, liveHolder } from '../../lambdas/core/lock';
import { onLockChange, RELEASER_BACKUP_MS } from '../../lambdas/core/queue';
import type { StreamRecord } from '../../lambdas/service/stream-changes';
import { batch, LOCK, OWNER, QueueHarness, START } from '../support/queue-harness';

const nothing = { serve: false, lookBy: undefined };
const end = (g: Grant) => leaseEnd(g) as number;

/** a holds (and nobody waits) */
async function scene(ttl = 1_000) {
  const h = new QueueHarness();
  const a = await h.hold('a', { ttl });
  const join = async (client: string) => {
    h.now += 1;
    expect((await h.wait(client, { waitMs: 600_000, ttl: 1_000 })).kind).toBe('queued');
  };
  return { h, a, join };
}

describe('onLockChange', () => {
  it('looks at the lease end of a grant with waiters, as renewals move it; leaves a release to its releaser', async () => {
    const { h, a, join } = await scene();
    const bare = h.item;
    expect(onLockChange(batch(undefined, bare), h.now)).toEqual(nothing); // nobody waits
    await join('b');
    const waited = h.item;
    const atEndOfA = { serve: false, lookBy: end(a) };
    expect(onLockChange(batch(bare, waited), h.now)).toEqual(atEndOfA);
    await join('c');
    expect(onLockChange(batch(waited, h.item), h.now)).toEqual(atEndOfA);
    const renew = async (ttlMs: number) =>
      (
        await h.services.locks.renew({
          name: LOCK,
          owner: OWNER,
          clientId: 'a',
          fencingToken: a.fencingToken,
          ttlMs,
        })
      ).grant;
    const shortened = await renew(500);
    expect(onLockChange(batch(waited, h.item), h.now)).toEqual({ serve: false, lookBy: end(shortened) });
    const renewed = await renew(1_000);
    const atEndOfRenewed = { serve: false, lookBy: end(renewed) };
    expect(onLockChange(batch(waited, h.item), h.now)).toEqual(atEndOfRenewed);
    await h.hold('a', { reentrant: true });
    expect(onLockChange(batch(waited, h.item), h.now)).toEqual(atEndOfRenewed);
    await h.release(renewed);
    expect(onLockChange(batch(waited, h.item), h.now)).toEqual(atEndOfRenewed); // still held (re-entered)
    const beforeRelease = h.item;
    // The last release serves b inline; the batch holds the release and b's grant.
    await h.release(renewed);
    const b = h.item;
    expect(b?.[A.holder]).toBe('b');
    expect(onLockChange(batch(beforeRelease, b, beforeRelease), h.now)).toEqual({
      serve: false,
      lookBy: b?.[A.expiresAt],
    });
    // The same record read after b's lease lapsed (a slow notifier): serve instead.
    expect(onLockChange(batch(beforeRelease, b), Number(b?.[A.expiresAt]))).toEqual({
      serve: true,
      lookBy: undefined,
    });
  });

  it('leaves serving to the writer of a batch’s last release, backing it up with a look at the lease end', async () => {
    const { h, a, join } = await scene();
    await join('b');
    await join('c');
    const waitedOn = h.item; // a's timer was armed for this
    // A release that serves nobody inline (its writer died before serving): free, two waiting.
    const released = await h.memory.write(
      { kind: 'lock', lock: LOCK },
      {
        condition: { kind: 'exists', attr: A.holder },
        update: [
          { kind: 'remove', attr: A.holder },
          { kind: 'remove', attr: A.expiresAt },
        ],
        gcFrom: h.now,
      },
    );
    expect(released.ok).toBe(true);
    // The backup: a look at a's lease end (the timer armed for it when b joined covers that).
    expect(onLockChange(batch(waitedOn, h.item, waitedOn), h.now)).toEqual({ serve: false, lookBy: end(a) });
    expect(onLockChange(batch(undefined, h.item, waitedOn), h.now)).toEqual({ serve: false, lookBy: end(a) });
    // A free lock with waiters that nobody took a holder off (the serve that left it gave up): serve it.
    expect(onLockChange(batch(undefined, h.item), h.now)).toEqual({ serve: true, lookBy: undefined });
    // The batch began with the same state (free, same token, waiters): that state already had its server.
    const free = h.item;
    await join('d');
    expect(onLockChange(batch(free, h.item), h.now)).toEqual(nothing);
  });

  it('serves when the first waiter joins a lock whose lease lapsed before the notifier saw it', async () => {
    const { h, a, join } = await scene(10);
    const held = h.item; // nobody waiting: no timer was armed for a's lease
    await join('b'); // joins while a's lease still runs
    expect(onLockChange(batch(held, h.item), end(a) + 1)).toEqual({ serve: true, lookBy: undefined });
    expect(onLockChange(batch(held, h.item), h.now)).toEqual({ serve: false, lookBy: end(a) });
  });

  it('backs up the release of a long lease with a timer within RELEASER_BACKUP_MS, not at its lease end', async () => {
    const { h, join } = await scene(3_600_000);
    await join('b');
    const waitedOn = h.item; // a's lease ends an hour away
    const releasedItem = { ...waitedOn, [A.holder]: undefined, [A.expiresAt]: undefined };
    expect(onLockChange(batch(waitedOn, releasedItem, waitedOn), h.now)).toEqual({
      serve: false,
      lookBy: h.now + RELEASER_BACKUP_MS,
    });
  });

  it('arms nothing for a lock held through a session: the session’s end serves its queue', async () => {
    const h = new QueueHarness();
    const s = await h.services.sessions.create(OWNER, 'a', { ttlMs: 10_000, graceMs: 0, lockDelayMs: 0 });
    await h.hold('a', { session: s.id });
    const bare = h.item;
    h.now += 1;
    expect((await h.wait('b', { waitMs: 600_000 })).kind).toBe('queued');
    expect(onLockChange(batch(bare, h.item), h.now)).toEqual(nothing);
  });

  it('treats a missing, zero or negative count as no waiters', async () => {
    const { h } = await scene();
    const held = h.item ?? {};
    for (const queued of [undefined, 0, -1]) {
      const current = { ...held, [A.queued]: queued };
      expect(onLockChange(batch(undefined, current), START)).toEqual(nothing);
      expect(onLockChange(batch(undefined, { ...current, [A.holder]: undefined }), START)).toEqual(nothing);
    }
    expect(onLockChange(batch(held, undefined), START)).toEqual(nothing);
  });
});

describe('the notifier, over one batch of records', () => {
  it('serves a waiter who joined after the queue emptied within the batch (a lapsed reader kept the lock "held")', async () => {
    // A simulation counterexample (seed 13346): x reads (shared, short lease); b waits and leaves;
    // x's lease lapses; c's join stands (the lapsed reader still counts as a holder in the join's
    // condition). One batch holds b's leaving (queued 1 -> 0) and c's joining (0 -> 1): judged from
    // its first image alone, the queue looked already waited on, with nobody to serve c.
    const h = new QueueHarness();
    const records: StreamRecord[] = [];
    const x = await h.hold('x', { mode: 'shared', maxHolders: 2, ttl: 1_000 });
    h.now += 1;
    expect((await h.wait('b', { connection: 'cb', requestId: 'rb' })).kind).toBe('queued');
    h.memory.onRecord = (record) => records.push(record as unknown as StreamRecord);
    await h.services.locks.cancel({ lock: LOCK, owner: OWNER, clientId: 'b', requestId: 'rb' });
    h.now = (leaseEnd(x) as number) + 100;
    const joined = await h.wait('c', { connection: 'cc', requestId: 'rc', grantFirst: false });
    expect(joined.kind).toBe('queued');
    expect(liveHolder(h.item, h.now)).toBeUndefined();
    await h.services.notifier.handle(records.splice(0));
    expect(liveHolder(h.item, h.now)?.clientId).toBe('c');
    expect(h.framesTo('cc', 'granted')).toHaveLength(1);
  });
});
