/**
 * The sweeper's run: everything due by now in the due index, minute by
 * minute from where the last run finished (never a Scan: the cost follows
 * what is due, not what is alive):
 * - a session past its expiry ends and its locks go to their next waiters
 *   (Sessions.expire);
 * - a waiter past its deadline: its lock's queue is served, which drops it
 *   and every other timed-out waiter a serve reads, and hands a lapsed lock
 *   on (the backstop for a lost expiry timer); a waiter further back than
 *   that is ended on its own;
 * - a WebSocket connection past API Gateway's 2-hour limit whose
 *   $disconnect never came: its waiters leave, its ephemeral locks go.
 *
 * Nothing due is ever abandoned. An item that fails is moved to a later
 * minute with a backoff (core/sweep.ts), counted and logged, and retried
 * there for as long as it fails; only if even that move fails does the
 * cursor stay on the item's minute, so the next run reads it again. Safe
 * to run twice at once, and a run that dies midway is finished by the next:
 * every step is a conditional write, and the cursor only moves past a
 * minute once all of it is done or moved on.
 */
import { lt, missing, or, set } from '../core/expr';
import { type ItemRef, refText, SWEEPER_REF } from '../core/items';
import { retryLaterWrite, sweepBackoffMs, sweepFailures } from '../core/sweep';
import { describeError, log } from '../shared/log';
import { metric } from '../shared/metrics';
import { minuteOf } from '../store/table';
import type { Clock } from './clock';
import type { Connections } from './connections';
import { type Handoff, type ServeResult, servedThrough } from './handoff';
import type { Sessions } from './sessions';
import type { Storage } from './storage';

/** How far back a sweeper that never ran looks. */
const FIRST_SWEEP_LOOKBACK_MINUTES = 60;
/**
 * Minutes before the cursor read again on every run: an item is always
 * written due in the future, but the writer's clock may trail the
 * sweeper's by a little.
 */
const REREAD_MINUTES = 2;
/** At most this many minutes per run, so a run that starts far behind still ends well within its timeout. */
const MAX_MINUTES_PER_RUN = 120;
/** Items handled at once: each is a few sequential requests, independent of the others. */
const SWEEP_CONCURRENCY = 8;
const CURSOR = 'swept_to';

/** Runs `task` for every item, at most `limit` at once; returns the items that failed, with their errors. */
async function eachAtMost<T>(limit: number, items: readonly T[], task: (item: T) => Promise<void>) {
  let next = 0;
  const failed: { item: T; error: unknown }[] = [];
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const item = items[next++] as T;
        await task(item).catch((error: unknown) => failed.push({ item, error }));
      }
    }),
  );
  return failed;
}

export interface SweepReport {
  /** Minute buckets of the due index read. */
  readonly minutes: number;
  readonly expired: number;
  readonly locksReleased: number;
  /** Locks whose queue was served for a waiter past its deadline. */
  readonly queuesServed: number;
  /** Waits past their deadline ended one by one: further back in their queue than a serve reads. */
  readonly waitsEnded: number;
  readonly connectionsClosed: number;
  /** Items that failed and were moved to a later minute to be retried. */
  readonly retried: number;
  /** Whether the cursor is still behind the current minute (a long backlog, or a failure it could not move). */
  readonly behind: boolean;
}

export class Sweeper {
  constructor(
    private readonly storage: Storage,
    private readonly sessions: Sessions,
    private readonly handoff: Handoff,
    private readonly connections: Connections,
    private readonly clock: Clock,
  ) {}

  async sweep(): Promise<SweepReport> {
    const now = this.clock.now();
    const current = minuteOf(now);
    const cursor = (await this.storage.read(SWEEPER_REF))?.[CURSOR];
    const from =
      typeof cursor === 'number' ? cursor - REREAD_MINUTES : current - FIRST_SWEEP_LOOKBACK_MINUTES;
    const last = Math.min(current, from + MAX_MINUTES_PER_RUN);
    const counts = { expired: 0, locksReleased: 0, waitsEnded: 0, connectionsClosed: 0, retried: 0 };
    /** Each lock's serve in this run, by lock: due waiters of one lock share it. */
    const served = new Map<string, Promise<ServeResult>>();
    let holding = false; // a minute with an item that could not even be moved holds the cursor there
    let doneTo = typeof cursor === 'number' ? cursor : from; // the first minute not known to be done
    let oldest: number | undefined; // the first minute with something due (SweeperLag)
    for (let minute = from; minute <= last; minute++) {
      const due = await this.storage.dueIn(minute, now);
      if (due.length > 0) oldest ??= minute;
      const failed = await eachAtMost(SWEEP_CONCURRENCY, due, async (ref) => {
        if (ref.kind === 'session') {
          const released = await this.sessions.expire(ref.session, now);
          if (released === undefined) return;
          counts.expired++;
          counts.locksReleased += released;
        } else if (ref.kind === 'waiter') {
          // One serve per lock; its other due waiters wait for it (their leaves would race it).
          const serving = served.get(ref.lock) ?? this.handoff.serve(ref.lock);
          served.set(ref.lock, serving);
          // Read by the serve: ended by it if still queued. Further back (SERVE_READS): ended here.
          if (servedThrough(await serving, ref.order)) return;
          if (await this.handoff.endOverdue(ref.lock, ref.order, now)) counts.waitsEnded++;
        } else if (ref.kind === 'connection') {
          counts.locksReleased += (await this.connections.closed(ref.connection)).locksReleased;
          counts.connectionsClosed++;
        }
      });
      for (const { item, error } of failed) {
        if (item.kind === 'waiter') served.delete(item.lock);
        if (await this.retryLater(item, now, error)) counts.retried++;
        else holding = true;
      }
      // A past minute is done once everything in it is done or moved on; the current one may still fill.
      if (!holding && minute < current) doneTo = Math.max(doneTo, minute + 1);
    }
    if (doneTo !== cursor) await this.advance(doneTo);
    // How long the oldest item found had been due, to the minute (0: nothing was due).
    metric('SweeperLag', oldest === undefined ? 0 : Math.max(0, now - oldest * 60_000));
    return {
      minutes: last - from + 1,
      queuesServed: served.size,
      ...counts,
      behind: holding || last < current,
    };
  }

  /** Moves a failing item to a later minute; false if that failed too (the cursor then waits for it). */
  private async retryLater(ref: ItemRef, now: number, error: unknown): Promise<boolean> {
    try {
      const seen = await this.storage.read(ref);
      if (!seen) return true; // gone meanwhile: nothing left to do
      const failures = sweepFailures(seen) + 1;
      const moved = await this.storage.write(ref, retryLaterWrite(ref, seen, now));
      log('error', 'sweeper: an item failed; it is retried later', {
        item: refText(ref),
        failures,
        retry_in_ms: moved.ok ? sweepBackoffMs(failures - 1) : 0,
        metric: 'SweepItemFailed',
        ...describeError(error),
      });
      return true;
    } catch (moveError) {
      log('error', 'sweeper: an item failed and could not be rescheduled; the next run reads it again', {
        item: refText(ref),
        ...describeError(moveError),
      });
      return false;
    }
  }

  /** Moves the cursor forward to `minute` (never back: two sweepers may race). */
  private async advance(minute: number): Promise<void> {
    await this.storage.write(SWEEPER_REF, {
      condition: or(missing(CURSOR), lt(CURSOR, minute)),
      update: [set(CURSOR, minute)],
    });
  }
}
