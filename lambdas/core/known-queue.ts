/**
 * A release that hands over without reading the queue. A handoff made on a release reads the lock
 * and the first waiters (one Query), then releases and grants the head in one transaction. The
 * waiters it read behind the head are still the next ones when the grant it made is released,
 * unless one of these happened in between:
 *
 * - a waiter joined ahead of them: only a join above the default priority can (FIFO within a
 *   priority, to the precision of the servers' clocks), and each such join counts itself in the
 *   lock's `reordered`;
 * - a waiter among them left (timed out, cancelled, moved to another connection);
 * - somebody else granted one of them: only possible once the grant made here has ended without
 *   this release (then this release is refused anyway).
 *
 * So the release of exactly that grant may hand the lock to the next waiter read, in one
 * transaction and no read, conditional on: the release as always (held by exactly that grant,
 * live, not re-entered), `reordered` unchanged since the read, and the waiter's item still there
 * for the same connection. A refusal means the queue changed: the caller reads it and hands over
 * the usual way. Which waiter is next is a question of fairness only; who holds the lock is
 * decided by the same conditions as every other grant (core/lock.ts pinnedGrant).
 */
import { and, type Condition, eq, type Item, le, missing, or } from './expr';
import { type Grant, LockAttr, type ReleaseCommand } from './lock';
import { handoffSteps, PRIORITY, type Waiter } from './queue';

/** The waiters one such read remembers (the lock's first this many behind its head). */
export const KNOWN_WAITERS = 15;

export interface KnownQueue {
  /** The token of the grant the last handoff made: only the release of that grant may use `next`. */
  readonly granted: number;
  /** The waiters behind it, in serving order, as read: a prefix of the queue. */
  readonly next: readonly Waiter[];
  /** The lock's `reordered` count as read (undefined: never counted). */
  readonly reordered: number | undefined;
}

/** What a handoff from a read queue leaves known: the waiters read behind the one it granted. */
export function knownAfterRead(lock: Item | undefined, behind: readonly Waiter[], grant: Grant): KnownQueue {
  const reordered = lock?.[LockAttr.reordered];
  return {
    granted: grant.fencingToken,
    // What a grant needs: the locks a waiter holds (deadlock detection, up to 32 names) are not.
    next: behind.slice(0, KNOWN_WAITERS).map((w) => ({ ...w, holding: undefined, enclosing: undefined })),
    reordered: typeof reordered === 'number' ? reordered : undefined,
  };
}

/** What a handoff from a known queue leaves known: the rest of it, behind the new grant. */
export const knownAfterHandoff = (known: KnownQueue, grant: Grant): KnownQueue => ({
  ...known,
  granted: grant.fencingToken,
  next: known.next.slice(1),
});

/**
 * The waiter a release hands the lock to without reading, if `known` allows it: the release is of
 * the grant it was kept for, and its first waiter is one a plain handoff on release would take
 * (exclusive, a lease, deadline not passed: see planRelease), at or above the default priority
 * (a join at the default priority cannot sort ahead of it).
 */
export function knownHead(
  known: KnownQueue | undefined,
  release: ReleaseCommand,
  now: number,
): Waiter | undefined {
  const head = known?.next[0];
  if (
    !known ||
    !head ||
    known.granted !== release.fencingToken ||
    release.mode === 'shared' ||
    head.mode !== 'exclusive' ||
    head.tenure.kind !== 'lease' ||
    head.deadline <= now ||
    head.priority < PRIORITY.default
  )
    return undefined;
  return head;
}

/** Nothing joined ahead since the queue was read, and the lock is not under lock-delay. */
const unchangedAhead = (known: KnownQueue, now: number): Condition =>
  and(
    known.reordered === undefined ? missing(LockAttr.reordered) : eq(LockAttr.reordered, known.reordered),
    or(missing(LockAttr.blockedUntil), le(LockAttr.blockedUntil, now)),
  );

/**
 * The transaction that releases `release` and grants `head` (knownHead): the handoff a release
 * makes after reading the queue, with the lock as the release itself pins it (held by exactly
 * that grant, so its fencing counter is the release's token and no shared entry is there) and
 * the conditions that the queue read earlier still holds.
 */
export function knownHandoffSteps(
  head: Waiter,
  known: KnownQueue,
  release: ReleaseCommand,
  now: number,
  writeId: string,
) {
  const pinned: Item = { [LockAttr.fence]: release.fencingToken };
  return handoffSteps(head, pinned, now, writeId, release, unchangedAhead(known, now));
}
