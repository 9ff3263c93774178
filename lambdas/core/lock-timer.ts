/**
 * One expiry timer per contended lock, not one per grant.
 *
 * A lease that lapses and a wait whose deadline passes write nothing, so
 * nothing in the stream tells the service to act then: a timer must look at
 * the lock by that time. A timer per grant and per waiter meant one SQS
 * message, one function run and one queue read for almost every grant, even
 * though nearly every grant is released long before its lease ends.
 *
 * Instead the lock item records when its timer looks next (`timer_at`). A
 * notifier or timer that needs a look by time `by` first asks whether the
 * recorded timer covers it: due no later than `by`, and far enough ahead
 * that it cannot have read the lock yet. Only if not does it send a timer
 * for `by` and then record it, with a write that holds only while the lock
 * is still uncovered (so of two racing writers the later one finds it
 * covered and stops). Whoever serves the queue (a timer that fired, a
 * release, the notifier) makes sure of the next look the same way: the
 * lease now holding the lock, or the first deadline left. The message goes
 * out before the write: a recorded time always has a message behind it (a
 * message whose write was refused fires, serves, and finds itself
 * covered). Handoffs never touch `timer_at`, so a busy lock's handoffs cost
 * no timer at all: its timer fires about once per lease.
 */
import { and, gt, type Item, le, missing, or, set } from './expr';
import type { ItemWrite } from './items';
import { LockAttr } from './lock';

/** The lock item's attribute: when its timer looks next, ms on the server's clock. */
export const TIMER_AT = 'timer_at';

/**
 * A timer due within this of now may already have read the lock (two
 * functions' clocks may differ a little), so it covers nothing written
 * now: whoever needs a look arms one of its own.
 */
export const TIMER_MARGIN_MS = 250;

/** When the lock's recorded timer looks next, if it has one. */
export function timerAt(lock: Item | undefined): number | undefined {
  const at = lock?.[TIMER_AT];
  return typeof at === 'number' ? at : undefined;
}

/** Whether the lock's recorded timer, as `lock` shows it, looks at it by `by` and after everything written by `now`. */
export function timerCovers(lock: Item | undefined, by: number, now: number): boolean {
  const at = timerAt(lock);
  return at !== undefined && at <= by && at > now + TIMER_MARGIN_MS;
}

/**
 * Records a timer sent for `by` as the lock's next look, unless the lock is
 * covered already (as `timerCovers` judges it, at `now`) or nobody waits.
 * Refused: nothing to do (the message sent fires, serves, and stops).
 */
export function armTimerWrite(by: number, now: number): ItemWrite {
  return {
    condition: and(
      gt(LockAttr.queued, 0),
      or(missing(TIMER_AT), le(TIMER_AT, now + TIMER_MARGIN_MS), gt(TIMER_AT, by)),
    ),
    update: [set(TIMER_AT, by)],
  };
}

/** The earliest of some times (undefined ones ignored), or undefined if none. */
export function earliest(...times: readonly (number | undefined)[]): number | undefined {
  let first: number | undefined;
  for (const t of times) if (t !== undefined && (first === undefined || t < first)) first = t;
  return first;
}
