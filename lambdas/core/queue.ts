/**
 * The wait queue: who is next for a lock, and the conditional writes that
 * put a waiter in the queue, take it out, or hand it the lock.
 *
 * A waiter is an item beside its lock item (same partition) whose sort key
 * orders the queue: priority first (higher first), then arrival (earlier
 * first). The lock item counts its waiters (`queued`). A free lock with
 * waiters is promised to the head of the queue: a plain acquire cannot take
 * it (see `grantWrite` in lock.ts), only a handoff can. Every move is one
 * transaction over the lock item and one waiter item, so the count and the
 * queue never disagree, and the grant is conditional on the lock being free
 * and carrying the fencing token the server read: two handoffs racing for
 * the same lock cannot both win.
 *
 * The queue is a list of exclusive waiters today; shared mode will grant a
 * run of readers at the head together, which this order already allows.
 */
import { and, type Condition, eq, exists, type Item, missing, ne, or, set, type Update } from './expr';
import {
  blockedUntil,
  fenceFloor,
  type Grant,
  grantFields,
  grantRequestOf,
  heldBy,
  isBlockedAt,
  isFreeAt,
  isGrantableAt,
  isHeldAt,
  LockAttr,
  lastFencingToken,
  liveHolder,
  notAlreadyServed,
  queuedCount,
  releaseFields,
  someoneQueued,
  withOptional,
} from './lock';
import { sessionTakesLocks } from './session';

export const PRIORITY = { min: -100, max: 100, default: 0 } as const;

/** Attribute names of a waiter item. */
export const WaitAttr = {
  name: 'lock_name',
  client: 'client_id',
  ttlMs: 'ttl_ms',
  requestId: 'request_id',
  /** requestKey(client, request): the lock's grant_request once this waiter is served. */
  requestKey: 'request_key',
  /** When the waiter gives up, ms on the server's clock. */
  deadline: 'deadline',
  priority: 'priority',
  arrivedAt: 'arrived_at',
  /** The WebSocket connection to push the grant to; absent for an HTTP waiter (it polls). */
  connection: 'connection_id',
  /** The session the grant will be tied to, if any (see session.ts). */
  session: 'session_id',
} as const;
const W = WaitAttr;

export interface Waiter {
  readonly lock: string;
  /** Sorts in serving order within the lock's queue. */
  readonly order: string;
  readonly clientId: string;
  readonly ttlMs: number;
  readonly requestId: string;
  readonly requestKey: string;
  readonly deadline: number;
  readonly priority: number;
  readonly arrivedAt: number;
  readonly connectionId: string | undefined;
  readonly sessionId?: string | undefined;
}

/**
 * Serving order as a string: priority inverted (so higher sorts first), then
 * arrival time on the server's clock, then a random tie-breaker. FIFO holds
 * to the precision of the servers' clocks (AWS Time Sync: well under a ms).
 */
export function queueOrder(priority: number, arrivedAt: number, nonce: string): string {
  if (!Number.isInteger(priority) || priority < PRIORITY.min || priority > PRIORITY.max)
    throw new RangeError(`priority must be an integer from ${PRIORITY.min} to ${PRIORITY.max}`);
  const inverted = String(PRIORITY.max - priority).padStart(3, '0');
  return `${inverted}#${String(Math.floor(arrivedAt)).padStart(15, '0')}#${nonce}`;
}

export function waiterItem(w: Waiter): Record<string, string | number> {
  return {
    [W.name]: w.lock,
    [W.client]: w.clientId,
    [W.ttlMs]: w.ttlMs,
    [W.requestId]: w.requestId,
    [W.requestKey]: w.requestKey,
    [W.deadline]: w.deadline,
    [W.priority]: w.priority,
    [W.arrivedAt]: w.arrivedAt,
    ...(w.connectionId === undefined ? {} : { [W.connection]: w.connectionId }),
    ...(w.sessionId === undefined ? {} : { [W.session]: w.sessionId }),
  };
}

export function waiterOf(order: string, item: Item): Waiter {
  const n = (a: string) => (typeof item[a] === 'number' ? (item[a] as number) : 0);
  const s = (a: string) => (typeof item[a] === 'string' ? (item[a] as string) : '');
  const connection = item[W.connection];
  const session = item[W.session];
  return {
    lock: s(W.name),
    order,
    clientId: s(W.client),
    ttlMs: n(W.ttlMs),
    requestId: s(W.requestId),
    requestKey: s(W.requestKey),
    deadline: n(W.deadline),
    priority: n(W.priority),
    arrivedAt: n(W.arrivedAt),
    connectionId: typeof connection === 'string' ? connection : undefined,
    ...(typeof session === 'string' ? { sessionId: session } : {}),
  };
}

/**
 * One part of a transaction: a conditional update of the lock or a waiter
 * item, or a conditional delete; for a grant tied to a session, a check
 * that the session is live and the record that it took this lock.
 */
export type Step =
  | { readonly target: 'session'; readonly sessionId: string; readonly condition: Condition }
  | { readonly target: 'session-lock'; readonly sessionId: string }
  | { readonly target: 'lock'; readonly condition: Condition; readonly update: Update }
  | {
      readonly target: 'waiter';
      readonly order: string;
      readonly condition: Condition;
      readonly update: Update;
    }
  | {
      readonly target: 'waiter';
      readonly order: string;
      readonly condition: Condition;
      readonly delete: true;
    };

const waiterPresent = exists(W.client);

/**
 * Joins the queue, only while the lock cannot be granted at once (held by
 * someone else, or promised to earlier waiters) and this request was not
 * already served. When it fails the caller tries a plain acquire instead.
 */
export function enqueueSteps(w: Waiter, now: number): Step[] {
  const notMineAlready = or(isFreeAt(now), ne(LockAttr.holder, w.clientId));
  return [
    {
      target: 'lock',
      condition: withOptional(
        or(isHeldAt(now), isBlockedAt(now), someoneQueued),
        notMineAlready,
        notAlreadyServed(w.requestKey),
      ),
      update: [set(LockAttr.name, w.lock), { kind: 'add', attr: LockAttr.queued, by: 1, initial: 0 }],
    },
    {
      target: 'waiter',
      order: w.order,
      condition: missing(W.client),
      update: Object.entries(waiterItem(w)).map(([attr, value]) => set(attr, value)),
    },
  ];
}

/** Leaves the queue (cancelled, timed out, connection gone). */
export function removalSteps(w: Pick<Waiter, 'order'>): Step[] {
  return [
    {
      target: 'lock',
      condition: someoneQueued,
      update: [{ kind: 'add', attr: LockAttr.queued, by: -1, initial: 0 }],
    },
    { target: 'waiter', order: w.order, condition: waiterPresent, delete: true },
  ];
}

/** Removes a waiter item when the lock's count no longer includes it (the count drifted). */
export const orphanRemovalSteps = (w: Pick<Waiter, 'order'>): Step[] => [
  { target: 'waiter', order: w.order, condition: waiterPresent, delete: true },
];

/**
 * Hands a free lock to waiter `w`. The token is computed from the lock item
 * read just before and the write is conditional on it being unchanged, so
 * the grant (fencing token included) is known without reading it back.
 */
export function handoffSteps(
  w: Waiter,
  lock: Item | undefined,
  now: number,
): { steps: Step[]; grant: Grant } {
  const seen = lock?.[LockAttr.fence];
  const fence = typeof seen === 'number' ? seen + 1 : fenceFloor(now) + 1;
  const sameFence = typeof seen === 'number' ? eq(LockAttr.fence, seen) : missing(LockAttr.fence);
  // A grant tied to a session lands only while the session is live, with the record that it took the lock.
  const session: Step[] =
    w.sessionId === undefined
      ? []
      : [
          { target: 'session', sessionId: w.sessionId, condition: sessionTakesLocks(w.clientId, now) },
          { target: 'session-lock', sessionId: w.sessionId },
        ];
  return {
    steps: [
      {
        target: 'lock',
        condition: withOptional(isGrantableAt(now), someoneQueued, sameFence, notAlreadyServed(w.requestKey)),
        update: [
          set(LockAttr.fence, fence),
          ...grantFields(w.lock, w.clientId, w.ttlMs, now, w.requestKey, w.sessionId),
          { kind: 'add', attr: LockAttr.queued, by: -1, initial: 0 },
        ],
      },
      { target: 'waiter', order: w.order, condition: waiterPresent, delete: true },
      ...session,
    ],
    grant: {
      lock: w.lock,
      clientId: w.clientId,
      fencingToken: fence,
      expiresAt: now + w.ttlMs,
      ttlMs: w.ttlMs,
      mode: 'exclusive',
      acquiredAt: now,
      reentry: 1,
    },
  };
}

/** Takes back a grant nobody received (its connection was gone), so the next waiter can be served. */
export function undoGrantWrite(grant: Grant, requestKey: string, now: number) {
  return {
    condition: and(heldBy(grant.clientId, grant.fencingToken), eq(LockAttr.grantRequest, requestKey)),
    update: releaseFields(now),
  };
}

/** Resets a waiter count that no waiter item backs (items deleted by hand), only if it has not moved. */
export function resetCountWrite(seen: number) {
  return { condition: eq(LockAttr.queued, seen), update: [set(LockAttr.queued, 0)] };
}

export type ServePlan =
  /** Waiters whose deadline passed go first; then the lock is still held, so nothing to hand off. */
  | {
      readonly kind: 'held';
      readonly expired: readonly Waiter[];
      readonly duplicates: readonly Waiter[];
      readonly expiresAt: number;
      readonly fence: number;
    }
  | {
      readonly kind: 'grant';
      readonly expired: readonly Waiter[];
      readonly duplicates: readonly Waiter[];
      readonly head: Waiter;
    }
  /** The lock is free and nobody (live) waits: the count should be 0. */
  | {
      readonly kind: 'idle';
      readonly expired: readonly Waiter[];
      readonly duplicates: readonly Waiter[];
      readonly countDrift: number;
    };

/**
 * Waiters that repeat a request: the one the lock last served, or one
 * queued earlier. A request is granted at most once, so these only leave.
 * (The service removes a duplicate as soon as it joins, see `duplicateOf`;
 * this catches the one whose writer crashed before it could.)
 */
export function duplicateWaiters(lock: Item | undefined, waiters: readonly Waiter[]): Waiter[] {
  const seen = new Set<string>();
  const served = grantRequestOf(lock);
  if (served !== undefined) seen.add(served);
  const duplicates: Waiter[] = [];
  for (const w of waiters) {
    if (seen.has(w.requestKey)) duplicates.push(w);
    seen.add(w.requestKey);
  }
  return duplicates;
}

/**
 * Whether a waiter that just joined repeats its request, judged from a read
 * made after it joined (the lock item and everyone ahead of it): it does if
 * the lock already served that request or an earlier waiter carries it.
 * Then the newcomer leaves and the caller follows the original instead.
 */
export function duplicateOf(
  me: Pick<Waiter, 'requestKey' | 'order'>,
  lock: Item | undefined,
  ahead: readonly Pick<Waiter, 'requestKey' | 'order'>[],
): 'served' | { readonly order: string } | undefined {
  if (grantRequestOf(lock) === me.requestKey) return 'served';
  const first = ahead.find((w) => w.requestKey === me.requestKey && w.order < me.order);
  return first ? { order: first.order } : undefined;
}

/**
 * What serving a lock's queue means now, from the lock item and its first
 * waiters in order (`complete` when that is the whole queue).
 */
export function planServe(
  lock: Item | undefined,
  waiters: readonly Waiter[],
  now: number,
  complete: boolean,
): ServePlan {
  const duplicates = duplicateWaiters(lock, waiters);
  const live = waiters.filter((w) => !duplicates.includes(w));
  const expired = live.filter((w) => w.deadline <= now);
  const holder = liveHolder(lock, now);
  if (holder)
    return { kind: 'held', expired, duplicates, expiresAt: holder.expiresAt, fence: holder.fencingToken };
  // Under lock-delay it is as good as held until the delay ends (a timer serves it then).
  const blocked = blockedUntil(lock, now);
  if (blocked !== undefined)
    return { kind: 'held', expired, duplicates, expiresAt: blocked, fence: lastFencingToken(lock) ?? 0 };
  const head = live.find((w) => w.deadline > now);
  if (head) return { kind: 'grant', expired, duplicates, head };
  const drift = complete && expired.length === 0 && duplicates.length === 0 ? queuedCount(lock) : 0;
  return { kind: 'idle', expired, duplicates, countDrift: drift };
}

/**
 * One lock's change over a batch of stream records: the image before the
 * batch, the image after it, and `released`: the grant the batch's last
 * release (or take-back) took off the lock, as it was before that record.
 */
export interface LockChangeImages {
  readonly before: Item | undefined;
  readonly released: Item | undefined;
  readonly after: Item | undefined;
}

export type NotifierDecision = {
  readonly serve: boolean;
  readonly timer: { readonly at: number; readonly fence: number } | undefined;
};

/**
 * How long a releaser may take to serve the queue after its release: the
 * longest function timeout (the sweeper's, 60 s). A backup timer watches a
 * release for that long at most.
 */
export const RELEASER_BACKUP_MS = 60_000;

/**
 * What the notifier does about a lock's change (from its stream records):
 * arm an expiry timer when a grant first has waiters behind it, because a
 * lease that lapses writes nothing and so raises no stream record; and
 * serve the queue when the lock is free with waiters and nobody else will.
 *
 * Somebody else will when the batch took a holder off the lock (a release,
 * a grant taken back, a session's end): that writer serves inline before it
 * answers, and serving here too would only race it and lose. In case it died
 * first, a timer watching the released grant serves the queue at its lease
 * end or within RELEASER_BACKUP_MS, whichever is sooner. And if the batch
 * started with the same grant and waiters already queued, that state
 * already had its server (a timer, or whoever freed the lock).
 */
export function onLockChange({ before, released, after }: LockChangeImages, now: number): NotifierDecision {
  if (!after || queuedCount(after) === 0) return { serve: false, timer: undefined };
  const holder = liveHolder(after, now);
  if (holder) {
    // A lock tied to a session is freed by the session's end (whose writer serves it), not by its lease.
    if (after[LockAttr.session] !== undefined) return { serve: false, timer: undefined };
    const timer = { at: holder.expiresAt, fence: holder.fencingToken };
    return { serve: false, timer: armedBefore(before, after) ? undefined : timer };
  }
  const blocked = blockedUntil(after, now);
  if (blocked !== undefined) {
    // Under lock-delay (a session expired): nobody may serve it before the delay ends, so a timer will.
    const armed =
      before !== undefined &&
      queuedCount(before) > 0 &&
      before[LockAttr.blockedUntil] === after[LockAttr.blockedUntil];
    return { serve: false, timer: armed ? undefined : { at: blocked, fence: lastFencingToken(after) ?? 0 } };
  }
  if (released) return { serve: false, timer: releaseBackup(before, released, now) };
  return { serve: !alreadyWaiting(before, after), timer: undefined };
}

/** The timer that serves a released lock's queue should its releaser die before it does. */
function releaseBackup(before: Item | undefined, released: Item, now: number) {
  const leaseEnd = released[LockAttr.expiresAt];
  const latest = now + RELEASER_BACKUP_MS;
  const at = typeof leaseEnd === 'number' ? Math.min(leaseEnd, latest) : now;
  // The timer armed for that grant's lease end covers it, if it was armed and ends soon enough.
  if (armedBefore(before, released) && typeof leaseEnd === 'number' && leaseEnd <= latest) return undefined;
  return { at, fence: released[LockAttr.fence] as number };
}

/** Whether `before` already showed the grant in `current` with waiters (then its timer was armed). */
const armedBefore = (before: Item | undefined, current: Item) =>
  before !== undefined &&
  queuedCount(before) > 0 &&
  before[LockAttr.holder] !== undefined &&
  before[LockAttr.fence] === current[LockAttr.fence];

/** The batch began with the same grant (or none) and waiters already queued: that state had a server. */
const alreadyWaiting = (before: Item | undefined, after: Item) =>
  before !== undefined &&
  queuedCount(before) > 0 &&
  before[LockAttr.fence] === after[LockAttr.fence] &&
  before[LockAttr.holder] === after[LockAttr.holder];

/** The old image of a record that took a holder off the lock (a release, a take-back, a session end). */
export const tookHolderOff = (old: Item | undefined, current: Item | undefined) =>
  old?.[LockAttr.holder] !== undefined && current?.[LockAttr.holder] === undefined;

/**
 * Whether a timer armed for the grant with token `fence` still has work:
 * the lock carries that token (the lease lapsed, or it was released by a
 * releaser that may have died before serving). Any later grant has a timer
 * of its own, and whoever granted it served the queue.
 */
export const stillWatched = (lock: Item | undefined, fence: number) => lock?.[LockAttr.fence] === fence;
