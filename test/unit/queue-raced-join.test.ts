/**
 * A waiting acquire that finds the lock free, but loses the race to take it at once (the lock
 * changed between the read and the grant, as a busy semaphore does every few ms), queues instead
 * of racing again, and the queue is served in order. Before, it raced four times and could answer
 * UNAVAILABLE ("the lock changed under every attempt to queue") while the lock was free, and its
 * caller backed off with a slot empty. Run through the real LockService and Handoff on the
 * in-memory storage.
 */
import { describe, expect, it } from 'vitest';
import { liveEntries } from '../../lambdas/core/holders';
import type { Step } from '../../lambdas/core/items';
import { type Grant, liveHolder } from '../../lambdas/core/lock';
import { LOCK, QueueHarness } from '../support/queue-harness';

const SEMAPHORE = { mode: 'shared', maxHolders: 3 } as const;

/**
 * Runs `interfere` before every transaction that would grant the lock at once (a lock write with
 * no waiter in it): the lock always changes between a waiter's read and its grant. Answers how
 * many such races there were.
 */
function raceEveryGrant(h: QueueHarness, interfere: () => Promise<unknown>): () => number {
  const transact = h.memory.transact.bind(h.memory);
  let races = 0;
  h.memory.transact = async (steps: readonly Step[]) => {
    if (steps[0]?.ref.kind === 'lock' && !steps.some((s) => s.ref.kind === 'waiter')) {
      races++;
      await interfere();
    }
    return transact(steps);
  };
  return () => races;
}

const renewOf = (h: QueueHarness, g: Grant) => () =>
  h.services.locks.renew({
    name: LOCK,
    owner: g.owner,
    clientId: g.clientId,
    fencingToken: g.fencingToken,
    ttlMs: 5_000,
    mode: g.mode,
  });

describe('a waiting acquire that loses the race for a free lock', () => {
  it('on a semaphore whose holders renew meanwhile: queues after one lost race, and the queue grants it the free slot', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a', { ...SEMAPHORE, ttl: 5_000 });
    await h.hold('b', { ...SEMAPHORE, ttl: 5_000 });
    const races = raceEveryGrant(h, renewOf(h, a));
    h.now += 1;
    const c = await h.wait('c', { ...SEMAPHORE, connection: 'cc', requestId: 'rc' });
    expect(c.kind).toBe('queued');
    expect(races()).toBe(1);
    expect(h.waiters()).toHaveLength(0);
    expect(
      liveEntries(h.item, h.now)
        .map((e) => e.clientId)
        .sort(),
    ).toEqual(['a', 'b', 'c']);
    expect(h.framesTo('cc', 'granted')).toHaveLength(1);
    expect(h.record('c', 'rc')?.state).toBe('granted');
  });

  it('over HTTP: its poll finds the grant the queue made', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a', { ...SEMAPHORE, ttl: 5_000 });
    raceEveryGrant(h, renewOf(h, a));
    h.now += 1;
    const c = await h.services.locks.acquireOverHttp(h.command('c', { ...SEMAPHORE, requestId: 'rc' }), {
      waitMs: 10_000,
    });
    expect(c).toMatchObject({ kind: 'done', outcome: { acquired: true, grant: { clientId: 'c' } } });
    expect(h.waiters()).toHaveLength(0);
  });

  it('on an exclusive lock taken and released meanwhile: queues, and is granted the free lock in order', async () => {
    const h = new QueueHarness();
    const races = raceEveryGrant(h, async () => {
      const x = await h.hold('x');
      await h.release(x);
    });
    const c = await h.wait('c', { connection: 'cc', requestId: 'rc' });
    expect(c.kind).toBe('queued');
    expect(races()).toBeGreaterThanOrEqual(1);
    expect(liveHolder(h.item, h.now)?.clientId).toBe('c');
    expect(h.framesTo('cc', 'granted')).toHaveLength(1);
  });

  it('behind a waiter already queued: joins behind it, not ahead', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a', { ...SEMAPHORE, maxHolders: 1, ttl: 5_000 });
    h.now += 1;
    expect((await h.wait('b', { ...SEMAPHORE, maxHolders: 1, connection: 'cb' })).kind).toBe('queued');
    h.now += 1;
    expect((await h.wait('c', { ...SEMAPHORE, maxHolders: 1, connection: 'cc' })).kind).toBe('queued');
    await h.services.locks.release({ ...a, name: LOCK, mode: 'shared' });
    expect(liveEntries(h.item, h.now).map((e) => e.clientId)).toEqual(['b']);
    expect(h.framesTo('cc', 'granted')).toHaveLength(0);
  });
});
