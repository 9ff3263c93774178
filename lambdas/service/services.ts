/**
 * The services wired together from their ports. The functions' composition
 * root (shared/deps.ts) passes the AWS adapters; the simulation passes the
 * in-memory storage, a virtual clock and fault-injecting fakes. Nothing
 * else builds services, so both run exactly the same code.
 */

import { DEADLOCK_SEARCH, type SearchBounds } from '../core/deadlock';
import { DEFAULT_LIMITS, type ServiceLimits } from '../core/wire';
import type { Clock } from './clock';
import { Connections } from './connections';
import { Deadlocks } from './deadlocks';
import { Handoff } from './handoff';
import { HttpWaits } from './http-waits';
import { LockService } from './lock-service';
import { LockTimers } from './lock-timers';
import { Notifier } from './notifier';
import { Paths } from './paths';
import type { Pusher } from './push';
import type { Doorbell } from './relay';
import { SessionAdmin } from './session-admin';
import { Sessions } from './sessions';
import type { Storage } from './storage';
import { Sweeper } from './sweeper';
import { Timekeeper } from './timekeeper';
import type { Timers } from './timers';

export interface Ports {
  readonly storage: Storage;
  readonly pusher: Pusher;
  readonly timers: Timers;
  readonly clock: Clock;
  /** Fresh unique ids: write stamps, session ids, request ids. */
  readonly ids: () => string;
  /** Limits on waiting; default DEFAULT_LIMITS (core/wire.ts). */
  readonly limits?: ServiceLimits;
  /** Deadlock detection on each wait that joins a queue: its bounds (default DEADLOCK_SEARCH), or null: off. */
  readonly deadlockSearch?: SearchBounds | null;
  /** The namespaces where lock names form a hierarchy (core/hierarchy.ts), each ending with '/'; default none. */
  readonly hierarchicalPrefixes?: readonly string[];
  /** Where HTTP waits are rung (service/relay.ts); without it they only poll. */
  readonly doorbell?: Doorbell;
}

/**
 * What every function uses. The services only some functions use (the sweeper, the timer, the
 * notifier, the session admin routes) are built from these by their own handlers (sweeperOf and
 * the rest below), so the others' bundles leave them out.
 */
export interface CoreServices {
  readonly storage: Storage;
  readonly locks: LockService;
  /** Writes of lock items, with the intentions of their ancestors in hierarchical namespaces. */
  readonly paths: Paths;
  readonly httpWaits: HttpWaits;
  readonly handoff: Handoff;
  readonly sessions: Sessions;
  readonly connections: Connections;
  /** The wait-for graph: a joining wait's cycle, the waits route's view. */
  readonly deadlocks: Deadlocks;
  /** The one expiry timer of each contended lock (core/lock-timer.ts). */
  readonly lockTimers: LockTimers;
  readonly pusher: Pusher;
  readonly timers: Timers;
  readonly clock: Clock;
}

export interface Services extends CoreServices {
  /** An operator's view and end of any session (admin routes). */
  readonly sessionAdmin: SessionAdmin;
  readonly sweeper: Sweeper;
  readonly timekeeper: Timekeeper;
  readonly notifier: Notifier;
}

export function wireCore(ports: Ports): CoreServices {
  const { storage, pusher, timers, clock, ids } = ports;
  const limits = ports.limits ?? DEFAULT_LIMITS;
  const paths = new Paths(storage, clock, ports.hierarchicalPrefixes ?? []);
  const lockTimers = new LockTimers(storage, timers, clock);
  const handoff = new Handoff(storage, paths, pusher, clock, ids, timers, lockTimers);
  const sessions = new Sessions(storage, paths, handoff, clock, ids);
  const connections = new Connections(storage, sessions, handoff, clock);
  const deadlocks = new Deadlocks(
    storage,
    clock,
    ports.deadlockSearch ?? (ports.deadlockSearch === null ? null : DEADLOCK_SEARCH),
    paths.prefixes,
  );
  return {
    storage,
    locks: new LockService(
      storage,
      paths,
      handoff,
      sessions,
      connections,
      clock,
      ids,
      limits,
      deadlocks,
      ports.doorbell,
    ),
    paths,
    deadlocks,
    httpWaits: new HttpWaits(storage, clock, limits.maxHttpWaits),
    handoff,
    sessions,
    connections,
    lockTimers,
    pusher,
    timers,
    clock,
  };
}

export const sessionAdminOf = (s: CoreServices) => new SessionAdmin(s.storage, s.sessions, s.clock);
export const sweeperOf = (s: CoreServices) =>
  new Sweeper(s.storage, s.sessions, s.handoff, s.connections, s.clock);
export const timekeeperOf = (s: CoreServices) => new Timekeeper(s.handoff, s.sessions, s.timers, s.clock);
export const notifierOf = (s: CoreServices) => new Notifier(s.handoff, s.lockTimers, s.timers, s.clock);

/** Every service (tests, the simulation, the benchmarks). */
export function wireServices(ports: Ports): Services {
  const core = wireCore(ports);
  return {
    ...core,
    sessionAdmin: sessionAdminOf(core),
    sweeper: sweeperOf(core),
    timekeeper: timekeeperOf(core),
    notifier: notifierOf(core),
  };
}
