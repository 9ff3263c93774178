/**
 * The lock rules: who may hold a lock, lease arithmetic on the server's
 * clock, the fencing-token rule, owner checks and opt-in reentrancy.
 *
 * Every change is a conditional write expressed in `expr.ts`, so the exact
 * condition DynamoDB checks is the one the property tests exercise. Each
 * command is a small protocol: an optimistic first write (the uncontended
 * case: one request, no read), and a rule that explains a refusal from the
 * item DynamoDB returns with it (ALL_OLD), possibly choosing a second write.
 */
import { LatchkeyError } from './errors';
import {
  add,
  and,
  type Condition,
  eq,
  exists,
  gt,
  type Item,
  le,
  missing,
  ne,
  or,
  remove,
  type Scalar,
  set,
  type Write,
} from './expr';

/** Attribute names of a lock item. The store adds keys and housekeeping attributes. */
export const LockAttr = {
  name: 'lock_name',
  holder: 'holder',
  fence: 'fence',
  expiresAt: 'expires_at',
  ttlMs: 'ttl_ms',
  acquiredAt: 'acquired_at',
  reentry: 'reentry',
  mode: 'mode',
  grantRequest: 'grant_request',
  releasedAt: 'released_at',
  /** Id of the last write applied to the item: how a write whose response was lost is recognised. */
  lastWrite: 'last_write',
  /** How many waiters are queued for the lock (see queue.ts). A free lock with waiters goes to the head waiter. */
  queued: 'queued',
  /** The session the grant is tied to (see session.ts): it ends with the session, needing no renewals. */
  session: 'session_id',
  /**
   * Lock-delay (Chubby): after a session expired, its locks stay ungrantable until this time, so a
   * holder that was only cut off cannot overlap the next one. Not set by an explicit release.
   */
  blockedUntil: 'blocked_until',
} as const;
const A = LockAttr;

export type LockMode = 'exclusive';

export interface AcquireCommand {
  readonly name: string;
  readonly clientId: string;
  readonly ttlMs: number;
  readonly requestId?: string | undefined;
  readonly reentrant?: boolean | undefined;
  /** Ties the grant to this session (the caller checked it is the client's and alive). */
  readonly sessionId?: string | undefined;
}

export interface ReleaseCommand {
  readonly name: string;
  readonly clientId: string;
  readonly fencingToken: number;
}

export interface RenewCommand extends ReleaseCommand {
  readonly ttlMs: number;
}

export interface Grant {
  readonly lock: string;
  readonly clientId: string;
  readonly fencingToken: number;
  /** Lease end, milliseconds since the epoch on the server's clock. */
  readonly expiresAt: number;
  readonly ttlMs: number;
  readonly mode: LockMode;
  readonly acquiredAt: number;
  /** How many times the holder has acquired it without releasing (1 unless reentrant). */
  readonly reentry: number;
}

export type AcquireOutcome =
  | {
      readonly acquired: true;
      readonly grant: Grant;
      /** True when this answers a retry of a request that was already granted. */
      readonly replayed: boolean;
      /**
       * Lease left at the server's `now`: what a client adds to its own send time. Less than
       * `ttlMs` for a replay or a re-entry, which keep the lease end they had.
       */
      readonly remainingMs: number;
    }
  | {
      readonly acquired: false;
      readonly lock: string;
      /** The live holder; absent when the lock is free but promised to queued waiters. */
      readonly holder: { readonly clientId: string; readonly expiresAt: number } | undefined;
      /** Waiters queued ahead of anyone who asks now. */
      readonly queued: number;
      readonly retryAfterMs: number;
    };

export interface ReleaseOutcome {
  readonly lock: string;
  /** Reentrant acquisitions still outstanding; 0 means the lock is free. */
  readonly remaining: number;
  /** Waiters queued when it was released: if any and the lock is free, the head is due a handoff. */
  readonly queued: number;
}

export interface RenewOutcome {
  readonly grant: Grant;
}

/**
 * A command as a protocol: try `first`; when its condition fails, `onRefused`
 * reads the item as it was (undefined if absent) and either answers or names
 * the next write to try; when a write succeeds, `onWritten` builds the answer.
 */
export interface Protocol<Outcome> {
  readonly first: Write;
  onRefused(old: Item | undefined): { readonly write: Write } | { readonly outcome: Outcome };
  onWritten(item: Item): Outcome;
}

/**
 * Fencing tokens: each grant stores `if_not_exists(fence, floor(now) * 1000) + 1`.
 * While the item exists the counter grows by one per grant. If the item is
 * deleted (TTL or by hand), the counter restarts from the clock floor, which
 * is above every token issued before: a lock item takes at most ~1,000 writes
 * per second (DynamoDB's per-item limit), so its counter rises by at most one
 * per millisecond, while the floor rises by 1,000 per millisecond. Tokens stay
 * below 2^53 until the year 2255.
 */
export const fenceFloor = (nowMs: number): number => Math.floor(nowMs) * 1000;

/** Client-chosen request ids are scoped to the client that sent them. */
export const requestKey = (clientId: string, requestId: string): string =>
  `${clientId.length}:${clientId}:${requestId}`;

// Named parts of the conditions.
const isUnheld = missing(A.holder);
const leaseLapsedBy = (now: number) => le(A.expiresAt, now);
const leaseLiveAt = (now: number) => gt(A.expiresAt, now);
// A holder without a lease end (an item edited by hand) holds nothing, as liveHolder says.
export const isFreeAt = (now: number) => or(isUnheld, missing(A.expiresAt), leaseLapsedBy(now));
/** The negation of isFreeAt. */
export const isHeldAt = (now: number) => and(exists(A.holder), leaseLiveAt(now));
/** Under lock-delay: free of holders, yet nobody may take it before `blocked_until`. */
export const isBlockedAt = (now: number) => gt(A.blockedUntil, now);
/** Free, and not under lock-delay: what any grant requires. */
export const isGrantableAt = (now: number) =>
  and(isFreeAt(now), or(missing(A.blockedUntil), le(A.blockedUntil, now)));
/** When a lock under lock-delay becomes grantable (undefined when it is not under one at `now`). */
export function blockedUntil(item: Item | undefined, now: number): number | undefined {
  const until = item ? num(item, A.blockedUntil) : undefined;
  return until !== undefined && until > now ? until : undefined;
}
/** Nobody is queued: a free lock may go to whoever asks first. A negative count (drift) counts as empty. */
export const queueIsEmpty = or(missing(A.queued), le(A.queued, 0));
export const someoneQueued = gt(A.queued, 0);
export const heldBy = (clientId: string, token: number) => and(eq(A.holder, clientId), eq(A.fence, token));
export const notAlreadyServed = (key: string | undefined) =>
  key === undefined ? undefined : or(missing(A.grantRequest), ne(A.grantRequest, key));
const notReentered = or(missing(A.reentry), le(A.reentry, 1));
export const withOptional = (...parts: (Condition | undefined)[]) =>
  and(...parts.filter((p) => p !== undefined));

const num = (item: Item, attr: string): number | undefined => {
  const v = item[attr];
  return typeof v === 'number' ? v : undefined;
};
const str = (item: Item, attr: string): string | undefined => {
  const v = item[attr];
  return typeof v === 'string' ? v : undefined;
};

/** The live holder of a lock at `now`, if any. Expiry is judged here, never by DynamoDB's TTL. */
export function liveHolder(item: Item | undefined, now: number): Grant | undefined {
  if (!item) return undefined;
  const holder = str(item, A.holder);
  const expiresAt = num(item, A.expiresAt);
  if (holder === undefined || expiresAt === undefined || expiresAt <= now) return undefined;
  return grantOf(item);
}

/** Reads the current (or last) grant recorded on an item. */
export function grantOf(item: Item): Grant {
  return {
    lock: str(item, A.name) ?? '',
    clientId: str(item, A.holder) ?? '',
    fencingToken: num(item, A.fence) ?? 0,
    expiresAt: num(item, A.expiresAt) ?? 0,
    ttlMs: num(item, A.ttlMs) ?? 0,
    mode: 'exclusive',
    acquiredAt: num(item, A.acquiredAt) ?? 0,
    reentry: num(item, A.reentry) ?? 1,
  };
}

/** The highest fencing token ever issued for this lock (as far as the item remembers). */
export const lastFencingToken = (item: Item | undefined): number | undefined =>
  item ? num(item, A.fence) : undefined;

/** How many waiters the item says are queued (0 when none, or when the count drifted below zero). */
export const queuedCount = (item: Item | undefined): number =>
  Math.max(0, (item && num(item, A.queued)) ?? 0);

/** The request a grant answered (see requestKey), if it was given one. */
export const grantRequestOf = (item: Item | undefined): string | undefined =>
  item ? str(item, A.grantRequest) : undefined;

/** Everything a grant sets, except the fencing token. */
export function grantFields(
  name: string,
  clientId: string,
  ttlMs: number,
  now: number,
  key: string | undefined,
  sessionId?: string,
) {
  return [
    sessionId === undefined ? remove(A.session) : set(A.session, sessionId),
    set(A.name, name),
    set(A.holder, clientId),
    set(A.expiresAt, now + ttlMs),
    set(A.ttlMs, ttlMs),
    set(A.acquiredAt, now),
    set(A.reentry, 1),
    set(A.mode, 'exclusive'),
    key === undefined ? remove(A.grantRequest) : set(A.grantRequest, key),
    remove(A.releasedAt),
    remove(A.blockedUntil),
  ];
}

/** Everything a release clears. */
export const releaseFields = (now: number) => [
  remove(A.holder),
  remove(A.expiresAt),
  remove(A.ttlMs),
  remove(A.acquiredAt),
  remove(A.reentry),
  remove(A.mode),
  remove(A.session),
  set(A.releasedAt, now),
];

/** The session a lock's grant is tied to, if any. */
export const sessionOf = (item: Item | undefined): string | undefined =>
  item ? str(item, A.session) : undefined;

/**
 * Releases whatever grant of `name` is tied to session `sessionId` (the
 * session ended or expired), all re-entries at once. Conditional on the
 * session, so a later grant to someone else is never touched.
 */
export function sessionReleaseWrite(sessionId: string, now: number, lockDelayMs = 0): Write {
  return {
    condition: and(exists(A.holder), eq(A.session, sessionId)),
    update: [...releaseFields(now), ...(lockDelayMs > 0 ? [set(A.blockedUntil, now + lockDelayMs)] : [])],
  };
}

function grantWrite(cmd: AcquireCommand, now: number, key: string | undefined): Write {
  return {
    // A free lock with waiters belongs to the head of its queue: nobody barges in.
    condition: withOptional(isGrantableAt(now), queueIsEmpty, notAlreadyServed(key)),
    update: [
      add(A.fence, 1, fenceFloor(now)),
      ...grantFields(cmd.name, cmd.clientId, cmd.ttlMs, now, key, cmd.sessionId),
    ],
  };
}

function reenterWrite(current: Grant, now: number, key: string | undefined): Write {
  return {
    condition: withOptional(
      heldBy(current.clientId, current.fencingToken),
      leaseLiveAt(now),
      notAlreadyServed(key),
    ),
    update: [add(A.reentry, 1, 1), key === undefined ? remove(A.grantRequest) : set(A.grantRequest, key)],
  };
}

const granted = (grant: Grant, now: number, replayed: boolean): AcquireOutcome => ({
  acquired: true,
  grant,
  replayed,
  remainingMs: grant.expiresAt - now,
});

export function acquireProtocol(cmd: AcquireCommand, now: number): Protocol<AcquireOutcome> {
  const key = cmd.requestId === undefined ? undefined : requestKey(cmd.clientId, cmd.requestId);
  return {
    first: grantWrite(cmd, now, key),
    onRefused(old) {
      const holder = liveHolder(old, now);
      if (key !== undefined && old && str(old, A.grantRequest) === key) {
        // A retry of a request that was already served: answer it again, never grant twice.
        if (holder && holder.clientId === cmd.clientId) return { outcome: granted(holder, now, true) };
        throw new LatchkeyError(
          'LEASE_EXPIRED',
          `request ${cmd.requestId} was already granted fencing token ${lastFencingToken(old)}, and that lease has ended`,
        );
      }
      const queued = queuedCount(old);
      const blocked = blockedUntil(old, now);
      if (!holder && queued === 0 && blocked === undefined) return { write: grantWrite(cmd, now, key) };
      if (holder && holder.clientId === cmd.clientId && cmd.reentrant)
        return { write: reenterWrite(holder, now, key) };
      return {
        outcome: {
          acquired: false,
          lock: cmd.name,
          holder: holder && { clientId: holder.clientId, expiresAt: holder.expiresAt },
          queued,
          // Under lock-delay: until it ends. Free but promised to waiters: the handoff takes a few ms.
          retryAfterMs: holder ? holder.expiresAt - now : blocked !== undefined ? blocked - now : 50,
        },
      };
    },
    onWritten: (item) => granted(grantOf(item), now, false),
  };
}

/** Explains why a holder-only operation (release, renew) was refused. */
function holderRefusal(old: Item | undefined, cmd: ReleaseCommand, now: number): LatchkeyError | undefined {
  const recorded = old && str(old, A.holder) === cmd.clientId && num(old, A.fence) === cmd.fencingToken;
  if (!recorded) {
    const holder = liveHolder(old, now);
    const who = holder
      ? `it is held by ${holder.clientId} with fencing token ${holder.fencingToken}`
      : 'it is not held';
    return new LatchkeyError(
      'NOT_HOLDER',
      `${cmd.clientId} does not hold ${cmd.name} with fencing token ${cmd.fencingToken}: ${who}`,
    );
  }
  if (!liveHolder(old, now)) {
    return new LatchkeyError(
      'LEASE_EXPIRED',
      `the lease of ${cmd.clientId} on ${cmd.name} (fencing token ${cmd.fencingToken}) has expired`,
    );
  }
  return undefined;
}

function releaseWrite(cmd: ReleaseCommand, now: number): Write {
  return {
    condition: and(heldBy(cmd.clientId, cmd.fencingToken), leaseLiveAt(now), notReentered),
    update: releaseFields(now),
  };
}

function leaveReentryWrite(cmd: ReleaseCommand, now: number, reentry: number): Write {
  return {
    // The exact count seen: a second delivery of this write can never count down twice.
    condition: and(heldBy(cmd.clientId, cmd.fencingToken), leaseLiveAt(now), eq(A.reentry, reentry)),
    update: [add(A.reentry, -1, 1)],
  };
}

export function releaseProtocol(cmd: ReleaseCommand, now: number): Protocol<ReleaseOutcome> {
  return {
    first: releaseWrite(cmd, now),
    onRefused(old) {
      const refusal = holderRefusal(old, cmd, now);
      if (refusal) throw refusal;
      const reentry = (old && num(old, A.reentry)) ?? 1;
      return { write: reentry > 1 ? leaveReentryWrite(cmd, now, reentry) : releaseWrite(cmd, now) };
    },
    onWritten: (item) => ({
      lock: cmd.name,
      remaining: liveHolder(item, now)?.reentry ?? 0,
      queued: queuedCount(item),
    }),
  };
}

export function renewProtocol(cmd: RenewCommand, now: number): Protocol<RenewOutcome> {
  const write: Write = {
    condition: and(heldBy(cmd.clientId, cmd.fencingToken), leaseLiveAt(now)),
    update: [set(A.expiresAt, now + cmd.ttlMs), set(A.ttlMs, cmd.ttlMs)],
  };
  return {
    first: write,
    onRefused(old) {
      const refusal = holderRefusal(old, cmd, now);
      if (refusal) throw refusal;
      return { write };
    },
    onWritten: (item) => ({ grant: grantOf(item) }),
  };
}

/** Result of one conditional write: the item after it, or the item as it was when refused. */
export type WriteResult =
  | { readonly ok: true; readonly item: Item }
  | { readonly ok: false; readonly old: Item | undefined };

/**
 * Runs a protocol against a store. No step reads: a refusal carries the item
 * as it was. Every write is stamped with a fresh id (`last_write`): if a write
 * is delivered twice (the response to the first was lost and the SDK sent it
 * again), the second is refused and the stamp shows the first was applied, so
 * it is answered as written instead of being explained as a refusal.
 * Bounded so that a pathological race surfaces as a retryable error.
 */
export async function runProtocol<Outcome>(
  protocol: Protocol<Outcome>,
  tryWrite: (write: Write) => Promise<WriteResult>,
  newWriteId: () => string,
  maxWrites = 4,
): Promise<Outcome> {
  let next = protocol.first;
  for (let attempt = 1; attempt <= maxWrites; attempt++) {
    const id = newWriteId();
    const write: Write = { condition: next.condition, update: [...next.update, set(A.lastWrite, id)] };
    const result = await tryWrite(write);
    if (result.ok) return protocol.onWritten(result.item);
    if (result.old?.[A.lastWrite] === id) return protocol.onWritten(result.old);
    const decision = protocol.onRefused(result.old);
    if ('outcome' in decision) return decision.outcome;
    next = decision.write;
  }
  throw new LatchkeyError('UNAVAILABLE', 'the lock changed under every attempt; retry', undefined, 50);
}

export type { Item, Scalar };
