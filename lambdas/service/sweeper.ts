/**
 * The sweeper's run: everything due by now in the due index, minute by
 * minute from where the last run finished (never a Scan: the cost follows
 * what is due, not what is alive):
 * - a session past its deadline and grace ends and its locks go to their
 *   next waiters (Sessions.expire);
 * - a waiter past its deadline: its lock's queue is served, which drops it
 *   and every other timed-out waiter, and hands a lapsed lock on (the
 *   backstop for a lost expiry timer);
 * - a WebSocket connection past API Gateway's 2-hour limit whose
 *   $disconnect never came: its waiters leave, its ephemeral locks go.
 * Safe to run twice at once, and a run that dies midway is finished by the
 * next: every step is a conditional write, and the cursor only moves past
 * a minute once all of it is done.
 */
import { describeError, log } from '../shared/log';
import type { SessionStore } from '../store/session-store';
import { minuteOf } from '../store/table';
import type { Handoff } from './handoff';
import type { Sessions } from './sessions';

/** How far back a sweeper that never ran looks. */
const FIRST_SWEEP_LOOKBACK_MINUTES = 60;
/**
 * Minutes before the cursor read again on every run: an item is always
 * written due in the future, but the writer's clock may trail the
 * sweeper's by a little.
 */
const REREAD_MINUTES = 2;
/** Items handled at once: each is a few sequential requests, independent of the others. */
const SWEEP_CONCURRENCY = 8;

/** How far behind a failing item may hold the cursor. */
const MAX_LAG_MINUTES = 60;

/** Runs `task` for every item, at most `limit` at once; returns the errors of those that failed. */
async function eachAtMost<T>(limit: number, items: readonly T[], task: (item: T) => Promise<void>) {
  let next = 0;
  const errors: unknown[] = [];
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const item = items[next++] as T;
        await task(item).catch((error: unknown) => errors.push(error));
      }
    }),
  );
  return errors;
}

export interface SweepReport {
  /** Minute buckets of the due index read. */
  readonly minutes: number;
  readonly expired: number;
  readonly locksReleased: number;
  /** Locks whose queue was served for a waiter past its deadline. */
  readonly queuesServed: number;
  readonly connectionsClosed: number;
}

export class Sweeper {
  constructor(
    private readonly store: SessionStore,
    private readonly sessions: Sessions,
    private readonly handoff: Handoff,
    private readonly clock: () => number = Date.now,
  ) {}

  async sweep(): Promise<SweepReport> {
    const now = this.clock();
    const current = minuteOf(now);
    const cursor = await this.store.sweptTo();
    const from = cursor === undefined ? current - FIRST_SWEEP_LOOKBACK_MINUTES : cursor - REREAD_MINUTES;
    let expired = 0;
    let locksReleased = 0;
    const served = new Set<string>();
    let connectionsClosed = 0;
    const failures: unknown[] = [];
    let holding = false; // a minute with a failure holds the cursor there, so the next run retries it
    for (let minute = from; minute <= current; minute++) {
      const due = await this.store.dueIn(minute, now);
      const failed = await eachAtMost(SWEEP_CONCURRENCY, due, async (item) => {
        if (item.kind === 'session') {
          const released = await this.sessions.expire(item.id, now);
          if (released === undefined) return;
          expired++;
          locksReleased += released;
        } else if (item.kind === 'waiter') {
          if (served.has(item.lock)) return;
          served.add(item.lock);
          await this.handoff.serve(item.lock);
        } else {
          locksReleased += await this.sessions.endConnection(item.id);
          await this.handoff.forgetConnection(item.id);
          connectionsClosed++;
        }
      });
      failures.push(...failed);
      // ...but not forever: an item that keeps failing is logged by every run, and left behind after
      // MAX_LAG_MINUTES so that the sweeper's reads do not grow without end.
      if (failed.length && current - minute < MAX_LAG_MINUTES) holding = true;
      // A past minute is done once everything in it is; the current one may still fill.
      if (!holding && minute < current) await this.store.advanceSweptTo(minute + 1);
    }
    if (failures.length) {
      log('error', 'sweeper: some items failed; the next run retries them', {
        failures: failures.length,
        ...describeError(failures[0]),
      });
      throw failures[0];
    }
    return {
      minutes: current - from + 1,
      expired,
      locksReleased,
      queuesServed: served.size,
      connectionsClosed,
    };
  }
}
