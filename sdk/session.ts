/**
 * A session: one heartbeat keeps every lock taken in it, and they are all
 * released when it ends (closed here, or expired on the server after ttl +
 * grace without a heartbeat). `signal` aborts and `done` resolves the moment
 * the session is lost: a heartbeat refused, or none confirmed before the
 * local deadline (last confirmed send time + ttl, minus a safety margin).
 */
import { DEFAULT_TTL_MS, nameArg, optionsArg, priorityArg, signalArg, wantArg, wholeMs } from './arguments';
import { type LatchkeyClientError, LeaseLostError, SessionExpiredError } from './errors';
import type { Lease, ReleaseResult } from './lease';
import { safetyMarginMs } from './lease-keeper';
import type { LockMode } from './multi-lock';

/** The options `session()` takes (anything else is refused). */
export const SESSION_OPTIONS = ['ttlMs', 'graceMs', 'lockDelayMs'];

export interface SessionOptions {
  /**
   * How long the session lives without a heartbeat, in ms (rounded); heartbeats go every third of
   * it. Default 30 000 (30 s); the service takes 1 s to 1 h unless its operator changed the limits.
   */
  readonly ttlMs?: number;
  /** A late heartbeat within this still saves the session, in ms (rounded). Server default 5 s. */
  readonly graceMs?: number;
  /** Should the session expire, its locks stay ungrantable this long, in ms (Chubby's lock-delay). Default 0. */
  readonly lockDelayMs?: number;
}

/** How to hold a lock taken in a session (as LockClient's LockModeOptions). */
export interface SessionLockOptions {
  /** 'exclusive' (default) or 'shared' (many holders at once, none exclusive). */
  readonly mode?: LockMode;
  /** Shared only: a semaphore of this many holders (an integer 1..1000, the same for every holder). */
  readonly maxHolders?: number;
}

export interface SessionAcquireOptions extends SessionLockOptions {
  /**
   * How long to wait in the lock's queue, in ms (rounded). Default Infinity: until the lock is
   * granted, the session ends or `signal` aborts.
   */
  readonly waitTimeoutMs?: number;
  /** −100..100, higher first. Default 0. */
  readonly priority?: number;
  /** Ends the wait when aborted (the wait ends with the session anyway). */
  readonly signal?: AbortSignal;
}

/** What a Session needs of its client. */
export interface SessionHost {
  readonly clientId: string;
  // biome-ignore lint/suspicious/noExplicitAny: JSON answers
  post(path: string, body: unknown): Promise<any>;
  // biome-ignore lint/suspicious/noExplicitAny: JSON answers
  delete(path: string): Promise<any>;
  tryAcquire(name: string, options: { sessionId: string } & SessionLockOptions): Promise<Lease | null>;
  acquire(
    name: string,
    options: {
      waitTimeoutMs?: number;
      priority?: number;
      sessionId: string;
      signal?: AbortSignal;
    } & SessionLockOptions,
  ): Promise<Lease>;
  release(lease: Lease): Promise<ReleaseResult>;
}

/** The mode options checked (before anything is sent), and only those given. */
function modeOptions(options: SessionLockOptions): SessionLockOptions {
  const want = wantArg(options);
  return want.mode === 'exclusive'
    ? options.mode === undefined
      ? {}
      : { mode: 'exclusive' }
    : { mode: 'shared', ...(want.maxHolders === undefined ? {} : { maxHolders: want.maxHolders }) };
}

export class Session {
  readonly signal: AbortSignal;
  /** Resolves when the session ends: with the reason it was lost, or undefined once closed. */
  readonly done: Promise<LatchkeyClientError | undefined>;
  private readonly controller = new AbortController();
  private settle!: (reason: LatchkeyClientError | undefined) => void;
  private deadline: number;
  private timer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private ended = false;

  private constructor(
    private readonly client: SessionHost,
    readonly id: string,
    readonly ttlMs: number,
    readonly heartbeatIntervalMs: number,
    sentAt: number,
  ) {
    this.signal = this.controller.signal;
    this.done = new Promise((resolve) => {
      this.settle = resolve;
    });
    this.deadline = sentAt + ttlMs;
    this.armDeadline();
    this.beatSoon(heartbeatIntervalMs);
  }

  static async open(client: SessionHost, given?: SessionOptions): Promise<Session> {
    const options = optionsArg('session', given, '{ ttlMs: 15_000 }', SESSION_OPTIONS);
    const body = {
      client_id: client.clientId,
      ttl_ms: wholeMs('ttlMs', options.ttlMs ?? DEFAULT_TTL_MS),
      ...(options.graceMs === undefined ? {} : { grace_ms: wholeMs('graceMs', options.graceMs) }),
      ...(options.lockDelayMs === undefined
        ? {}
        : { lock_delay_ms: wholeMs('lockDelayMs', options.lockDelayMs) }),
    };
    const sentAt = performance.now();
    const answer = await client.post('/api/v1/sessions', body);
    return new Session(client, answer.session_id, answer.ttl_ms, answer.heartbeat_interval_ms, sentAt);
  }

  /** The lock, tied to this session, if it is free now (in `options.mode`, default exclusive); else null. */
  async tryAcquire(name: string, given?: SessionLockOptions): Promise<Lease | null> {
    nameArg('session.tryAcquire', name);
    const options = optionsArg('session.tryAcquire', given, "{ mode: 'shared' }", ['mode', 'maxHolders']);
    return this.client.tryAcquire(name, { sessionId: this.id, ...modeOptions(options) });
  }

  /**
   * Waits for the lock in its queue; granted tied to this session. Without options it waits until
   * granted or the session ends (see SessionAcquireOptions).
   */
  async acquire(name: string, given?: SessionAcquireOptions): Promise<Lease> {
    nameArg('session.acquire', name);
    const options = optionsArg('session.acquire', given, '{ waitTimeoutMs: 60_000 }', [
      'mode',
      'maxHolders',
      'waitTimeoutMs',
      'priority',
      'signal',
    ]);
    const signal = signalArg(options.signal);
    const mode = modeOptions(options);
    return this.client.acquire(name, {
      ...mode,
      waitTimeoutMs: wholeMs('waitTimeoutMs', options.waitTimeoutMs ?? Number.POSITIVE_INFINITY, {
        infinite: true,
      }),
      ...(options.priority === undefined ? {} : { priority: priorityArg(options.priority) }),
      sessionId: this.id,
      signal: signal ? AbortSignal.any([this.signal, signal]) : this.signal,
    });
  }

  /** Releases a lock held through this session (LockClient.release: it says the re-entries left). */
  release(lease: Lease): Promise<ReleaseResult> {
    return this.client.release(lease);
  }

  /** Ends the session and releases its locks (to their next waiters). */
  async close(): Promise<void> {
    if (this.ended) return;
    this.end(undefined);
    await this.client.delete(
      `/api/v1/sessions/${this.id}?client_id=${encodeURIComponent(this.client.clientId)}`,
    );
  }

  private beatSoon(delay: number): void {
    this.timer = setTimeout(async () => {
      if (this.ended) return;
      const sentAt = performance.now();
      try {
        await this.client.post(`/api/v1/sessions/${this.id}/heartbeat`, { client_id: this.client.clientId });
        if (this.ended) return;
        this.deadline = Math.max(this.deadline, sentAt + this.ttlMs);
        this.armDeadline();
        this.beatSoon(this.heartbeatIntervalMs);
      } catch (error) {
        if (error instanceof SessionExpiredError || (error as LatchkeyClientError).status === 404)
          return this.end(
            // The service's message names the session and how it ended; a 404 may not.
            new SessionExpiredError(
              (error as Error).message.includes(this.id)
                ? (error as Error).message
                : `session ${this.id} has ended: ${(error as Error).message}`,
              this.id,
            ),
          );
        if (!this.ended) this.beatSoon(Math.min(this.heartbeatIntervalMs / 3, 1_000));
      }
    }, delay);
  }

  private armDeadline(): void {
    clearTimeout(this.deadlineTimer);
    const left = this.deadline - performance.now() - safetyMarginMs(this.ttlMs);
    this.deadlineTimer = setTimeout(
      () =>
        this.end(
          new LeaseLostError(`session ${this.id}: no heartbeat confirmed before its deadline`, undefined, {
            sessionId: this.id,
          }),
        ),
      Math.max(0, left),
    );
  }

  private end(reason: LatchkeyClientError | undefined): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.timer);
    clearTimeout(this.deadlineTimer);
    this.controller.abort(reason ?? new SessionExpiredError(`session ${this.id} was closed`, this.id));
    this.settle(reason);
  }
}
