/**
 * A waiting acquire that finds its lock free is granted in one transaction, with no read and no
 * refused join first (LockService.grantFirst, core/lock.ts clockFencedGrant); a lock held, queued,
 * shared or lately seen contended queues as before. Run through the real LockService and Handoff
 * on the in-memory storage, counting the calls each acquire makes.
 */
import { describe, expect, it } from 'vitest';
import type { Step } from '../../lambdas/core/items';
import { fenceFloor, LockAttr, liveHolder } from '../../lambdas/core/lock';
import { LOCK, OWNER, QueueHarness, type WaitOptions } from '../support/queue-harness';

/** The storage calls made from here on, by kind; `refused` counts transactions refused. */
function countCalls(h: QueueHarness) {
  const calls = { transact: 0, refused: 0, write: 0, read: 0, queue: 0, readMany: 0 };
  const memory = h.memory;
  const transact = memory.transact.bind(memory);
  memory.transact = async (steps: readonly Step[]) => {
    calls.transact++;
    const result = await transact(steps);
    if (!result.ok) calls.refused++;
    return result;
  };
  for (const kind of ['write', 'read', 'queue', 'readMany'] as const) {
    const original = (memory[kind] as (...args: unknown[]) => Promise<unknown>).bind(memory);
    (memory as unknown as Record<string, unknown>)[kind] = (...args: unknown[]) => {
      calls[kind]++;
      return original(...args);
    };
  }
  return calls;
}

const granted = async (h: QueueHarness, client: string, options: WaitOptions = {}) => {
  const result = await h.wait(client, options);
  if (result.kind !== 'done' || !result.outcome.acquired)
    throw new Error(`${client} expected a grant at once: ${JSON.stringify(result)}`);
  return result.outcome;
};

describe('a waiting acquire of a free lock', () => {
  it('is one transaction: no read, no refused join, and its record answers a retry', async () => {
    const h = new QueueHarness();
    const calls = countCalls(h);
    const first = await granted(h, 'a', { requestId: 'ra', ttl: 5_000 });
    expect(calls).toEqual({ transact: 1, refused: 0, write: 0, read: 0, queue: 0, readMany: 0 });
    expect(first.grant.fencingToken).toBe(fenceFloor(h.now) + 1);
    expect(liveHolder(h.item, h.now)?.fencingToken).toBe(first.grant.fencingToken);
    expect(h.record('a', 'ra')).toMatchObject({ state: 'granted', fence: first.grant.fencingToken });
    // The answer was lost: the same request, asked again, gets the same grant, never a second one.
    const again = await granted(h, 'a', { requestId: 'ra', ttl: 5_000 });
    expect(again.grant.fencingToken).toBe(first.grant.fencingToken);
    expect(h.waiters()).toEqual([]);
  });

  it('released and asked again a millisecond later: one transaction each time, tokens growing', async () => {
    const h = new QueueHarness();
    const calls = countCalls(h);
    let last = 0;
    for (let round = 0; round < 3; round++) {
      h.now += 1;
      const { grant } = await granted(h, 'a');
      expect(grant.fencingToken).toBeGreaterThan(last);
      last = grant.fencingToken;
      await h.release(grant);
    }
    // Three grants of one transaction, three releases of one write.
    expect(calls).toMatchObject({ transact: 3, refused: 0, write: 3, read: 0, queue: 0 });
  });

  it('whose counter is at the clock floor (a grant this very ms) is pinned to a read instead', async () => {
    const h = new QueueHarness();
    const { grant } = await granted(h, 'a');
    await h.release(grant);
    const calls = countCalls(h); // same millisecond: the unread grant is refused, nothing changes
    const next = await granted(h, 'b');
    expect(next.grant.fencingToken).toBe(grant.fencingToken + 1);
    expect(calls).toMatchObject({ transact: 2, refused: 1, read: 0, queue: 0 });
    expect(h.item?.[LockAttr.fence]).toBe(next.grant.fencingToken);
  });

  it('through a session that has ended is refused as such, and changes nothing', async () => {
    const h = new QueueHarness();
    const s = await h.services.sessions.create(OWNER, 'a', { ttlMs: 1_000, graceMs: 0, lockDelayMs: 0 });
    await h.services.sessions.close(s.id, OWNER, 'a');
    const before = h.item;
    await expect(h.wait('a', { session: s.id, requestId: 'ra' })).rejects.toMatchObject({
      code: expect.stringMatching(/^SESSION_/),
    });
    expect(h.item).toEqual(before);
    expect(h.record('a', 'ra')).toBeUndefined();
  });

  it('through a live session: one transaction that checks the session', async () => {
    const h = new QueueHarness();
    const s = await h.services.sessions.create(OWNER, 'a', { ttlMs: 10_000, graceMs: 0, lockDelayMs: 0 });
    const calls = countCalls(h);
    const { grant } = await granted(h, 'a', { session: s.id });
    expect(calls).toMatchObject({ transact: 1, refused: 0, read: 0 });
    expect(grant.held).toMatchObject({ kind: 'session', sessionId: s.id });
  });
});

describe('a waiting acquire of a lock free by the rules but not by its item', () => {
  it('whose holder’s lease lapsed: granted in one transaction, with a token above the lapsed one', async () => {
    const h = new QueueHarness();
    const lapsed = await h.hold('x', { ttl: 1_000 });
    h.now += 2_000;
    const calls = countCalls(h);
    const { grant } = await granted(h, 'a');
    expect(calls).toMatchObject({ transact: 1, refused: 0 });
    expect(grant.fencingToken).toBeGreaterThan(lapsed.fencingToken);
  });

  it('with a lapsed reader’s entry: the unread grant is refused, and one pinned to what it showed takes it', async () => {
    const h = new QueueHarness();
    const reader = await h.hold('x', { mode: 'shared', maxHolders: 2, ttl: 1_000 });
    h.now += 2_000;
    const calls = countCalls(h);
    // Not a join: that would stand beside the lapsed entry (counted as a holder in its condition)
    // and wait for the notifier to serve the queue.
    const { grant } = await granted(h, 'a');
    expect(calls).toMatchObject({ transact: 2, refused: 1, read: 0, queue: 0 });
    expect(grant.fencingToken).toBeGreaterThan(reader.fencingToken);
    expect(liveHolder(h.item, h.now)?.clientId).toBe('a');
    expect(h.item?.shared_count ?? 0).toBe(0);
  });

  it('under lock-delay (its session holder expired): refused, and the request waits for the delay', async () => {
    const h = new QueueHarness();
    const s = await h.services.sessions.create(OWNER, 'x', { ttlMs: 1_000, graceMs: 0, lockDelayMs: 100 });
    await h.hold('x', { session: s.id });
    h.now = s.expiresAt;
    expect(await h.services.sessions.expire(s.id)).toBe(1);
    h.now += 1;
    expect((await h.wait('a', { connection: 'ca' })).kind).toBe('queued');
    expect(liveHolder(h.item, h.now)).toBeUndefined();
  });

  it('asked again after its wait ended: answered from its record, never granted', async () => {
    const h = new QueueHarness();
    await h.hold('x', { ttl: 60_000 });
    h.now += 1;
    expect((await h.wait('a', { connection: 'ca', requestId: 'ra' })).kind).toBe('queued');
    await h.services.locks.cancel({ lock: LOCK, owner: OWNER, clientId: 'a', requestId: 'ra' });
    h.now += 120_000; // x's lease is long over: the lock is free
    const again = await h.wait('a', { requestId: 'ra' });
    expect(again.kind === 'done' && again.outcome.acquired).toBe(false);
    expect(liveHolder(h.item, h.now)).toBeUndefined();
  });
});

describe('a waiting acquire of a lock not free', () => {
  it('held: the unread grant is refused, it queues, and it is granted in order on release', async () => {
    const h = new QueueHarness();
    const holder = await h.hold('x', { ttl: 5_000 });
    h.now += 1;
    const calls = countCalls(h);
    expect((await h.wait('a', { connection: 'ca', requestId: 'ra' })).kind).toBe('queued');
    expect(calls).toMatchObject({ transact: 2, refused: 1 });
    await h.release(holder);
    expect(liveHolder(h.item, h.now)?.clientId).toBe('a');
    expect(h.framesTo('ca', 'granted')).toHaveLength(1);
  });

  it('freed but queued for: nobody barges in ahead of the queue', async () => {
    const h = new QueueHarness();
    await h.hold('x', { ttl: 1_000 });
    expect((await h.wait('b', { connection: 'cb' })).kind).toBe('queued');
    // The lease lapses; the timer that serves b has not run yet.
    h.now += 2_000;
    const other = h.instance(); // an instance that never saw the lock contended
    await h.services.connections.open('cc', OWNER, 'c');
    const result = await other.locks.acquire(h.command('c'), { waitMs: 5_000, connectionId: 'cc' });
    // c queued behind b, and the lapsed lock is b's when the lease's timer serves it.
    expect(result.kind).toBe('queued');
    expect(liveHolder(h.item, h.now)).toBeUndefined();
    expect(h.waiters().map((w) => w.clientId)).toEqual(['b', 'c']);
  });

  it('held by the caller, re-entrant: the refused grant is followed by the re-entry, not a join', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 5_000, reentrant: true });
    h.now += 1;
    const calls = countCalls(h);
    const again = await h.services.locks.acquire(
      { ...h.command('a', { ttl: 5_000 }), reentrant: true },
      {
        waitMs: 5_000,
      },
    );
    expect(again.kind === 'done' && again.outcome.acquired && again.outcome.grant).toMatchObject({
      fencingToken: first.fencingToken,
      reentry: 2,
    });
    // The refused transaction and the re-entry's write: no join refused in between.
    expect(calls).toMatchObject({ transact: 1, refused: 1, write: 1 });
  });

  it('lately seen contended by this instance: it queues first, with no refused grant', async () => {
    const h = new QueueHarness();
    await h.hold('x', { ttl: 5_000 });
    await h.wait('a', { connection: 'ca' }); // this instance now knows the lock contended
    h.now += 1;
    const calls = countCalls(h);
    expect((await h.wait('b', { connection: 'cb' })).kind).toBe('queued');
    expect(calls).toMatchObject({ transact: 1, refused: 0 });
  });

  it('in shared mode: no unread grant (a shared grant is pinned to what it read)', async () => {
    const h = new QueueHarness();
    await h.hold('x', { ttl: 5_000 });
    h.now += 1;
    const calls = countCalls(h);
    expect((await h.wait('a', { connection: 'ca', mode: 'shared', maxHolders: 2 })).kind).toBe('queued');
    expect(calls).toMatchObject({ transact: 1, refused: 0 });
  });
});
