/**
 * The services wired to a DynamoDB endpoint with pushes and timers that go
 * nowhere: for tests (test/support/dynamo.ts adds the run's DynamoDB Local)
 * and the benchmarks (no vitest there).
 */
import { randomUUID } from 'node:crypto';
import type { SearchBounds } from '../../lambdas/core/deadlock';
import type { AcquireCommand, AcquireOutcome } from '../../lambdas/core/lock';
import type { Clock } from '../../lambdas/service/clock';
import type { Ended } from '../../lambdas/service/lock-service';
import type { Pusher } from '../../lambdas/service/push';
import { wireServices } from '../../lambdas/service/services';
import type { Timers } from '../../lambdas/service/timers';
import { createDocumentClient } from '../../lambdas/store/document-client';
import { DynamoStorage } from '../../lambdas/store/dynamo-storage';
import type { StoreSettings } from '../../lambdas/store/requests';

/** A clock a test moves by hand; sleeps pass at once. */
export const manualClock = (now: () => number): Clock => ({ now, sleep: async () => {} });

const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/** Pushes and timers that go nowhere (tests that need them run the local stack). */
const nowhere = {
  pusher: { push: async () => 'gone' } satisfies Pusher,
  timers: { schedule: async () => {}, scheduleSession: async () => {} } satisfies Timers,
};

/**
 * The services on table `tableName` at `endpoint` (pushes and timers go
 * nowhere unless given), and `acquire`: an acquire without waiting, answered
 * with its outcome.
 */
export interface ServicesOptions {
  readonly endpoint: string;
  readonly clock?: Clock;
  /** Told of every DynamoDB request, by command name (retries included). */
  readonly counter?: { readonly record: (command: string) => void };
  readonly pusher?: Pusher;
  readonly timers?: Timers;
  readonly deadlineMs?: number;
  readonly maxAttempts?: number;
  /** Deadlock detection's bounds on each join (default the service's), or null: off. */
  readonly deadlockSearch?: SearchBounds | null;
  /** Namespaces where lock names form a hierarchy (default none). */
  readonly hierarchicalPrefixes?: readonly string[];
}

export function servicesOn(tableName: string, options: ServicesOptions) {
  const settings: StoreSettings = {
    tableName,
    retentionSeconds: 86_400,
    ...(options.deadlineMs === undefined ? {} : { deadlineMs: options.deadlineMs }),
  };
  const db = createDocumentClient({
    endpoint: options.endpoint,
    ...(options.counter ? { onCall: options.counter.record } : {}),
    ...(options.maxAttempts === undefined ? {} : { maxAttempts: options.maxAttempts }),
  });
  const storage = new DynamoStorage(db, settings);
  const services = wireServices({
    storage,
    pusher: options.pusher ?? nowhere.pusher,
    timers: options.timers ?? nowhere.timers,
    clock: options.clock ?? realClock,
    ids: randomUUID,
    ...(options.deadlockSearch === undefined ? {} : { deadlockSearch: options.deadlockSearch }),
    ...(options.hierarchicalPrefixes ? { hierarchicalPrefixes: options.hierarchicalPrefixes } : {}),
  });
  const acquire = async (cmd: AcquireCommand): Promise<AcquireOutcome | Ended> => {
    const result = await services.locks.acquire(cmd);
    if (result.kind !== 'done') throw new Error('an acquire without a wait was queued');
    return result.outcome;
  };
  return { db, settings, storage, services, acquire };
}
