/**
 * The sweeper's rule for an item that keeps failing: it is never skipped.
 * It moves to a later minute of the due index with an exponential backoff
 * (1, 2, 4 ... 60 minutes) and a count of its failures, so the sweeper's
 * cursor can move on while the item is retried for as long as it fails.
 */
import { add, and, eq, exists, type Item, missing } from './expr';
import type { ItemRef, ItemWrite } from './items';
import { WaitAttr } from './queue';
import { SessionAttr } from './session';

export const SweepAttr = { failures: 'sweep_failures' } as const;

export const MAX_SWEEP_BACKOFF_MS = 60 * 60_000;

/** How long to wait before the next try of an item that failed `failures` times before. */
export const sweepBackoffMs = (failures: number): number =>
  Math.min(MAX_SWEEP_BACKOFF_MS, 60_000 * 2 ** Math.min(failures, 10));

export const sweepFailures = (item: Item | undefined): number => {
  const n = item?.[SweepAttr.failures];
  return typeof n === 'number' ? n : 0;
};

/** An attribute every due item of this kind has while it exists (so a retry never recreates a deleted item). */
const presence = (ref: ItemRef) =>
  ref.kind === 'session' ? SessionAttr.client : ref.kind === 'waiter' ? WaitAttr.client : 'client_id';

/** Moves a failing due item to a later minute, counting the failure; refused if it changed meanwhile. */
export function retryLaterWrite(ref: ItemRef, seen: Item, now: number): ItemWrite {
  const failures = sweepFailures(seen);
  return {
    condition: and(
      exists(presence(ref)),
      failures === 0 ? missing(SweepAttr.failures) : eq(SweepAttr.failures, failures),
    ),
    update: [add(SweepAttr.failures, 1, 0)],
    sweepAt: now + sweepBackoffMs(failures),
  };
}
