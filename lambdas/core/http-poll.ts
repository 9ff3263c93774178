/**
 * When an HTTP wait looks again. An HTTP waiter has no push: the waiting
 * function polls until its request is granted or ended. Each poll is one
 * strongly consistent read of the lock's partition (the lock item and the
 * first waiters: service/lock-service.ts), so the waiter sees its place in
 * the queue, whether the lock moved since its last look, and when the
 * current lease ends. These rules turn that into the next poll:
 *
 * - while the lock moves (a new grant, a release) the head polls fast, each
 *   place further back half as often; while the same grant stays, every
 *   waiter backs off, far waiters further;
 * - the head of the queue wakes right after the lease (or lock-delay) ends,
 *   not a backoff step later;
 * - the head of a lock left free with waiters serves the queue itself: as
 *   soon as it sees an exclusive lease lapsed (rather than wait for the
 *   expiry timer, up to a second late on AWS), 1 s after a release nobody
 *   served (its releaser, which serves inline, died) or a semaphore's slot
 *   freed by a lapse (a poll cannot tell it from a release). Serving is a
 *   conditional handoff
 *   that any number of callers may race: at worst a refused write (a lapse
 *   is rare, and the timer that races it then finds the lock served);
 * - never past the wait's end.
 */
import type { Item } from './expr';
import { liveEntries } from './holders';
import { blockedUntil, LockAttr, lastFencingToken, liveHolder } from './lock';

/**
 * Until when the lock is held as far as a waiter can tell: the exclusive lease's end, or the first
 * shared lease's end (a slot may free then, or, by the last, the lock); null while only grants held
 * through sessions hold it; undefined when nobody holds it.
 */
function heldUntil(lock: Item | undefined, now: number): number | null | undefined {
  const holder = liveHolder(lock, now);
  if (holder) return holder.held.kind === 'lease' ? holder.held.expiresAt : null;
  const shared = liveEntries(lock, now);
  if (shared.length === 0) return undefined;
  const ends = shared.flatMap((e) => (e.expiresAt === undefined ? [] : [e.expiresAt]));
  return ends.length ? Math.min(...ends) : null;
}

/** The shortest poll interval, while the lock moves (a handoff takes a few DynamoDB writes). */
export const POLL_FAST_MS = 10;
/** The head wakes this long after a lease end (or lock-delay end) to look at the handoff. */
export const POLL_LEASE_END_SLACK_MS = 5;
/**
 * A lease that lapsed this long ago with nobody serving its queue is served by its head waiter
 * (one without a doorbell): at once. (It was 25 ms, to leave a lapse to the expiry timer; but
 * such a head learns of the timer's grant only at its next poll, so that put its grant 27-52 ms
 * after the lease end locally, and on AWS, where the timer can be a second late, only delayed it.
 * A head with a doorbell is rung by the timer's grant: see below.)
 */
export const SELF_SERVE_AFTER_MS = 0;
/**
 * A head with a doorbell leaves a lapse this long to the expiry timer, which fires at the lease
 * end (on AWS its message comes up to a second early and the function sleeps out the rest) and
 * rings it when it grants; it serves the queue itself only if no ring came (a timer late or
 * lost: then its grant is this much later). Serving at once raced the timer: measured locally,
 * the two handoffs conflicted, and the head's refused one put its grant 58-69 ms after the lease
 * end, against 32-45 ms when the timer's grant was the first thing it saw.
 */
export const SELF_SERVE_AFTER_LAPSE_BELLED_MS = 50;
/**
 * A released lock is served by its releaser, inline (a few DynamoDB calls): its head waiter steps
 * in only if that did not happen for this long (the releaser died), so as not to race it.
 */
export const SELF_SERVE_AFTER_RELEASE_MS = 1_000;
/** How many waiters one poll reads (a waiter further back polls slowest and reads its record too). */
export const POLL_QUEUE_LIMIT = 16;

/** The longest interval between polls, by place in the queue (undefined: beyond what one poll reads). */
export const pollCap = (position: number | undefined): number =>
  position === 1 ? 250 : position !== undefined && position <= 3 ? 500 : 1_000;

/** What one poll saw. */
export interface PollSight {
  /** The lock's fencing counter: it moves with every grant. */
  readonly fence: number | undefined;
  /** When the live grant's lease ends; null for a grant held through a session (no lease end); undefined when free. */
  readonly holderUntil: number | null | undefined;
  /** A lease that lapsed with its holder still recorded: when it ended. */
  readonly lapsedAt: number | undefined;
  /** Under lock-delay until then. */
  readonly blockedUntil: number | undefined;
  /** The waiter's 1-based place; undefined when it is not among the waiters read. */
  readonly position: number | undefined;
  /** Whether the waiter is still queued: true, false (gone: granted or ended), or undefined (not among the waiters read, and there are more). */
  readonly present: boolean | undefined;
}

/** What one poll (the lock item and the first waiters, in serving order) says about the waiter with `order`. */
export function sightOf(
  lock: Item | undefined,
  waiters: readonly { readonly order: string }[],
  complete: boolean,
  order: string,
  now: number,
): PollSight {
  const holder = liveHolder(lock, now);
  const index = waiters.findIndex((w) => w.order === order);
  const expiresAt = lock?.[LockAttr.expiresAt];
  return {
    fence: lastFencingToken(lock),
    holderUntil: heldUntil(lock, now),
    lapsedAt:
      !holder && lock?.[LockAttr.holder] !== undefined && typeof expiresAt === 'number' && expiresAt <= now
        ? expiresAt
        : undefined,
    blockedUntil: blockedUntil(lock, now),
    position: index >= 0 ? index + 1 : undefined,
    present: index >= 0 ? true : complete ? false : undefined,
  };
}

/** What the poller remembers between polls. */
export interface PollMemory {
  readonly fence: number | undefined;
  readonly free: boolean;
  /** Since when the lock has been as it is (same grant, or free): the poller backs off from then. */
  readonly since: number;
  /** The fence of a free lock this waiter served itself (it does so once per grant). */
  readonly servedFence?: number | undefined;
}

/** The memory after a poll that saw `sight` at `now`. */
export function track(memory: PollMemory | undefined, sight: PollSight, now: number): PollMemory {
  const free = sight.holderUntil === undefined;
  if (memory && memory.fence === sight.fence && memory.free === free) return memory;
  // A lease that lapsed has been free since its end, not since this poll noticed.
  const since = free && sight.lapsedAt !== undefined ? Math.min(now, sight.lapsedAt) : now;
  return { fence: sight.fence, free, since };
}

export interface PollStep {
  /** Sleep this long before the next poll. */
  readonly delayMs: number;
  /** Serve the queue first (this waiter heads a free lock nobody served). */
  readonly serve: boolean;
}

/**
 * The next step of a poller whose wait ends at `end`. A `belled` waiter is rung when it is granted
 * or ended (service/relay.ts), so it does not poll fast while the lock moves: it polls at its
 * place's cap (a ring lost), and the head still wakes at the lease end, to serve a lapse the
 * expiry timer has not served within SELF_SERVE_AFTER_LAPSE_BELLED_MS.
 */
export function nextPoll(
  sight: PollSight,
  memory: PollMemory,
  now: number,
  end: number,
  belled = false,
): PollStep {
  const left = end - now;
  if (left <= 0) return { delayMs: 0, serve: false };
  const head = sight.position === 1;
  const free = sight.holderUntil === undefined;
  const grantable = free && sight.blockedUntil === undefined;
  const unserved = grantable && memory.servedFence !== sight.fence;
  const grace =
    sight.lapsedAt === undefined
      ? SELF_SERVE_AFTER_RELEASE_MS
      : belled
        ? SELF_SERVE_AFTER_LAPSE_BELLED_MS
        : SELF_SERVE_AFTER_MS;
  if (head && unserved && now - memory.since >= grace) return { delayMs: 0, serve: true };
  const quiet = Math.max(0, now - memory.since);
  const cap = pollCap(sight.position);
  // Fast while the lock moves, for the head; each place further back twice as slow (it needs a
  // handoff more before it can be granted); then back off as the lock stays as it is.
  const moving = belled ? cap : POLL_FAST_MS * 2 ** ((sight.position ?? POLL_QUEUE_LIMIT) - 1);
  let delay = Math.min(cap, Math.max(moving, quiet / 2));
  if (head) {
    const changeAt = typeof sight.holderUntil === 'number' ? sight.holderUntil : sight.blockedUntil;
    if (changeAt !== undefined) delay = Math.min(delay, changeAt - now + POLL_LEASE_END_SLACK_MS);
    if (unserved) delay = Math.min(delay, memory.since + grace - now);
  }
  return { delayMs: Math.min(left, Math.max(1, delay)), serve: false };
}
