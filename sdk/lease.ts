/**
 * A granted lease as the client sees it. `deadline` is on this process's
 * monotonic clock (performance.now()): the time the request was sent plus
 * the lease the server said was left. It never uses the server's timestamp,
 * so clock skew between machines cannot stretch it. A lock held through a
 * session has no lease of its own (the server answers `expires_at: null`):
 * it lasts as long as the session, whose `signal` says when it is lost.
 * A lease knows its mode: a shared one says so when it is renewed or released.
 */
import type { LockMode } from './multi-lock';

export interface GrantAnswer {
  readonly lock: string;
  readonly client_id: string;
  readonly fencing_token: number;
  readonly expires_at: string | null;
  readonly remaining_ms: number | null;
  readonly ttl_ms: number | null;
  readonly session_id?: string;
  /** How the lock is held; an answer without it is exclusive. */
  readonly mode?: LockMode;
  /** A semaphore's N (shared only); absent or null otherwise. */
  readonly max_holders?: number | null;
  /** How many times the grant is held: 1, or more after reentrant acquires of a lock already held. */
  readonly reentry?: number;
}

export class Lease {
  readonly name: string;
  readonly clientId: string;
  readonly fencingToken: number;
  /** The lease's ttl; 0 for a lock held through a session. */
  ttlMs: number;
  /** Lease end on the server's clock (informational; judge by `deadline`); undefined through a session. */
  expiresAt: Date | undefined;
  /**
   * Lease end on this process's monotonic clock, conservatively: send time + lease left. Infinity for
   * a lock held through a session: it lasts while the session does (watch the session's `signal`).
   */
  deadline: number;
  readonly sessionId: string | undefined;
  /**
   * How the lock is held: 'exclusive' (the only holder) or 'shared' (with other shared holders,
   * none exclusive). Renewals and the release of a shared lease say so to the service.
   */
  readonly mode: LockMode;
  /** A semaphore's N: at most this many hold the lock at once (shared only); undefined otherwise. */
  readonly maxHolders: number | undefined;
  /**
   * How many times the grant is held: 1 for a new grant, more when a reentrant acquire entered a
   * grant the caller already held (each release counts one down).
   */
  readonly reentry: number;
  constructor(answer: GrantAnswer, sentAt: number, sessionId?: string) {
    this.name = answer.lock;
    this.mode = answer.mode === 'shared' ? 'shared' : 'exclusive';
    this.maxHolders = this.mode === 'shared' ? (answer.max_holders ?? undefined) : undefined;
    this.clientId = answer.client_id;
    this.fencingToken = answer.fencing_token;
    this.sessionId = sessionId ?? answer.session_id;
    this.reentry = answer.reentry ?? 1;
    this.ttlMs = answer.ttl_ms ?? 0;
    this.expiresAt = answer.expires_at === null ? undefined : new Date(answer.expires_at);
    this.deadline = answer.remaining_ms === null ? Number.POSITIVE_INFINITY : sentAt + answer.remaining_ms;
  }

  /** Lease left by this process's clock (negative once past). */
  remainingMs(now = performance.now()): number {
    return this.deadline - now;
  }

  /**
   * Records a renewal answered for a request sent at `sentAt`. The server
   * set the lease to end `remaining_ms` after it handled the request, which
   * was after `sentAt`: so the new deadline is never later than the
   * server's, even when the renewal shortened the lease.
   */
  renewed(answer: { expires_at: string; remaining_ms: number; ttl_ms?: number }, sentAt: number): void {
    this.expiresAt = new Date(answer.expires_at);
    this.deadline = sentAt + answer.remaining_ms;
    if (answer.ttl_ms !== undefined) this.ttlMs = answer.ttl_ms;
  }
}

/** What a release did: `remainingReentries` releases are left before a re-entered lock is free (0: it is). */
export interface ReleaseResult {
  readonly remainingReentries: number;
}
