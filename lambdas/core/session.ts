/**
 * Sessions: a client's liveness, proven by heartbeats, that locks can be
 * tied to (ephemeral locks, like ZooKeeper's ephemeral nodes or etcd's
 * leases). A session is ALIVE until its deadline (last heartbeat + ttl),
 * then in GRACE for `grace_ms`, then EXPIRED; ENDED once closed by its
 * client or by the sweeper. Its locks are released when it ends.
 *
 * A lock tied to a session carries no lease of its own worth renewing: its
 * lease is set to SESSION_LOCK_LEASE_MS, a backstop only. One heartbeat
 * therefore renews every lock of the session with one write to the session
 * item, whatever the number of locks. Everything is judged on the server's
 * clock, and every change is a conditional write, as for locks.
 */
import { and, eq, exists, gt, type Item, le, missing, remove, set, type Write } from './expr';

export const SessionAttr = {
  client: 'client_id',
  ttlMs: 'ttl_ms',
  graceMs: 'grace_ms',
  createdAt: 'created_at',
  /** Last heartbeat + ttl, ms on the server's clock. */
  deadline: 'deadline',
  /** deadline + grace: when the session expires and its locks go. */
  dueAt: 'due_at',
  endedAt: 'ended_at',
  endReason: 'end_reason',
  /** Lock-delay for the session's locks should it expire (see LockAttr.blockedUntil). */
  lockDelayMs: 'lock_delay_ms',
} as const;
const S = SessionAttr;

/** The lease of a lock tied to a session: a backstop should a session never be swept (30 days). */
export const SESSION_LOCK_LEASE_MS = 30 * 24 * 3_600_000;

/** A command as it runs: tied to a session, its lease is the session's (the backstop above). */
export const withSessionLease = <
  C extends { readonly ttlMs: number; readonly sessionId?: string | undefined },
>(
  cmd: C,
): C => (cmd.sessionId === undefined ? cmd : { ...cmd, ttlMs: SESSION_LOCK_LEASE_MS });

export type SessionState = 'alive' | 'grace' | 'expired' | 'ended';
export type EndReason = 'closed' | 'expired';

export interface Session {
  readonly id: string;
  readonly clientId: string;
  readonly ttlMs: number;
  readonly graceMs: number;
  readonly lockDelayMs: number;
  readonly createdAt: number;
  readonly deadline: number;
  readonly dueAt: number;
  readonly endedAt: number | undefined;
  readonly endReason: EndReason | undefined;
}

export function sessionOfItem(id: string, item: Item): Session {
  const n = (a: string) => (typeof item[a] === 'number' ? (item[a] as number) : 0);
  const ended = item[S.endedAt];
  const reason = item[S.endReason];
  return {
    id,
    clientId: String(item[S.client] ?? ''),
    ttlMs: n(S.ttlMs),
    graceMs: n(S.graceMs),
    lockDelayMs: n(S.lockDelayMs),
    createdAt: n(S.createdAt),
    deadline: n(S.deadline),
    dueAt: n(S.dueAt),
    endedAt: typeof ended === 'number' ? ended : undefined,
    endReason: reason === 'closed' || reason === 'expired' ? reason : undefined,
  };
}

export function sessionState(s: Session, now: number): SessionState {
  if (s.endedAt !== undefined) return 'ended';
  if (now < s.deadline) return 'alive';
  if (now < s.dueAt) return 'grace';
  return 'expired';
}

/** A client should heartbeat three times per ttl: two can be lost before the deadline. */
export const heartbeatIntervalMs = (ttlMs: number) => Math.floor(ttlMs / 3);

const notEnded = missing(S.endedAt);
/** Alive or in grace at `now`: may heartbeat, may take locks. */
export const isLiveAt = (now: number) => and(exists(S.client), notEnded, gt(S.dueAt, now));

/** The condition on a session item for a grant tied to it: live, and the grantee's. */
export const sessionTakesLocks = (clientId: string, now: number) =>
  and(isLiveAt(now), eq(S.client, clientId));

export interface SessionSettings {
  readonly ttlMs: number;
  readonly graceMs: number;
  readonly lockDelayMs: number;
}

export function createWrite(clientId: string, o: SessionSettings, now: number): Write {
  const { ttlMs, graceMs } = o;
  return {
    condition: missing(S.client),
    update: [
      set(S.client, clientId),
      set(S.ttlMs, ttlMs),
      set(S.graceMs, graceMs),
      set(S.lockDelayMs, o.lockDelayMs),
      set(S.createdAt, now),
      set(S.deadline, now + ttlMs),
      set(S.dueAt, now + ttlMs + graceMs),
    ],
  };
}

/** Extends the session from the item read just before (its ttl and grace), if still live and the client's. */
export function heartbeatWrite(s: Session, now: number): Write {
  return {
    condition: and(isLiveAt(now), eq(S.client, s.clientId), eq(S.ttlMs, s.ttlMs), eq(S.graceMs, s.graceMs)),
    update: [set(S.deadline, now + s.ttlMs), set(S.dueAt, now + s.ttlMs + s.graceMs)],
  };
}

/**
 * Ends a session: closed by its client (while live), or expired (only once
 * past its due time, so a heartbeat that landed first keeps it alive).
 */
export function endWrite(s: Pick<Session, 'clientId'>, reason: EndReason, now: number): Write {
  const when = reason === 'closed' ? gt(S.dueAt, now) : le(S.dueAt, now);
  return {
    condition: and(exists(S.client), notEnded, eq(S.client, s.clientId), when),
    // Due now: until its locks are released (sweptWrite), the sweeper and timers finish the job.
    update: [set(S.endedAt, now), set(S.endReason, reason), set(S.dueAt, now)],
  };
}

/** Marks an ended session fully swept (its locks released): it leaves the due index. */
export const sweptWrite = (): Write => ({
  condition: exists(S.endedAt),
  update: [remove(S.dueAt)],
});
