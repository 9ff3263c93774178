/**
 * A granted lease as the client sees it. `deadline` is on this process's
 * monotonic clock (performance.now()): the time the request was sent plus
 * the lease the server said was left. It never uses the server's timestamp,
 * so clock skew between machines cannot stretch it.
 */
export interface GrantAnswer {
  readonly lock: string;
  readonly client_id: string;
  readonly fencing_token: number;
  readonly expires_at: string;
  readonly remaining_ms: number;
  readonly ttl_ms: number;
}

export class Lease {
  readonly name: string;
  readonly clientId: string;
  readonly fencingToken: number;
  ttlMs: number;
  /** Lease end on the server's clock (informational; judge by `deadline`). */
  expiresAt: Date;
  /** Lease end on this process's monotonic clock, conservatively: send time + lease left. */
  deadline: number;
  readonly sessionId: string | undefined;

  constructor(answer: GrantAnswer, sentAt: number, sessionId?: string) {
    this.name = answer.lock;
    this.clientId = answer.client_id;
    this.fencingToken = answer.fencing_token;
    this.ttlMs = answer.ttl_ms;
    this.expiresAt = new Date(answer.expires_at);
    this.deadline = sentAt + answer.remaining_ms;
    this.sessionId = sessionId;
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
