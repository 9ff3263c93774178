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
import { type Grant, type LockMode, liveHolder } from '../../lambdas/core/lock';
import type { StreamRecord } from '../../lambdas/service/stream-changes';
import { LOCK, OWNER, QueueHarness } from '../support/queue-harness';

const SEMAPHORE = { mode: 'shared', maxHolders: 3 } as const;

/**
 * Runs `interfere` before every transaction that would grant the lock at once (a lock write with
 * no waiter in it): the lock always changes between a waiter's read and its grant. Answers how
 * many such races there were.
 */
function raceEveryGrant(h: QueueHarness, interfere: () => Promise<unknown>): () => number {
  let races = 0;
  interceptTransactions(h, async (steps) => {
    if (!grantsAtOnce(steps)) return;
    races++;
    await interfere();
  });
  return () => races;
}

/** A transaction that grants the lock at once: a lock write with no waiter in it. */
const grantsAtOnce = (steps: readonly Step[]) =>
  steps[0]?.ref.kind === 'lock' && !steps.some((s) => s.ref.kind === 'waiter');

/** Runs `before` ahead of every transaction (not of those it runs itself). */
function interceptTransactions(h: QueueHarness, before: (steps: readonly Step[]) => Promise<void>) {
  const transact = h.memory.transact.bind(h.memory);
  let inside = false;
  h.memory.transact = async (steps: readonly Step[]) => {
    if (!inside) {
      inside = true;
      try {
        await before(steps);
      } finally {
        inside = false;
      }
    }
    return transact(steps);
  };
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

  it('behind a waiter that queued during the race: joins behind it, and is served after it', async () => {
    const h = new QueueHarness();
    const one = { ...SEMAPHORE, maxHolders: 1 };
    let x: Grant | undefined;
    const races = raceEveryGrant(h, async () => {
      if (x) return;
      x = await h.hold('x', { ...one, ttl: 5_000 });
      h.now += 1;
      expect((await h.wait('y', { ...one, connection: 'cy' })).kind).toBe('queued');
      h.now += 1;
    });
    expect((await h.wait('c', { ...one, connection: 'cc' })).kind).toBe('queued');
    expect(races()).toBe(1);
    expect(h.waiters().map((w) => w.clientId)).toEqual(['y', 'c']);
    await h.release(x as Grant);
    expect(liveEntries(h.item, h.now).map((e) => e.clientId)).toEqual(['y']);
    expect(h.framesTo('cc', 'granted')).toHaveLength(0);
  });

  it('when queuing all the same is refused because a session holder came or went: queues the plain way, never answered at once', async () => {
    const h = new QueueHarness();
    const s = await h.services.sessions.create(OWNER, 's', { ttlMs: 60_000, graceMs: 0, lockDelayMs: 0 });
    let step = 0;
    let held: Grant | undefined;
    // The grant loses to a holder through a session; before the join lands, that holder leaves and
    // one with a lease takes the lock: the join's TTL condition (some session held) no longer holds.
    interceptTransactions(h, async (steps) => {
      if (step === 0 && grantsAtOnce(steps)) {
        step = 1;
        held = await h.hold('s', { session: s.id });
      } else if (step === 1 && steps.some((x) => x.ref.kind === 'waiter')) {
        step = 2;
        await h.release(held as Grant);
        await h.hold('x', { ttl: 5_000 });
      }
    });
    const c = await h.wait('c', { connection: 'cc', requestId: 'rc' });
    expect(step).toBe(2);
    expect(c.kind).toBe('queued');
    expect(h.waiters().map((w) => w.clientId)).toEqual(['c']);
    expect(h.record('c', 'rc')?.state).toBe('queued');
  });

  it('when a lease takes the lock before the join lands: joins the plain way, leaving the TTL the lease set', async () => {
    const h = new QueueHarness();
    let x: Grant | undefined;
    let ttlOfLease: unknown;
    raceEveryGrant(h, async () => {
      if (x) return;
      x = await h.hold('x', { ttl: 5_000 });
      ttlOfLease = h.item?.gc_at;
    });
    // Queue first, as a lock seen contended is: its join is refused (free), then its grant races x.
    const asked = { connection: 'cc', requestId: 'rc', grantFirst: false };
    expect((await h.wait('c', asked)).kind).toBe('queued');
    expect(liveHolder(h.item, h.now)?.clientId).toBe('x');
    // A TTL counted from now would fall below the lease's end (what the simulation checks).
    expect(h.item?.gc_at).toBe(ttlOfLease);
    expect(h.waiters().map((w) => w.clientId)).toEqual(['c']);
  });

  it('when its own serve fails: the stream notifier serves it, though the lock was released in the same batch', async () => {
    const h = new QueueHarness();
    const { records } = await joinAfterTheWinnerLeft(h, 'exclusive');
    // One batch: x's grant, x's release, c's join.
    await h.services.notifier.handle(records.splice(0));
    expect(liveHolder(h.item, h.now)?.clientId).toBe('c');
    expect(h.framesTo('cc', 'granted')).toHaveLength(1);
  });

  it('when its own serve fails after the last reader left: the notifier serves it', async () => {
    const h = new QueueHarness();
    const { records, upToGrant } = await joinAfterTheWinnerLeft(h, 'shared');
    // x's grant in one batch; x leaving and c's join in the next.
    await h.services.notifier.handle(records.splice(0, upToGrant));
    await h.services.notifier.handle(records.splice(0));
    expect(liveHolder(h.item, h.now)?.clientId).toBe('c');
    expect(h.framesTo('cc', 'granted')).toHaveLength(1);
  });
});

/**
 * c waits for the free lock and loses it to x (taking it in `mode`); x leaves, seeing nobody
 * queued (so it serves nobody), before c's join lands; c's own serve of the queue fails. Answers
 * the stream records written, and how many of them came up to x's grant.
 */
async function joinAfterTheWinnerLeft(h: QueueHarness, mode: LockMode) {
  const records: StreamRecord[] = [];
  h.memory.onRecord = (record) => records.push(record as unknown as StreamRecord);
  let x: Grant | undefined;
  let upToGrant = 0;
  let released = false;
  interceptTransactions(h, async (steps) => {
    if (!x && grantsAtOnce(steps)) {
      x = await h.hold('x', { mode, ttl: 30_000 });
      upToGrant = records.length;
    } else if (x && !released && steps.some((s) => s.ref.kind === 'waiter')) {
      released = true;
      await h.release(x);
    }
  });
  const serve = h.services.handoff.serve.bind(h.services.handoff);
  h.services.handoff.serve = async () => {
    throw new Error('throttled');
  };
  try {
    // Queue first, as a lock seen contended is: its join is refused (free), then its grant races x.
    const asked = { connection: 'cc', requestId: 'rc', grantFirst: false };
    expect((await h.wait('c', asked)).kind).toBe('queued');
  } finally {
    h.services.handoff.serve = serve;
  }
  expect(released).toBe(true);
  expect(liveHolder(h.item, h.now)).toBeUndefined();
  expect(liveEntries(h.item, h.now)).toEqual([]);
  expect(h.waiters().map((w) => w.clientId)).toEqual(['c']);
  return { records, upToGrant };
}
