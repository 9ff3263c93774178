/** The poll schedule of HTTP waits (core/http-poll.ts): pure rules, unit and property tests. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Item } from '../../lambdas/core/expr';
import {
  nextPoll,
  POLL_FAST_MS,
  POLL_LEASE_END_SLACK_MS,
  type PollMemory,
  type PollSight,
  pollCap,
  SELF_SERVE_AFTER_LAPSE_BELLED_MS,
  SELF_SERVE_AFTER_MS,
  SELF_SERVE_AFTER_RELEASE_MS,
  sightOf,
  track,
} from '../../lambdas/core/http-poll';
import { LockAttr as A } from '../../lambdas/core/lock';

const NOW = 1_800_000_000_000;

const sight = (over: Partial<PollSight> = {}): PollSight => ({
  fence: 7,
  holderUntil: NOW + 10_000,
  lapsedAt: undefined,
  blockedUntil: undefined,
  position: 1,
  present: true,
  ...over,
});

const heldLock = (expiresAt: number, fence = 7): Item => ({
  [A.holder]: 'h',
  [A.owner]: 'o',
  [A.fence]: fence,
  [A.expiresAt]: expiresAt,
  [A.ttlMs]: 3_000,
  [A.queued]: 2,
});

describe('what a poll sees', () => {
  const waiters = [{ order: 'a' }, { order: 'b' }];

  it('its place in the queue, and the lease end of a live grant', () => {
    const seen = sightOf(heldLock(NOW + 500), waiters, true, 'b', NOW);
    expect(seen).toMatchObject({ fence: 7, holderUntil: NOW + 500, position: 2, present: true });
    expect(seen.lapsedAt).toBeUndefined();
  });

  it('a lapsed lease as free since its end', () => {
    const seen = sightOf(heldLock(NOW - 40), waiters, true, 'a', NOW);
    expect(seen).toMatchObject({ holderUntil: undefined, lapsedAt: NOW - 40, position: 1 });
  });

  it('gone when the whole queue was read without it; unknown when there is more to read', () => {
    expect(sightOf(heldLock(NOW + 500), waiters, true, 'z', NOW).present).toBe(false);
    expect(sightOf(heldLock(NOW + 500), waiters, false, 'z', NOW).present).toBeUndefined();
  });

  it('a grant held through a session has no lease end', () => {
    const item = { ...heldLock(NOW - 1), [A.session]: 's1' };
    expect(sightOf(item, waiters, true, 'a', NOW).holderUntil).toBeNull();
  });
});

describe('the next poll', () => {
  it('is fast right after the lock moved, for the head', () => {
    const memory = track(undefined, sight(), NOW);
    expect(nextPoll(sight(), memory, NOW, NOW + 20_000)).toEqual({ delayMs: POLL_FAST_MS, serve: false });
  });

  it('is not fast for a waiter with a doorbell (its grant rings it), but still wakes the head at the lease end', () => {
    const memory = track(undefined, sight(), NOW);
    expect(nextPoll(sight(), memory, NOW, NOW + 20_000, true).delayMs).toBe(pollCap(1));
    expect(nextPoll(sight({ position: 3 }), memory, NOW, NOW + 20_000, true).delayMs).toBe(pollCap(3));
    const ending = nextPoll(sight({ holderUntil: NOW + 30 }), memory, NOW, NOW + 20_000, true);
    expect(ending.delayMs).toBe(30 + POLL_LEASE_END_SLACK_MS);
  });

  it('backs off while the same long lease is held, far waiters further', () => {
    const memory: PollMemory = { fence: 7, free: false, since: NOW - 5_000 };
    expect(nextPoll(sight(), memory, NOW, NOW + 20_000).delayMs).toBe(pollCap(1));
    expect(nextPoll(sight({ position: 6 }), memory, NOW, NOW + 20_000).delayMs).toBe(pollCap(6));
    expect(pollCap(6)).toBeGreaterThan(pollCap(1));
  });

  it('wakes the head just after the lease end', () => {
    const memory: PollMemory = { fence: 7, free: false, since: NOW - 5_000 };
    const step = nextPoll(sight({ holderUntil: NOW + 30 }), memory, NOW, NOW + 20_000);
    expect(step.delayMs).toBe(30 + POLL_LEASE_END_SLACK_MS);
  });

  it('has the head serve a free lock nobody served, once per grant', () => {
    const lapsed = sight({ holderUntil: undefined, lapsedAt: NOW - SELF_SERVE_AFTER_MS });
    const memory = track({ fence: 7, free: false, since: NOW - 3_000 }, lapsed, NOW);
    expect(memory.since).toBe(NOW - SELF_SERVE_AFTER_MS);
    expect(nextPoll(lapsed, memory, NOW, NOW + 20_000).serve).toBe(true);
    const served = { ...memory, servedFence: 7 };
    expect(nextPoll(lapsed, served, NOW, NOW + 20_000).serve).toBe(false);
    // Others behind it leave the serving to the head.
    expect(nextPoll({ ...lapsed, position: 2 }, memory, NOW, NOW + 20_000).serve).toBe(false);
  });

  it('with a doorbell, leaves a lapse to the expiry timer (which rings it) for a while, then serves it', () => {
    const lapsedAt = NOW - 8; // its poll saw the lapse 8 ms after the lease end
    const lapsed = sight({ holderUntil: undefined, lapsedAt });
    const memory = track({ fence: 7, free: false, since: NOW - 3_000 }, lapsed, NOW);
    const step = nextPoll(lapsed, memory, NOW, NOW + 20_000, true);
    // Asleep until the timer's grace ends (a ring cuts that short), not serving yet.
    expect(step).toEqual({ delayMs: SELF_SERVE_AFTER_LAPSE_BELLED_MS - 8, serve: false });
    const later = lapsedAt + SELF_SERVE_AFTER_LAPSE_BELLED_MS;
    expect(nextPoll(lapsed, memory, later - 1, NOW + 20_000, true).serve).toBe(false);
    expect(nextPoll(lapsed, memory, later, NOW + 20_000, true).serve).toBe(true);
  });

  it('leaves a released lock to its releaser for a while before serving it', () => {
    const released = sight({ holderUntil: undefined, lapsedAt: undefined });
    const memory = track({ fence: 7, free: false, since: NOW - 3_000 }, released, NOW);
    expect(memory.since).toBe(NOW);
    expect(nextPoll(released, memory, NOW + 25, NOW + 20_000).serve).toBe(false);
    expect(nextPoll(released, memory, NOW + SELF_SERVE_AFTER_RELEASE_MS - 1, NOW + 20_000).serve).toBe(false);
    expect(nextPoll(released, memory, NOW + SELF_SERVE_AFTER_RELEASE_MS, NOW + 20_000).serve).toBe(true);
  });

  it('does not serve a lock under lock-delay, and wakes at its end', () => {
    const blocked = sight({ holderUntil: undefined, blockedUntil: NOW + 100 });
    const memory: PollMemory = { fence: 7, free: true, since: NOW - 5_000 };
    const step = nextPoll(blocked, memory, NOW, NOW + 20_000);
    expect(step).toEqual({ delayMs: 100 + POLL_LEASE_END_SLACK_MS, serve: false });
  });

  it('remembers when the lock moved, not when it was looked at', () => {
    const m1 = track(undefined, sight(), NOW);
    expect(track(m1, sight(), NOW + 900)).toBe(m1);
    expect(track(m1, sight({ fence: 8 }), NOW + 900).since).toBe(NOW + 900);
  });
});

describe('properties of the schedule', () => {
  const sights = fc.record({
    fence: fc.option(fc.integer({ min: 1, max: 10 }), { nil: undefined }),
    holderUntil: fc.oneof(
      fc.constant(undefined),
      fc.constant(null),
      fc.integer({ min: 1, max: 60_000 }).map((d) => NOW + d),
    ),
    lapsedAt: fc.option(
      fc.integer({ min: 0, max: 60_000 }).map((d) => NOW - d),
      { nil: undefined },
    ),
    blockedUntil: fc.option(
      fc.integer({ min: 1, max: 60_000 }).map((d) => NOW + d),
      { nil: undefined },
    ),
    position: fc.option(fc.integer({ min: 1, max: 16 }), { nil: undefined }),
    present: fc.constant(true as const),
  });
  const memories = fc.record({
    fence: fc.option(fc.integer({ min: 1, max: 10 }), { nil: undefined }),
    free: fc.boolean(),
    since: fc.integer({ min: 0, max: 60_000 }).map((d) => NOW - d),
    servedFence: fc.option(fc.integer({ min: 1, max: 10 }), { nil: undefined }),
  });
  const ends = fc.integer({ min: -1_000, max: 25_000 }).map((d) => NOW + d);

  it('never sleeps past the end of the wait, nor less than 1 ms before it unless it serves first', () => {
    fc.assert(
      fc.property(sights, memories, ends, (s, m, end) => {
        const { delayMs, serve } = nextPoll(s, m, NOW, end);
        expect(delayMs).toBeGreaterThanOrEqual(0);
        expect(NOW + delayMs).toBeLessThanOrEqual(Math.max(NOW, end));
        // Serving looks again at once; it happens once per fence (below), so it cannot spin.
        if (end - NOW >= 1 && !serve) expect(delayMs).toBeGreaterThanOrEqual(1);
      }),
    );
  });

  it('never lets the head sleep past a lease end (or lock-delay end) + slack', () => {
    fc.assert(
      fc.property(sights, memories, ends, (s, m, end) => {
        const head = { ...s, position: 1 };
        const { delayMs, serve } = nextPoll(head, m, NOW, end);
        const changeAt = typeof head.holderUntil === 'number' ? head.holderUntil : head.blockedUntil;
        if (!serve && changeAt !== undefined)
          expect(NOW + delayMs).toBeLessThanOrEqual(Math.max(NOW + 1, changeAt + POLL_LEASE_END_SLACK_MS));
      }),
    );
  });

  it('never sleeps longer than its place allows, so a long wait costs a bounded number of reads', () => {
    fc.assert(
      fc.property(sights, memories, ends, (s, m, end) => {
        expect(nextPoll(s, m, NOW, end).delayMs).toBeLessThanOrEqual(pollCap(s.position));
      }),
    );
  });

  it('a long lease held by someone else: after the first second, at most 1/cap polls a second', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 16 }), (position) => {
        const s = sight({ position, holderUntil: NOW + 60_000 });
        const quiet: PollMemory = { fence: 7, free: false, since: NOW - 2 * pollCap(position) };
        expect(nextPoll(s, quiet, NOW, NOW + 25_000).delayMs).toBe(pollCap(position));
      }),
    );
  });

  it('serves only as the head of a grantable lock, once per fence', () => {
    fc.assert(
      fc.property(sights, memories, ends, (s, m, end) => {
        if (!nextPoll(s, m, NOW, end).serve) return;
        expect(s.position).toBe(1);
        expect(s.holderUntil).toBeUndefined();
        expect(s.blockedUntil).toBeUndefined();
        expect(m.servedFence).not.toBe(s.fence);
        expect(end).toBeGreaterThan(NOW);
      }),
    );
  });
});
