/**
 * Deadlock detection: the wait-for graph, walked outward from a wait that has just joined a queue.
 * Pure: the walk reads through a `GraphReader` (the service gives it DynamoDB reads, the property
 * tests an explicit graph), so its rules live here and nowhere else.
 *
 * A party is a principal and a client id. One party may run many tasks at once (one SDK client
 * shared by concurrent jobs), so "a party that holds L and waits for M" proves nothing: another of
 * its tasks may be about to release L. What does hold is what a wait says of itself: a wait that
 * names the locks its task holds while it waits (`holding`: the SDK fills it in for the locks a
 * withLocks call, or an enclosing withLock, already holds) will not let go of them before it is
 * granted. So the graph's nodes are waits and holds, and its edges are:
 * - wait W for L -> the hold of L by each party holding it live in a conflicting mode (`holder`);
 * - wait W for L -> each wait ahead of it in L's queue in a conflicting mode (`ahead`): the queue
 *   is served strictly in order, so that one is served, and holds L, first;
 * - hold of L by party H -> the wait of H that names L in `holding` (H keeps L until it is served):
 *   its keeper. A wait may also keep the holds of another client id of its principal, one that
 *   waits for it (`enclosing`: a `latchkey run` nested in the command of a run that holds L, whose
 *   party is H): that wait is the keeper of H's hold of L too, and H's hold of the very lock it
 *   waits for blocks it (a cycle of one wait). `keptBy` lists what a wait keeps. Each wait that
 *   keeps L writes, in the transaction that queues it, a keeper record
 *   in L's partition for L's holding party (`keeperSteps`), read strongly consistently: so of two waits
 *   that close a cycle at once, the later one's walk always sees the earlier one. A party's later
 *   wait naming L takes the record over; one that has ended is no keeper (its record is stale and
 *   ignored, and garbage-collected after its deadline).
 * - in a hierarchical namespace (core/hierarchy.ts), wait W for L -> the hold of each party
 *   holding a lock above L in a mode that keeps W's intention out, or a lock below L whose
 *   intention keeps W out (`through` names that lock). Unlike a hold of L itself, a party's own
 *   hold above or below does block its wait: inside a hold of `a/b`, a wait for `a/b/c` that names
 *   `a/b` as held waits for itself, a cycle of one edge. A wait kept out by the queue of a lock
 *   above it (writer preference) has no edge to that queue's waits: whether it goes first depends
 *   on which waiter heads that queue when the lock frees, which a later arrival with a higher
 *   priority can change (hierarchy.ts yieldToBelow), so such an edge could report a false cycle.
 * A wait whose deadline has passed is no edge either way: it is never served, and its task is
 * giving up.
 * A hold that no wait names is not blocked: its task is working and will release. A shared wait
 * that is short only of a semaphore's room waits for any one holder to leave, not all, so it has
 * no edges to shared holders, except on a semaphore of one: its one holder is the one to leave. Every cycle of this graph is therefore a true deadlock; the walk
 * may miss cycles beyond its bounds, but never reports a
 * false one.
 *
 * The walk is breadth-first with two bounds: the length of a cycle (in wait edges) and the reads
 * it may make (one keeper record per hold it follows, one queue read per lock it looks at, one
 * item read per lock of a hierarchy it looks at). A cycle beyond either bound is not found; lease
 * ends and wait deadlines still break it. Each lock is read once per walk, so the walk sees each
 * as of its own read: a cycle is reported from reads made milliseconds apart, like any snapshot
 * that is not one transaction.
 */
import { createHash } from 'node:crypto';
import { LatchkeyError } from './errors';
import { type Item, set } from './expr';
import { compatible, liveIntentions } from './hierarchy';
import { maxHoldersOf } from './holders';
import { keeperRef, type Step, updateStep } from './items';
import { type LockMode, liveGrants } from './lock';
import type { Waiter } from './queue';

export interface Party {
  readonly owner: string;
  readonly clientId: string;
}

export type BlockerRole = 'holder' | 'ahead';

/** `waiter`'s wait for `lock` cannot be granted before `blocker` (its hold, or its wait ahead) is gone. */
export interface WaitEdge {
  readonly waiter: Party;
  readonly lock: string;
  readonly blocker: Party;
  readonly blockerIs: BlockerRole;
  /** In a hierarchy: the lock above or below `lock` whose hold by `blocker` keeps the wait out. */
  readonly through?: string;
}

/** The most locks a wait may name as held while it waits (`holding`). */
export const MAX_HOLDING = 32;
/** The most enclosing clients a wait may name (runs nested this deep), their locks MAX_HOLDING in all. */
export const MAX_ENCLOSING = 8;

export const partyOf = (p: Party): Party => ({ owner: p.owner, clientId: p.clientId });

/** A hold a wait keeps until it is served: a lock, and the party holding it. */
interface Kept {
  readonly party: Party;
  readonly lock: string;
}

/**
 * The holds a wait keeps: its own party's locks that it names in `holding`, and those of the
 * client that encloses it (`enclosing`: another client id of its principal, which waits for it).
 */
export function keptBy(w: Waiter): Kept[] {
  const own = (w.holding ?? []).map((lock) => ({ party: partyOf(w), lock }));
  return own.concat(
    (w.enclosing ?? []).flatMap(({ clientId, holding }) =>
      holding.map((lock) => ({ party: { owner: w.owner, clientId }, lock })),
    ),
  );
}

const keeps = (w: Waiter, party: Party, lock: string) =>
  keptBy(w).some((k) => k.lock === lock && sameParty(k.party, party));
export const partyKey = (p: Party) => `${p.owner}\u0000${p.clientId}`;
const sameParty = (a: Party, b: Party) => a.owner === b.owner && a.clientId === b.clientId;
const conflicts = (a: LockMode, b: LockMode) => a === 'exclusive' || b === 'exclusive';

/** A node of the graph: a wait (its lock and place), or a party's hold of a lock. */
type Node =
  | { readonly kind: 'wait'; readonly lock: string; readonly order: string }
  | { readonly kind: 'hold'; readonly party: Party; readonly lock: string };
const nodeKey = (n: Node) =>
  n.kind === 'wait' ? `w\u0001${n.lock}\u0001${n.order}` : `h\u0001${n.lock}\u0001${partyKey(n.party)}`;

/** An edge out of one queued wait, and the node it leads to. */
interface Blocker {
  readonly edge: WaitEdge;
  readonly to: Node;
}

/**
 * The edges out of one queued wait, given its lock item and the queue ahead of it (in serving
 * order; waiters behind it are ignored). A party's own hold never blocks its wait.
 */
function blockersOfWait(
  wait: Waiter,
  item: Item | undefined,
  queue: readonly Waiter[],
  now: number,
): Blocker[] {
  const waiter = partyOf(wait);
  const out: Blocker[] = [];
  if (wait.deadline <= now) return out;
  // A semaphore of one: its one place is its holder's, so a shared wait waits for that holder.
  const onePlace = wait.mode === 'shared' && maxHoldersOf(item) === 1;
  const holders = new Set<string>();
  for (const holder of liveGrants(item, now)) {
    const key = partyKey(holder);
    const blocks = conflicts(wait.mode, holder.mode) || onePlace;
    if (!blocks || sameParty(holder, waiter) || holders.has(key)) continue;
    holders.add(key);
    const blocker = partyOf(holder);
    out.push({
      edge: { waiter, lock: wait.lock, blocker, blockerIs: 'holder' },
      to: { kind: 'hold', party: blocker, lock: wait.lock },
    });
  }
  for (const ahead of queue)
    if (ahead.order < wait.order && ahead.deadline > now && conflicts(wait.mode, ahead.mode))
      out.push({
        edge: { waiter, lock: wait.lock, blocker: partyOf(ahead), blockerIs: 'ahead' },
        to: { kind: 'wait', lock: ahead.lock, order: ahead.order },
      });
  return out;
}

/**
 * The edges out of one queued wait through a lock of its hierarchy (`lock`, above or below its
 * own, as read): each party holding it in a mode that keeps the wait out. Above, the wait takes an
 * intention, IX for an exclusive wait (any holder keeps it out), IS for a shared one (only an
 * exclusive holder does); below, a grant's intention keeps out an exclusive wait whatever its
 * mode, a shared wait only when it is exclusive. The party's own holds count: a wait below its
 * own hold waits for itself.
 */
function hierarchyBlockers(wait: Waiter, lock: string, item: Item | undefined, now: number): Blocker[] {
  if (wait.deadline <= now) return [];
  const waiter = partyOf(wait);
  const out: Blocker[] = [];
  const seen = new Set<string>();
  for (const holder of liveGrants(item, now)) {
    if (!conflicts(wait.mode, holder.mode) || seen.has(partyKey(holder))) continue;
    seen.add(partyKey(holder));
    const blocker = partyOf(holder);
    out.push({
      edge: { waiter, lock: wait.lock, blocker, blockerIs: 'holder', through: lock },
      to: { kind: 'hold', party: blocker, lock },
    });
  }
  return out;
}

/** The locks below `item`'s lock whose live intentions keep a wait in `mode` out (their grants' locks). */
function belowInTheWay(item: Item | undefined, mode: LockMode, now: number): string[] {
  const asked = mode === 'exclusive' ? 'X' : 'S';
  const names = liveIntentions(item, now)
    .filter((i) => !compatible(asked, i.kind))
    .map((i) => i.name);
  return [...new Set(names)].sort();
}

/** The edges out of one queued wait (see blockersOfWait). */
export const blockersOf = (wait: Waiter, item: Item | undefined, queue: readonly Waiter[], now: number) =>
  blockersOfWait(wait, item, queue, now).map((b) => b.edge);

/** Where one wait sits: enough to find it in its lock's queue. */
export interface WaitAt {
  readonly lock: string;
  readonly order: string;
}

export interface LockView {
  readonly item: Item | undefined;
  /** The queue in serving order, from its head. */
  readonly queue: readonly Waiter[];
  /** Whether `queue` is the whole queue. */
  readonly complete: boolean;
}

export interface GraphReader {
  /** Where the last wait of `party` that named `lock` as held waits (its keeper record), if any. */
  keeperOf(lock: string, party: Party): Promise<WaitAt | undefined>;
  lock(name: string): Promise<LockView>;
  /** Hierarchical namespaces (core/hierarchy.ts); absent: no edge goes through a hierarchy. */
  readonly hierarchy?: HierarchyReader;
}

export interface HierarchyReader {
  /** The ancestors of `name` in its namespace (core/hierarchy.ts ancestorsOf), root first. */
  ancestorsOf(name: string): readonly string[];
  /** The lock item of `name` alone, read strongly consistently: its holders are all the walk needs. */
  item(name: string): Promise<Item | undefined>;
}

/** What a keeper record holds (keeperSteps). */
export const KeeperAttr = { lock: 'wait_lock', order: 'wait_order' } as const;

/** The keeper records a wait writes in the transaction that queues it: one per lock it names. */
export const keeperSteps = (w: Waiter): Step[] =>
  keptBy(w).map(({ party, lock }) =>
    updateStep(keeperRef(lock, party.owner, party.clientId), {
      update: [set(KeeperAttr.lock, w.lock), set(KeeperAttr.order, w.order)],
      gcFrom: w.deadline,
    }),
  );

/** The wait a keeper record names. */
export function keeperOf(item: Item | undefined): WaitAt | undefined {
  const lock = item?.[KeeperAttr.lock];
  const order = item?.[KeeperAttr.order];
  return typeof lock === 'string' && typeof order === 'string' ? { lock, order } : undefined;
}

export interface SearchBounds {
  /** The longest cycle looked for, in wait edges (2: two waits each held up by the other's hold). */
  readonly maxDepth: number;
  /** Reads the walk may make: one per keeper record, one per lock looked at. */
  readonly maxReads: number;
}

export const DEADLOCK_SEARCH: SearchBounds = { maxDepth: 8, maxReads: 48 };

export interface Search {
  /** The cycle, starting with the edge out of the wait the search began at; undefined: none found. */
  readonly cycle: readonly WaitEdge[] | undefined;
  /** The wait each edge of `cycle` goes out of, in the same order. */
  readonly cycleWaits: readonly Waiter[];
  /** Every wait edge the walk saw, once each. */
  readonly edges: readonly WaitEdge[];
  /** The cycles among what the walk saw: one per strongly connected part (the waits route's walk only). */
  readonly cycles: readonly (readonly WaitEdge[])[];
  readonly reads: number;
  /** False when a bound (depth, reads, a queue longer than one read) cut the walk short. */
  readonly exhaustive: boolean;
}

interface Reached {
  readonly node: Node;
  /** The wait edges from the start to this node. */
  readonly path: readonly WaitEdge[];
  /** The wait each edge of `path` goes out of. */
  readonly waits: readonly Waiter[];
}

/** A cycle found: its edges and the wait each goes out of. */
interface Closed {
  readonly path: readonly WaitEdge[];
  readonly waits: readonly Waiter[];
}

/** One link of the graph the walk saw: from a node to another, through a wait edge or (hold to wait) none. */
interface Link {
  readonly from: string;
  readonly to: string;
  readonly edge: WaitEdge | undefined;
}

/**
 * Walks the graph breadth-first from `starts` (waits), within the bounds. With `joined`, it stops
 * at the first cycle back to the joined wait: an edge to the joined wait itself, or to a hold of
 * its party on a lock the joined wait names in `holding`.
 */
async function walk(
  starts: (view: LockView) => readonly Waiter[],
  lock: string,
  joined: Waiter | undefined,
  reader: GraphReader,
  now: number,
  bounds: SearchBounds,
): Promise<Search> {
  let reads = 0;
  let exhaustive = true;
  const views = new Map<string, LockView>();
  const edges: WaitEdge[] = [];
  const edgeKeys = new Set<string>();
  const links: Link[] = [];
  const expanded = new Set<string>();
  const readable = () => {
    if (reads < bounds.maxReads) return true;
    exhaustive = false;
    return false;
  };
  const view = async (name: string): Promise<LockView | undefined> => {
    const seen = views.get(name);
    if (seen) return seen;
    if (!readable()) return undefined;
    reads++;
    const read = await reader.lock(name);
    views.set(name, read);
    return read;
  };
  const waitIn = (v: LockView, order: string): Waiter | undefined => {
    const wait = v.queue.find((w) => w.order === order);
    if (!wait && !v.complete) exhaustive = false;
    return wait;
  };
  const closes = (to: Node) =>
    joined !== undefined &&
    (to.kind === 'wait'
      ? to.lock === joined.lock && to.order === joined.order
      : keeps(joined, to.party, to.lock));
  const result = (closed: Closed | undefined): Search => ({
    cycle: closed?.path,
    cycleWaits: closed?.waits ?? [],
    edges,
    cycles: joined ? [] : cyclesOf(links),
    reads,
    exhaustive,
  });

  const items = new Map<string, Item | undefined>();
  /** A lock item alone (a hierarchy's locks: their holders are all the walk needs of them). */
  const itemOf = async (hierarchy: HierarchyReader, name: string) => {
    const known = views.get(name);
    if (known) return { item: known.item };
    if (items.has(name)) return { item: items.get(name) };
    if (!readable()) return undefined;
    reads++;
    const item = await hierarchy.item(name);
    items.set(name, item);
    return { item };
  };
  /**
   * The locks of a wait's hierarchy whose holds may keep it out: first the locks below it whose
   * intentions are in its way (its item names them: usually few), then its ancestors from its
   * parent up (up to 64: in a deep name they may use up the reads).
   */
  const relatedTo = (hierarchy: HierarchyReader, wait: Waiter, v: LockView): string[] =>
    belowInTheWay(v.item, wait.mode, now).concat([...hierarchy.ancestorsOf(wait.lock)].reverse());

  let frontier: Reached[] = [];
  /** The wait that keeps a hold: its party's last wait that named the held lock, if still queued and live. */
  const keeperOfHold = async (hold: Node & { kind: 'hold' }): Promise<Waiter | undefined> => {
    if (!readable()) return undefined;
    reads++;
    const at = await reader.keeperOf(hold.lock, hold.party);
    const v = at && (await view(at.lock));
    const wait = at && v && waitIn(v, at.order);
    return wait && wait.deadline > now && keeps(wait, hold.party, hold.lock) ? wait : undefined;
  };
  /** Queues a wait reached with `path` for the next level. */
  const reachWait = (wait: Node & { kind: 'wait' }, path: readonly WaitEdge[], waits: readonly Waiter[]) => {
    if (expanded.has(nodeKey(wait))) return;
    expanded.add(nodeKey(wait));
    frontier.push({ node: wait, path, waits });
  };
  /** Follows the edges out of one wait; the cycle, if one closes. */
  const fromWait = async (
    wait: Waiter,
    path: readonly WaitEdge[],
    before: readonly Waiter[],
  ): Promise<Closed | undefined> => {
    const v = await view(wait.lock);
    if (!v) return undefined;
    const waits = [...before, wait];
    const from = nodeKey({ kind: 'wait', lock: wait.lock, order: wait.order });
    /** Follows `blockers`; the cycle, if one closes. */
    const follow = async (blockers: readonly Blocker[]): Promise<Closed | undefined> => {
      for (const { edge, to } of blockers) {
        const key = `${partyKey(edge.waiter)}\u0001${edge.lock}\u0001${partyKey(edge.blocker)}\u0001${edge.blockerIs}\u0001${edge.through ?? ''}`;
        if (!edgeKeys.has(key)) {
          edgeKeys.add(key);
          edges.push(edge);
        }
        links.push({ from, to: nodeKey(to), edge });
        const next = [...path, edge];
        if (closes(to)) return { path: next, waits };
        if (next.length >= bounds.maxDepth) {
          exhaustive = false;
          continue;
        }
        if (to.kind === 'wait') {
          reachWait(to, next, waits);
          continue;
        }
        if (expanded.has(nodeKey(to))) continue;
        expanded.add(nodeKey(to));
        // A hold leads on to the waits of its party that keep it: at the same depth (no wait edge between).
        const keeper = await keeperOfHold(to);
        if (keeper) {
          const node = { kind: 'wait' as const, lock: keeper.lock, order: keeper.order };
          links.push({ from: nodeKey(to), to: nodeKey(node), edge: undefined });
          reachWait(node, next, waits);
        }
      }
      return undefined;
    };
    // Its own lock's edges first (its item is read already), then its hierarchy's, nearest first.
    const closed = await follow(blockersOfWait(wait, v.item, v.queue, now));
    if (closed) return closed;
    const { hierarchy } = reader;
    if (!hierarchy) return undefined;
    for (const lock of relatedTo(hierarchy, wait, v)) {
      const read = await itemOf(hierarchy, lock);
      if (!read) break;
      const through = await follow(hierarchyBlockers(wait, lock, read.item, now));
      if (through) return through;
    }
    return undefined;
  };

  const first = await view(lock);
  if (first) {
    const startWaits = starts(first);
    for (const wait of startWaits)
      expanded.add(nodeKey({ kind: 'wait', lock: wait.lock, order: wait.order }));
    for (const wait of startWaits) {
      const closed = await fromWait(wait, [], []);
      if (closed) return result(closed);
    }
    if (!first.complete && !joined) exhaustive = false;
  }
  while (frontier.length > 0) {
    const level = frontier;
    frontier = [];
    for (const { node, path, waits } of level) {
      if (node.kind !== 'wait') continue;
      const v = await view(node.lock);
      const wait = v && waitIn(v, node.order);
      const closed = wait ? await fromWait(wait, path, waits) : undefined;
      if (closed) return result(closed);
    }
  }
  return result(undefined);
}

/**
 * The victim of a cycle: its youngest wait (the latest to join, by arrival, then place). Every walk
 * that finds the cycle picks the same one, so when two waits close it at the same moment (each
 * walk seeing the other's wait), one of them is refused, not both; and whichever walk sees it, the
 * victim is refused even if its own walk ran before the cycle was whole.
 */
export function victimOf(waits: readonly Waiter[]): number {
  let victim = 0;
  waits.forEach((w, i) => {
    const v = waits[victim] as Waiter;
    if (
      w.arrivedAt > v.arrivedAt ||
      (w.arrivedAt === v.arrivedAt && `${w.order}\u0000${w.lock}` > `${v.order}\u0000${v.lock}`)
    )
      victim = i;
  });
  return victim;
}

/** The cycle turned to start at edge `from` (its victim's own). */
export const cycleFrom = <T>(cycle: readonly T[], from: number): T[] => [
  ...cycle.slice(from),
  ...cycle.slice(0, from),
];

/** The shortest cycle (within the bounds) that the wait `joined`, already in its queue, closes. */
export const findCycle = (
  joined: Waiter,
  reader: GraphReader,
  now: number,
  bounds: SearchBounds = DEADLOCK_SEARCH,
): Promise<Search> => walk(() => [joined], joined.lock, joined, reader, now, bounds);

/** Who waits for whom from `lock` outward (its waiters, what holds them up, and so on), and the cycles among them. */
export const waitGraphFrom = (
  lock: string,
  reader: GraphReader,
  now: number,
  bounds: SearchBounds = DEADLOCK_SEARCH,
): Promise<Search> => walk((v) => v.queue, lock, undefined, reader, now, bounds);

/**
 * One cycle per strongly connected part of the links (Tarjan), as its wait edges, starting at its
 * smallest node, whatever order the links came in.
 */
function cyclesOf(links: readonly Link[]): WaitEdge[][] {
  const out = new Map<string, Link[]>();
  for (const l of links) {
    const list = out.get(l.from) ?? [];
    if (!list.some((x) => x.to === l.to)) list.push(l);
    out.set(l.from, list);
    if (!out.has(l.to)) out.set(l.to, []);
  }
  for (const list of out.values()) list.sort((a, b) => cmp(a.to, b.to));
  const nodes = [...out.keys()].sort(cmp);
  const components = stronglyConnected(nodes, (k) => (out.get(k) ?? []).map((l) => l.to));
  const cycles: WaitEdge[][] = [];
  for (const component of components) {
    if (component.length < 2) continue;
    const members = new Set(component);
    const start = [...component].sort(cmp).find((k) => k.startsWith('w')) as string;
    const path = pathBack(start, (k) => (out.get(k) ?? []).filter((l) => members.has(l.to)));
    if (path) cycles.push(path.flatMap((l) => (l.edge ? [l.edge] : [])));
  }
  return cycles;
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Breadth-first: the shortest path of links from `start` back to itself. */
function pathBack(start: string, next: (k: string) => readonly Link[]): Link[] | undefined {
  const via = new Map<string, Link>();
  let level = [start];
  while (level.length > 0) {
    const following: string[] = [];
    for (const k of level)
      for (const l of next(k)) {
        if (l.to === start) {
          const path = [l];
          for (let at = k; at !== start; ) {
            const link = via.get(at) as Link;
            path.unshift(link);
            at = link.from;
          }
          return path;
        }
        if (!via.has(l.to)) {
          via.set(l.to, l);
          following.push(l.to);
        }
      }
    level = following;
  }
  return undefined;
}

/** Tarjan's strongly connected components, iteratively (no recursion depth limit). */
function stronglyConnected(nodes: readonly string[], next: (k: string) => readonly string[]): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const components: string[][] = [];
  let counter = 0;
  for (const root of nodes) {
    if (index.has(root)) continue;
    const work: { node: string; edges: readonly string[]; at: number }[] = [];
    const open = (node: string) => {
      index.set(node, counter);
      low.set(node, counter++);
      stack.push(node);
      onStack.add(node);
      work.push({ node, edges: next(node), at: 0 });
    };
    open(root);
    while (work.length > 0) {
      const top = work[work.length - 1] as { node: string; edges: readonly string[]; at: number };
      if (top.at < top.edges.length) {
        const to = top.edges[top.at++] as string;
        if (!index.has(to)) open(to);
        else if (onStack.has(to))
          low.set(top.node, Math.min(low.get(top.node) as number, index.get(to) as number));
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent) low.set(parent.node, Math.min(low.get(parent.node) as number, low.get(top.node) as number));
      if (low.get(top.node) === index.get(top.node)) {
        const component: string[] = [];
        for (;;) {
          const member = stack.pop() as string;
          onStack.delete(member);
          component.push(member);
          if (member === top.node) break;
        }
        components.push(component);
      }
    }
  }
  return components;
}

/**
 * A party as the API shows it to `viewer` (a principal): its client id, an opaque id that tells
 * parties with one client id apart, and whether it is the viewer's own. Principals are not shown,
 * as GET /api/v1/locks/{name} shows holders: a caller sees who it waits for, not their IAM names.
 */
const partyBody = (p: Party, viewer: string) => ({
  client_id: p.clientId,
  party: partyId(p),
  mine: p.owner === viewer,
});

/** The opaque id the API shows for a party: 12 characters of a hash of its principal and client id. */
export const partyId = (p: Party): string =>
  createHash('sha256').update(p.owner).update('\u0000').update(p.clientId).digest('base64url').slice(0, 12);

/** An edge as the API shows it to `viewer` (a DEADLOCK's `cycle`, the waits route's `edges`). */
export const edgeBody = (e: WaitEdge, viewer: string) => ({
  waiter: partyBody(e.waiter, viewer),
  lock: e.lock,
  blocker: partyBody(e.blocker, viewer),
  blocker_is: e.blockerIs,
  ...(e.through === undefined ? {} : { through: e.through }),
});

/** The words of a wait that waits for its own client's hold above or below its lock. */
function selfWaitMessage(e: WaitEdge): string {
  const through = e.through as string;
  const where = e.lock.startsWith(`${through}/`) ? 'above it (a lock covers the names below it)' : 'below it';
  return `waiting for ${e.lock} would wait for itself: client ${e.waiter.clientId} holds ${through}, ${where}, in a mode that keeps this wait out. This wait was refused and left the queue: release ${through} first, or take ${e.lock} before it`;
}

/** The refusal of a wait that closes `cycle` (its first edge is the wait's own). */
export function deadlockError(cycle: readonly WaitEdge[]): LatchkeyError {
  const fields = { cycle: cycle.map((e) => edgeBody(e, (cycle[0] as WaitEdge).waiter.owner)) };
  const only = cycle.length === 1 ? cycle[0] : undefined;
  if (only?.through !== undefined && sameParty(only.waiter, only.blocker))
    return new LatchkeyError('DEADLOCK', selfWaitMessage(only), undefined, undefined, { fields });
  const steps = cycle.map((e, i) => {
    // A waiter that keeps the hold before it for another client (its enclosing process) says so.
    const before = cycle[(i + cycle.length - 1) % cycle.length] as WaitEdge;
    const waiter =
      before.blockerIs === 'holder' && !sameParty(before.blocker, e.waiter)
        ? `client ${e.waiter.clientId} (enclosed by client ${before.blocker.clientId}, which waits for it)`
        : `client ${e.waiter.clientId}`;
    return e.through
      ? `${waiter} waits for ${e.lock}, kept out by client ${e.blocker.clientId}, which holds ${e.through}`
      : `${waiter} waits for ${e.lock}, ${e.blockerIs === 'holder' ? 'held' : 'waited for ahead of it'} by client ${e.blocker.clientId}`;
  });
  const first = cycle[0] as WaitEdge;
  const last = cycle[cycle.length - 1] as WaitEdge;
  // Closed through a hold the wait keeps for its enclosing client, not one of its own.
  const enclosed = last.blockerIs === 'holder' && !sameParty(last.blocker, first.waiter);
  const held = `client ${last.blocker.clientId}, which encloses this one, holds ${last.through ?? last.lock}`;
  const todo = !enclosed
    ? 'release what this client holds, then try again'
    : cycle.length === 1
      ? `${held}: it would wait for its own end (take the lock in one of the two, not both)`
      : `${held}: take these locks in one order everywhere, then try again`;
  return new LatchkeyError(
    'DEADLOCK',
    `waiting for ${first.lock} would close a cycle of waits: ${steps.join('; ')}. This wait was refused (the victim) and left the queue: ${todo}`,
    undefined,
    undefined,
    { fields },
  );
}
