/**
 * LockClient: latchkey from code. Every call is signed (SigV4), retried on
 * transient failures with the same request_id, and answered with a typed
 * result or a typed error.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import {
  errorFromResponse,
  InvalidRequestError,
  LockHeldError,
  UnavailableError,
  WaitTimeoutError,
} from './errors';
import { type GrantAnswer, Lease } from './lease';
import { keepLease } from './lease-keeper';
import { Session, type SessionOptions } from './session';
import { SignedTransport } from './transport';
import { WsWaiter } from './ws-waiter';

export interface LockClientOptions {
  /** The HTTP API's base URL (the stack's ApiUrl output; http://127.0.0.1:3000 locally). */
  readonly endpoint: string;
  /** The WebSocket API's URL (the WebSocketUrl output; ws://127.0.0.1:3001/v1 locally); waits use HTTP without it. */
  readonly wsEndpoint?: string;
  readonly region?: string;
  /** Default: the AWS default provider chain (for a local endpoint: the local stack's credentials). */
  readonly credentials?: AwsCredentialIdentity | AwsCredentialIdentityProvider;
  /** Who holds the locks this client takes. Default: hostname-pid-random, unique per client. */
  readonly clientId?: string;
}

export interface TryAcquireOptions {
  readonly ttlMs: number;
  readonly reentrant?: boolean;
  readonly mode?: 'exclusive';
}

export interface AcquireOptions {
  readonly ttlMs: number;
  /** How long to wait in the lock's queue. */
  readonly waitTimeoutMs: number;
  /** −100..100, higher first (FIFO within a priority). */
  readonly priority?: number;
  readonly signal?: AbortSignal;
}

/** An HTTP wait is at most 25 s (API Gateway ends requests at 30 s); longer ones are made of several. */
const MAX_HTTP_WAIT_MS = 25_000;

const lockPath = (name: string, action: string) => `/api/v1/locks/${name}/${action}`;

/**
 * A duration as the service takes it: whole milliseconds. Any finite, non-negative number is
 * accepted and rounded (a computed 2499.7 ms is fine); anything else is refused here, before a call.
 */
export function wholeMs(what: string, value: number): number {
  if (!Number.isFinite(value) || value < 0)
    throw new InvalidRequestError(
      `${what} must be a finite, non-negative number of milliseconds (got ${value})`,
    );
  return Math.round(value);
}

export class LockClient {
  readonly clientId: string;
  readonly transport: SignedTransport;
  private readonly waiter: WsWaiter | undefined;
  /** When to try the WebSocket API again after it could not be reached. */
  private wsRetryAt = 0;

  constructor(options: LockClientOptions) {
    this.transport = new SignedTransport(options);
    this.clientId = options.clientId ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
    this.waiter = options.wsEndpoint
      ? new WsWaiter(new URL(options.wsEndpoint), this.clientId, this.transport, (grant) =>
          this.releaseQuietly(new Lease(grant, 0)),
        )
      : undefined;
  }

  /** The lock if it is free now, else null. */
  async tryAcquire(name: string, options: TryAcquireOptions & { sessionId?: string }): Promise<Lease | null> {
    const got = await this.attempt(name, options);
    return got instanceof Lease ? got : null;
  }

  /** One acquire without waiting: the lease, or why not (the error a caller that must have it throws). */
  private async attempt(
    name: string,
    options: TryAcquireOptions & { sessionId?: string },
  ): Promise<Lease | LockHeldError> {
    const body = {
      client_id: this.clientId,
      request_id: randomUUID(),
      ...(options.sessionId === undefined
        ? { ttl_ms: wholeMs('ttlMs', options.ttlMs) }
        : { session_id: options.sessionId }),
      ...(options.reentrant ? { reentrant: true } : {}),
    };
    const sentAt = performance.now();
    const answer = await this.post(lockPath(name, 'acquire'), body);
    if (answer.acquired) return new Lease(answer as GrantAnswer, sentAt, options.sessionId);
    return new LockHeldError(name, answer.holder?.client_id, answer.retry_after_ms ?? 0);
  }

  /**
   * Waits for the lock in its queue (over WebSocket; HTTP waits where the
   * WebSocket API is not available) and throws WaitTimeoutError when the
   * wait runs out.
   */
  async acquire(name: string, options: AcquireOptions & { sessionId?: string }): Promise<Lease> {
    const lease = await this.waitFor(name, options);
    // The deadline counts from when the wait began: a long wait leaves little of it. One renewal,
    // sent now, bases it on now (a lock tied to a session has no lease to renew).
    if (lease.sessionId === undefined && lease.remainingMs() < lease.ttlMs * 0.9) {
      try {
        await this.renew(lease);
      } catch (error) {
        await this.releaseQuietly(lease); // nobody else will: the caller never saw this lease
        throw error;
      }
    }
    return lease;
  }

  private async waitFor(name: string, asked: AcquireOptions & { sessionId?: string }): Promise<Lease> {
    const options = {
      ...asked,
      waitTimeoutMs: wholeMs('waitTimeoutMs', asked.waitTimeoutMs),
      ttlMs: asked.sessionId === undefined ? wholeMs('ttlMs', asked.ttlMs) : 0,
    };
    const requestId = randomUUID();
    const sentAt = performance.now();
    const until = sentAt + options.waitTimeoutMs;
    if (this.waiter && performance.now() >= this.wsRetryAt) {
      try {
        const grant = await this.waiter.wait(
          {
            lock: name,
            ttlMs: options.sessionId === undefined ? options.ttlMs : undefined,
            waitMs: options.waitTimeoutMs,
            priority: options.priority,
            requestId,
            sessionId: options.sessionId,
          },
          options.signal,
        );
        return new Lease(grant, sentAt, options.sessionId);
      } catch (error) {
        // No WebSocket API where it was said to be: wait over HTTP, and try it again in a minute.
        if (!(error instanceof UnavailableError) || !/WebSocket/.test(error.message)) throw error;
        this.wsRetryAt = performance.now() + 60_000;
      }
    }
    return this.acquireOverHttp(name, options, requestId, until);
  }

  async release(lease: Lease): Promise<void> {
    await this.post(lockPath(lease.name, 'release'), {
      client_id: lease.clientId,
      fencing_token: lease.fencingToken,
    });
  }

  /**
   * Releases without failing: a few quick tries, then the lease is left to
   * lapse (it ends at its ttl anyway). Answers whether it was released.
   */
  async releaseQuietly(lease: Lease): Promise<boolean> {
    try {
      const answer = await this.transport.send(
        'POST',
        lockPath(lease.name, 'release'),
        { client_id: lease.clientId, fencing_token: lease.fencingToken },
        { attempts: 3, timeoutMs: 3_000 },
      );
      return answer.status === 200;
    } catch {
      return false;
    }
  }

  /** Extends the lease by `ttlMs` from now (default: its ttl); throws LeaseLostError if it ended. */
  async renew(lease: Lease, ttlMs = lease.ttlMs): Promise<Lease> {
    const sentAt = performance.now();
    // Each attempt must answer well before the lease ends, so a stalled connection is retried in time.
    const timeoutMs = Math.max(500, Math.min(35_000, lease.remainingMs(sentAt) / 3));
    const answer = await this.call(
      'POST',
      lockPath(lease.name, 'renew'),
      { client_id: lease.clientId, fencing_token: lease.fencingToken, ttl_ms: wholeMs('ttlMs', ttlMs) },
      { timeoutMs },
    );
    lease.renewed(answer, sentAt);
    return lease;
  }

  /**
   * Runs `fn` holding the lock: acquires it (waiting up to `waitTimeoutMs`,
   * or failing with LockHeldError at once if 0), renews it in the background
   * at a third of its ttl, aborts `signal` the moment the lease is lost or
   * cannot be confirmed before its local deadline, and releases it when `fn`
   * settles. Returns what `fn` returns.
   */
  async withLock<T>(
    name: string,
    options: { ttlMs: number; waitTimeoutMs?: number; priority?: number; signal?: AbortSignal },
    fn: (lease: Lease, signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const waitTimeoutMs = wholeMs('waitTimeoutMs', options.waitTimeoutMs ?? 0);
    let lease: Lease;
    if (waitTimeoutMs > 0) {
      lease = await this.acquire(name, { ...options, waitTimeoutMs });
    } else {
      const got = await this.attempt(name, options);
      if (got instanceof LockHeldError) throw got;
      lease = got;
    }
    const keeper = keepLease(this, lease);
    try {
      return await fn(lease, keeper.signal);
    } finally {
      keeper.stop();
      // Best effort: a lease already lost has nothing to release, and one that cannot be released
      // now lapses at its ttl; neither may replace what `fn` returned or threw.
      await this.releaseQuietly(lease);
    }
  }

  /** Opens a session: one heartbeat keeps every lock taken in it. */
  session(options: SessionOptions): Promise<Session> {
    return Session.open(this, options);
  }

  /** The lock, its holder and its queue (GET /api/v1/locks/{name}). */
  // biome-ignore lint/suspicious/noExplicitAny: the wire view, documented in the README
  async inspect(name: string): Promise<any> {
    return this.call('GET', `/api/v1/locks/${name}`);
  }

  /**
   * Locks whose names start with `prefix`, following pages. The prefix is part of the path
   * (GET /api/v1/list/{prefix}), so IAM policies can scope who may list what.
   */
  // biome-ignore lint/suspicious/noExplicitAny: the wire view, documented in the README
  async list(prefix = '', limit = 1_000): Promise<any[]> {
    const found: unknown[] = [];
    let cursor: string | undefined;
    do {
      const query = new URLSearchParams({ limit: String(Math.min(100, limit - found.length)) });
      if (cursor) query.set('cursor', cursor);
      const page = await this.call('GET', `/api/v1/list${prefix ? `/${prefix}` : ''}?${query}`);
      found.push(...page.locks);
      cursor = page.next_cursor ?? undefined;
    } while (cursor && found.length < limit);
    return found;
  }

  /**
   * Administrators: ends whoever holds `name` and moves its fencing counter past them, so their
   * writes are fenced out. Needs IAM permission on the admin route; `reason` is logged with the caller.
   */
  // biome-ignore lint/suspicious/noExplicitAny: the wire answer, documented in the README
  async forceRelease(name: string, reason: string): Promise<any> {
    return this.call('POST', `/api/v1/admin/locks/${name}/force-release`, { reason });
  }

  /** Closes the WebSocket connection (if any); pending waits fail. */
  close(): void {
    this.waiter?.close();
  }

  // biome-ignore lint/suspicious/noExplicitAny: JSON answers
  post(path: string, body: unknown): Promise<any> {
    return this.call('POST', path, body);
  }

  // biome-ignore lint/suspicious/noExplicitAny: JSON answers
  delete(path: string): Promise<any> {
    return this.call('DELETE', path);
  }

  /** A signed call; an error answer is thrown as its typed error. */
  private async call(
    method: string,
    path: string,
    body?: unknown,
    options?: Parameters<SignedTransport['send']>[3],
    // biome-ignore lint/suspicious/noExplicitAny: JSON answers
  ): Promise<any> {
    const answer = await this.transport.send(method, path, body, options);
    if (answer.status >= 400) throw errorFromResponse(answer.status, answer.body);
    return answer.body;
  }

  /**
   * HTTP waits of at most 25 s each until granted or the wait runs out. Each is a request of its own
   * (a new request_id: a wait that ended is an outcome, and a retry of it would answer the same), so
   * a longer wait rejoins the queue at its end every 25 s; the transport retries one with its own id.
   */
  private async acquireOverHttp(
    name: string,
    options: AcquireOptions & { sessionId?: string },
    firstRequestId: string,
    until: number,
  ): Promise<Lease> {
    for (let requestId = firstRequestId; ; requestId = randomUUID()) {
      options.signal?.throwIfAborted();
      // At least 1 ms: a request that asks to wait; 0 would be a try.
      const left = Math.max(1, Math.round(until - performance.now()));
      const sentAt = performance.now();
      const answer = await this.post(lockPath(name, 'acquire'), {
        client_id: this.clientId,
        request_id: requestId,
        wait_timeout_ms: Math.min(MAX_HTTP_WAIT_MS, left),
        ...(options.priority === undefined ? {} : { priority: options.priority }),
        ...(options.sessionId === undefined ? { ttl_ms: options.ttlMs } : { session_id: options.sessionId }),
      });
      if (answer.acquired) return new Lease(answer as GrantAnswer, sentAt, options.sessionId);
      if (performance.now() >= until) throw new WaitTimeoutError(name, options.waitTimeoutMs);
    }
  }
}
