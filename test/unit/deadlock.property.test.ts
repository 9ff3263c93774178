/**
 * Deadlock detection's rules (core/deadlock.ts) against a model: random locks, each free, held
 * exclusively or shared (some leases lapsed), with queues of waiters of both modes that name some
 * locks as held while they wait (`holding`), as DynamoDB would hold them. The model builds the
 * wait-for graph explicitly (waits and holds as nodes) from the modes alone; the properties:
 * - the walk from a joining wait finds a cycle back to it whenever one of at most the depth bound
 *   exists, and a shortest one;
 * - every cycle it reports is a true one (never a false deadlock), whatever its read bound, and it
 *   keeps to that bound;
 * - a client that holds one lock while another of its tasks waits is no deadlock: only what a
 *   wait names in `holding` is kept while it waits;
 * - the waits route's walk shows only true edges, only true cycles, and a cycle whenever one runs
 *   through the lock's waiters.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  findCycle,
  type GraphReader,
  type Party,
  partyKey,
  victimOf,
  type WaitEdge,
  waitGraphFrom,
} from '../../lambdas/core/deadlock';
import { applyUpdate, type Item } from '../../lambdas/core/expr';
import { entryFields, SharedAttr, slotOf } from '../../lambdas/core/holders';
import { LockAttr, type LockMode } from '../../lambdas/core/lock';
import { queueOrder, type Waiter } from '../../lambdas/core/queue';

const NOW = 1_000_000;
const PARTIES: Party[] = [
  { owner: 'arn:aws:iam::1:role/a', clientId: 'w0' },
  { owner: 'arn:aws:iam::1:role/a', clientId: 'w1' },
  { owner: 'arn:aws:iam::1:role/b', clientId: 'w0' },
  { owner: 'arn:aws:iam::1:role/b', clientId: 'w2' },
  { owner: 'arn:aws:iam::1:role/c', clientId: 'w3' },
  { owner: 'arn:aws:iam::1:role/c', clientId: 'w4' },
];

interface Holding {
  readonly party: number;
  readonly live: boolean;
}
interface LockModel {
  readonly holders:
    | {
        readonly mode: LockMode;
        readonly who: readonly Holding[];
        /** A semaphore's N (shared only): of one, its holder is the one a shared waiter waits for. */
        readonly maxHolders?: number;
      }
    | undefined;
  readonly queue: readonly {
    readonly party: number;
    readonly mode: LockMode;
    /** The locks it names as held: those its party holds live ('held'), none, or any (true or not). */
    readonly names: 'held' | 'none' | readonly number[];
    /** Some waits jump ahead by priority; some are past their deadline (never served: no edge). */
    readonly priority: number;
    readonly expired: boolean;
    /**
     * Some waits keep the holds of an enclosing client (the other client id of their principal):
     * those it holds live ('held', its own lock included), or any (true or not).
     */
    readonly enclosing?: 'held' | readonly number[] | undefined;
  }[];
}

// Mostly live holds, few parties and many named holdings: so that cycles are common.
const holdingArb = fc.record({
  party: fc.nat({ max: 3 }),
  live: fc.constantFrom(true, true, true, false),
});
const lockArb: fc.Arbitrary<LockModel> = fc.record({
  holders: fc.option(
    fc.oneof(
      fc.record({ mode: fc.constant<LockMode>('exclusive'), who: fc.tuple(holdingArb) }),
      fc.record({
        mode: fc.constant<LockMode>('shared'),
        who: fc.uniqueArray(holdingArb, { minLength: 1, maxLength: 3, selector: (h) => h.party }),
      }),
      fc.record({
        mode: fc.constant<LockMode>('shared'),
        who: fc.tuple(holdingArb),
        maxHolders: fc.constant(1),
      }),
      // Larger semaphores, full or not: a shared wait waits for any one holder, so no edge.
      fc.record({
        mode: fc.constant<LockMode>('shared'),
        who: fc.uniqueArray(holdingArb, { minLength: 1, maxLength: 2, selector: (h) => h.party }),
        maxHolders: fc.constantFrom(2, 3),
      }),
    ),
    { nil: undefined },
  ),
  queue: fc.array(
    fc.record({
      party: fc.nat({ max: 3 }),
      mode: fc.constantFrom<LockMode>('exclusive', 'exclusive', 'shared'),
      priority: fc.constantFrom(0, 0, 0, 5),
      expired: fc.constantFrom(false, false, false, false, false, true),
      names: fc.oneof(
        { weight: 3, arbitrary: fc.constant<'held'>('held') },
        { weight: 1, arbitrary: fc.constant<'none'>('none') },
        { weight: 1, arbitrary: fc.uniqueArray(fc.nat({ max: 4 }), { maxLength: 3 }) },
      ),
      enclosing: fc.oneof(
        { weight: 4, arbitrary: fc.constant(undefined) },
        { weight: 2, arbitrary: fc.constant<'held'>('held') },
        { weight: 1, arbitrary: fc.uniqueArray(fc.nat({ max: 4 }), { minLength: 1, maxLength: 2 }) },
      ),
    }),
    { maxLength: 4 },
  ),
});

const lockName = (i: number) => `jobs/l${i}`;
const party = (i: number) => PARTIES[i] as Party;
/** The other client id of a party's principal (0 and 1 share one, as do 2 and 3): its enclosing client. */
const enclosingOf = (i: number) => i ^ 1;
const same = (a: Party, b: Party) => partyKey(a) === partyKey(b);
const conflicts = (a: LockMode, b: LockMode) => a === 'exclusive' || b === 'exclusive';

function itemOf(name: string, m: LockModel): Item | undefined {
  if (!m.holders) return undefined;
  const expiresAt = (h: Holding) => (h.live ? NOW + 60_000 : NOW - 1);
  if (m.holders.mode === 'exclusive') {
    const h = m.holders.who[0] as Holding;
    return {
      [LockAttr.name]: name,
      [LockAttr.owner]: party(h.party).owner,
      [LockAttr.holder]: party(h.party).clientId,
      [LockAttr.fence]: 7,
      [LockAttr.expiresAt]: expiresAt(h),
      [LockAttr.ttlMs]: 60_000,
      [LockAttr.mode]: 'exclusive',
    };
  }
  let item: Item | undefined = { [LockAttr.name]: name };
  m.holders.who.forEach((h, i) => {
    const p = party(h.party);
    const held = { kind: 'lease' as const, ttlMs: 60_000, expiresAt: expiresAt(h) };
    item = applyUpdate(item, entryFields(slotOf(p.owner, p.clientId), { ...p, held }, NOW - 5, 10 + i));
  });
  return m.holders.maxHolders === undefined
    ? item
    : { ...item, [SharedAttr.maxHolders]: m.holders.maxHolders, [SharedAttr.count]: m.holders.who.length };
}

/** The world as storage holds it, and the model's own edges. */
function worldOf(locks: readonly LockModel[]) {
  const items = locks.map((m, i) => itemOf(lockName(i), m));
  /** The locks a party holds live. */
  const heldLive = (p: number) =>
    locks.flatMap((other, j) => (other.holders?.who.some((h) => h.live && h.party === p) ? [j] : []));
  let arrival = 0;
  const queues: Waiter[][] = locks.map((m, i) =>
    m.queue
      // A client holding the lock live does not queue for it (that is a re-entry or a refusal).
      .filter((w) => !m.holders?.who.some((h) => h.live && h.party === w.party))
      .map((w) => {
        const p = party(w.party);
        const arrivedAt = NOW - 1000 + arrival++;
        return {
          lock: lockName(i),
          order: queueOrder(w.priority, arrivedAt, `n${arrival}`),
          owner: p.owner,
          clientId: p.clientId,
          tenure: { kind: 'lease', ttlMs: 60_000 },
          requestId: `r${arrival}`,
          requestKey: `k${arrival}`,
          deadline: w.expired ? NOW - 1 : NOW + 60_000,
          priority: w.priority,
          arrivedAt,
          connectionId: undefined,
          mode: w.mode,
          maxHolders: undefined,
          holding: (w.names === 'none' ? [] : w.names === 'held' ? heldLive(w.party) : w.names)
            .filter((j) => j !== i)
            .map(lockName),
          ...(w.enclosing === undefined
            ? {}
            : {
                enclosing: [
                  {
                    clientId: party(enclosingOf(w.party)).clientId,
                    holding: (w.enclosing === 'held' ? heldLive(enclosingOf(w.party)) : w.enclosing).map(
                      lockName,
                    ),
                  },
                ],
              }),
        } satisfies Waiter;
      })
      .sort((x, y) => (x.order < y.order ? -1 : 1)),
  );
  // The model's graph, from the modes alone: nodes are waits ("w:lock#order") and holds ("h:lock#party").
  const waits = queues.flat();
  /** Whether wait `w` keeps `p`'s hold of `lock`: its own party's named in holding, or its enclosing client's. */
  const keeps = (w: Waiter, p: Party, lock: string) =>
    (same(w, p) && (w.holding ?? []).includes(lock)) ||
    (w.enclosing ?? []).some(
      (c) => same({ owner: w.owner, clientId: c.clientId }, p) && c.holding.includes(lock),
    );
  /** The last wait (by arrival) that kept `p`'s hold of `lock`: what its keeper record names. */
  const keeperOf = (lock: string, p: Party): Waiter | undefined =>
    waits.filter((w) => keeps(w, p, lock)).sort((x, y) => y.arrivedAt - x.arrivedAt)[0];
  const waitNode = (w: Waiter) => `w:${w.lock}#${w.order}`;
  const holdNode = (lock: string, p: Party) => `h:${lock}#${partyKey(p)}`;
  /** Links out of each node: a wait edge (weight 1) or a hold's link to a wait that keeps it (weight 0). */
  const links = new Map<string, { to: string; edge?: WaitEdge }[]>();
  const link = (from: string, to: string, edge?: WaitEdge) =>
    links.set(from, [...(links.get(from) ?? []), { to, ...(edge ? { edge } : {}) }]);
  locks.forEach((m, i) => {
    for (const w of queues[i] as Waiter[]) {
      if (w.deadline <= NOW) continue; // never served: it waits for nothing
      const me = { owner: w.owner, clientId: w.clientId };
      const seen = new Set<string>();
      for (const h of m.holders?.who ?? []) {
        const p = party(h.party);
        // A shared wait on a semaphore of one waits for its one holder too.
        const onePlace = w.mode === 'shared' && m.holders?.maxHolders === 1;
        if (
          !h.live ||
          same(p, me) ||
          seen.has(partyKey(p)) ||
          !(conflicts(w.mode, m.holders?.mode ?? 'shared') || onePlace)
        )
          continue;
        seen.add(partyKey(p));
        link(waitNode(w), holdNode(w.lock, p), { waiter: me, lock: w.lock, blocker: p, blockerIs: 'holder' });
      }
      for (const a of queues[i] as Waiter[])
        if (a.order < w.order && a.deadline > NOW && conflicts(w.mode, a.mode))
          link(waitNode(w), waitNode(a), {
            waiter: me,
            lock: w.lock,
            blocker: { owner: a.owner, clientId: a.clientId },
            blockerIs: 'ahead',
          });
    }
    // A hold is kept by its party's last wait naming it (its keeper record), if that wait is live.
    for (const h of m.holders?.who ?? []) {
      const keeper = keeperOf(lockName(i), party(h.party));
      if (h.live && keeper && keeper.deadline > NOW)
        link(holdNode(lockName(i), party(h.party)), waitNode(keeper));
    }
  });
  let reads = 0;
  const reader: GraphReader = {
    keeperOf: async (lock, p) => {
      reads++;
      const keeper = keeperOf(lock, p);
      return keeper && { lock: keeper.lock, order: keeper.order };
    },
    lock: async (name) => {
      reads++;
      const i = Number(name.slice('jobs/l'.length));
      return { item: items[i], queue: queues[i] as Waiter[], complete: true };
    },
  };
  const edgeKeys = new Set([...links.values()].flat().flatMap((l) => (l.edge ? [edgeKey(l.edge)] : [])));
  /** Wait edges on the shortest way from a wait back to itself (0-1 BFS), or undefined. */
  const shortestCycle = (joined: Waiter, viaKeepersOnly = false): number | undefined => {
    const start = waitNode(joined);
    // The joined wait keeps what it names, whichever wait the keeper record names.
    const closing = new Set(
      viaKeepersOnly
        ? []
        : [
            ...(joined.holding ?? []).map((k) =>
              holdNode(k, { owner: joined.owner, clientId: joined.clientId }),
            ),
            ...(joined.enclosing ?? []).flatMap((c) =>
              c.holding.map((k) => holdNode(k, { owner: joined.owner, clientId: c.clientId })),
            ),
          ],
    );
    const dist = new Map<string, number>();
    const deque: [string, number][] = (links.get(start) ?? []).map((l) => [l.to, l.edge ? 1 : 0]);
    let best: number | undefined;
    while (deque.length) {
      deque.sort((a, b) => a[1] - b[1]);
      const [node, d] = deque.shift() as [string, number];
      if (node === start || closing.has(node)) {
        best = d;
        break;
      }
      if (dist.has(node)) continue;
      dist.set(node, d);
      for (const l of links.get(node) ?? []) deque.push([l.to, d + (l.edge ? 1 : 0)]);
    }
    return best;
  };
  /** A cycle of wait edges the graph has: each edge real, and each leading on to the next. */
  const isTrueCycle = (cycle: readonly WaitEdge[]) =>
    cycle.length >= 1 &&
    cycle.every((e, i) => {
      const next = cycle[(i + 1) % cycle.length] as WaitEdge;
      if (!edgeKeys.has(edgeKey(e))) return false;
      if (e.blockerIs === 'ahead') return same(e.blocker, next.waiter) && next.lock === e.lock;
      // A hold is kept by its keeper (its party's wait, or one it encloses); the closing edge also
      // by the refused wait itself.
      const keeper = keeperOf(e.lock, e.blocker);
      if (
        keeper !== undefined &&
        same(keeper, next.waiter) &&
        keeper.lock === next.lock &&
        keeper.deadline > NOW
      )
        return true;
      return (
        i === cycle.length - 1 &&
        waits.some((w) => same(w, next.waiter) && w.lock === next.lock && keeps(w, e.blocker, e.lock))
      );
    });
  return { waits, reader, readCount: () => reads, edgeKeys, shortestCycle, isTrueCycle };
}

const edgeKey = (e: WaitEdge) => `${partyKey(e.waiter)}|${e.lock}|${partyKey(e.blocker)}|${e.blockerIs}`;

const worldArb = fc.array(lockArb, { minLength: 1, maxLength: 5 });

describe('deadlock detection (core/deadlock.ts)', () => {
  it('finds a shortest cycle through the joining wait whenever one within the depth exists, and only true ones', async () => {
    await fc.assert(
      fc.asyncProperty(worldArb, fc.nat(), fc.integer({ min: 1, max: 6 }), async (locks, pick, maxDepth) => {
        const world = worldOf(locks);
        fc.pre(world.waits.length > 0);
        const joined = world.waits[pick % world.waits.length] as Waiter;
        const search = await findCycle(joined, world.reader, NOW, { maxDepth, maxReads: 10_000 });
        const truth = world.shortestCycle(joined);
        expect(search.cycle?.length).toBe(truth !== undefined && truth <= maxDepth ? truth : undefined);
        if (search.cycle) {
          expect(world.isTrueCycle(search.cycle)).toBe(true);
          expect(search.cycle[0]?.lock).toBe(joined.lock);
          expect(same(search.cycle[0]?.waiter as Party, joined)).toBe(true);
          // Each edge's wait is known (the victim is chosen among them): its party and lock.
          expect(search.cycleWaits).toHaveLength(search.cycle.length);
          search.cycle.forEach((e, i) => {
            const w = search.cycleWaits[i] as Waiter;
            expect(same(w, e.waiter) && w.lock === e.lock).toBe(true);
          });
          expect(search.cycleWaits[0]).toBe(joined);
        }
        for (const e of search.edges) expect(world.edgeKeys.has(edgeKey(e))).toBe(true);
      }),
      { numRuns: 1_500 },
    );
  });

  it('the generated worlds often hold cycles, some longer than two edges (so the properties can fail)', () => {
    const lengths = fc
      .sample(fc.tuple(worldArb, fc.nat()), { numRuns: 2_000, seed: 7 })
      .flatMap(([locks, pick]) => {
        const world = worldOf(locks);
        const joined = world.waits[pick % Math.max(1, world.waits.length)];
        return joined ? [world.shortestCycle(joined)] : [];
      });
    expect(lengths.filter((n) => n !== undefined).length).toBeGreaterThan(lengths.length / 80);
    expect(lengths.filter((n) => n !== undefined && n > 2).length).toBeGreaterThan(10);
    // Some cycles close only through an enclosing client's holds.
    const throughEnclosing = fc
      .sample(fc.tuple(worldArb, fc.nat()), { numRuns: 2_000, seed: 7 })
      .filter(([locks, pick]) => {
        const bare = locks.map((m) => ({
          ...m,
          queue: m.queue.map((w) => ({ ...w, enclosing: undefined })),
        }));
        const [world, without] = [worldOf(locks), worldOf(bare)];
        const i = pick % Math.max(1, world.waits.length);
        const joined = world.waits[i];
        return (
          joined &&
          world.shortestCycle(joined) !== undefined &&
          without.shortestCycle(without.waits[i] as Waiter) === undefined
        );
      });
    expect(throughEnclosing.length).toBeGreaterThan(10);
  });

  it('never reports a false cycle and keeps to its read bound, however tight', async () => {
    await fc.assert(
      fc.asyncProperty(worldArb, fc.nat(), fc.integer({ min: 1, max: 8 }), async (locks, pick, maxReads) => {
        const world = worldOf(locks);
        fc.pre(world.waits.length > 0);
        const joined = world.waits[pick % world.waits.length] as Waiter;
        const search = await findCycle(joined, world.reader, NOW, { maxDepth: 8, maxReads });
        expect(world.readCount()).toBeLessThanOrEqual(maxReads);
        expect(search.reads).toBe(world.readCount());
        if (search.cycle) expect(world.isTrueCycle(search.cycle)).toBe(true);
        // A walk that says it saw everything and found nothing is right that there is nothing.
        if (search.exhaustive && !search.cycle) expect(world.shortestCycle(joined)).toBeUndefined();
      }),
      { numRuns: 1_500 },
    );
  });

  it('a client holding one lock while another of its tasks waits for a second is no deadlock', async () => {
    // a holds X and waits for Y without naming X; b holds Y and waits for X naming Y.
    const locks: LockModel[] = [
      {
        holders: { mode: 'exclusive', who: [{ party: 0, live: true }] },
        queue: [{ party: 2, mode: 'exclusive', names: 'held', priority: 0, expired: false }],
      },
      {
        holders: { mode: 'exclusive', who: [{ party: 2, live: true }] },
        queue: [{ party: 0, mode: 'exclusive', names: 'none', priority: 0, expired: false }],
      },
    ];
    const world = worldOf(locks);
    for (const joined of world.waits)
      expect((await findCycle(joined, world.reader, NOW)).cycle).toBeUndefined();
    // Once a's wait names X as held, the later of the two waits closes a cycle of two edges.
    const named = worldOf([
      locks[0] as LockModel,
      {
        ...(locks[1] as LockModel),
        queue: [{ party: 0, mode: 'exclusive', names: 'held', priority: 0, expired: false }],
      },
    ]);
    for (const joined of named.waits)
      expect((await findCycle(joined, named.reader, NOW)).cycle?.length).toBe(2);
    // Both walks (two waits closing the cycle at once) pick the same victim: the younger wait.
    const victims = await Promise.all(
      named.waits.map(async (joined) => {
        const search = await findCycle(joined, named.reader, NOW);
        return search.cycleWaits[victimOf(search.cycleWaits)];
      }),
    );
    const youngest = [...named.waits].sort((x, y) => y.arrivedAt - x.arrivedAt)[0];
    expect(victims).toEqual([youngest, youngest]);
  });

  it("nested runs: a wait that keeps its enclosing client's holds closes cycles through them, and a wait for the enclosing client's own lock is a cycle of one", async () => {
    // Run A (party 0) holds X, and a run inside its command (party 1) waits for Y; run B (party 2)
    // holds Y, and a run inside it (party 3) waits for X. Neither nested run holds anything itself.
    const wait = (p: number, enclosing?: 'held') =>
      ({ party: p, mode: 'exclusive', names: 'none', priority: 0, expired: false, enclosing }) as const;
    const world = (enclosing?: 'held') =>
      worldOf([
        { holders: { mode: 'exclusive', who: [{ party: 0, live: true }] }, queue: [wait(3, enclosing)] },
        { holders: { mode: 'exclusive', who: [{ party: 2, live: true }] }, queue: [wait(1, enclosing)] },
      ]);
    const nested = world('held');
    for (const joined of nested.waits) {
      const { cycle } = await findCycle(joined, nested.reader, NOW);
      expect(cycle?.map((e) => [e.waiter.clientId, e.lock, e.blocker.clientId])).toEqual(
        joined.lock === lockName(0)
          ? [
              ['w2', lockName(0), 'w0'],
              ['w1', lockName(1), 'w0'], // B's client id is w0 too, under another principal
            ]
          : [
              ['w1', lockName(1), 'w0'],
              ['w2', lockName(0), 'w0'],
            ],
      );
      expect(nested.isTrueCycle(cycle ?? [])).toBe(true);
    }
    // Not said to be nested: separate clients, no cycle known (it waits until a deadline).
    const apart = world();
    for (const joined of apart.waits)
      expect((await findCycle(joined, apart.reader, NOW)).cycle).toBeUndefined();
    // A run inside A's command waiting for X itself: A keeps X until it is served, never.
    const self = worldOf([
      { holders: { mode: 'exclusive', who: [{ party: 0, live: true }] }, queue: [wait(1, 'held')] },
    ]);
    const { cycle } = await findCycle(self.waits[0] as Waiter, self.reader, NOW);
    expect(cycle?.map((e) => [e.waiter.clientId, e.lock, e.blocker.clientId])).toEqual([
      ['w1', lockName(0), 'w0'],
    ]);
    // Shared inside shared is no wait at all.
    const shared = worldOf([
      {
        holders: { mode: 'shared', who: [{ party: 0, live: true }] },
        queue: [{ ...wait(1, 'held'), mode: 'shared' }],
      },
    ]);
    expect((await findCycle(shared.waits[0] as Waiter, shared.reader, NOW)).cycle).toBeUndefined();
  });

  it('the graph around a lock shows only true edges and true cycles, and a cycle when one runs through its waiters', async () => {
    await fc.assert(
      fc.asyncProperty(worldArb, async (locks) => {
        const world = worldOf(locks);
        const graph = await waitGraphFrom(lockName(0), world.reader, NOW, { maxDepth: 32, maxReads: 10_000 });
        for (const e of graph.edges) expect(world.edgeKeys.has(edgeKey(e))).toBe(true);
        for (const c of graph.cycles) expect(world.isTrueCycle(c)).toBe(true);
        expect(graph.exhaustive).toBe(true);
        const throughIt = world.waits.some(
          (w) => w.lock === lockName(0) && world.shortestCycle(w, true) !== undefined,
        );
        if (throughIt) expect(graph.cycles.length).toBeGreaterThan(0);
      }),
      { numRuns: 400 },
    );
  });
});
