/**
 * The queue's rules with both modes, through the real services on the in-memory storage: the
 * queue is served in its order (priority, then arrival to the millisecond), which makes it FIFO within a
 * priority and writer-preferring (a reader that arrives after a queued writer is behind it); a run
 * of readers at the head is granted together; an exclusive grant never stands beside another; a
 * semaphore never has more than N holders; tokens rise across modes; and a lock with waiters is
 * never left idle.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyUpdate, type Item } from '../../lambdas/core/expr';
import { type Grant, type LockMode, lease, liveGrants, throughSession } from '../../lambdas/core/lock';
import { MAX_RUN, onLockChange } from '../../lambdas/core/queue';
import { pinnedSharedGrants } from '../../lambdas/core/shared-lock';
import { OWNER, QueueHarness } from '../support/queue-harness';

type Op =
  | { op: 'join'; mode: LockMode; priority: number; gap: number }
  | { op: 'release'; pick: number }
  | { op: 'try'; mode: LockMode };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant('join' as const),
      mode: fc.constantFrom<LockMode>('shared', 'shared', 'exclusive'),
      priority: fc.constantFrom(0, 0, 0, 5),
      gap: fc.integer({ min: 0, max: 2 }),
    }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('release' as const), pick: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('try' as const),
      mode: fc.constantFrom<LockMode>('shared', 'exclusive'),
    }),
  },
);

/** A queue order without its tie-breaker: priority, then arrival to the millisecond. */
const arrivalKey = (order: string) => order.slice(0, order.lastIndexOf('#'));

async function history(ops: readonly Op[], maxHolders: number | undefined) {
  const h = new QueueHarness();
  const ttl = 3_600_000;
  let grant = await h.hold('first', { ttl });
  const issued = [grant.fencingToken];
  let clients = 0;
  /** Every grant the lock made, with who it went to and when (order of observation). */
  const holding = new Map<number, Grant>([[grant.fencingToken, grant]]);
  const check = (afterRelease = false) => {
    const live = liveGrants(h.item, h.now);
    if (live.some((g) => g.mode === 'exclusive')) expect(live.length).toBe(1);
    if (maxHolders !== undefined) expect(live.length).toBeLessThanOrEqual(maxHolders);
    // Grants made since the last look came from the queue: each was ahead of every waiter left.
    const waiting = h.waiters();
    for (const g of live) {
      if (holding.has(g.fencingToken)) continue;
      for (const earlier of issued) expect(g.fencingToken).toBeGreaterThan(earlier);
      issued.push(g.fencingToken);
      holding.set(g.fencingToken, g);
      const order = granted.get(g.clientId);
      expect(order).toBeDefined();
      // Ahead of every waiter left, to the clock's precision: waiters that arrived in the same
      // millisecond may be served in either order (a release that hands on from a queue it read
      // earlier serves the one it read first: core/known-queue.ts).
      for (const w of waiting) expect(arrivalKey(order as string) <= arrivalKey(w.order)).toBe(true);
    }
    // Never idle with waiters: every lease is long, so only a missed handoff could leave it so.
    if (waiting.length > 0) expect(live.length).toBeGreaterThan(0);
    // After a release (which serves the queue): a shared run stops only at an exclusive waiter, the
    // semaphore's room, or one transaction. (A reader that joins with a priority above a queued
    // writer waits for the next change: the notifier serves it then.)
    const head = waiting[0];
    if (afterRelease && head?.mode === 'shared' && live.every((g) => g.mode === 'shared'))
      expect(live.length >= (maxHolders ?? Number.POSITIVE_INFINITY) || live.length % MAX_RUN === 0).toBe(
        true,
      );
  };
  /** The queue order each waiting client got. */
  const granted = new Map<string, string>();
  for (const op of ops) {
    if (op.op === 'join') {
      h.now += op.gap;
      const client = `c${clients++}`;
      const out = await h.wait(client, {
        ttl,
        waitMs: ttl,
        priority: op.priority,
        mode: op.mode,
        maxHolders: op.mode === 'shared' ? maxHolders : undefined,
      });
      if (out.kind === 'queued') granted.set(client, out.wait.order);
      else if (out.outcome.acquired) {
        // Granted at once: only when nobody waited, so it is behind nobody.
        expect(h.waiters().length).toBe(0);
        granted.set(client, '');
      }
    } else if (op.op === 'try') {
      const client = `t${clients++}`;
      const before = h.waiters().length;
      const out = await h.services.locks.acquire({
        ...h.command(client, {
          ttl,
          mode: op.mode,
          maxHolders: op.mode === 'shared' ? maxHolders : undefined,
        }),
      });
      // Nobody barges past a queue, in either mode.
      if (before > 0) expect(out.kind === 'done' && out.outcome.acquired).toBe(false);
      if (out.kind === 'done' && out.outcome.acquired) granted.set(client, '');
    } else {
      const live = liveGrants(h.item, h.now);
      if (live.length === 0) continue;
      const g = live[op.pick % live.length] as Grant;
      await h.release({ ...g, owner: g.owner });
      holding.delete(g.fencingToken);
    }
    check(op.op === 'release');
  }
  // Drain: release whatever holds until nothing waits; everyone is served in the end.
  for (
    let round = 0;
    round < 500 && (h.waiters().length > 0 || liveGrants(h.item, h.now).length > 0);
    round++
  ) {
    const live = liveGrants(h.item, h.now);
    await h.release(live[0] as Grant);
    check(true);
  }
  expect(h.waiters()).toEqual([]);
  void grant;
  grant = undefined as never;
}

describe('both modes in one queue', () => {
  it('served in queue order (FIFO, writer preference), runs of readers together, never an exclusive beside another', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) => history(ops, undefined)),
      {
        numRuns: 150,
      },
    );
  }, 120_000);

  it('a semaphore of 2: the same, and never more than 2 holders', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) => history(ops, 2)),
      {
        numRuns: 150,
      },
    );
  }, 120_000);
});

describe('the notifier with shared holders', () => {
  const now = 1_800_000_000_000;
  /** A lock item with shared holders (lease ends, or sessions) and `queued` waiters. */
  const item = (ends: readonly (number | 'session')[], queued: number): Item => {
    const t = now - 1_000;
    const { write } = pinnedSharedGrants(
      ends.map((end, i) => ({
        name: 'L',
        owner: OWNER,
        clientId: `c${i}`,
        tenure: end === 'session' ? throughSession(`s${i}`) : lease(end - t),
      })),
      undefined,
      t,
      'w',
    );
    return { ...applyUpdate(undefined, write.update), queued };
  };

  it('looks at the first shared lease end while holders have waiters behind them', () => {
    const after = item([now + 500, now + 200], 1);
    const before = { ...after, queued: 0 };
    expect(onLockChange({ before, after, released: undefined }, now)).toEqual({
      serve: true, // a waiter joined: a reader that outranks a queued writer may share at once
      lookBy: undefined,
    });
    expect(onLockChange({ before: after, after: { ...after }, released: undefined }, now)).toEqual({
      serve: false,
      lookBy: now + 200,
    });
  });

  it('serves at once when holders lapsed (a slot, or the lock, may be free); nothing to time for sessions alone', () => {
    const lapsed = item([now - 1, now + 100], 1);
    expect(onLockChange({ before: lapsed, after: lapsed, released: undefined }, now).serve).toBe(true);
    const sessions = item(['session', 'session'], 2);
    expect(onLockChange({ before: sessions, after: sessions, released: undefined }, now)).toEqual({
      serve: false,
      lookBy: undefined,
    });
  });
});
