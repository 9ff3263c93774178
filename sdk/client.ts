/**
 * LockClient: latchkey from code. Every call is signed (SigV4), retried on
 * transient failures with the same request_id, and answered with a typed
 * result or a typed error.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import {
  attemptsArg,
  booleanArg,
  clientIdArg,
  DEFAULT_TTL_MS,
  enclosingArg,
  holdingArg,
  leaseArg,
  nameArg,
  optionsArg,
  priorityArg,
  shown,
  signalArg,
  urlArg,
  wantArg,
  wholeMs,
} from './arguments';
import {
  EndpointError,
  errorFromResponse,
  type HeldWhenRefused,
  heldWhenRefused,
  InvalidArgumentError,
  type LatchkeyClientError,
  LimitExceededError,
  LockHeldError,
  markMayHaveApplied,
  RetryWarning,
  UnavailableError,
  type WaitEdge,
  WaitTimeoutError,
  waitEdgesFrom,
} from './errors';
import { type EnclosingHolds, holdingFor, keptBody, runHolding } from './held-locks';
import { type GrantAnswer, Lease, type ReleaseResult } from './lease';
import { keepLease, lostWhileHeld } from './lease-keeper';
import { cancelRequest, lockPath } from './lock-api';
import {
  holdLocks,
  type LockMode,
  type LockSpec,
  type LockWant,
  lockOrder,
  type WithLocksCallback,
  wantBody,
  withLocksOptions,
} from './multi-lock';
import { asIdentifier } from './names';
import { isOwnHold, OwnHoldError, OwnReleases, ownHoldRetryAfterMs, type ReleaseWatch } from './own-holds';
import { lostOnRelease, releaseIdOf, releaseStateOf, releasesSettled, trackRelease } from './release-state';
import { SESSION_OPTIONS, Session, type SessionOptions } from './session';
import { SignedTransport, sleep } from './transport';
import { WsWaiter } from './ws-waiter';

export { wholeMs } from './arguments';

export interface LockClientOptions {
  /** The HTTP API's base URL (the stack's ApiUrl output; http://127.0.0.1:3000 locally). */
  readonly endpoint: string;
  /**
   * The WebSocket API's URL, with its stage (the WebSocketUrl output, e.g.
   * wss://abc.execute-api.eu-west-1.amazonaws.com/v1; ws://127.0.0.1:3001/v1 locally); waits use
   * HTTP without it.
   */
  readonly wsEndpoint?: string;
  readonly region?: string;
  /** Default: the AWS default provider chain (for a local endpoint: the local stack's credentials). */
  readonly credentials?: AwsCredentialIdentity | AwsCredentialIdentityProvider;
  /**
   * Who holds the locks this client takes: 1 to 128 characters of A-Z a-z 0-9 . _ - : @ / + =.
   * Default: hostname-pid-random, unique per client.
   */
  readonly clientId?: string;
  /**
   * Told when the client works around a problem instead of failing: the WebSocket API could not be
   * reached, so waits go over HTTP (each rejoining the queue every 25 s) until it is tried again a
   * minute later; or a call failed transiently and is tried again (a RetryWarning, before each
   * retry: which attempt comes next, of how many). Default: nothing is said.
   */
  readonly onWarning?: (warning: LatchkeyClientError) => void;
  /**
   * Locks other client ids of the same principal hold while this client waits: the process that
   * started this one and waits for it to finish (`latchkey run` sets this for a run or acquire
   * inside a run's command), and so on outward: one `{ clientId, holding }`, or a list, outermost
   * first (at most 8 clients and 32 locks in all). Every wait names them, so that waits which nest
   * locks in opposite orders across processes are refused as a DeadlockError instead of waiting
   * until a timeout. Say only what is true: a client that does not wait for this one makes a
   * false cycle.
   */
  readonly enclosing?: EnclosingHolds | readonly EnclosingHolds[];
}

/**
 * How to hold a lock. `mode`: 'exclusive' (the default: the only holder) or 'shared' (many
 * holders at once, none exclusive: readers against a writer). `maxHolders` (shared only, an
 * integer 1..1000) makes it a semaphore: at most that many hold it at once, and every holder must
 * ask for the same N (another N is refused with MaxHoldersMismatchError while it is held).
 */
export interface LockModeOptions {
  readonly mode?: LockMode;
  readonly maxHolders?: number;
}

export interface TryAcquireOptions extends LockModeOptions {
  /**
   * Lease length in ms (rounded to whole ms). Default 30 000 (30 s). The service requires a lease
   * length and takes 1 s to 1 h unless its operator changed the limits.
   */
  readonly ttlMs?: number;
  /**
   * Taking a lock this client already holds answers the same lease (its token; its end does not
   * move: renew to extend it) and counts the entry (`lease.reentry`), instead of "held". Each
   * `release` counts one down; the last frees the lock.
   */
  readonly reentrant?: boolean;
}

export interface AcquireOptions extends LockModeOptions {
  /** Lease length in ms (rounded). Default 30 000 (30 s), as for tryAcquire. */
  readonly ttlMs?: number;
  /**
   * How long to wait in the lock's queue, in ms (rounded). Default Infinity: until the lock is
   * granted or `signal` aborts. 0 waits not at all. A wait longer than the service's longest
   * (2 hours less a minute) is made of several, each rejoining the queue at the end of the last.
   */
  readonly waitTimeoutMs?: number;
  /** −100..100, higher first (FIFO within a priority). Default 0. */
  readonly priority?: number;
  /** Ends the wait (leaving the queue) when aborted. */
  readonly signal?: AbortSignal;
  /**
   * Locks this task holds and keeps until this wait is served (deadlock detection: a wait that
   * would close a cycle of such waits is refused with DeadlockError). Inside withLock or withLocks
   * their locks are named already; name others here (leases taken by hand). At most 32 are sent.
   */
  readonly holding?: readonly string[];
}

export interface WithLockOptions extends AcquireOptions {
  /**
   * How long to wait for the lock, in ms (rounded). Default 0: withLock fails with LockHeldError at
   * once if the lock is held. Infinity waits until it is granted or `signal` aborts.
   */
  readonly waitTimeoutMs?: number;
  /**
   * How long before the lease's local deadline `signal` aborts when no renewal has been confirmed:
   * the time `fn` needs to stop touching what the lock protects. Default a tenth of the ttl, at most
   * 1 s. It must leave room for a renewal (less than two thirds of the ttl).
   */
  readonly stopMarginMs?: number;
}

/** withLocks' options: withLock's, but the mode (and maxHolders) of each lock goes with it in `locks`. */
export type WithLocksOptions = Omit<WithLockOptions, 'mode' | 'maxHolders'>;

/** An HTTP wait is at most 25 s (API Gateway ends requests at 30 s); longer ones are made of several. */
export const MAX_HTTP_WAIT_MS = 25_000;
/** The longest one wait may be at the service (a WebSocket connection lasts at most 2 hours). */
export const MAX_WAIT_MS = 2 * 3_600_000 - 60_000;

const HTTP_EXPECTED =
  "the HTTP API's URL, http:// or https:// (the stack's ApiUrl output, e.g. https://abc.execute-api.eu-west-1.amazonaws.com; http://127.0.0.1:3000 for the local stack)";
const WS_EXPECTED =
  "the WebSocket API's URL with its stage, ws:// or wss:// (the stack's WebSocketUrl output, e.g. wss://abc.execute-api.eu-west-1.amazonaws.com/v1; ws://127.0.0.1:3001/v1 for the local stack)";

/** Which sessions `LockClient.listSessions` lists (administrators). */
export interface ListSessionsOptions {
  /** Only this principal's (an IAM ARN; an assumed-role session counts as its role). */
  readonly principal?: string;
  /** Only this client id's. */
  readonly clientId?: string;
  /** At most this many (default 1,000). */
  readonly limit?: number;
}

/**
 * Who waits for whom around a lock (`LockClient.waits`, GET /api/v1/locks/{name}/waits).
 * - `edges`: the wait-for edges from the lock's waiters outward (a bounded walk: the waits of the
 *   parties they wait for, and so on);
 * - `cycles`: one cycle of waits per strongly connected part among those edges (a deadlock the
 *   service has not broken: lease ends and wait deadlines still will), each edge's blocker the
 *   next edge's waiter;
 * - `complete`: false when a bound of the walk cut it short, so a longer chain or cycle may be
 *   missing.
 */
export interface WaitGraph {
  readonly lock: string;
  readonly edges: WaitEdge[];
  readonly cycles: WaitEdge[][];
  readonly complete: boolean;
}

/**
 * The mode hint of a release or renewal: `mode: 'shared'` for a shared lease (the service finds
 * the grant either way, but the right hint saves it a write); nothing for an exclusive one, so
 * those requests are as they always were.
 */
/** A renewal attempt's timeout for a lease with `ms` left: a third of it, from 0.5 s to 35 s. */
const attemptTimeoutMs = (ms: number) => Math.max(500, Math.min(35_000, ms / 3));
/** The options each call takes (anything else is refused: a misspelt one would leave its default in force). */
const MODE_OPTIONS = ['mode', 'maxHolders'] as const;
const TRY_OPTIONS = ['ttlMs', 'reentrant', ...MODE_OPTIONS, 'sessionId'];
const WAIT_OPTIONS = ['ttlMs', 'waitTimeoutMs', 'priority', 'signal', 'holding', ...MODE_OPTIONS];
const ACQUIRE_OPTIONS = [...WAIT_OPTIONS, 'sessionId'];
const WITH_LOCK_OPTIONS = [...WAIT_OPTIONS, 'stopMarginMs'];

const heldAs = (lease: Lease): { mode?: 'shared' } => (lease.mode === 'shared' ? { mode: 'shared' } : {});

/**
 * A release of `lease`: one release_id for every release of this lease object, and every retry of
 * each, so one applied already (its answer lost) is answered, never applied twice.
 */
const releaseBody = (lease: Lease) => ({
  client_id: lease.clientId,
  fencing_token: lease.fencingToken,
  ...heldAs(lease),
  release_id: releaseIdOf(lease),
});

/** The default holder name: hostname-pid-random, with whatever the service would refuse replaced. */
const defaultClientId = () => `${asIdentifier(hostname(), 64)}-${process.pid}-${randomUUID().slice(0, 8)}`;

export class LockClient {
  readonly clientId: string;
  readonly transport: SignedTransport;
  private readonly enclosing: readonly EnclosingHolds[];
  private readonly waiter: WsWaiter | undefined;
  private readonly onWarning: ((warning: LatchkeyClientError) => void) | undefined;
  /** When to try the WebSocket API again after it could not be reached. */
  private wsRetryAt = 0;
  /** Releases through this client, which resume its waits for a lock it holds itself (own-holds.ts). */
  private readonly ownReleases = new OwnReleases();

  constructor(options: LockClientOptions) {
    if (typeof options !== 'object' || options === null)
      throw new InvalidArgumentError(
        'options',
        `new LockClient({ endpoint }) needs at least the endpoint: ${HTTP_EXPECTED} (got ${shown(options)})`,
      );
    urlArg('endpoint', options.endpoint, ['http:', 'https:'], HTTP_EXPECTED);
    const ws =
      options.wsEndpoint === undefined
        ? undefined
        : urlArg('wsEndpoint', options.wsEndpoint, ['ws:', 'wss:'], WS_EXPECTED);
    if (options.region !== undefined && typeof options.region !== 'string')
      throw new InvalidArgumentError(
        'region',
        `region must be an AWS region name such as 'eu-west-1' (got ${shown(options.region)})`,
      );
    if (options.onWarning !== undefined && typeof options.onWarning !== 'function')
      throw new InvalidArgumentError(
        'onWarning',
        `onWarning must be a function (got ${shown(options.onWarning)})`,
      );
    this.transport = new SignedTransport({
      ...options,
      onRetry: (failure, attempt, attempts, call) =>
        this.onWarning?.(new RetryWarning(failure, attempt, attempts, call)),
    });
    this.clientId = clientIdArg(options.clientId) ?? defaultClientId();
    this.enclosing = enclosingArg(options.enclosing);
    this.onWarning = options.onWarning;
    this.waiter = ws
      ? new WsWaiter(ws, this.clientId, this.transport, (grant) => this.releaseQuietly(new Lease(grant, 0)))
      : undefined;
  }

  /**
   * The lock if it is free now, else null. `ttlMs` defaults to 30 s (see TryAcquireOptions).
   */
  async tryAcquire(
    name: string,
    options?: TryAcquireOptions & { sessionId?: string },
  ): Promise<Lease | null> {
    const got = await this.attempt('tryAcquire', name, options);
    return got instanceof Lease ? got : null;
  }

  /**
   * One acquire without waiting: the lease, or the LockHeldError that says who holds it (and, in a
   * hierarchical namespace, which lock above or below keeps it out: `blockedBy`). What
   * `tryAcquire` does, keeping the reason it returns null for.
   */
  acquireNow(
    name: string,
    options?: TryAcquireOptions & { sessionId?: string },
  ): Promise<Lease | LockHeldError> {
    return this.attempt('acquireNow', name, options);
  }

  /** One acquire without waiting: the lease, or why not (the error a caller that must have it throws). */
  private async attempt(
    call: string,
    name: string,
    given: (TryAcquireOptions & { sessionId?: string }) | undefined,
    checked?: LockWant,
  ): Promise<Lease | LockHeldError> {
    nameArg(call, name);
    const options = optionsArg(call, given, '{ ttlMs: 30_000 }', TRY_OPTIONS);
    const reentrant = booleanArg('reentrant', options.reentrant);
    // withLock and withLocks check the mode up front and pass it on.
    const want = checked ?? wantArg(options);
    const body = {
      client_id: this.clientId,
      request_id: randomUUID(),
      ...(options.sessionId === undefined
        ? { ttl_ms: wholeMs('ttlMs', options.ttlMs ?? DEFAULT_TTL_MS) }
        : { session_id: options.sessionId }),
      ...(reentrant ? { reentrant: true } : {}),
      ...wantBody(want), // nothing for exclusive: those requests are as they always were
    };
    const sentAt = performance.now();
    const answer = await this.post(lockPath(name, 'acquire'), body);
    if (answer.acquired) return new Lease(answer as GrantAnswer, sentAt, options.sessionId);
    const held = heldWhenRefused(answer);
    return new LockHeldError(
      name,
      answer.holder?.client_id,
      answer.retry_after_ms ?? 0,
      answer.blocked_by?.lock === undefined ? undefined : answer.blocked_by,
      held.holderSummary,
      held.shared,
    );
  }

  /**
   * Waits for the lock in its queue (over WebSocket; HTTP waits where the
   * WebSocket API is not available) and throws WaitTimeoutError when the
   * wait runs out. Without options: a 30 s lease, waiting until granted
   * (or `signal` aborts); see AcquireOptions.
   */
  async acquire(name: string, options?: AcquireOptions & { sessionId?: string }): Promise<Lease> {
    nameArg('acquire', name);
    const checked = optionsArg(
      'acquire',
      options,
      '{ ttlMs: 30_000, waitTimeoutMs: 60_000 }',
      ACQUIRE_OPTIONS,
    );
    return this.acquireIn(name, checked, wantArg(checked));
  }

  /** acquire's wait and confirmation, asking as `want` says (its mode; a semaphore's maxHolders). */
  private async acquireIn(
    name: string,
    options: AcquireOptions & { sessionId?: string },
    want: LockWant,
  ): Promise<Lease> {
    const lease = await this.waitFor(name, options, want);
    // The deadline counts from when the wait began: a long wait leaves little of it. One renewal,
    // sent now, bases it on now (a lock tied to a session has no lease to renew).
    if (lease.sessionId === undefined && lease.remainingMs() < lease.ttlMs * 0.9) {
      try {
        // Its attempts get a third of the ttl, not of that estimate: after a long wait the estimate
        // is short though the lease was granted late, and a short timeout fails a slow renewal
        // that would have succeeded. The caller has no lease until it answers, so nothing relies
        // on the estimate meanwhile; a renewal that comes too late is refused, never applied.
        await this.renewWithin(lease, lease.ttlMs, attemptTimeoutMs(lease.ttlMs));
      } catch (error) {
        // Nobody else will: the caller never saw this lease. Not released: it is held until its ttl.
        if (!(await this.releaseQuietly(lease))) markMayHaveApplied(error);
        throw error;
      }
    }
    return lease;
  }

  private async waitFor(
    name: string,
    asked: AcquireOptions & { sessionId?: string },
    want: LockWant,
  ): Promise<Lease> {
    const options = {
      ...asked,
      waitTimeoutMs: wholeMs('waitTimeoutMs', asked.waitTimeoutMs ?? Number.POSITIVE_INFINITY, {
        infinite: true,
      }),
      ttlMs: asked.sessionId === undefined ? wholeMs('ttlMs', asked.ttlMs ?? DEFAULT_TTL_MS) : 0,
      priority: priorityArg(asked.priority),
      signal: signalArg(asked.signal),
      want,
      holding: holdingFor(name, holdingArg(asked.holding)),
    };
    let requestId = randomUUID();
    const until = performance.now() + options.waitTimeoutMs;
    while (this.waiter && performance.now() >= this.wsRetryAt) {
      const sentAt = performance.now();
      // Watched from before it asks: a release of its own hold while the answer is on its way counts.
      const watch = this.ownReleases.watch(name);
      try {
        const grant = await this.waiter.wait(
          {
            lock: name,
            ttlMs: options.sessionId === undefined ? options.ttlMs : undefined,
            // A longer wait than the service takes is several: each rejoins the queue at the end.
            waitMs: Math.min(MAX_WAIT_MS, Math.round(Math.max(0, until - sentAt))),
            priority: options.priority,
            requestId,
            sessionId: options.sessionId,
            mode: want.mode,
            maxHolders: want.maxHolders,
            holding: options.holding,
            enclosing: this.enclosing,
          },
          options.signal,
        );
        return new Lease(grant, sentAt, options.sessionId);
      } catch (error) {
        if (error instanceof WaitTimeoutError) {
          if (until - performance.now() < 1_000) throw new WaitTimeoutError(name, options.waitTimeoutMs);
          requestId = randomUUID();
          continue;
        }
        if (error instanceof OwnHoldError) {
          await this.pauseOnOwnHold(watch, name, error.retryAfterMs, until, options, error.held);
          requestId = randomUUID();
          continue;
        }
        // No WebSocket API where it was said to be: wait over HTTP, and try it again in a minute.
        if (!(error instanceof UnavailableError) || !/WebSocket/.test(error.message)) throw error;
        this.wsRetryAt = performance.now() + 60_000;
        this.onWarning?.(error);
      } finally {
        watch.end();
      }
    }
    return this.acquireOverHttp(name, options, requestId, until);
  }

  /**
   * A wait answered at once that this client holds `name` (it is not queued behind itself):
   * pauses until a release of `name` through this client, or the hold's `retryAfterMs`, within
   * the wait; past the wait, WaitTimeoutError naming the client.
   */
  private async pauseOnOwnHold(
    /** The wait's watch, begun before the request that was answered so. */
    watch: ReleaseWatch,
    name: string,
    retryAfterMs: number,
    until: number,
    options: { waitTimeoutMs: number; signal?: AbortSignal | undefined },
    /** The own hold, as the refusal named it. */
    held: HeldWhenRefused,
  ): Promise<void> {
    const left = until - performance.now();
    if (left <= 0) throw new WaitTimeoutError(name, options.waitTimeoutMs, this.clientId, held);
    await watch.pause(Math.min(Math.max(retryAfterMs, 50), left), options.signal);
  }

  /**
   * Releases the lease (the lock goes to its next waiter); LeaseLostError if it had ended already.
   * A lock acquired again with `reentrant` counts down instead, until its last release:
   * `remainingReentries` says how many releases are left before the lock is free (0: released).
   */
  async release(lease: Lease): Promise<ReleaseResult> {
    leaseArg('release', lease);
    try {
      // One release_id for every release of this lease, and every retry of each: one applied
      // already (its answer lost) is answered, never applied twice (a re-entered lock would count
      // down twice).
      const answer = await trackRelease(
        lease,
        () => this.call('POST', lockPath(lease.name, 'release'), releaseBody(lease), undefined, lease.name),
        () => true,
      );
      return { remainingReentries: Number(answer?.remaining_reentries ?? 0) };
    } finally {
      this.ownReleases.released(lease.name);
    }
  }

  /**
   * Releases without failing: a few quick tries, then the lease is left to
   * lapse (it ends at its ttl anyway). Answers whether it was released.
   */
  async releaseQuietly(lease: Lease): Promise<boolean> {
    // Released already (withLock's callback did), or on its way: its answer first. Released, or
    // found ended: nothing more to release. Else sent under the same release_id.
    await releasesSettled(lease);
    if (releaseStateOf(lease) === 'done') return true;
    if (lostOnRelease(lease)) return false;
    try {
      const answer = await trackRelease(
        lease,
        () =>
          this.transport.send(
            'POST',
            lockPath(lease.name, 'release'),
            releaseBody(lease),
            // Quiet: nobody asked for it (a withLock's end, a grant nobody waits for), and a failure is not said.
            { attempts: 3, timeoutMs: 3_000, quiet: true },
          ),
        (sent) => sent.status === 200,
      );
      return answer.status === 200;
    } catch {
      return false;
    } finally {
      this.ownReleases.released(lease.name);
    }
  }

  /**
   * Extends the lease by `ttlMs` from now (default: its ttl); throws LeaseLostError if it ended.
   * `renew(lease, { ttlMs, signal })`, like every other call's options, or `renew(lease, ttlMs)`;
   * `signal` ends the call (and its retries) when aborted.
   */
  async renew(lease: Lease, options?: number | { ttlMs?: number; signal?: AbortSignal }): Promise<Lease> {
    leaseArg('renew', lease);
    const given =
      typeof options === 'object' && options !== null
        ? optionsArg('renew', options, '{ ttlMs: 30_000 }', ['ttlMs', 'signal'])
        : { ttlMs: options };
    const { ttlMs } = given;
    const signal = signalArg('signal' in given ? given.signal : undefined);
    if (lease.sessionId !== undefined)
      throw new InvalidArgumentError(
        'lease',
        `renew: the lock ${lease.name} is held through session ${lease.sessionId}: it has no lease of its own to renew (the session's heartbeat keeps it)`,
      );
    // Each attempt must answer well before the lease ends, so a stalled connection is retried in time.
    return this.renewWithin(
      lease,
      wholeMs('ttlMs', ttlMs ?? lease.ttlMs),
      attemptTimeoutMs(lease.remainingMs()),
      signal,
    );
  }

  /** renew's call, each attempt bounded by `timeoutMs`. */
  private async renewWithin(
    lease: Lease,
    ms: number,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<Lease> {
    const sentAt = performance.now();
    const answer = await this.call(
      'POST',
      lockPath(lease.name, 'renew'),
      { client_id: lease.clientId, fencing_token: lease.fencingToken, ttl_ms: ms, ...heldAs(lease) },
      { timeoutMs, ...(signal ? { signal } : {}) },
      lease.name,
    );
    lease.renewed(answer, sentAt);
    return lease;
  }

  /**
   * Runs `fn` holding the lock: acquires it (waiting up to `waitTimeoutMs`,
   * or failing with LockHeldError at once if 0, the default), renews it in
   * the background at a third of its ttl (default 30 s), aborts `signal` the
   * moment the lease is lost or cannot be confirmed before its local
   * deadline, and releases it when `fn` settles. Returns what `fn` returns, but if the lease was
   * lost before `fn` returned, throws that LeaseLostError instead (the work was not all done under
   * the lock; keep a result you need either way outside). What `fn` throws is thrown as it is.
   * `withLock(name, fn)` takes every default.
   */
  withLock<T>(name: string, fn: (lease: Lease, signal: AbortSignal) => T | Promise<T>): Promise<T>;
  withLock<T>(
    name: string,
    options: WithLockOptions | undefined,
    fn: (lease: Lease, signal: AbortSignal) => T | Promise<T>,
  ): Promise<T>;
  async withLock<T>(
    name: string,
    optionsOrFn: WithLockOptions | undefined | ((lease: Lease, signal: AbortSignal) => T | Promise<T>),
    maybeFn?: (lease: Lease, signal: AbortSignal) => T | Promise<T>,
  ): Promise<T> {
    const [given, fn] = typeof optionsOrFn === 'function' ? [undefined, optionsOrFn] : [optionsOrFn, maybeFn];
    nameArg('withLock', name);
    if (typeof fn !== 'function')
      throw new InvalidArgumentError(
        'fn',
        `withLock(name, options, fn): fn must be a function (lease, signal) => ..., run while the lock is held (got ${shown(fn)})`,
      );
    const options = optionsArg(
      'withLock',
      given,
      '{ ttlMs: 30_000, waitTimeoutMs: 60_000 }',
      WITH_LOCK_OPTIONS,
    );
    const want = wantArg(options);
    const waitTimeoutMs = wholeMs('waitTimeoutMs', options.waitTimeoutMs ?? 0, { infinite: true });
    let lease: Lease;
    if (waitTimeoutMs > 0) {
      lease = await this.acquireIn(name, { ...options, waitTimeoutMs }, want);
    } else {
      priorityArg(options.priority);
      signalArg(options.signal)?.throwIfAborted();
      const got = await this.attempt(
        'withLock',
        name,
        { ...(options.ttlMs === undefined ? {} : { ttlMs: options.ttlMs }) },
        want,
      );
      if (got instanceof LockHeldError) throw got;
      lease = got;
    }
    const keeper = keepLease(
      this,
      lease,
      options.stopMarginMs === undefined ? undefined : wholeMs('stopMarginMs', options.stopMarginMs),
    );
    try {
      // A wait made inside fn names this lock as held (deadlock detection).
      const value = await runHolding([name], () => fn(lease, keeper.signal));
      // fn finished, but not under the lock: its result must not pass for work done holding it.
      const lost = await lostWhileHeld([lease], keeper.signal);
      if (lost) throw lost;
      return value;
    } finally {
      keeper.stop();
      // Best effort: a lease already lost has nothing to release, and one that cannot be released
      // now lapses at its ttl; neither may replace what `fn` returned or threw.
      await this.releaseQuietly(lease);
    }
  }

  /**
   * Runs `fn` holding several locks at once. The locks are acquired one after another in one
   * canonical order, their names sorted by code unit (compareLockNames), whatever order they are
   * given in: two callers that want the same locks can never deadlock. Each is acquired through its
   * own path, so IAM policies scoped by lock name apply to each. `locks` are names (exclusive) or
   * `{ name, mode?, maxHolders? }`: `mode: 'shared'` holds that lock shared (with other shared
   * holders), and `maxHolders` (shared only) as a semaphore of that many holders. The order is the
   * same whatever the modes, so sets mixing shared and exclusive locks cannot deadlock either.
   *
   * Options are withLock's (but a lock's mode goes with it in `locks`): `ttlMs` for each lease, `priority` and `signal` for each wait, and
   * `waitTimeoutMs` is ONE deadline for the whole set (default 0: each lock is tried once and
   * LockHeldError thrown if one is held; otherwise WaitTimeoutError when the deadline passes).
   * Each lease is renewed in the background from the moment it is granted. If anything fails
   * while acquiring (held, timeout, abort, a lease lost meanwhile, an error), the locks already
   * held are released (best effort) and that failure is thrown.
   *
   * `fn(leases, signal, byName)` gets the leases in the canonical order, one `signal` that aborts
   * when any lease is lost (its reason is the first lost lease's LeaseLostError), and the leases by
   * name (`byName.get('ledger/a')?.fencingToken`). When `fn` settles, every lock is released in
   * reverse order, best effort: a release failure never replaces what `fn` returned or threw. If a
   * lease was lost before `fn` returned, its LeaseLostError is thrown instead of the result.
   */
  withLocks<T>(locks: readonly LockSpec[], fn: WithLocksCallback<T>): Promise<T>;
  withLocks<T>(
    locks: readonly LockSpec[],
    options: WithLocksOptions | undefined,
    fn: WithLocksCallback<T>,
  ): Promise<T>;
  async withLocks<T>(
    locks: readonly LockSpec[],
    optionsOrFn: WithLocksOptions | undefined | WithLocksCallback<T>,
    maybeFn?: WithLocksCallback<T>,
  ): Promise<T> {
    const [given, fn] = typeof optionsOrFn === 'function' ? [undefined, optionsOrFn] : [optionsOrFn, maybeFn];
    const requests = lockOrder(locks, 'withLocks');
    if (typeof fn !== 'function')
      throw new InvalidArgumentError(
        'fn',
        `withLocks(locks, options, fn): fn must be a function (leases, signal, byName) => ..., run while the locks are held (got ${shown(fn)})`,
      );
    return holdLocks(
      {
        tryOnce: (name, want, ttlMs) => this.attempt('withLocks', name, { ttlMs }, want),
        wait: (name, want, options) => this.acquireIn(name, options, want),
        keep: (lease, marginMs) => keepLease(this, lease, marginMs),
        releaseQuietly: (lease) => this.releaseQuietly(lease),
      },
      requests,
      withLocksOptions('withLocks', given),
      fn,
    );
  }

  /** Opens a session: one heartbeat keeps every lock taken in it (default ttl 30 s; see SessionOptions). */
  session(options?: SessionOptions): Promise<Session> {
    return Session.open(this, optionsArg('session', options, '{ ttlMs: 15_000 }', SESSION_OPTIONS));
  }

  /** The lock, its holder and its queue (GET /api/v1/locks/{name}). */
  // biome-ignore lint/suspicious/noExplicitAny: the wire view, documented in the README
  async inspect(name: string, options?: { signal?: AbortSignal; attempts?: number }): Promise<any> {
    const given = optionsArg('inspect', options, '{ signal }', ['signal', 'attempts']);
    return this.call('GET', `/api/v1/locks/${nameArg('inspect', name)}`, undefined, {
      ...(given.signal === undefined ? {} : { signal: signalArg(given.signal) }),
      ...(given.attempts === undefined ? {} : { attempts: attemptsArg(given.attempts) }),
    });
  }

  /**
   * Who waits for whom from the lock's waiters outward, and any cycle of waits among them
   * (GET /api/v1/locks/{name}/waits): see WaitGraph.
   */
  async waits(name: string): Promise<WaitGraph> {
    const answer = await this.call('GET', lockPath(nameArg('waits', name), 'waits'));
    return {
      lock: typeof answer?.lock === 'string' ? answer.lock : name,
      edges: waitEdgesFrom(answer?.edges),
      cycles: Array.isArray(answer?.cycles)
        ? answer.cycles.map(waitEdgesFrom).filter((c: WaitEdge[]) => c.length > 0)
        : [],
      complete: answer?.complete === true,
    };
  }

  /**
   * Locks whose names start with `prefix`, following pages. The prefix is part of the path
   * (GET /api/v1/list/{prefix}), so IAM policies can scope who may list what.
   */
  // biome-ignore lint/suspicious/noExplicitAny: the wire view, documented in the README
  async list(prefix = '', limit = 1_000): Promise<any[]> {
    if (typeof prefix !== 'string')
      throw new InvalidArgumentError(
        'prefix',
        `list: prefix must be a string, '' for every lock (got ${shown(prefix)})`,
      );
    if (!Number.isInteger(limit) || limit < 1)
      throw new InvalidArgumentError('limit', `list: limit must be a positive integer (got ${shown(limit)})`);
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
   *
   * `fencingToken` ends only that grant (the one you looked at): such a call is sent again if its
   * answer is lost, since a second delivery ends that grant or nothing. Without it the call is sent
   * once: sent again after its first delivery ended the holder and the queue was handed on, it
   * would end the next holder too. If that one attempt gets no answer, it throws UnavailableError
   * saying the outcome is unknown.
   */
  // biome-ignore lint/suspicious/noExplicitAny: the wire answer, documented in the README
  async forceRelease(name: string, reason: string, options: { fencingToken?: number } = {}): Promise<any> {
    nameArg('forceRelease', name);
    if (typeof reason !== 'string' || reason.trim() === '')
      throw new InvalidArgumentError(
        'reason',
        `forceRelease: needs a reason: a non-empty string, recorded with your identity in the service log (got ${shown(reason)})`,
      );
    const { fencingToken } = optionsArg('forceRelease', options, '{ fencingToken: 42 }', ['fencingToken']);
    if (fencingToken !== undefined && (!Number.isSafeInteger(fencingToken) || fencingToken < 1))
      throw new InvalidArgumentError(
        'fencingToken',
        `forceRelease: fencingToken must be a positive integer, the token of the grant to end (got ${shown(fencingToken)})`,
      );
    const path = `/api/v1/admin/locks/${name}/force-release`;
    if (fencingToken !== undefined) return this.call('POST', path, { reason, fencing_token: fencingToken });
    try {
      return await this.call('POST', path, { reason }, { attempts: 1 });
    } catch (error) {
      if (!(error instanceof UnavailableError)) throw error;
      throw new UnavailableError(
        `force-release of ${name} got no answer, so it may or may not have ended the holder. It was not sent again: a second one could end whoever holds the lock by then. Look at the lock (latchkey admin queue ${name}), and to end a holder you see, name its token (fencingToken, or --token in the CLI)`,
        error.status,
        { cause: error, ...(error.endpoint === undefined ? {} : { endpoint: error.endpoint }) },
      );
    }
  }

  /**
   * Administrators: every principal's sessions not yet swept (alive, in grace, expired, or ended
   * with locks still to release), following pages (GET /api/v1/admin/sessions). `principal` and
   * `clientId` narrow it to one owner's. Needs IAM permission on the admin route.
   */
  // biome-ignore lint/suspicious/noExplicitAny: the wire view, documented in the README
  async listSessions(options: ListSessionsOptions = {}): Promise<any[]> {
    const {
      principal,
      clientId,
      limit = 1_000,
    } = optionsArg('listSessions', options, '{ limit: 100 }', ['principal', 'clientId', 'limit']);
    if (!Number.isInteger(limit) || limit < 1)
      throw new InvalidArgumentError(
        'limit',
        `listSessions: limit must be a positive integer (got ${shown(limit)})`,
      );
    const found: unknown[] = [];
    let cursor: string | undefined;
    do {
      const query = new URLSearchParams({ limit: String(Math.min(100, limit - found.length)) });
      if (principal) query.set('principal', principal);
      if (clientId) query.set('client_id', clientId);
      if (cursor) query.set('cursor', cursor);
      const page = await this.call('GET', `/api/v1/admin/sessions?${query}`);
      found.push(...page.sessions);
      cursor = page.next_cursor ?? undefined;
    } while (cursor && found.length < limit);
    return found;
  }

  /**
   * Administrators: ends session `id`, whoever owns it; its locks go to their next waiters
   * (DELETE /api/v1/admin/sessions/{id}). `reason` is logged with the caller's identity.
   */
  // biome-ignore lint/suspicious/noExplicitAny: the wire answer, documented in the README
  async endSession(id: string, reason: string): Promise<any> {
    if (typeof id !== 'string' || !/^(?:[0-9A-Fa-f-]{36}|conn-[A-Za-z0-9+=_-]{1,128})$/.test(id))
      throw new InvalidArgumentError(
        'id',
        `endSession: the session id must be a UUID, or conn-<connection id> (got ${shown(id)})`,
      );
    if (typeof reason !== 'string' || reason.trim() === '')
      throw new InvalidArgumentError(
        'reason',
        `endSession: needs a reason: a non-empty string, recorded with your identity in the service log (got ${shown(reason)})`,
      );
    return this.call('DELETE', `/api/v1/admin/sessions/${id}`, { reason });
  }

  /** Closes the WebSocket connection (if any); pending waits fail. */
  close(): void {
    this.waiter?.close();
    this.ownReleases.close(new UnavailableError('the client was closed'));
  }

  // biome-ignore lint/suspicious/noExplicitAny: JSON answers
  post(path: string, body: unknown): Promise<any> {
    return this.call('POST', path, body);
  }

  // biome-ignore lint/suspicious/noExplicitAny: JSON answers
  delete(path: string): Promise<any> {
    return this.call('DELETE', path);
  }

  /** A signed call; an error answer is thrown as its typed error (about `lock`, if given). */
  private async call(
    method: string,
    path: string,
    body?: unknown,
    options?: Parameters<SignedTransport['send']>[3],
    lock?: string,
    // biome-ignore lint/suspicious/noExplicitAny: JSON answers
  ): Promise<any> {
    const answer = await this.transport.send(method, path, body, options);
    // A 404 without latchkey's error code is API Gateway's: no such route at that URL.
    if (answer.status === 404 && !answer.body?.error?.code)
      throw new EndpointError(
        `${this.transport.endpoint.origin} answered 404 to ${method} ${path.split('?')[0]}: is it latchkey? The endpoint must be ${HTTP_EXPECTED}`,
        'http',
        this.transport.endpoint.href,
        404,
      );
    // 426 Upgrade Required: a WebSocket endpoint given as the HTTP API's.
    if (answer.status === 426)
      throw new EndpointError(
        `${this.transport.endpoint.origin} answered 426 (Upgrade Required) to ${method} ${path.split('?')[0]}: it serves WebSockets only (the WebSocket API's URL, not the HTTP API's); the endpoint must be ${HTTP_EXPECTED}`,
        'http',
        this.transport.endpoint.href,
        426,
      );
    if (answer.status >= 400) throw errorFromResponse(answer.status, answer.body, lock);
    return answer.body;
  }

  /**
   * HTTP waits of at most 25 s each until granted or the wait runs out. Each is a request of its own
   * (a new request_id: a wait that ended is an outcome, and a retry of it would answer the same), so
   * a longer wait rejoins the queue at its end every 25 s; the transport retries one with its own id.
   */
  /**
   * An HTTP wait given up while it was waiting: its request leaves the queue (a cancel, which the
   * service answers with the grant if one came first: that grant, which nobody will use, is
   * released). Best effort: a request left queued ends at its own wait's end, and a grant at its ttl.
   */
  private async abandonHttpWait(
    name: string,
    requestId: string,
    sessionId: string | undefined,
  ): Promise<void> {
    try {
      const answer = await cancelRequest(this.transport, name, { clientId: this.clientId, requestId });
      if (answer.status === 200 && answer.body?.acquired === true)
        await this.releaseQuietly(new Lease(answer.body as GrantAnswer, performance.now(), sessionId));
    } catch {
      // Left to its ends, as above.
    }
  }

  private async acquireOverHttp(
    name: string,
    options: {
      ttlMs: number;
      waitTimeoutMs: number;
      priority?: number | undefined;
      signal?: AbortSignal | undefined;
      sessionId?: string | undefined;
      want: LockWant;
      holding: readonly string[];
    },
    firstRequestId: string,
    until: number,
  ): Promise<Lease> {
    let requestId = firstRequestId;
    for (;;) {
      options.signal?.throwIfAborted();
      // At least 1 ms: a request that asks to wait; 0 would be a try.
      const left = Math.max(1, Math.round(until - performance.now()));
      const sentAt = performance.now();
      // Watched from before it asks: a release of its own hold while the answer is on its way counts.
      const watch = this.ownReleases.watch(name);
      try {
        let answer: { acquired?: boolean; holder?: unknown; retry_after_ms?: unknown };
        try {
          answer = await this.call(
            'POST',
            lockPath(name, 'acquire'),
            {
              client_id: this.clientId,
              request_id: requestId,
              wait_timeout_ms: Math.min(MAX_HTTP_WAIT_MS, left),
              ...(options.priority === undefined ? {} : { priority: options.priority }),
              ...(options.sessionId === undefined
                ? { ttl_ms: options.ttlMs }
                : { session_id: options.sessionId }),
              ...wantBody(options.want),
              ...keptBody(options.holding, this.enclosing),
            },
            // Aborted (a signal, Ctrl-C): the wait in flight ends now, not when its 25 s are up.
            options.signal ? { signal: options.signal } : undefined,
          );
        } catch (error) {
          if (options.signal?.aborted) {
            await this.abandonHttpWait(name, requestId, options.sessionId);
            throw options.signal.reason;
          }
          // Too many HTTP waits service-wide: refused before it took a slot. Asked to wait, it waits
          // as told (with jitter) and asks again while its wait lasts; past that, the refusal. It asks
          // with the same request_id: a refusal of a retry the transport made may leave the request
          // queued from its first delivery, and asking again under that id follows it to its grant.
          if (!(error instanceof LimitExceededError) || error.code !== 'TOO_MANY_WAITS') throw error;
          const pause = error.retryAfterMs * (1 + Math.random() / 2);
          if (performance.now() + pause >= until) throw error;
          await sleep(pause, options.signal);
          continue;
        }
        if (answer.acquired) {
          const lease = new Lease(answer as GrantAnswer, sentAt, options.sessionId);
          // Aborted while the answer was on its way (a session's signal: the session is lost here
          // by now): nobody may act on the grant, so it goes back, as a WebSocket wait's does.
          if (options.signal?.aborted) {
            await this.releaseQuietly(lease);
            throw options.signal.reason;
          }
          return lease;
        }
        if (isOwnHold(answer)) {
          await this.pauseOnOwnHold(
            watch,
            name,
            ownHoldRetryAfterMs(answer),
            until,
            options,
            heldWhenRefused(answer),
          );
        } else if (performance.now() >= until)
          throw new WaitTimeoutError(name, options.waitTimeoutMs, undefined, heldWhenRefused(answer));
        requestId = randomUUID();
      } finally {
        watch.end();
      }
    }
  }
}
