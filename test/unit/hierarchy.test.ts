/**
 * The hierarchy's pure rules one by one (core/hierarchy.ts): namespaces and depth, the TTL an
 * ancestor's write may set (never while anything in it is held through a session), and room for
 * intentions when lapsed ones fill an ancestor. The whole behaviour, through the services, is
 * hierarchy.property.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { LatchkeyError } from '../../lambdas/core/errors';
import { applyUpdate, evaluate, type Item } from '../../lambdas/core/expr';
import {
  type AncestorOp,
  ancestorsOf,
  ancestorVerdict,
  ancestorWrite,
  clearWakeWrite,
  hierarchyProblem,
  IntentAttr,
  intentionsOf,
  keepQueueWrite,
  MAX_ANCESTORS,
  MAX_INTENTIONS,
  MAX_WAKES,
  newYieldEnd,
  PRUNE_ABOVE,
  PRUNE_AFTER_MS,
  parsePrefixes,
  prefixesProblem,
  pruneIntentionsWrite,
  wakeAttr,
  wakeRefusal,
  wakeWrite,
  YIELD_MS,
  YieldAttr,
  yieldToBelow,
} from '../../lambdas/core/hierarchy';
import { entryAttr } from '../../lambdas/core/holders';
import { onLockChange } from '../../lambdas/core/queue';
import { wireServices } from '../../lambdas/service/services';
import { lockPrefixProblem } from '../../sdk/names';
import { MemoryStorage } from '../support/memory-storage';

const NOW = 1_800_000_000_000;
const lease = (token: number, expiresAt = NOW + 1_000): AncestorOp => ({
  kind: 'add',
  grant: { fencingToken: token, kind: 'IX', clientId: 'c', held: { kind: 'lease', ttlMs: 1_000, expiresAt } },
});
const session = (token: number, kind: 'add' | 'remove' = 'add'): AncestorOp => ({
  kind,
  grant: { fencingToken: token, kind: 'IS', clientId: 'c', held: { kind: 'session', sessionId: 's1' } },
});
/** Applies a write the way DynamoDB would: its condition, then its update. */
const apply = (item: Item | undefined, w: ReturnType<typeof ancestorWrite>) =>
  w.condition && !evaluate(w.condition, item) ? undefined : applyUpdate(item, w.update);

describe('namespaces', () => {
  it('parses, checks and applies prefixes', () => {
    expect(parsePrefixes(' tenants/, jobs/ ,')).toEqual(['tenants/', 'jobs/']);
    expect(prefixesProblem(['tenants'], lockPrefixProblem)).toMatch(/must end with '\/'/);
    expect(prefixesProblem(['jobs/', 'jobs/billing/'], lockPrefixProblem)).toMatch(/lies inside/);
    expect(prefixesProblem(['a b/'], lockPrefixProblem)).toMatch(/a b/);
    expect(prefixesProblem(['tenants/', 'jobs/'], lockPrefixProblem)).toBeUndefined();
    expect(ancestorsOf('tenants/acme/records/7', ['jobs/', 'tenants/'])).toEqual([
      'tenants/acme',
      'tenants/acme/records',
    ]);
  });

  it(`bounds depth at ${MAX_ANCESTORS} ancestors`, () => {
    const deep = (levels: number) => `t/${Array.from({ length: levels }, (_, i) => `l${i}`).join('/')}`;
    expect(hierarchyProblem(deep(MAX_ANCESTORS + 1), ['t/'])).toBeUndefined();
    expect(hierarchyProblem(deep(MAX_ANCESTORS + 2), ['t/'])).toMatch(/at most 64/);
    expect(hierarchyProblem(deep(200), ['u/'])).toBeUndefined();
  });
});

describe("an ancestor's TTL", () => {
  it('a lease intention sets it from now, unless something in the item is held through a session', () => {
    const blind = ancestorWrite('t/a', 't/a/b', [lease(7)], undefined, NOW);
    expect(blind.gcFrom).toBe(NOW);
    const held = { [IntentAttr.sessions]: 1, [IntentAttr.count]: 1 } as Item;
    expect(apply(held, blind)).toBeUndefined(); // the blind guess is refused there
    const informed = ancestorWrite('t/a', 't/a/b', [lease(7)], held, NOW);
    expect(informed.gcFrom).toBeUndefined();
    expect(apply(held, informed)).toBeDefined();
  });

  it('a session intention clears it; removing the last one sets it again', () => {
    const added = ancestorWrite('t/a', 't/a/b', [session(7)], undefined, NOW);
    expect(added.gcFrom).toBeNull();
    const item = apply(undefined, added) as Item;
    expect(item[IntentAttr.sessions]).toBe(1);
    const removed = ancestorWrite('t/a', 't/a/b', [session(7, 'remove')], item, NOW);
    expect(removed.gcFrom).toBe(NOW);
    const after = apply(item, removed) as Item;
    expect(intentionsOf(after)).toEqual([]);
    expect(after[IntentAttr.sessions]).toBe(0);
    // Another session's intention stays: the TTL stays unset.
    const two = apply(item, ancestorWrite('t/a', 't/a/c', [session(8)], item, NOW)) as Item;
    const one = ancestorWrite('t/a', 't/a/b', [session(7, 'remove')], two, NOW);
    expect(one.gcFrom).toBeUndefined();
    expect(apply(two, one)?.[IntentAttr.sessions]).toBe(1);
  });
});

describe('a queue its hierarchy holds up', () => {
  it('keeps its lock item from being collected before its waits end, never below a lease that took the lock since', () => {
    const waited = { lock_name: 't/a/b', queued: 1 } as Item;
    const kept = keepQueueWrite(waited, NOW);
    expect(kept.gcFrom).toBe(NOW);
    expect(apply(waited, kept)).toBeDefined();
    // Another serve granted it meanwhile: a TTL counted from now would fall below that lease's end.
    const granted = { ...waited, holder: 'h', fence: 2, expires_at: NOW + 5_000 } as Item;
    expect(apply(granted, kept)).toBeUndefined();
    expect(apply({ ...granted, expires_at: NOW } as Item, kept)).toBeDefined(); // a lease that ended
  });
});

// Building an item of 1,000 intentions one write at a time: about 2 s each, more on a loaded machine.
describe('room for intentions', { timeout: 60_000 }, () => {
  it('an ancestor full of lapsed intentions makes room for a live one, exactly', () => {
    let item: Item | undefined;
    for (let t = 1; t <= MAX_INTENTIONS; t++)
      item = apply(item, ancestorWrite('t/a', `t/a/n${t}`, [lease(t, NOW - 1)], undefined, NOW - 10));
    expect(intentionsOf(item)).toHaveLength(MAX_INTENTIONS);
    const blind = ancestorWrite('t/a', 't/a/new', [lease(5_000)], undefined, NOW);
    expect(apply(item, blind)).toBeUndefined(); // full, as far as a blind write can tell
    expect(ancestorVerdict('t/a', 't/a/new', [lease(5_000)], item, NOW)).toEqual({ kind: 'retry' });
    const after = apply(item, ancestorWrite('t/a', 't/a/new', [lease(5_000)], item, NOW)) as Item;
    expect(intentionsOf(after)).toHaveLength(MAX_INTENTIONS - 16 + 1);
    expect(after[IntentAttr.count]).toBe(MAX_INTENTIONS - 16 + 1);
    expect(after[IntentAttr.ix]).toBe(MAX_INTENTIONS - 16 + 1);
  });

  it('full of live intentions: refused', () => {
    let item: Item | undefined;
    for (let t = 1; t <= MAX_INTENTIONS; t++)
      item = apply(item, ancestorWrite('t/a', `t/a/n${t}`, [lease(t, NOW + 60_000)], undefined, NOW));
    expect(ancestorVerdict('t/a', 't/a/new', [lease(5_000)], item, NOW)).toEqual({ kind: 'full' });
  });
});

describe('a renewal below', () => {
  it('is refused where its ancestor was granted exclusively since its lease ended (a late renewal)', () => {
    // t/a/b's lease lapsed at NOW - 1 and its intention is still on t/a; t/a is held exclusively since.
    const lapsed = apply(
      undefined,
      ancestorWrite('t/a', 't/a/b', [lease(7, NOW - 1)], undefined, NOW - 10),
    ) as Item;
    const heldAbove = { ...lapsed, holder: 'x', principal: 'p', fence: 99, expires_at: NOW + 10_000 } as Item;
    const renew: AncestorOp = {
      kind: 'renew',
      grant: {
        fencingToken: 7,
        kind: 'IX',
        clientId: 'c',
        held: { kind: 'lease', ttlMs: 1_000, expiresAt: NOW + 1_000 },
      },
    };
    // Judged by the clock it was sent at (before its lease ended): still refused.
    const late = ancestorWrite('t/a', 't/a/b', [renew], undefined, NOW - 5);
    expect(apply(heldAbove, late)).toBeUndefined();
    expect(ancestorVerdict('t/a', 't/a/b', [renew], heldAbove, NOW - 5).kind).toBe('superseded');
    // Without a holder above, the same renewal stands.
    expect(apply(lapsed, late)).toBeDefined();
  });
});

describe('the service', () => {
  it(`refuses a name with more than ${MAX_ANCESTORS} levels above it in its namespace, 400 INVALID_NAME, and writes nothing`, async () => {
    const memory = new MemoryStorage({ tableName: 'deep', retentionSeconds: 86_400 }, () => NOW);
    const { locks } = wireServices({
      storage: memory,
      pusher: { push: async () => 'sent' },
      timers: { schedule: async () => {}, scheduleSession: async () => {} },
      clock: { now: () => NOW, sleep: async () => {} },
      ids: () => 'id',
      hierarchicalPrefixes: ['t/'],
    });
    const deep = `t/${Array.from({ length: MAX_ANCESTORS + 2 }, (_, i) => `l${i}`).join('/')}`;
    const refused = await locks
      .acquire({ name: deep, owner: 'p', clientId: 'c', tenure: { kind: 'lease', ttlMs: 1_000 } })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(LatchkeyError);
    expect((refused as LatchkeyError).code).toBe('INVALID_NAME');
    expect(memory.all()).toHaveLength(0);
    // One level less is a lock like any other.
    const fits = deep.slice(0, deep.lastIndexOf('/'));
    const granted = await locks.acquire({
      name: fits,
      owner: 'p',
      clientId: 'c',
      tenure: { kind: 'lease', ttlMs: 1_000 },
    });
    expect(granted.kind === 'done' && granted.outcome.acquired).toBe(true);
  });
});

describe('housekeeping on an ancestor', () => {
  it('lapsed intentions beyond a few are removed, a write at a time, with exact counts', () => {
    let item: Item | undefined;
    for (let t = 1; t <= PRUNE_ABOVE + 8; t++)
      item = apply(item, ancestorWrite('t/a', `t/a/n${t}`, [lease(t, NOW - 1)], undefined, NOW - 10));
    item = apply(item, ancestorWrite('t/a', 't/a/live', [lease(100, NOW + 60_000)], undefined, NOW));
    // Not yet: a renewal sent before its lease ended may still be on its way.
    expect(pruneIntentionsWrite(item, NOW)).toBeUndefined();
    const later = NOW + PRUNE_AFTER_MS;
    const prune = pruneIntentionsWrite(item, later);
    if (!prune) throw new Error('expected a prune');
    const after = apply(item, prune) as Item;
    expect(intentionsOf(after)).toHaveLength(PRUNE_ABOVE + 8 + 1 - 16);
    expect(after[IntentAttr.count]).toBe(intentionsOf(after).length);
    expect(intentionsOf(after).some((i) => i.name === 't/a/live')).toBe(true);
    expect(pruneIntentionsWrite(after, later)).toBeUndefined(); // few enough now
    // Pinned: a write in between (an intention added) refuses it.
    const moved = apply(item, ancestorWrite('t/a', 't/a/other', [lease(200, NOW + 60_000)], undefined, NOW));
    expect(apply(moved, prune)).toBeUndefined();
  });

  it('wake marks are counted and capped; a mark again is not counted twice; clearing one counts it out', () => {
    const held = { fence: 1, holder: 'h', expires_at: NOW + 1_000 } as Item;
    const first = apply(held, wakeWrite('t/a/b', 'IX', 'n1', 'new', NOW)) as Item;
    expect(first.wake_count).toBe(1);
    expect(apply(first, wakeWrite('t/a/b', 'IX', 'n2', 'new', NOW))).toBeUndefined();
    expect(wakeRefusal('t/a/b', first)).toBe('marked');
    const again = apply(first, wakeWrite('t/a/b', 'IX', 'n2', 'again', NOW)) as Item;
    expect(again.wake_count).toBe(1);
    const value = again[wakeAttr('t/a/b')] as string;
    expect(apply(again, clearWakeWrite(wakeAttr('t/a/b'), `IX:n1~${NOW}:t/a/b`))).toBeUndefined(); // not the mark read
    expect((apply(again, clearWakeWrite(wakeAttr('t/a/b'), value)) as Item).wake_count).toBe(0);
    const full = { ...held, wake_count: MAX_WAKES } as Item;
    expect(apply(full, wakeWrite('t/a/c', 'IS', 'n', 'new', NOW))).toBeUndefined();
    expect(wakeRefusal('t/a/c', full)).toBe('full');
    expect(wakeRefusal('t/a/c', undefined)).toBe('gone');
  });
});

/** A live shared holder of t/a, as its entry records it. */
const sharedHolder = (): Item => ({
  [entryAttr('slot1', 'fence')]: 4,
  [entryAttr('slot1', 'owner')]: 'o',
  [entryAttr('slot1', 'client')]: 'r',
  [entryAttr('slot1', 'expiresAt')]: NOW + 1_000,
  [entryAttr('slot1', 'ttlMs')]: 1_000,
  [entryAttr('slot1', 'acquiredAt')]: NOW - 10,
  shared_count: 1,
});

/** The item without standing aside. */
const withoutYield = (item: Item): Item => {
  const { [YieldAttr.before]: _b, [YieldAttr.at]: _a, ...rest } = item;
  return rest as Item;
};

describe('standing aside for older waits below', () => {
  // t/a is free with a queue whose head arrived at NOW - 100; t/a/b's wait, kept out, left a mark.
  const marked = (arrivedAt: number, kind: 'IX' | 'IS' = 'IX') =>
    apply(
      { lock_name: 't/a', fence: 5, queued: 1 } as Item,
      wakeWrite('t/a/b', kind, 'n1', 'new', arrivedAt),
    ) as Item;
  const HEAD = NOW - 100;

  it('a mark older than the head: stand aside, once, for YIELD_MS; then serve the head all the same', () => {
    const item = marked(HEAD - 1);
    const decision = yieldToBelow('t/a', item, HEAD, NOW);
    if (decision.kind !== 'yield') throw new Error(decision.kind);
    expect(decision.until).toBe(NOW + YIELD_MS);
    const aside = apply(item, decision.write) as Item;
    expect(aside[YieldAttr.before]).toBe(HEAD);
    expect(yieldToBelow('t/a', aside, HEAD, NOW + 10)).toEqual({ kind: 'wait', until: NOW + YIELD_MS });
    expect(yieldToBelow('t/a', aside, HEAD, NOW + YIELD_MS)).toEqual({ kind: 'serve' });
    // Granted meanwhile (its fencing counter moved): the write is refused.
    expect(apply({ ...item, fence: 6 }, decision.write)).toBeUndefined();
  });

  it('no mark older than the head, a mark from before arrivals were recorded, or one the lock keeps out anyway: serve', () => {
    expect(yieldToBelow('t/a', marked(HEAD), HEAD, NOW)).toEqual({ kind: 'serve' });
    expect(yieldToBelow('t/a', marked(HEAD + 1), HEAD, NOW)).toEqual({ kind: 'serve' });
    const legacy = {
      lock_name: 't/a',
      fence: 5,
      queued: 1,
      [wakeAttr('t/a/b')]: 'IX:n1:t/a/b',
      wake_count: 1,
    };
    expect(yieldToBelow('t/a', legacy as Item, HEAD, NOW)).toEqual({ kind: 'serve' });
    // Shared holders on t/a keep an exclusive wait below out whatever the queue: nothing to stand aside for.
    const shared = { ...marked(HEAD - 1), ...sharedHolder() };
    expect(yieldToBelow('t/a', shared, HEAD, NOW)).toEqual({ kind: 'serve' });
    expect(yieldToBelow('t/a', { ...marked(HEAD - 1, 'IS'), ...sharedHolder() }, HEAD, NOW).kind).toBe(
      'yield',
    );
  });

  it('lets in exactly the grants below that arrived before the head it stood aside for', () => {
    const aside = { ...marked(HEAD - 1), [YieldAttr.before]: HEAD, [YieldAttr.at]: NOW };
    const grant = (arrivedAt: number | undefined) =>
      apply(aside, ancestorWrite('t/a', 't/a/b', [lease(9)], aside, NOW, arrivedAt));
    expect(grant(HEAD - 1)).toBeDefined();
    expect(grant(HEAD)).toBeUndefined();
    expect(grant(undefined)).toBeUndefined(); // a request that did not wait arrived now
    expect(ancestorVerdict('t/a', 't/a/b', [lease(9)], aside, NOW, HEAD).kind).toBe('blocked');
    expect(ancestorVerdict('t/a', 't/a/b', [lease(9)], aside, NOW, HEAD - 1).kind).toBe('retry');
    // The window ended: the queue keeps them out again (the head is served all the same).
    expect(
      apply(aside, ancestorWrite('t/a', 't/a/b', [lease(9)], aside, NOW + YIELD_MS, HEAD - 1)),
    ).toBeUndefined();
    expect(newYieldEnd(withoutYield(aside), aside)).toBe(NOW + YIELD_MS);
    expect(newYieldEnd(aside, aside)).toBeUndefined();
    // The notifier arms the lock's timer for the window's end; a new mark has it serve the lock.
    const change = (before: Item, after: Item) =>
      onLockChange({ before, released: undefined, after }, NOW, true);
    expect(change(withoutYield(aside), aside)).toEqual({ serve: false, lookBy: NOW + YIELD_MS });
    expect(change(withoutYield(aside), marked(HEAD - 5)).serve).toBe(false); // already waited, nothing moved
    const unmarked = { lock_name: 't/a', fence: 5, queued: 1 } as Item;
    expect(change(unmarked, marked(HEAD - 5)).serve).toBe(true);
    // After the window the queue keeps the older wait out again, as the write's condition does.
    expect(ancestorVerdict('t/a', 't/a/b', [lease(9)], aside, NOW + YIELD_MS, HEAD - 1).kind).toBe('blocked');
    // The lock's own next grant ends it.
    const { [YieldAttr.before]: _b, [YieldAttr.at]: _a, ...plain } = aside;
    expect(
      apply(plain as Item, ancestorWrite('t/a', 't/a/b', [lease(9)], plain as Item, NOW, HEAD - 1)),
    ).toBeUndefined();
  });
});
