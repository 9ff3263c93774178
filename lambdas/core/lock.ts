/**
 * The lock rules: who may hold a lock, how long (a lease on the server's
 * clock, or as long as a session lives), the fencing-token rule, owner
 * checks and opt-in reentrancy.
 *
 * Every change is a conditional write expressed in `expr.ts`, so the exact
 * condition DynamoDB checks is the one the property tests and the
 * simulation exercise. A command is a small protocol: an optimistic first
 * write (the uncontended case: one request, no read), and a rule that
 * explains a refusal from the item DynamoDB returns with it (ALL_OLD),
 * possibly choosing a second write.
 */
import { createHash } from 'node:crypto';
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
  lt,
  missing,
  ne,
  or,
  remove,
  type Scalar,
  set,
  type UpdateAction,
} from './expr';
import {
  entryCount,
  entryIn,
  isLiveEntry,
  liveEntries,
  MAX_DROP,
  maxHoldersOf,
  noEntries,
  removeEntry,
  SharedAttr,
  type SharedEntry,
  sameEntries,
  sharedEntries,
  slotOf,
  writersBlockedUntil,
  writersNotBlockedAt,
} from './holders';
import type { ItemWrite } from './items';

/** Attribute names of a lock item. The store adds keys and housekeeping attributes. */
export const LockAttr = {
  name: 'lock_name',
  /** The holder's label (its client_id), within its owner. */
  holder: 'holder',
  /** The principal that holds the lock (see principal.ts): only it may release or renew it. */
  owner: 'principal',
  fence: 'fence',
  /** A lease's end, ms on the server's clock. Absent for a lock held through a session. */
  expiresAt: 'expires_at',
  ttlMs: 'ttl_ms',
  acquiredAt: 'acquired_at',
  reentry: 'reentry',
  mode: 'mode',
  grantRequest: 'grant_request',
  releasedAt: 'released_at',
  /** Id of the last write applied to the item: how a write whose response was lost is recognised. */
  lastWrite: 'last_write',
  /** The releases that counted the holder's re-entered grant down (RECENT_RELEASES): retries are answered. */
  releases: 'releases',
  /** How many waiters are queued for the lock (see queue.ts). A free lock with waiters goes to the head waiter. */
  queued: 'queued',
  /**
   * How many waiters joined above the default priority (they may sort ahead of waiters already
   * queued): a release that hands over to a waiter from a queue read earlier requires it unchanged.
   */
  reordered: 'reordered',
  /** The session the grant is held through (see session.ts): it lasts exactly as long as the session. */
  session: 'session_id',
  /**
   * Lock-delay (Chubby): after a session expired, its locks stay ungrantable until this time, so a
   * holder that was only cut off cannot overlap the next one. Not set by an explicit release.
   */
  blockedUntil: 'blocked_until',
  /** The last release forced by an administrator: who (principal), when, and why. */
  forcedBy: 'forced_by',
  forcedAt: 'forced_at',
  forcedReason: 'forced_reason',
  /** The grant that release ended: its fencing token and its principal (to tell its holder why). */
  forcedToken: 'forced_token',
  forcedOwner: 'forced_owner',
} as const;
const A = LockAttr;

/** Exclusive: one holder. Shared: any number of shared holders (or at most a semaphore's N), no exclusive one. */
export type LockMode = 'exclusive' | 'shared';

/** How a grant is held: for a lease of `ttlMs` (renewed by its holder), or for as long as a session lives. */
export type Tenure =
  | { readonly kind: 'lease'; readonly ttlMs: number }
  | { readonly kind: 'session'; readonly sessionId: string };

/** A tenure in force: a lease with its end, or a session. */
export type Held =
  | { readonly kind: 'lease'; readonly ttlMs: number; readonly expiresAt: number }
  | { readonly kind: 'session'; readonly sessionId: string };

export const lease = (ttlMs: number): Tenure => ({ kind: 'lease', ttlMs });
export const throughSession = (sessionId: string): Tenure => ({ kind: 'session', sessionId });

export interface AcquireCommand {
  readonly name: string;
  /** The caller's principal (principal.ts): the lock will belong to it. */
  readonly owner: string;
  readonly clientId: string;
  readonly tenure: Tenure;
  readonly requestId?: string | undefined;
  readonly reentrant?: boolean | undefined;
  /** Default exclusive. */
  readonly mode?: LockMode | undefined;
  /** Shared mode only: a semaphore of this many holders (holders.ts). */
  readonly maxHolders?: number | undefined;
  /** For a wait: the locks the caller's task holds and keeps until it is served (core/deadlock.ts). */
  readonly holding?: readonly string[] | undefined;
  /** For a wait: locks other client ids of the same principal hold and keep until it is served. */
  readonly enclosing?: readonly Enclosing[] | undefined;
}

/**
 * Locks held by another client id of a waiter's principal (an enclosing process, such as the
 * `latchkey run` whose command this waiter runs in), which keeps them until the wait is served.
 */
export interface Enclosing {
  readonly clientId: string;
  readonly holding: readonly string[];
}

export interface ReleaseCommand {
  readonly name: string;
  readonly owner: string;
  readonly clientId: string;
  readonly fencingToken: number;
  /**
   * The mode the caller holds it in, as a hint: the first write goes where that mode records its
   * grant; a wrong hint costs one refused write (the grant is then found in the item returned).
   */
  readonly mode?: LockMode | undefined;
  /**
   * Names this release, the same on every retry of it: a release whose answer was lost and is sent
   * again is answered as applied, never applied twice (a re-entered grant would count down twice
   * and be freed while its outer scope still holds it).
   */
  readonly releaseId?: string | undefined;
}

export interface RenewCommand extends ReleaseCommand {
  readonly ttlMs: number;
}

export interface Grant {
  readonly lock: string;
  readonly owner: string;
  readonly clientId: string;
  readonly fencingToken: number;
  readonly held: Held;
  readonly mode: LockMode;
  readonly acquiredAt: number;
  /** How many times the holder has acquired it without releasing (1 unless reentrant). */
  readonly reentry: number;
  /** A shared grant of a semaphore: its N. */
  readonly maxHolders?: number | undefined;
}

/** A lease's end, or undefined for a lock held through a session. */
export const leaseEnd = (grant: Pick<Grant, 'held'>): number | undefined =>
  grant.held.kind === 'lease' ? grant.held.expiresAt : undefined;

export type Refusal = {
  readonly acquired: false;
  readonly lock: string;
  /** The live holder; absent when the lock is free but promised to queued waiters, or under lock-delay. */
  readonly holder:
    | {
        readonly clientId: string;
        readonly expiresAt: number | undefined;
        readonly session: boolean;
        /** The caller holds it itself (not reentrant): a wait is not queued behind its own hold. */
        readonly mine?: true;
      }
    | undefined;
  /** Waiters queued ahead of anyone who asks now. */
  readonly queued: number;
  readonly retryAfterMs: number;
  /**
   * In a hierarchical namespace: the lock whose holder keeps this one out (an ancestor, or a lock
   * below it), and why; `holder` is then that lock's holder.
   */
  readonly blockedBy?: { readonly lock: string; readonly reason: string } | undefined;
  /** Held shared: how many hold it, and a semaphore's N (a full semaphore reads `2 of 2`). */
  readonly shared?: { readonly holders: number; readonly maxHolders: number | undefined };
};

export type AcquireOutcome =
  | {
      readonly acquired: true;
      readonly grant: Grant;
      /**
       * True when this answers with a grant made, and audited, before this answer: a retry of a
       * request that was already granted, or a wait that a handoff granted (then the lease end is
       * the one it had, and what is left of it may be less than its ttl: see wire's remaining_ms).
       */
      readonly replayed: boolean;
      /**
       * A retry of a request this lock granted by the request's own write (not a handoff): its
       * first answer was lost after the write, perhaps before the grant was audited.
       */
      readonly retried?: true;
      /** A retried grant known to have been a fresh grant (not a re-entry), whatever its count now. */
      readonly fresh?: true;
    }
  | Refusal;

export interface ReleaseOutcome {
  readonly lock: string;
  /** Reentrant acquisitions still outstanding; 0 means the lock is free. */
  readonly remaining: number;
  /** Waiters queued when it was released: if any and the lock is free, the head is due a handoff. */
  readonly queued: number;
  /** A release sent again after it had ended the grant (its answer lost, or a 503): not applied twice. */
  readonly again?: true;
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
  readonly first: ItemWrite;
  onRefused(old: Item | undefined): { readonly write: ItemWrite } | { readonly outcome: Outcome };
  onWritten(item: Item): Outcome;
}

/**
 * Fencing tokens: each grant stores `if_not_exists(fence, floor(now) * 1000) + 1`.
 * While the item exists the counter grows by one per grant, or jumps up to the
 * clock floor plus one (a waiting request granted unread: clockFencedGrant, which
 * only ever raises it). If the item is
 * deleted (TTL or by hand), the counter restarts from the clock floor, which
 * is above every token issued before: a lock item takes at most ~1,000 writes
 * per second (DynamoDB's per-item limit), so its counter rises by at most one
 * per millisecond, while the floor rises by 1,000 per millisecond. Tokens stay
 * below 2^53 until the year 2255.
 */
export const fenceFloor = (nowMs: number): number => Math.floor(nowMs) * 1000;

/** The token the next grant takes, given the item as last seen. */
export const nextFence = (seen: Item | undefined, now: number): number => {
  const fence = seen?.[A.fence];
  return typeof fence === 'number' ? fence + 1 : fenceFloor(now) + 1;
};

/**
 * Client-chosen request ids are scoped to the principal and client that sent them: no other
 * principal can answer, follow or cancel a request.
 */
export const requestKey = (owner: string, clientId: string, requestId: string): string =>
  `${owner.length}:${owner}:${clientId.length}:${clientId}:${requestId}`;

/** The requestKey of an acquire that names a request id, else undefined. */
export const requestKeyOf = (
  cmd: Pick<AcquireCommand, 'owner' | 'clientId' | 'requestId'>,
): string | undefined =>
  cmd.requestId === undefined ? undefined : requestKey(cmd.owner, cmd.clientId, cmd.requestId);

/** Who an acquire's grant goes to. */
export const granteeOf = (cmd: AcquireCommand): Grantee => ({
  name: cmd.name,
  owner: cmd.owner,
  clientId: cmd.clientId,
  tenure: cmd.tenure,
  requestKey: requestKeyOf(cmd),
});

/** How soon to try again a lock held through a session: it has no lease end to wait for. */
export const SESSION_HOLDER_RETRY_MS = 1_000;

// Named parts of the conditions.
const isUnheld = missing(A.holder);
const heldThroughSession = exists(A.session);
const leaseLiveAt = (now: number) => gt(A.expiresAt, now);
/** Free: nobody holds it, or a lease (not a session) that ended. A holder with neither holds nothing. */
export const isFreeAt = (now: number) =>
  or(isUnheld, and(missing(A.session), or(missing(A.expiresAt), le(A.expiresAt, now))));
/** The negation of isFreeAt. */
export const isHeldAt = (now: number) => and(exists(A.holder), or(heldThroughSession, leaseLiveAt(now)));
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
export const heldBy = (owner: string, clientId: string, token: number) =>
  and(eq(A.owner, owner), eq(A.holder, clientId), eq(A.fence, token));
export const notAlreadyServed = (key: string | undefined) =>
  key === undefined ? undefined : or(missing(A.grantRequest), ne(A.grantRequest, key));
/** The fencing counter is what it was when the item was read: nothing was granted since. */
export const sameFence = (seen: Item | undefined) => {
  const fence = seen?.[A.fence];
  return typeof fence === 'number' ? eq(A.fence, fence) : missing(A.fence);
};
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
  if (!item || str(item, A.holder) === undefined) return undefined;
  if (str(item, A.session) !== undefined) return grantOf(item);
  const expiresAt = num(item, A.expiresAt);
  return expiresAt !== undefined && expiresAt > now ? grantOf(item) : undefined;
}

/** Reads the current (or last) grant recorded on an item. */
export function grantOf(item: Item): Grant {
  const session = str(item, A.session);
  return {
    lock: str(item, A.name) ?? '',
    owner: str(item, A.owner) ?? '',
    clientId: str(item, A.holder) ?? '',
    fencingToken: num(item, A.fence) ?? 0,
    held:
      session !== undefined
        ? { kind: 'session', sessionId: session }
        : { kind: 'lease', ttlMs: num(item, A.ttlMs) ?? 0, expiresAt: num(item, A.expiresAt) ?? 0 },
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

/** The session a lock's grant is held through, if any. */
export const sessionOf = (item: Item | undefined): string | undefined =>
  item ? str(item, A.session) : undefined;

/** The tenure a grant takes at `now`. */
export const heldFrom = (tenure: Tenure, now: number): Held =>
  tenure.kind === 'lease'
    ? { kind: 'lease', ttlMs: tenure.ttlMs, expiresAt: now + tenure.ttlMs }
    : { kind: 'session', sessionId: tenure.sessionId };

/**
 * From when a lock item may be collected after a write that sets `held`: the lease's end, or
 * never while a session holds it (its end releases it, and that write sets a new time).
 */
export const gcFromHeld = (held: Held): number | null => (held.kind === 'lease' ? held.expiresAt : null);

function tenureFields(held: Held): UpdateAction[] {
  return held.kind === 'lease'
    ? [set(A.expiresAt, held.expiresAt), set(A.ttlMs, held.ttlMs), remove(A.session)]
    : [set(A.session, held.sessionId), remove(A.expiresAt), remove(A.ttlMs)];
}

/** Who a grant goes to. */
export interface Grantee {
  readonly name: string;
  readonly owner: string;
  readonly clientId: string;
  readonly tenure: Tenure;
  /** requestKey of the request it answers, if any. */
  readonly requestKey?: string | undefined;
}

/** Everything a grant sets, except the fencing token. */
export function grantFields(g: Grantee, now: number): UpdateAction[] {
  return [
    set(A.name, g.name),
    set(A.owner, g.owner),
    set(A.holder, g.clientId),
    ...tenureFields(heldFrom(g.tenure, now)),
    set(A.acquiredAt, now),
    set(A.reentry, 1),
    set(A.mode, 'exclusive'),
    g.requestKey === undefined ? remove(A.grantRequest) : set(A.grantRequest, g.requestKey),
    remove(A.releasedAt),
    remove(A.blockedUntil),
    // A new grant starts with no releases counted (RECENT_RELEASES).
    remove(A.releases),
  ];
}

/** Everything a release clears. */
export const releaseFields = (now: number): UpdateAction[] => [
  remove(A.releases),
  remove(A.holder),
  remove(A.owner),
  remove(A.expiresAt),
  remove(A.ttlMs),
  remove(A.acquiredAt),
  remove(A.reentry),
  remove(A.mode),
  remove(A.session),
  set(A.releasedAt, now),
];

/**
 * Releases whatever grant of `name` is held through session `sessionId` (the
 * session ended or expired), all re-entries at once. Conditional on the
 * session, so a later grant to someone else is never touched. Under
 * lock-delay the item is kept at least until the delay ends.
 */
export function sessionReleaseWrite(sessionId: string, now: number, lockDelayMs = 0): ItemWrite {
  return {
    condition: and(exists(A.holder), eq(A.session, sessionId)),
    update: [...releaseFields(now), ...(lockDelayMs > 0 ? [set(A.blockedUntil, now + lockDelayMs)] : [])],
    gcFrom: now + lockDelayMs,
  };
}

/**
 * A grant whose fencing token is fixed in advance from the item as last
 * seen (`seen`), conditional on the counter being unchanged since: the
 * grant is known without reading it back. This is how a grant lands inside
 * a transaction (a handoff, a grant held through a session, a waiting
 * request granted at once), which returns no item. `extra` narrows the
 * condition; `updates` adds to it (a queue count, say).
 */
export function pinnedGrant(
  grantee: Grantee,
  seen: Item | undefined,
  now: number,
  writeId: string,
  extra: GrantExtra = {},
): { readonly write: ItemWrite; readonly grant: Grant } {
  const fence = nextFence(seen, now);
  return grantWith(grantee, { fence, condition: sameFence(seen) }, clearEntries(seen), now, writeId, extra);
}

/**
 * A grant whose fencing token is fixed in advance without reading the item: the clock's floor
 * plus one (`fenceFloor(now) + 1`), conditional on the counter being below it, or absent. So a
 * waiting request finds a free lock granted in one transaction, with no read first. The counter
 * rises by at most one per millisecond (fenceFloor), so it is below the floor unless another
 * grant came this very millisecond or this clock is behind the last grantor's: then the write is
 * refused, and the caller reads the item and pins the grant to it (pinnedGrant). Every other
 * condition is a pinned grant's on an item with no shared entries; the token still only grows.
 */
export function clockFencedGrant(
  grantee: Grantee,
  now: number,
  writeId: string,
  extra: Pick<GrantExtra, 'condition'> = {},
): { readonly write: ItemWrite; readonly grant: Grant } {
  const fence = fenceFloor(now) + 1;
  const below = or(missing(A.fence), lt(A.fence, fence));
  return grantWith(grantee, { fence, condition: below }, clearEntries(undefined), now, writeId, extra);
}

interface GrantExtra {
  readonly condition?: Condition | undefined;
  readonly updates?: readonly UpdateAction[];
  /**
   * Grant over this release, in the same write: the lock must be held by exactly that grant (a
   * lease, not re-entered) instead of free, and `released_at` says when it was given up.
   */
  readonly releasing?: ReleaseCommand | undefined;
}

/** The write of a grant whose token is `fence.fence`, taken only if `fence.condition` holds. */
function grantWith(
  grantee: Grantee,
  { fence, condition }: { readonly fence: number; readonly condition: Condition },
  entries: { readonly condition: Condition; readonly updates: UpdateAction[] },
  now: number,
  writeId: string,
  extra: GrantExtra,
): { readonly write: ItemWrite; readonly grant: Grant } {
  const held = heldFrom(grantee.tenure, now);
  const { releasing } = extra;
  const fields = grantFields(grantee, now);
  return {
    write: {
      condition: withOptional(
        // Over a release: of a grant never counted down (one counted down releases the plain way,
        // where a retry of a count-down is recognised).
        releasing ? and(releasableBy(releasing, now), missing(A.releases)) : isGrantableAt(now),
        writersNotBlockedAt(now),
        condition,
        entries.condition,
        extra.condition,
      ),
      update: [
        set(A.fence, fence),
        ...(releasing
          ? [
              ...fields.filter((f) => f.attr !== A.releasedAt),
              set(A.releasedAt, now),
              ...rememberRelease(releasing),
            ]
          : fields),
        ...entries.updates,
        ...(extra.updates ?? []),
        set(A.lastWrite, writeId),
      ],
      gcFrom: gcFromHeld(held),
    },
    grant: {
      lock: grantee.name,
      owner: grantee.owner,
      clientId: grantee.clientId,
      fencingToken: fence,
      held,
      mode: 'exclusive',
      acquiredAt: now,
      reentry: 1,
    },
  };
}

/**
 * What an exclusive grant does about shared entries: none may be there (`seen` undefined, or it
 * had none), or every one `seen` had has lapsed and they are removed, provided none changed since.
 * The caller has judged them lapsed (decideAcquire, planServe).
 */
export function clearEntries(seen: Item | undefined): {
  readonly condition: Condition;
  readonly updates: UpdateAction[];
} {
  const entries = sharedEntries(seen);
  if (entryCount(seen) === 0 && entries.length === 0) return { condition: noEntries, updates: [] };
  // At most MAX_DROP of them per write (the expression's size): the rest, lapsed, go with later writes.
  const dropped = entries.slice(0, MAX_DROP);
  return {
    condition: sameEntries(seen),
    updates: [
      ...dropped.flatMap((e) => removeEntry(e.slot)),
      set(SharedAttr.count, entries.length - dropped.length),
      set(SharedAttr.sessions, 0),
      add(SharedAttr.version, 1, 0),
    ],
  };
}

/**
 * The write that grants a lease on a free lock nobody waits for: blind (the one-call acquire,
 * requiring that no shared entry is there), or informed by `seen` (removing its lapsed entries).
 */
function grantWrite(cmd: AcquireCommand, now: number, key: string | undefined, seen?: Item): ItemWrite {
  const grantee = { ...granteeOf(cmd), requestKey: key };
  const entries = seen === undefined ? { condition: noEntries, updates: [] } : clearEntries(seen);
  return {
    // A free lock with waiters belongs to the head of its queue: nobody barges in.
    condition: withOptional(
      isGrantableAt(now),
      writersNotBlockedAt(now),
      queueIsEmpty,
      notAlreadyServed(key),
      entries.condition,
    ),
    update: [add(A.fence, 1, fenceFloor(now)), ...grantFields(grantee, now), ...entries.updates],
    gcFrom: gcFromHeld(heldFrom(cmd.tenure, now)),
  };
}

/** Acquires once more a lock the caller holds (reentrant); the lease end stays what it was. */
function reenterWrite(current: Grant, now: number, key: string | undefined): ItemWrite {
  return {
    // The exact count seen: a second delivery of this write can never count twice.
    condition: withOptional(
      heldBy(current.owner, current.clientId, current.fencingToken),
      isHeldAt(now),
      current.reentry > 1 ? eq(A.reentry, current.reentry) : notReentered,
      notAlreadyServed(key),
    ),
    update: [add(A.reentry, 1, 1), key === undefined ? remove(A.grantRequest) : set(A.grantRequest, key)],
  };
}

export const granted = (grant: Grant, replayed: boolean): AcquireOutcome => ({
  acquired: true,
  grant,
  replayed,
});

/** The grant a retry of an already granted request gets back (see AcquireOutcome's `retried`). */
export const grantedAgain = (grant: Grant, fresh = false): AcquireOutcome => ({
  acquired: true,
  grant,
  replayed: true,
  retried: true,
  ...(fresh ? { fresh: true } : {}),
});

/**
 * The holder that keeps a caller asking in `mode` out longest worth reporting: the exclusive
 * holder; else, for an exclusive caller, the shared holder whose lease ends last (a session's
 * first); for a shared caller (a full semaphore), the one whose lease ends first.
 */
function blockingHolder(item: Item | undefined, now: number, mode: LockMode): Grant | undefined {
  const exclusive = liveHolder(item, now);
  if (exclusive) return exclusive;
  const live = liveEntries(item, now).map((e) => entryGrant(e));
  if (live.length === 0) return undefined;
  const end = (g: Grant) => leaseEnd(g) ?? Number.POSITIVE_INFINITY;
  const sorted = [...live].sort((a, b) => end(a) - end(b));
  return mode === 'exclusive' ? sorted.at(-1) : sorted[0];
}

/** A refusal explained from the item as it is, for a caller asking in `mode`. */
export function refusal(
  name: string,
  item: Item | undefined,
  now: number,
  mode: LockMode = 'exclusive',
): Refusal {
  const holder = blockingHolder(item, now, mode);
  const blocked =
    blockedUntil(item, now) ?? (mode === 'exclusive' ? writersBlockedUntil(item, now) : undefined);
  const end = holder && leaseEnd(holder);
  const sharers = holder && !liveHolder(item, now) ? liveEntries(item, now).length : 0;
  return {
    acquired: false,
    lock: name,
    holder: holder && {
      clientId: holder.clientId,
      expiresAt: end,
      session: holder.held.kind === 'session',
    },
    ...(sharers > 0 ? { shared: { holders: sharers, maxHolders: maxHoldersOf(item) } } : {}),
    queued: queuedCount(item),
    // Under lock-delay: until it ends. Free but promised to waiters: the handoff takes a few ms.
    retryAfterMs: holder
      ? end === undefined
        ? SESSION_HOLDER_RETRY_MS
        : end - now
      : blocked !== undefined
        ? blocked - now
        : 50,
  };
}

/**
 * A refusal because the caller itself holds the lock (`own`: its grant, or its live shared entry)
 * and did not ask to re-enter: it names that hold (`mine`), and `retryAfterMs` runs to its end. A
 * wait is never queued behind its caller's own hold (it would wait for itself), so this answers
 * a waiting acquire at once, and the caller knows whose hold to wait out.
 */
export function ownHoldRefusal(name: string, own: Grant, item: Item | undefined, now: number): Refusal {
  const end = leaseEnd(own);
  return {
    acquired: false,
    lock: name,
    holder: { clientId: own.clientId, expiresAt: end, session: own.held.kind === 'session', mine: true },
    queued: queuedCount(item),
    retryAfterMs: end === undefined ? SESSION_HOLDER_RETRY_MS : Math.max(0, end - now),
  };
}

/** The caller's own live shared entry in `item`, as a grant, if it has one. */
export function ownLiveEntry(cmd: { owner: string; clientId: string }, item: Item | undefined, now: number) {
  const entry = entryIn(item, slotOf(cmd.owner, cmd.clientId));
  return entry && isLiveEntry(entry, now) ? entryGrant(entry) : undefined;
}

/** Whether `item` shows a live grant held through session `sessionId` (exclusive, or a shared entry). */
export function holdsThroughSession(item: Item | undefined, sessionId: string, now: number): boolean {
  const holder = liveHolder(item, now);
  if (holder?.held.kind === 'session' && holder.held.sessionId === sessionId) return true;
  return sharedEntries(item).some((e) => e.session === sessionId && isLiveEntry(e, now));
}

/** A shared entry as a grant. */
export function entryGrant(e: SharedEntry, lock = ''): Grant {
  return {
    lock,
    owner: e.owner,
    clientId: e.clientId,
    fencingToken: e.fencingToken,
    held:
      e.session !== undefined
        ? { kind: 'session', sessionId: e.session }
        : { kind: 'lease', ttlMs: e.ttlMs ?? 0, expiresAt: e.expiresAt ?? 0 },
    mode: 'shared',
    acquiredAt: e.acquiredAt,
    reentry: e.reentry,
  };
}

/** Every live grant of a lock at `now`: its exclusive holder, or its live shared holders in token order. */
export function liveGrants(item: Item | undefined, now: number): Grant[] {
  const exclusive = liveHolder(item, now);
  if (exclusive) return [exclusive];
  const name = item && str(item, A.name);
  const n = item && entryCount(item) > 0 ? num(item, SharedAttr.maxHolders) : undefined;
  return liveEntries(item, now).map((e) => ({ ...entryGrant(e, name ?? ''), maxHolders: n }));
}

/**
 * Whether a grant held this way answers an attempt asking for `tenure`: a lease answers a lease
 * (whatever ttl the retry names), a session only the same session. A retry of a lock held through a
 * WebSocket connection that arrives on another connection names another session: the grant ends
 * with the first connection, so it is not the caller's.
 */
export const holdsAs = (held: Held, tenure: Tenure): boolean =>
  held.kind === 'lease'
    ? tenure.kind === 'lease'
    : tenure.kind === 'session' && tenure.sessionId === held.sessionId;

/** What an acquire can do with the lock as it is. */
export type AcquireDecision =
  | { readonly kind: 'grant' }
  | { readonly kind: 'reenter'; readonly current: Grant }
  | { readonly kind: 'answer'; readonly outcome: AcquireOutcome };

/**
 * The one rule for every way of acquiring (one write, in a transaction, for
 * a waiting request): a retry of the request the lock last served gets that
 * grant back (or LEASE_EXPIRED once it ended), never a second one; a free,
 * grantable lock nobody waits for may be granted; its holder may re-enter
 * when it asked to; anyone else is refused.
 */
export function decideAcquire(cmd: AcquireCommand, item: Item | undefined, now: number): AcquireDecision {
  const key = requestKeyOf(cmd);
  const holder = liveHolder(item, now);
  const mine = holder !== undefined && holder.owner === cmd.owner && holder.clientId === cmd.clientId;
  if (key !== undefined && item && str(item, A.grantRequest) === key) {
    if (holder && mine && holdsAs(holder.held, cmd.tenure))
      return { kind: 'answer', outcome: grantedAgain(holder) };
    throw new LatchkeyError(
      'LEASE_EXPIRED',
      `request ${cmd.requestId} was already granted fencing token ${lastFencingToken(item)}, and that lock has been released or its lease has ended`,
    );
  }
  if (
    !holder &&
    queuedCount(item) === 0 &&
    blockedUntil(item, now) === undefined &&
    writersBlockedUntil(item, now) === undefined &&
    !sharedEntries(item).some((e) => isLiveEntry(e, now))
  )
    return { kind: 'grant' };
  if (holder && mine && cmd.reentrant) return { kind: 'reenter', current: holder };
  // Its own hold in the way: held exclusively, or shared (no upgrade: an exclusive ask waits for every shared holder).
  const own = holder && mine ? holder : ownLiveEntry(cmd, item, now);
  if (own) return { kind: 'answer', outcome: ownHoldRefusal(cmd.name, own, item, now) };
  return { kind: 'answer', outcome: refusal(cmd.name, item, now) };
}

/** A plain acquire: one conditional write when the lock is free (leases only; sessions grant in a transaction). */
export function acquireProtocol(cmd: AcquireCommand, now: number): Protocol<AcquireOutcome> {
  const key = requestKeyOf(cmd);
  return {
    first: grantWrite(cmd, now, key),
    onRefused(old) {
      const decision = decideAcquire(cmd, old, now);
      if (decision.kind === 'answer') return { outcome: decision.outcome };
      if (decision.kind === 'reenter') return { write: reenterWrite(decision.current, now, key) };
      return { write: grantWrite(cmd, now, key, old) };
    },
    onWritten: (item) => granted(grantOf(item), false),
  };
}

/** Re-enters a lock its caller holds (any tenure), as its own protocol. */
export function reenterProtocol(cmd: AcquireCommand, current: Grant, now: number): Protocol<AcquireOutcome> {
  const key = requestKeyOf(cmd);
  return {
    first: reenterWrite(current, now, key),
    onRefused(old) {
      const decision = decideAcquire(cmd, old, now);
      if (decision.kind === 'reenter') return { write: reenterWrite(decision.current, now, key) };
      // Freed meanwhile: a grant needs the caller's own path (a transaction for a session).
      if (decision.kind === 'grant')
        throw new LatchkeyError('UNAVAILABLE', 'the lock changed while re-entering it; retry', undefined, 0);
      return { outcome: decision.outcome };
    },
    onWritten: (item) => granted(grantOf(item), false),
  };
}

/**
 * When and why an operator force-released the caller's own grant (`cmd`'s token, its principal),
 * if the item's last force-release is the one that ended it.
 */
export function forcedOut(
  item: Item | undefined,
  cmd: Pick<ReleaseCommand, 'owner' | 'fencingToken'>,
): { readonly at: number; readonly reason: string } | undefined {
  if (!item || num(item, A.forcedToken) !== cmd.fencingToken || str(item, A.forcedOwner) !== cmd.owner)
    return undefined;
  return { at: num(item, A.forcedAt) ?? 0, reason: str(item, A.forcedReason) ?? '' };
}

/** Explains why a holder-only operation (release, renew) was refused. */
function holderRefusal(old: Item | undefined, cmd: ReleaseCommand, now: number): LatchkeyError | undefined {
  // The caller's own grant, ended by an operator: say so, whoever holds the lock now (the caller
  // named its own token and principal, so this tells it nothing about anyone else's).
  const forced = forcedOut(old, cmd);
  if (forced)
    return new LatchkeyError(
      'NOT_HOLDER',
      `${cmd.clientId} does not hold ${cmd.name} with fencing token ${cmd.fencingToken}: an operator force-released that grant at ${new Date(forced.at).toISOString()} (reason: ${forced.reason})`,
    );
  // Held by another principal: refused alike whatever client id and token were sent, so the answer
  // tells nothing about them (no token oracle), and echoes none of them.
  if (old && str(old, A.holder) !== undefined && str(old, A.owner) !== cmd.owner)
    return new LatchkeyError(
      'FORBIDDEN',
      `${cmd.name} is held by another principal: only the principal that took a lock may release or renew it`,
    );
  const recorded = old && str(old, A.holder) === cmd.clientId && num(old, A.fence) === cmd.fencingToken;
  if (!recorded) {
    const holder = liveHolder(old, now);
    const who = !holder
      ? 'it is not held'
      : holder.clientId !== cmd.clientId && holder.fencingToken === cmd.fencingToken
        ? `that token is held by client ${holder.clientId}: send the client_id that acquired it`
        : `it is held by ${holder.clientId} with another fencing token`;
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

/** Held by exactly `cmd`'s grant, live, and not re-entered: one release frees it. */
const releasableBy = (cmd: ReleaseCommand, now: number) =>
  and(heldBy(cmd.owner, cmd.clientId, cmd.fencingToken), isHeldAt(now), notReentered);

/**
 * Releases that counted a re-entered grant down, remembered so that one sent again (its answer
 * lost, or an attempt still in flight when the SDK retried) is answered, never applied twice: the
 * last RECENT_RELEASES of them, each a hash of `token:release_id` (releaseTag), space-separated. Only a grant that was
 * counted down has the list; any release or new grant removes it.
 */
export const RECENT_RELEASES = 8;

/** A release as the list records it: bound to the grant's token, so no other grant's matches. */
export const releaseTag = (cmd: Pick<ReleaseCommand, 'fencingToken' | 'releaseId'>): string | undefined =>
  cmd.releaseId === undefined
    ? undefined
    : // 72 bits of a hash: the list stays about 100 bytes whatever ids callers choose.
      createHash('sha256').update(`${cmd.fencingToken}:${cmd.releaseId}`).digest('base64url').slice(0, 12);

/**
 * Full releases, remembered so that one sent again (its answer lost, or a 503 after it applied
 * because serving the queue failed) is answered as applied, not refused as not held: the release
 * that ends a grant writes its tag in one of RELEASED_SLOTS attributes (`rel_0` …), in that same
 * write and with nothing read first, and a refused release looks for its tag in all of them. The
 * slot is chosen by the token (releasedSlot), so a later grant's release may take it: grants whose
 * tokens follow one another (handed on, or pinned to the item read) never share a slot in a run of
 * RELEASED_SLOTS, and grants fenced from the clock (`floor(ms) × 1000 + 1`) land by their
 * millisecond, at random. The tag binds the principal, the token and the release_id: no other
 * release, and no other principal, matches it. About 140 bytes of the item at most.
 */
export const RELEASED_SLOTS = 8;

/**
 * Where the release of the grant of `token` is remembered: by the token plus its millisecond (a
 * token fenced from the clock is that millisecond × 1000 + 1, always 1 mod 8 by itself).
 */
export const releasedSlot = (token: number): string =>
  `rel_${(token + Math.floor(token / 1_000)) % RELEASED_SLOTS}`;

const RELEASED_ATTRS = Array.from({ length: RELEASED_SLOTS }, (_, i) => `rel_${i}`);

const releasedTag = (cmd: Pick<ReleaseCommand, 'owner' | 'fencingToken' | 'releaseId'>) =>
  cmd.releaseId === undefined
    ? undefined
    : createHash('sha256')
        .update(`${cmd.owner}\n${cmd.fencingToken}\n${cmd.releaseId}`)
        .digest('base64url')
        .slice(0, 12);

/** The update that remembers `cmd` as the release that ended its grant (none without a release_id). */
export const rememberRelease = (
  cmd: Pick<ReleaseCommand, 'owner' | 'fencingToken' | 'releaseId'>,
): UpdateAction[] => {
  const tag = releasedTag(cmd);
  return tag === undefined ? [] : [set(releasedSlot(cmd.fencingToken), tag)];
};

/** Whether `item` remembers `cmd` (this very release: principal, token and release_id) as applied. */
export const releasedBefore = (
  item: Item | undefined,
  cmd: Pick<ReleaseCommand, 'owner' | 'fencingToken' | 'releaseId'>,
): boolean => {
  const tag = releasedTag(cmd);
  return tag !== undefined && item !== undefined && RELEASED_ATTRS.some((attr) => item[attr] === tag);
};

/** The tags a list holds (undefined or empty: none). */
export const recentReleases = (list: Scalar | undefined): string[] =>
  typeof list === 'string' ? list.split(' ').filter(Boolean) : [];

/** The list with `tag` added (the oldest dropped past RECENT_RELEASES). */
export const withRelease = (list: Scalar | undefined, tag: string): string =>
  [...recentReleases(list), tag].slice(-RECENT_RELEASES).join(' ');

/** The list attribute as seen: the same value, or still none. */
export const releasesAsSeen = (attr: string, seen: Scalar | undefined): Condition =>
  seen === undefined ? missing(attr) : eq(attr, seen);

/**
 * The full release. Blind (nothing read: `seen` null) it stands only where no list is kept (a grant
 * never counted down, the common case: one write); otherwise it pins the list it read.
 */
function releaseWrite(cmd: ReleaseCommand, now: number, seen: Item | null): ItemWrite {
  return {
    condition: and(releasableBy(cmd, now), releasesAsSeen(A.releases, seen?.[A.releases])),
    update: [...releaseFields(now), ...rememberRelease(cmd)],
    gcFrom: now,
  };
}

function leaveReentryWrite(cmd: ReleaseCommand, now: number, reentry: number, seen: Item): ItemWrite {
  const tag = releaseTag(cmd);
  return {
    // The exact count and list seen: a second delivery of this write can never count down twice,
    // and the release is recorded so that a second sending of it (its answer lost) is not either.
    condition: and(
      heldBy(cmd.owner, cmd.clientId, cmd.fencingToken),
      isHeldAt(now),
      eq(A.reentry, reentry),
      releasesAsSeen(A.releases, seen[A.releases]),
    ),
    update: [add(A.reentry, -1, 1), ...(tag ? [set(A.releases, withRelease(seen[A.releases], tag))] : [])],
  };
}

export function releaseProtocol(cmd: ReleaseCommand, now: number): Protocol<ReleaseOutcome> {
  const tag = releaseTag(cmd);
  return {
    first: releaseWrite(cmd, now, null),
    onRefused(old) {
      const recorded =
        old &&
        str(old, A.holder) === cmd.clientId &&
        str(old, A.owner) === cmd.owner &&
        num(old, A.fence) === cmd.fencingToken;
      // This very release counted the grant down already (its answer was lost): answered as it stands.
      if (tag && recorded && recentReleases(old[A.releases]).includes(tag))
        return {
          outcome: {
            lock: cmd.name,
            remaining: liveHolder(old, now)?.reentry ?? 0,
            queued: queuedCount(old),
          },
        };
      // This very release ended the grant already: answered as released (whoever holds it since).
      if (releasedBefore(old, cmd))
        return { outcome: { lock: cmd.name, remaining: 0, queued: queuedCount(old), again: true } };
      const refused = holderRefusal(old, cmd, now);
      if (refused) throw refused;
      const seen = old as Item;
      const reentry = num(seen, A.reentry) ?? 1;
      return {
        write: reentry > 1 ? leaveReentryWrite(cmd, now, reentry, seen) : releaseWrite(cmd, now, seen),
      };
    },
    onWritten: (item) => ({
      lock: cmd.name,
      remaining: liveHolder(item, now)?.reentry ?? 0,
      queued: queuedCount(item),
    }),
  };
}

export function renewProtocol(cmd: RenewCommand, now: number): Protocol<RenewOutcome> {
  const write: ItemWrite = {
    // A lock held through a session has no lease to renew: it lasts as long as the session.
    condition: and(heldBy(cmd.owner, cmd.clientId, cmd.fencingToken), missing(A.session), leaseLiveAt(now)),
    update: [set(A.expiresAt, now + cmd.ttlMs), set(A.ttlMs, cmd.ttlMs)],
    gcFrom: now + cmd.ttlMs,
  };
  return {
    first: write,
    onRefused(old) {
      const refused = holderRefusal(old, cmd, now);
      if (refused) throw refused;
      const session = sessionOf(old);
      if (session !== undefined)
        throw new LatchkeyError(
          'HELD_BY_SESSION',
          `${cmd.name} is held through a session: it lasts as long as the session lives, so there is no lease to renew; heartbeat the session instead`,
        );
      return { write };
    },
    onWritten: (item) => ({ grant: grantOf(item) }),
  };
}

/**
 * An administrator ends whatever grant `current` is, whoever holds it, and moves the fencing
 * counter one past it: the next grant's token is two above the old holder's, and an operator may
 * tell a protected resource to refuse everything up to the counter at once. Records who did it,
 * when and why. Conditional on that very grant, so a later one is never touched.
 */
export function forceReleaseWrite(current: Grant, by: string, reason: string, now: number): ItemWrite {
  return {
    condition: heldBy(current.owner, current.clientId, current.fencingToken),
    update: [
      ...releaseFields(now),
      set(A.fence, current.fencingToken + 1),
      set(A.forcedBy, by),
      set(A.forcedAt, now),
      set(A.forcedReason, reason),
      set(A.forcedToken, current.fencingToken),
      set(A.forcedOwner, current.owner),
    ],
    gcFrom: now,
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
  tryWrite: (write: ItemWrite) => Promise<WriteResult>,
  newWriteId: () => string,
  maxWrites = 4,
): Promise<Outcome> {
  let next = protocol.first;
  for (let attempt = 1; attempt <= maxWrites; attempt++) {
    const id = newWriteId();
    const result = await tryWrite({ ...next, update: [...next.update, set(A.lastWrite, id)] });
    if (result.ok) return protocol.onWritten(result.item);
    if (result.old?.[A.lastWrite] === id) return protocol.onWritten(result.old);
    const decision = protocol.onRefused(result.old);
    if ('outcome' in decision) return decision.outcome;
    next = decision.write;
  }
  throw new LatchkeyError('UNAVAILABLE', 'the lock changed under every attempt; retry', undefined, 50);
}

export type { Item, Scalar };
