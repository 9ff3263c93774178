/**
 * One simulated history from a seed: clients of every kind use a few locks
 * while faults are injected, then faults stop and clients wind down, and the
 * world runs on (timers, stream, sweeper, TTL) until everything must have
 * settled. The checker watches throughout; the first violation ends the
 * history with its seed and the events that led to it.
 */

import { DEFAULT_LIMITS } from '../../lambdas/core/wire';
import { Checker, Trace } from './checks';
import {
  type Client,
  HostileClient,
  HttpClient,
  type ModeMix,
  NestingClient,
  SessionClient,
  WsClient,
} from './clients';
import { Rng, Scheduler } from './scheduler';
import { FAULTS, NO_FAULTS, TIMELY, World } from './world';

export interface SimulationOptions {
  /** Virtual time with faults and clients at work. @default 60000 */
  readonly activeMs?: number;
  /** Virtual time after faults stop, for everything to settle (past API Gateway's 2-hour connection limit). @default 2.2 h */
  readonly settleMs?: number;
  /** Turns before a history is declared stuck. @default 2000000 */
  readonly maxTurns?: number;
  /**
   * Chance that an acquire asks for shared mode: 0 for exclusive-only histories. @default chosen by
   * the seed: 0 in about a third of histories (exactly the histories from before shared mode), else
   * 0.3, 0.5 or 0.7
   */
  readonly shared?: number;
  /**
   * The locks form a hierarchy (`sim/a`, `sim/a/b`, `sim/a/b/c` in the namespace `sim/`), checked
   * across levels. @default chosen by the seed, from a random source of its own: about a third
   */
  readonly tree?: boolean;
}

export interface SimulationResult {
  readonly seed: number;
  readonly ok: boolean;
  readonly violations: readonly string[];
  readonly trace: string;
  readonly turns: number;
  readonly stats: Record<string, number>;
}

const START = 1_800_000_000_000;
/**
 * Far shorter than production's day, so that TTL collects items within a history (and a lock item
 * deleted under its fencing counter shows): still longer than any lease or wait the clients use.
 */
const RETENTION_SECONDS = 30;
const FLAT = ['sim/a', 'sim/b', 'sim/c'];
const TREE = ['sim/a', 'sim/a/b', 'sim/a/b/c'];
const TEAM_A = 'arn:aws:sts::111122223333:assumed-role/team-a';
const TEAM_B = 'arn:aws:iam::111122223333:user/team-b';
const MALLORY = 'arn:aws:iam::111122223333:user/mallory';

export async function simulate(seed: number, options: SimulationOptions = {}): Promise<SimulationResult> {
  // Hierarchical histories, from a random source of their own (the others are as they were).
  const tree = options.tree ?? new Rng((seed * 0x27d4eb2d) ^ 0x165667b1).chance(1 / 3);
  const LOCKS = tree ? TREE : FLAT;
  const rng = new Rng(seed);
  const sched = new Scheduler(rng, START);
  // Some histories run under tight limits, so refusals (queue full, too many waiters, no HTTP-wait
  // slot) happen mid-flight and the counters behind them are exercised.
  const tight = rng.chance(0.3);
  const limits = tight
    ? {
        ...DEFAULT_LIMITS,
        maxQueueLength: rng.int(1, 3),
        maxWaitersPerConnection: 1,
        maxWaitersPerPrincipal: rng.int(1, 40),
        maxHttpWaits: rng.int(1, 3),
      }
    : DEFAULT_LIMITS;
  // Function instances the clients' calls land on: one in about half the histories, so that what an
  // instance remembers between calls (a contended lock's queue: core/known-queue.ts) is used often.
  const instanceCount = new Rng((seed * 0x2545f491) ^ 0x9e3779b9).pick([1, 1, 2, 3]);
  // A relay per instance, so HTTP waits are rung (service/relay.ts), in most histories; in the rest
  // HTTP waits only poll, as they do until an instance's relay is open.
  const relays = new Rng((seed * 0x27d4eb2d) ^ 0x165667b1).chance(0.75);
  const world = new World(sched, rng, RETENTION_SECONDS, limits, tree ? ['sim/'] : [], instanceCount, relays);
  const trace = new Trace(sched);
  const checker = new Checker(world.memory, sched, trace, RETENTION_SECONDS, tree ? TREE : undefined);
  world.memory.onCommit = checker.onCommit;
  world.onTrace = (line) => trace.add(line);
  // How many of each kind: varies by seed, at least one of each.
  // Principals: two teams whose clients share a role each, and a hostile one.
  const team = () => (rng.chance(0.5) ? TEAM_A : TEAM_B);
  const clients: Client[] = [
    ...Array.from(
      { length: rng.int(1, 3) },
      (_, i) => new HttpClient(`http${i}`, team(), world, checker, trace, LOCKS),
    ),
    ...Array.from(
      { length: rng.int(1, 3) },
      (_, i) => new WsClient(`ws${i}`, team(), world, checker, trace, LOCKS),
    ),
    ...Array.from(
      { length: rng.int(1, 2) },
      (_, i) => new SessionClient(`sess${i}`, team(), world, checker, trace, LOCKS),
    ),
    ...(rng.chance(0.7) ? [new HostileClient('mallory', MALLORY, world, checker, trace, LOCKS)] : []),
  ];
  const mix = modeMix(seed, options.shared, LOCKS);
  // With shared mode, a few more clients (from the mix's own random source), so that readers queue
  // behind writers and runs of them are handed over together.
  if (mix.shared > 0)
    clients.push(
      ...Array.from({ length: mix.rng.int(0, 3) }, (_, i) =>
        mix.rng.chance(0.5)
          ? new HttpClient(`rd-http${i}`, mix.rng.chance(0.5) ? TEAM_A : TEAM_B, world, checker, trace, LOCKS)
          : new WsClient(`rd-ws${i}`, mix.rng.chance(0.5) ? TEAM_A : TEAM_B, world, checker, trace, LOCKS),
      ),
    );
  // In most histories (by a random source of their own), two clients that take two locks one
  // inside the other in either order: deadlocks the service must refuse, with true cycles.
  const nesting = new Rng((seed * 0x9e3779b1) ^ 0x85ebca6b);
  if (nesting.chance(0.6))
    clients.push(
      ...[0, 1].map(
        (i) =>
          new NestingClient(`nest${i}`, nesting.chance(0.5) ? TEAM_A : TEAM_B, world, checker, trace, LOCKS),
      ),
    );
  for (const client of clients) client.mix = mix;
  const clientErrors: unknown[] = [];
  world.startBackground();
  // A quarter of the flat histories run with only the faults SQS, Lambda and DynamoDB streams do not
  // promise to avoid (duplicates, lost answers, vanished connections): there, a free lock's head
  // waiter must be served promptly (checks.ts PROMPT_MS), by a timer or the notifier.
  const timely = !tree && new Rng((seed * 0x5851f42d) ^ 0x4c957f2d).chance(0.25);
  if (timely) {
    world.faults = TIMELY;
    const watchUntil = START + (options.activeMs ?? 60_000) + 120_000;
    const watch = () => {
      checker.handedOnPromptly(LOCKS);
      if (sched.now() < watchUntil) sched.at(sched.now() + 200, watch);
    };
    sched.at(START + 200, watch);
  } else if (rng.chance(0.3)) world.planOutage(options.activeMs ?? 60_000);
  for (const client of clients) void client.run().catch((error: unknown) => clientErrors.push(error));

  const activeMs = options.activeMs ?? 60_000;
  const stop = () => checker.violations.length > 0 || world.bugs.length > 0 || clientErrors.length > 0;
  const maxTurns = options.maxTurns ?? 2_000_000;
  let finished = await runUntil(sched, START + activeMs, stop, maxTurns);
  if (finished && !stop()) {
    world.faults = NO_FAULTS;
    for (const client of clients) client.active = false;
    finished = await runUntil(
      sched,
      START + activeMs + (options.settleMs ?? 2.2 * 3_600_000),
      stop,
      maxTurns,
    );
    if (finished && !stop()) checker.settled();
  }
  world.stopBackground();
  const violations = [
    ...checker.violations,
    ...world.bugs.map((e) => `bug: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`),
    ...clientErrors.map((e) => `client error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`),
    ...(finished ? [] : [`stuck: more than ${maxTurns} turns`]),
  ];
  return {
    seed,
    ok: violations.length === 0,
    violations,
    trace: trace.tail(),
    turns: sched.turns,
    stats: {
      ...world.stats,
      ...checker.counts,
      clients: clients.length,
      tight: tight ? 1 : 0,
      shared: mix.shared,
      tree: tree ? 1 : 0,
      timely: timely ? 1 : 0,
      instances: instanceCount,
      relays: relays ? 1 : 0,
    },
  };
}

/**
 * Which modes a history's clients ask for, from its own random source (so the main one, and every
 * exclusive-only history, is as it was): each lock a read-write lock or a semaphore of 2 or 3.
 */
export function modeMix(seed: number, shared?: number, locks: readonly string[] = FLAT): ModeMix {
  const rng = new Rng((seed * 0x2545f491) ^ 0x5bd1e995);
  const p = shared ?? (rng.chance(1 / 3) ? 0 : rng.pick([0.3, 0.5, 0.7]));
  const maxHolders = new Map(locks.map((lock) => [lock, rng.pick([undefined, undefined, 2, 3])]));
  return { shared: p, maxHolders, rng };
}

/** Runs the scheduler to `until`, stopping early at the first violation. */
async function runUntil(
  sched: Scheduler,
  until: number,
  stop: () => boolean,
  maxTurns: number,
): Promise<boolean> {
  let stopped = false;
  const finished = await sched.run(until, {
    maxTurns,
    afterTurn: () => {
      if (!stopped && stop()) {
        stopped = true;
      }
    },
    shouldStop: () => stopped,
  });
  return finished;
}

export { FAULTS };
