/**
 * Sessions: a client's liveness, proven by heartbeats, that locks can be
 * held through (ephemeral locks, like ZooKeeper's ephemeral nodes or etcd's
 * leases). A session is ALIVE until its deadline (last heartbeat + ttl),
 * then in GRACE for `grace_ms`, then EXPIRED; ENDED once closed by its
 * client or by a timer or the sweeper. Its locks are released when it ends.
 *
 * A lock held through a session has no lease of its own: it is held exactly
 * as long as the session lives, and nothing else (no lease, no TTL) can end
 * it. One heartbeat therefore keeps every lock of the session with one
 * write to the session item, whatever the number of locks. Everything is
 * judged on the server's clock, and every change is a conditional write, as
 * for locks.
 */
import { and, eq, exists, gt, type Item, le, missing, set } from './expr';
import { type ItemWrite, type Step, sessionLockRef, sessionRef } from './items';

export const SessionAttr = {
  /** The principal the session belongs to (principal.ts): only it may heartbeat, close or lock in it. */
  owner: 'principal',
  client: 'client_id',
  ttlMs: 'ttl_ms',
  graceMs: 'grace_ms',
  createdAt: 'created_at',
  /** Last heartbeat + ttl, ms on the server's clock. */
  deadline: 'deadline',
  /** deadline + grace: when the session expires and its locks go. */
  expiresAt: 'expires_at',
  endedAt: 'ended_at',
  endReason: 'end_reason',
  /** Set once an ended session's locks are all released (then nothing about it is due). */
  sweptAt: 'swept_at',
  /** Lock-delay for the session's locks should it expire (see LockAttr.blockedUntil). */
  lockDelayMs: 'lock_delay_ms',
} as const;
const S = SessionAttr;

export type SessionState = 'alive' | 'grace' | 'expired' | 'ended';
/** closed: by its client; expired: no heartbeat in time; ended-by-operator: the admin route. */
export type EndReason = 'closed' | 'expired' | 'ended-by-operator';
const END_REASONS: readonly string[] = ['closed', 'expired', 'ended-by-operator'] satisfies EndReason[];

export interface Session {
  readonly id: string;
  readonly owner: string;
  readonly clientId: string;
  readonly ttlMs: number;
  readonly graceMs: number;
  readonly lockDelayMs: number;
  readonly createdAt: number;
  readonly deadline: number;
  readonly expiresAt: number;
  readonly endedAt: number | undefined;
  readonly endReason: EndReason | undefined;
  readonly sweptAt: number | undefined;
}

export function sessionOfItem(id: string, item: Item): Session {
  const n = (a: string) => (typeof item[a] === 'number' ? (item[a] as number) : 0);
  const opt = (a: string) => (typeof item[a] === 'number' ? (item[a] as number) : undefined);
  const reason = item[S.endReason];
  return {
    id,
    owner: String(item[S.owner] ?? ''),
    clientId: String(item[S.client] ?? ''),
    ttlMs: n(S.ttlMs),
    graceMs: n(S.graceMs),
    lockDelayMs: n(S.lockDelayMs),
    createdAt: n(S.createdAt),
    deadline: n(S.deadline),
    expiresAt: n(S.expiresAt),
    endedAt: opt(S.endedAt),
    endReason: typeof reason === 'string' && END_REASONS.includes(reason) ? (reason as EndReason) : undefined,
    sweptAt: opt(S.sweptAt),
  };
}

export function sessionState(s: Session, now: number): SessionState {
  if (s.endedAt !== undefined) return 'ended';
  if (now < s.deadline) return 'alive';
  if (now < s.expiresAt) return 'grace';
  return 'expired';
}

/**
 * When something about the session is due: its expiry while it lives, at
 * once once it ended with locks perhaps still to release; nothing once swept.
 */
export const sessionDueAt = (s: Session, now: number): number | undefined =>
  s.sweptAt !== undefined ? undefined : s.endedAt !== undefined ? now : s.expiresAt;

/** A client should heartbeat three times per ttl: two can be lost before the deadline. */
export const heartbeatIntervalMs = (ttlMs: number) => Math.floor(ttlMs / 3);

const notEnded = missing(S.endedAt);
/** Alive or in grace at `now`: may heartbeat, may take locks. */
export const isLiveAt = (now: number) => and(exists(S.client), notEnded, gt(S.expiresAt, now));

/** The condition on a session item for a grant held through it: live, and the grantee's. */
export const sessionTakesLocks = (owner: string, clientId: string, now: number) =>
  and(isLiveAt(now), eq(S.owner, owner), eq(S.client, clientId));

/**
 * What a grant held through a session adds to its transaction: a check that
 * the session is live and the grantee's, and the record under the session
 * that it took the lock. Either the grant lands before the session ends (and
 * whoever ends it finds the record), or it is refused.
 */
export const sessionGrantSteps = (
  sessionId: string,
  owner: string,
  clientId: string,
  lock: string,
  now: number,
): Step[] => [
  { kind: 'check', ref: sessionRef(sessionId), condition: sessionTakesLocks(owner, clientId, now) },
  { kind: 'update', ref: sessionLockRef(sessionId, lock), update: [set('lock_name', lock)] },
];

export interface SessionSettings {
  readonly ttlMs: number;
  readonly graceMs: number;
  readonly lockDelayMs: number;
}

export function createWrite(owner: string, clientId: string, o: SessionSettings, now: number): ItemWrite {
  const expiresAt = now + o.ttlMs + o.graceMs;
  return {
    condition: missing(S.client),
    update: [
      set(S.owner, owner),
      set(S.client, clientId),
      set(S.ttlMs, o.ttlMs),
      set(S.graceMs, o.graceMs),
      set(S.lockDelayMs, o.lockDelayMs),
      set(S.createdAt, now),
      set(S.deadline, now + o.ttlMs),
      set(S.expiresAt, expiresAt),
    ],
    sweepAt: expiresAt,
    // Never collected before it is swept: it is how its locks are found.
    gcFrom: null,
  };
}

/**
 * The session's entry in the due index (its `sweepAt`) is housekeeping the
 * sweeper reads by `due_at <= now`: it must never be later than the
 * session's expiry (or the sweeper would find an expired session late), and
 * a heartbeat need not move it on every beat. Moving it costs two index
 * writes (a delete and a put, whenever its key changes); leaving it costs
 * nothing. So a heartbeat leaves the entry where it is while it is still
 * (a) not later than the new expiry, and (b) more than `dueLeadMs` ahead of
 * now (the recommended interval and 10 %), so that a client heartbeating at
 * the recommended interval (or faster) always heartbeats again before the
 * entry falls due: the sweeper never sees a healthy session. At the SDK's
 * defaults (ttl 30 s, grace 5 s, a heartbeat every 10 s) the entry moves on
 * every 3rd heartbeat (2/3 of an index write per heartbeat instead of 2);
 * in general on every ceil((ttl + grace - lead) / interval)th. When it
 * moves, the heartbeat files it at the new expiry, as every heartbeat did
 * before.
 *
 * Expiry itself is never judged from the index: the sweeper and the timers
 * read the session item and end it only once `expires_at <= now` on the
 * server's clock (endWrite). An entry the sweeper finds while the session
 * is still live (a client that skipped a heartbeat) is moved to the
 * session's expiry (refileWrite), so it is found again then and not before.
 */
export const dueLeadMs = (ttlMs: number) => {
  // The SDK heartbeats an interval after the last heartbeat's answer: allow it 10 % more.
  const interval = heartbeatIntervalMs(ttlMs);
  return interval + Math.ceil(interval / 10);
};

/**
 * Whether a heartbeat at `now` that sets the expiry to `expiresAt` may leave the due entry
 * filed at `filedAt` (the item's due index sort key as read; undefined: none) where it is.
 * Only when the expiry does not move back (a concurrent heartbeat on a clock behind, say).
 */
export const keepsDueEntry = (s: Session, filedAt: number | undefined, expiresAt: number, now: number) =>
  filedAt !== undefined &&
  s.expiresAt <= expiresAt &&
  filedAt <= expiresAt &&
  filedAt > now + dueLeadMs(s.ttlMs);

/**
 * Extends the session from the item read just before (its ttl and grace), if still live and the
 * client's. `filedAt` is its due entry as read (see keepsDueEntry): left in place when it may be,
 * on condition that the expiry has not moved past this heartbeat's meanwhile (so the entry, which
 * was not later than the expiry then, is not later than the one written now); moved to the new
 * expiry otherwise.
 */
export function heartbeatWrite(s: Session, now: number, filedAt?: number): ItemWrite {
  const expiresAt = now + s.ttlMs + s.graceMs;
  const live = and(
    isLiveAt(now),
    eq(S.owner, s.owner),
    eq(S.client, s.clientId),
    eq(S.ttlMs, s.ttlMs),
    eq(S.graceMs, s.graceMs),
  );
  const update = [set(S.deadline, now + s.ttlMs), set(S.expiresAt, expiresAt)];
  if (keepsDueEntry(s, filedAt, expiresAt, now))
    return { condition: and(live, le(S.expiresAt, expiresAt)), update };
  return { condition: live, update, sweepAt: expiresAt };
}

/**
 * Whether a live session's due entry, filed at `filedAt`, must be moved to its expiry: it is
 * due by `now` though the session is not (the sweeper found it early), missing, or later than
 * the expiry (moved on by a failed sweep, see sweep.ts).
 */
export const dueEntryMisfiled = (s: Session, filedAt: number | undefined, now: number) =>
  s.endedAt === undefined &&
  s.expiresAt > now &&
  (filedAt === undefined || filedAt <= now || filedAt > s.expiresAt);

/**
 * Moves a live session's due entry to its expiry as read in `s`; refused if the session ended,
 * expired by `now`, or heartbeated meanwhile (that heartbeat placed the entry).
 */
export const refileWrite = (
  s: Pick<Session, 'owner' | 'clientId' | 'expiresAt'>,
  now: number,
): ItemWrite => ({
  condition: and(isLiveAt(now), eq(S.owner, s.owner), eq(S.client, s.clientId), eq(S.expiresAt, s.expiresAt)),
  update: [],
  sweepAt: s.expiresAt,
});

/**
 * Ends a session: closed by its client or ended by an operator (while live), or expired (only
 * once past its expiry, so a heartbeat that landed first keeps it alive).
 */
export function endWrite(s: Pick<Session, 'owner' | 'clientId'>, reason: EndReason, now: number): ItemWrite {
  const when = reason === 'expired' ? le(S.expiresAt, now) : gt(S.expiresAt, now);
  return {
    condition: and(exists(S.client), notEnded, eq(S.owner, s.owner), eq(S.client, s.clientId), when),
    update: [set(S.endedAt, now), set(S.endReason, reason)],
    // Due now: until its locks are released (sweptWrite), the sweeper and timers finish the job.
    sweepAt: now,
  };
}

/** Marks an ended session fully swept (its locks released): nothing about it is due any more. */
export const sweptWrite = (now: number): ItemWrite => ({
  condition: exists(S.endedAt),
  update: [set(S.sweptAt, now)],
  sweepAt: null,
  listed: false,
  gcFrom: now,
});
