/**
 * The queue's order: priority first (higher first), then arrival (earlier
 * first). Checked on the sort key itself, and end to end through the real
 * services: whatever order waiters join in, releases hand the lock out in
 * that order, one waiter per release.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LockAttr } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { PRIORITY, queueOrder } from '../../lambdas/core/queue';
import { OWNER, QueueHarness, START } from '../support/queue-harness';

const compareStrings = (x: string, y: string) => (x < y ? -1 : x > y ? 1 : 0);

describe('queueOrder', () => {
  // Mostly a few values, so that equal priorities and equal arrivals are common.
  const priority = fc.oneof(
    fc.constantFrom(PRIORITY.min, -1, 0, 1, PRIORITY.max),
    fc.integer({ min: PRIORITY.min, max: PRIORITY.max }),
  );
  const arrival = fc.oneof(
    fc.integer({ min: START, max: START + 3 }),
    fc.integer({ min: 0, max: 4_102_444_800_000 }), // up to the year 2100
  );
  const nonce = fc.stringMatching(/^[0-9a-f]{1,8}$/);

  it('sorts as plain strings by priority (higher first), then arrival (earlier first), then nonce', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(priority, arrival, nonce), { minLength: 2, maxLength: 12 }),
        (entries) => {
          const keyed = entries.map(([p, at, n]) => ({ p, at, n, order: queueOrder(p, at, n) }));
          const byString = [...keyed].sort((x, y) => compareStrings(x.order, y.order));
          const byRule = [...keyed].sort((x, y) => y.p - x.p || x.at - y.at || compareStrings(x.n, y.n));
          expect(byString.map((k) => [k.p, k.at, k.n])).toEqual(byRule.map((k) => [k.p, k.at, k.n]));
          // DynamoDB compares sort keys as UTF-8 bytes: the same order.
          const bytes = byString.map((k) => Buffer.from(k.order));
          for (let i = 1; i < bytes.length; i++)
            expect(Buffer.compare(bytes[i - 1] as Buffer, bytes[i] as Buffer)).toBeLessThanOrEqual(0);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('priority beats arrival across the whole range, and ties fall to arrival', () => {
    expect(queueOrder(PRIORITY.max, 9e14, 'z') < queueOrder(PRIORITY.max - 1, 0, 'a')).toBe(true);
    expect(queueOrder(PRIORITY.min + 1, 9e14, 'z') < queueOrder(PRIORITY.min, 0, 'a')).toBe(true);
    expect(queueOrder(0, 999, 'z') < queueOrder(0, 1000, 'a')).toBe(true);
    expect(queueOrder(-5, 1000, 'z') > queueOrder(5, 1000, 'a')).toBe(true);
    // Arrival counts whole milliseconds; within one, the nonce decides.
    expect(queueOrder(0, 1000.9, 'b') > queueOrder(0, 1000.1, 'a')).toBe(true);
    expect(queueOrder(0, 1000.9, 'a') < queueOrder(0, 1000.1, 'b')).toBe(true);
    expect(queueOrder(-0, START, 'n')).toBe(queueOrder(0, START, 'n'));
  });

  it('rejects a priority that is out of range or not an integer', () => {
    for (const bad of [PRIORITY.max + 1, PRIORITY.min - 1, 1000, 0.5, -1.5, Number.NaN, Infinity, -Infinity])
      expect(() => queueOrder(bad, START, 'n'), String(bad)).toThrow(RangeError);
    for (const good of [PRIORITY.min, PRIORITY.max, 0, 42])
      expect(() => queueOrder(good, START, 'n')).not.toThrow();
  });
});

describe('serving order, through the services', () => {
  it('releases hand the lock to waiters by priority, then arrival, one per release, tokens rising', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            priority: fc.constantFrom(PRIORITY.min, -1, 0, 0, 3, PRIORITY.max),
            gap: fc.integer({ min: 0, max: 3 }),
            // Waiters of several principals share one queue and one order.
            owner: fc.constantFrom(OWNER, localPrincipal('other')),
          }),
          { minLength: 1, maxLength: 10 },
        ),
        async (joins) => {
          const h = new QueueHarness();
          let grant = await h.hold('holder', { ttl: 60_000 });
          const joined: { client: string; owner: string; priority: number; at: number }[] = [];
          for (const [i, j] of joins.entries()) {
            h.now += j.gap;
            const out = await h.wait(`w${i}`, {
              priority: j.priority,
              ttl: 60_000,
              waitMs: 60_000,
              owner: j.owner,
            });
            expect(out.kind).toBe('queued');
            joined.push({ client: `w${i}`, owner: j.owner, priority: j.priority, at: h.now });
          }
          // Expected: priority, then arrival; waiters of one millisecond and priority in any order.
          const served: typeof joined = [];
          for (let i = 0; i < joins.length; i++) {
            const before = grant.fencingToken;
            await h.release(grant);
            const holder = h.item?.holder as string;
            const entry = joined.find((j) => j.client === holder);
            expect(entry).toBeDefined();
            served.push(entry as (typeof joined)[number]);
            expect(h.item?.fence).toBe(before + 1);
            // The grant belongs to the principal that waited for it: only it may release it.
            expect(h.item?.[LockAttr.owner]).toBe(entry?.owner);
            grant = { ...grant, owner: entry?.owner as string, clientId: holder, fencingToken: before + 1 };
          }
          for (let i = 1; i < served.length; i++) {
            const a = served[i - 1] as (typeof joined)[number];
            const b = served[i] as (typeof joined)[number];
            expect(a.priority > b.priority || (a.priority === b.priority && a.at <= b.at)).toBe(true);
          }
          expect(h.waiters()).toEqual([]);
          expect(h.item?.queued).toBe(0);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('a plain acquire never barges past waiters on a free lock: it is refused while they are queued', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a', { ttl: 100 });
    expect((await h.wait('b', { waitMs: 10_000 })).kind).toBe('queued');
    h.now = START + 200; // a's lease lapsed unseen: free, with b queued
    const barge = await h.services.locks.acquire(h.command('c'));
    expect(barge).toMatchObject({ kind: 'done', outcome: { acquired: false, holder: undefined, queued: 1 } });
    // Refusing it served the queue: b holds now.
    expect(h.item?.holder).toBe('b');
    expect(h.item?.fence).toBe(a.fencingToken + 1);
  });
});
