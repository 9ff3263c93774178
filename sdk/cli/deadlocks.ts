/**
 * `latchkey deadlocks` and `latchkey waits`: the wait-for graph as the service shows it
 * (GET /api/v1/locks/{name}/waits), and how a refused wait (DeadlockError) is told on the command
 * line. The merging and wording are pure functions, tested without a service.
 */
import type { Command } from 'commander';
import type { LockClient, WaitGraph } from '../client';
import type { DeadlockError, WaitEdge, WaitParty } from '../errors';

/** What `deadlocks` lists at most (100 locks a page); past it, the listing says it stopped. */
export const DEADLOCK_LIST_LIMIT = 10_000;
/** How many `waits` calls `deadlocks` has in flight at once. */
export const WAITS_IN_FLIGHT = 8;

/** `deadlocks` exit codes: 0 no cycle found, 1 at least one cycle shown (an error is 1 too). */
export const DEADLOCK_EXIT = { NONE: 0, FOUND: 1 } as const;

const partyKey = (p: WaitParty) => p.party;

/**
 * An edge as a string, for comparing: who waits, for which lock, for whom. Whether the blocker
 * holds the lock or waits ahead is left out: it can change between two reads of one cycle.
 */
export const edgeKey = (e: WaitEdge) => `${partyKey(e.waiter)}\u0001${e.lock}\u0001${partyKey(e.blocker)}`;

/** A cycle's identity: the sorted set of its edges' keys (the same cycle, whichever lock reported it). */
export const cycleKey = (cycle: readonly WaitEdge[]) =>
  [...new Set(cycle.map(edgeKey))].sort().join('\u0002');

/** The cycle turned to start at its least edge (by key), its order kept: the same text from any lock. */
export function rotated(cycle: readonly WaitEdge[]): WaitEdge[] {
  if (cycle.length === 0) return [];
  let start = 0;
  cycle.forEach((e, i) => {
    if (edgeKey(e) < edgeKey(cycle[start] as WaitEdge)) start = i;
  });
  return [...cycle.slice(start), ...cycle.slice(0, start)];
}

/** Cycles from several graphs, each once (by cycleKey), each turned to its least edge, sorted. */
export function mergeCycles(graphs: readonly Pick<WaitGraph, 'cycles'>[]): WaitEdge[][] {
  const byKey = new Map<string, WaitEdge[]>();
  for (const graph of graphs)
    for (const cycle of graph.cycles) {
      if (cycle.length === 0) continue;
      const key = cycleKey(cycle);
      if (!byKey.has(key)) byKey.set(key, rotated(cycle));
    }
  return [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, cycle]) => cycle);
}

/**
 * How a party is named: its client id, `(yours)` if it is your principal's (as `show` marks your
 * holders), and its opaque id where asked.
 */
const partyText = (p: WaitParty, withId: boolean) =>
  `${p.clientId}${p.mine ? ' (yours)' : ''}${withId ? ` [${p.party}]` : ''}`;

/** Whether two of these parties share a client id (under different principals): then ids tell them apart. */
const ambiguousIn = (edges: readonly WaitEdge[]): boolean => {
  const parties = new Map<string, WaitParty>();
  for (const e of edges) for (const p of [e.waiter, e.blocker]) parties.set(partyKey(p), p);
  const ids = [...parties.values()].map((p) => p.clientId);
  return new Set(ids).size < ids.length;
};

/**
 * What the waiter waits for, in words: `jobs/a held by c2`, `jobs/a behind c2` (queued ahead of
 * it), or in a hierarchy `t/a/b kept out by c2 holding t/a`.
 */
const blockedText = (e: WaitEdge, blocker: string) =>
  e.through !== undefined
    ? `${e.lock} kept out by ${blocker} holding ${e.through}`
    : `${e.lock} ${e.blockerIs === 'holder' ? 'held by' : 'behind'} ${blocker}`;

/**
 * One edge on a line of its own: `c1 waits for jobs/a held by c2`; with `withIds` (two parties
 * among those listed share a client id), each party's id after it. `before`: the edge before it in
 * a cycle; when that one's holder is not this waiter, the waiter keeps that hold for its holder
 * (a run nested in that run's command: `c3, inside c2, which waits for it, waits for …`).
 */
export const edgeText = (e: WaitEdge, withIds = false, before?: WaitEdge) =>
  `${partyText(e.waiter, withIds)}${insideText(e, before, withIds)} waits for ${blockedText(e, partyText(e.blocker, withIds))}`;

const insideText = (e: WaitEdge, before: WaitEdge | undefined, withIds: boolean) =>
  before?.blockerIs === 'holder' && partyKey(before.blocker) !== partyKey(e.waiter)
    ? `, inside ${partyText(before.blocker, withIds)}, which waits for it,`
    : '';

/** Each edge of a cycle with the one before it (the last edge comes before the first). */
const withBefore = (cycle: readonly WaitEdge[]) =>
  cycle.map((e, i) => [e, cycle[(i + cycle.length - 1) % cycle.length]] as const);

/**
 * A cycle on one line: `c1 (yours) waits for jobs/a held by c2 → c2 waits for jobs/b held by c1
 * (yours)`. A party's opaque id is said only when two parties of the cycle share a client id
 * (under different principals).
 */
export function cycleText(cycle: readonly WaitEdge[]): string {
  const ambiguous = ambiguousIn(cycle);
  const name = (p: WaitParty) => partyText(p, ambiguous);
  return withBefore(cycle)
    .map(
      ([e, before]) =>
        `${name(e.waiter)}${insideText(e, before, ambiguous)} waits for ${blockedText(e, name(e.blocker))}`,
    )
    .join(' → ');
}

/** The cycles, numbered, one a line: `cycle 1: …`. */
export const cyclesText = (cycles: readonly (readonly WaitEdge[])[]) =>
  cycles.map((cycle, i) => `cycle ${i + 1}: ${cycleText(cycle)}`);

/** An edge as the service writes it (what `--json` prints). */
export const edgeWire = (e: WaitEdge) => ({
  waiter: { client_id: e.waiter.clientId, party: e.waiter.party, mine: e.waiter.mine },
  lock: e.lock,
  blocker: { client_id: e.blocker.clientId, party: e.blocker.party, mine: e.blocker.mine },
  blocker_is: e.blockerIs,
});

/** What `deadlocks` found. */
export interface DeadlockReport {
  readonly prefix: string;
  /** Locks listed under the prefix. */
  readonly locks: number;
  /** Whether the listing stopped at DEADLOCK_LIST_LIMIT (more locks may have waiters). */
  readonly truncated: boolean;
  /** Locks with waiters: each one's graph was read. */
  readonly locksWithWaiters: number;
  readonly cycles: WaitEdge[][];
  /** Locks whose walk a bound of the service cut short: a longer cycle through them may be missing. */
  readonly incomplete: string[];
}

/** The report from the listing's size and the graphs read (one per lock with waiters). */
export function deadlockReport(
  prefix: string,
  listed: number,
  truncated: boolean,
  graphs: readonly WaitGraph[],
): DeadlockReport {
  return {
    prefix,
    locks: listed,
    truncated,
    locksWithWaiters: graphs.length,
    cycles: mergeCycles(graphs),
    incomplete: graphs.filter((g) => !g.complete).map((g) => g.lock),
  };
}

/** `deadlocks`' text for people (stdout). */
export function describeDeadlocks(r: DeadlockReport): string {
  const under = r.prefix ? ` under '${r.prefix}'` : '';
  const among = `${r.locksWithWaiters} lock${r.locksWithWaiters === 1 ? '' : 's'} with waiters${under}`;
  const lines =
    r.cycles.length === 0
      ? [`no deadlock among ${among}`]
      : [
          ...cyclesText(r.cycles),
          `${r.cycles.length} cycle${r.cycles.length === 1 ? '' : 's'} of waits among ${among}: each lasts until a holder in it releases, its lease ends, or a wait in it times out (latchkey admin queue NAME, latchkey admin force-release NAME)`,
        ];
  if (r.incomplete.length)
    lines.push(
      `note: the walk from ${r.incomplete.join(', ')} stopped at the service's bounds: a longer cycle through ${r.incomplete.length === 1 ? 'it' : 'them'} may not be shown`,
    );
  if (r.truncated)
    lines.push(
      `note: only the first ${r.locks} locks${under} were listed: use --prefix to look at the others`,
    );
  return lines.join('\n');
}

/** `deadlocks --json`: the report, edges as the service writes them. */
export const deadlockJson = (r: DeadlockReport) => ({
  prefix: r.prefix,
  locks: r.locks,
  truncated: r.truncated,
  locks_with_waiters: r.locksWithWaiters,
  cycles: r.cycles.map((c) => c.map(edgeWire)),
  incomplete: r.incomplete,
});

/** `waits NAME`'s text for people. */
export function describeWaits(g: WaitGraph): string {
  // A client may wait for several (the holder and those ahead of it): count clients, and edges.
  const waiting = new Set(g.edges.map((e) => partyKey(e.waiter))).size;
  const edges = g.edges.length === waiting ? '' : ` (${g.edges.length} waits-for edges)`;
  const lines = [
    g.edges.length === 0
      ? `${g.lock}: nobody waits for anyone from its queue`
      : `${g.lock}: ${waiting} client${waiting === 1 ? ' waits' : 's wait'} for another${edges}, from its queue outward`,
    ...g.edges.map((e) => `  ${edgeText(e, ambiguousIn(g.edges))}`),
  ];
  lines.push(...(g.cycles.length ? cyclesText(g.cycles) : ['no cycle of waits']));
  if (!g.complete)
    lines.push("note: the walk stopped at the service's bounds: longer chains of waits are not shown");
  return lines.join('\n');
}

/** `waits --json`: the graph as the service writes it. */
export const waitsJson = (g: WaitGraph) => ({
  lock: g.lock,
  edges: g.edges.map(edgeWire),
  cycles: g.cycles.map((c) => c.map(edgeWire)),
  complete: g.complete,
});

/**
 * A refused wait, as `run` and `acquire` say it on stderr: what happened, the cycle one edge a
 * line, and what to do. Without the cycle (a retry of a request refused before), the service's message.
 */
export function deadlockLines(error: DeadlockError): string[] {
  if (error.cycle.length === 0) return [`latchkey: ${error.message} [${error.code}]`];
  const first = error.cycle[0] as WaitEdge;
  const last = error.cycle[error.cycle.length - 1] as WaitEdge;
  // The refused wait closes the cycle through a hold it keeps: its own, or its enclosing run's.
  const enclosed = last.blockerIs === 'holder' && partyKey(last.blocker) !== partyKey(first.waiter);
  return [
    `latchkey: not acquired: waiting for ${error.lock} would close a cycle of waits (a deadlock), so the service refused this wait (the first below) [${error.code}]:`,
    ...withBefore(error.cycle).map(
      ([e, before]) => `latchkey:   ${edgeText(e, ambiguousIn(error.cycle), before)}`,
    ),
    !enclosed
      ? 'latchkey: release what this client holds that the others wait for, then try again'
      : error.cycle.length === 1
        ? `latchkey: a run this one runs inside holds ${last.through ?? last.lock}, and ends only after this one: waiting would never end; take the lock in one of them, not both`
        : `latchkey: the run this one runs inside holds ${last.through ?? last.lock}: take these locks in the same order everywhere (or together in one run: --lock A --lock B), then try again`,
  ];
}

/** Runs `work` on each item, at most `limit` at once; the results in the items' order. */
export async function inBatches<T, R>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await work(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** What the commands need of main.ts. */
export interface DeadlockContext<G> {
  readonly globals: () => G & { readonly json?: boolean };
  readonly client: (g: G) => LockClient;
}

/** Adds `deadlocks` and `waits` to the CLI. */
export function addDeadlockCommands<G>(cli: Command, context: DeadlockContext<G>): void {
  cli
    .command('deadlocks')
    .description('cycles of waits (deadlocks) among the locks under a prefix')
    .option('--prefix <prefix>', 'only locks whose names start with this', '')
    .addHelpText(
      'after',
      `
Lists the locks under --prefix (the first ${DEADLOCK_LIST_LIMIT}), reads the wait-for graph of each one
with waiters (as \`latchkey waits NAME\` does), and prints each cycle of waits once, e.g.
  cycle 1: c1 (yours) waits for jobs/a held by c2 → c2 waits for jobs/b held by c1 (yours)
("behind c2" instead of "held by c2": c2 waits ahead of it in that lock's queue; "[id]" after a
client id when two parties of another principal share it). The service refuses a wait that would
close a cycle, so a cycle found here is one its bounded search missed; it lasts until a lease or
a wait in it ends.

Exit codes: ${DEADLOCK_EXIT.NONE} no cycle found, ${DEADLOCK_EXIT.FOUND} at least one cycle shown (so scripts can alert); an
error (latchkey unreachable, not allowed to list) is 1 too, with its message on stderr.`,
    )
    .action(async (o: { prefix: string }) => {
      const g = context.globals();
      const client = context.client(g);
      const locks = await client.list(o.prefix, DEADLOCK_LIST_LIMIT);
      const waited = locks.filter((v) => (v.queued ?? 0) > 0).map((v) => v.lock as string);
      const graphs = await inBatches(waited, WAITS_IN_FLIGHT, (name) => client.waits(name));
      const report = deadlockReport(o.prefix, locks.length, locks.length >= DEADLOCK_LIST_LIMIT, graphs);
      console.log(g.json ? JSON.stringify(deadlockJson(report)) : describeDeadlocks(report));
      process.exitCode = report.cycles.length ? DEADLOCK_EXIT.FOUND : DEADLOCK_EXIT.NONE;
    });

  cli
    .command('waits')
    .description("who waits for whom from a lock's queue outward, and any cycle of waits among them")
    .argument('<name>')
    .addHelpText(
      'after',
      `
Each line is one wait that cannot be granted before another client is gone from that lock:
"held by" (it holds the lock) or "behind" (it waits ahead in the lock's queue). The walk is
bounded; a note says when it stopped short. Exit code 0 whatever it shows (1: an error).`,
    )
    .action(async (name: string) => {
      const g = context.globals();
      const graph = await context.client(g).waits(name);
      console.log(g.json ? JSON.stringify(waitsJson(graph)) : describeWaits(graph));
    });
}
