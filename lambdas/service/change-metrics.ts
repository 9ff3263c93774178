/**
 * Metrics read from the table's changes, record by record, as the stream notifier receives them
 * (every write to a lock or session item, with its images before and after): what a grant lasted
 * (HoldDuration), leases that ended unreleased (LeasesLapsed), how long a freed lock with waiters
 * stayed free (HandoffLatency), lock-delays begun (LockDelays), and sessions opened, closed and
 * expired. Read here, they cost the request path nothing: a release's write returns the item
 * after it, which no longer says when the grant began; the stream's old image does.
 *
 * A lapse writes nothing, so it is counted when the next write replaces the lapsed grant (a grant,
 * a handoff) or TTL deletes the item. A stream batch delivered twice (a retry) counts twice.
 */
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import type { Item } from '../core/expr';
import { LockAttr } from '../core/lock';
import { SessionAttr } from '../core/session';
import { metric } from '../shared/metrics';
import { refOfKey } from '../store/table';
import type { StreamRecord } from './stream-changes';

/** The sessions of WebSocket connections (`ephemeral` locks) are the service's own, not clients'. */
const CONNECTION_SESSION_PREFIX = 'conn-';

const image = (raw: Record<string, unknown> | undefined): Item | undefined =>
  raw ? (unmarshall(raw as Record<string, AttributeValue>) as Item) : undefined;

const num = (item: Item | undefined, attr: string): number | undefined => {
  const value = item?.[attr];
  return typeof value === 'number' ? value : undefined;
};

const held = (item: Item | undefined): boolean => typeof item?.[LockAttr.holder] === 'string';

/** One write to a lock item. */
export function countLockChange(before: Item | undefined, after: Item | undefined): void {
  const grantEnded =
    held(before) && (!held(after) || num(after, LockAttr.fence) !== num(before, LockAttr.fence));
  // When the grant before this write ended (a release, or its lease's end), if it did.
  let endedAt: number | undefined;
  if (grantEnded) {
    const acquiredAt = num(before, LockAttr.acquiredAt);
    // Released by this write: freed (`released_at` set), or handed to the next waiter in the same
    // write (held again, with a new `released_at`).
    const releasedAt =
      num(after, LockAttr.releasedAt) !== num(before, LockAttr.releasedAt) || !held(after)
        ? num(after, LockAttr.releasedAt)
        : undefined;
    if (releasedAt !== undefined) endedAt = releasedAt;
    else {
      // Replaced by another grant, or deleted, without a release: its lease had ended.
      endedAt = num(before, LockAttr.expiresAt);
      if (endedAt !== undefined) metric('LeasesLapsed', 1);
    }
    if (acquiredAt !== undefined && endedAt !== undefined) metric('HoldDuration', endedAt - acquiredAt);
  } else if (!held(before)) endedAt = num(before, LockAttr.releasedAt);
  // A new grant to the head of a queue: from when the lock was given up (or its lock-delay ended).
  const newGrant = held(after) && (!held(before) || grantEnded);
  if (newGrant && (num(before, LockAttr.queued) ?? 0) > 0 && endedAt !== undefined) {
    const freedAt = Math.max(endedAt, num(before, LockAttr.blockedUntil) ?? 0);
    const grantedAt = num(after, LockAttr.acquiredAt);
    if (grantedAt !== undefined && grantedAt >= freedAt) metric('HandoffLatency', grantedAt - freedAt);
  }
  const delay = num(after, LockAttr.blockedUntil);
  if (delay !== undefined && !held(after) && delay !== num(before, LockAttr.blockedUntil))
    metric('LockDelays', 1);
}

/** One write to a session item. */
export function countSessionChange(id: string, before: Item | undefined, after: Item | undefined): void {
  if (id.startsWith(CONNECTION_SESSION_PREFIX)) return;
  if (!before && after) metric('SessionsOpened', 1);
  if (before?.[SessionAttr.endedAt] === undefined && after?.[SessionAttr.endedAt] !== undefined) {
    const reason = after[SessionAttr.endReason];
    if (reason === 'closed' || reason === 'ended-by-operator') metric('SessionsClosed', 1);
    else if (reason === 'expired') metric('SessionsExpired', 1);
  }
}

/** Counts what each record of a stream batch says happened. */
export function countChanges(records: readonly StreamRecord[]): void {
  for (const record of records) {
    const ref = refOfKey(image(record.dynamodb?.Keys) ?? {});
    const before = image(record.dynamodb?.OldImage);
    const after = image(record.dynamodb?.NewImage);
    if (ref?.kind === 'lock') countLockChange(before, after);
    else if (ref?.kind === 'session') countSessionChange(ref.session, before, after);
  }
}
