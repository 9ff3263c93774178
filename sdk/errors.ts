/**
 * Typed errors of the latchkey SDK. Every error carries the service's
 * machine-readable `code` (or one of the SDK's own) and whether retrying
 * the same call can help.
 */
export class LatchkeyClientError extends Error {
  override name = 'LatchkeyClientError';
  /**
   * The endpoint this error is about, when it is one the client was configured with (unreachable,
   * refused a WebSocket handshake, not latchkey's): the URL to check.
   */
  endpoint?: string;
  constructor(
    message: string,
    readonly code: string,
    readonly status: number | undefined,
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Who holds a lock, as the service tells a caller it refused. */
export interface HolderSummary {
  readonly clientId: string;
  /** When the holder's lease ends, by the service's clock; null while a session holds it. */
  readonly expiresAt: Date | null;
  readonly heldBy: 'lease' | 'session';
  /** The caller's own hold (its principal and client id): a wait does not queue behind it. */
  readonly mine: boolean;
}

/** How a refused lock is held, for LockHeldError's and WaitTimeoutError's messages (and the CLI's). */
export function heldText(
  holder: string | undefined,
  shared: { readonly holders: number; readonly maxHolders: number | undefined } | undefined,
): string {
  if (!holder) return 'is held (being handed to a waiter)';
  if (!shared) return `is held by ${holder}`;
  const among = shared.holders > 1 ? ` (${holder} among them)` : ` (${holder})`;
  const holders = `${shared.holders} holder${shared.holders === 1 ? '' : 's'}`;
  if (shared.maxHolders === undefined) return `is held shared by ${holders}${among}`;
  return shared.holders >= shared.maxHolders
    ? `is full: ${shared.holders} of ${shared.maxHolders} holders${among}`
    : `is held shared by ${shared.holders} of at most ${shared.maxHolders} holders${among}`;
}

/** The lock is held by someone else (a try that did not wait). */
export class LockHeldError extends LatchkeyClientError {
  override name = 'LockHeldError';
  constructor(
    readonly lock: string,
    /** The holder's client id (undefined while the lock is being handed to a waiter). */
    readonly holder: string | undefined,
    readonly retryAfterMs: number,
    /**
     * In a hierarchical namespace: the lock whose holder keeps this one out (an ancestor, or a
     * lock below it), and why. `holder` is then that lock's holder.
     */
    readonly blockedBy?: { readonly lock: string; readonly reason: string },
    /** The holder in full: its client id, and until when (or that a session holds it). */
    readonly holderSummary?: HolderSummary,
    /**
     * Held shared: how many hold it and, for a semaphore, its N (`holders === maxHolders`: full).
     * `holder` is then the shared holder to wait out (the last lease to end, for an exclusive
     * request; the first, for a shared one).
     */
    readonly shared?: { readonly holders: number; readonly maxHolders: number | undefined },
  ) {
    super(
      blockedBy
        ? `lock ${lock} is not available: ${blockedBy.reason}${holder ? ` (by ${holder})` : ''}`
        : `lock ${lock} ${heldText(holder, shared)}${
            holderSummary?.mine && !shared
              ? ': this client itself holds it; release that hold first, or take it again with tryAcquire(name, { reentrant: true })'
              : ''
          }`,
      'LOCK_HELD',
      200,
      true,
    );
  }
}

/** The lease ended (lapsed, or someone else holds the lock now), or could not be confirmed in time. */
export class LeaseLostError extends LatchkeyClientError {
  override name = 'LeaseLostError';
  /** The lock whose lease was lost; undefined for a session's loss (see `sessionId`). */
  readonly lock: string | undefined;
  /** The session that was lost (every lock it held with it), for a session's loss. */
  readonly sessionId: string | undefined;
  constructor(
    message: string,
    code = 'LEASE_LOST',
    options?: { cause?: unknown; lock?: string | undefined; sessionId?: string | undefined },
    status = 409,
  ) {
    super(message, code, status, false, options?.cause === undefined ? undefined : { cause: options.cause });
    this.lock = options?.lock;
    this.sessionId = options?.sessionId;
  }
}

/** Who held a lock when a wait for it ended (the service's last refusal says; none over WebSocket). */
export interface HeldWhenRefused {
  readonly holderSummary?: HolderSummary | undefined;
  /** Held shared: how many hold it and, for a semaphore, its N (as LockHeldError.shared). */
  readonly shared?: { readonly holders: number; readonly maxHolders: number | undefined } | undefined;
}

/** Who holds a lock, as a refusal of the HTTP API says (its `holder`, `shared_holders`, `max_holders`). */
// biome-ignore lint/suspicious/noExplicitAny: JSON answers
export function heldWhenRefused(answer: any): HeldWhenRefused {
  const holder = answer?.holder;
  return {
    holderSummary:
      typeof holder?.client_id === 'string'
        ? {
            clientId: holder.client_id,
            expiresAt: holder.expires_at ? new Date(holder.expires_at) : null,
            heldBy: holder.held_by === 'session' ? 'session' : 'lease',
            mine: holder.mine === true,
          }
        : undefined,
    shared:
      typeof answer?.shared_holders === 'number'
        ? {
            holders: answer.shared_holders,
            maxHolders: typeof answer.max_holders === 'number' ? answer.max_holders : undefined,
          }
        : undefined,
  };
}

/** A waiting acquire's time ran out before the lock was granted. */
export class WaitTimeoutError extends LatchkeyClientError {
  override name = 'WaitTimeoutError';
  /** Who held the lock when the wait ended, where the service said (an HTTP wait's last answer). */
  readonly holderSummary: HolderSummary | undefined;
  readonly shared: HeldWhenRefused['shared'];
  constructor(
    readonly lock: string,
    /** How long the wait was. */
    readonly waitMs: number,
    /** The client id that held it all along when this very client holds it: a wait never queues behind itself. */
    readonly heldByClient?: string,
    held: HeldWhenRefused = {},
  ) {
    super(
      `lock ${lock} was not granted within ${waitMs} ms${
        heldByClient === undefined
          ? held.holderSummary
            ? `: it ${heldText(held.holderSummary.clientId, held.shared)}`
            : ''
          : `: it is held by this client (${heldByClient}) itself, which a wait does not queue behind; release that hold first, or re-enter it with tryAcquire(name, { reentrant: true })`
      }`,
      'WAIT_TIMEOUT',
      undefined,
      true,
    );
    this.holderSummary = held.holderSummary;
    this.shared = held.shared;
  }
}

/**
 * The request was refused as invalid (400): fix the call, do not retry it. `code` is the service's
 * (`INVALID_REQUEST`, or `INVALID_NAME` for a lock name or prefix outside the naming rule).
 */
export class InvalidRequestError extends LatchkeyClientError {
  override name = 'InvalidRequestError';
  constructor(
    message: string,
    readonly details: readonly { path: string; message: string }[] = [],
    status: number | undefined = 400,
    code = 'INVALID_REQUEST',
  ) {
    super(message, code, status, false);
  }
}

/**
 * An argument of an SDK call is missing or not what it takes (a duration that is NaN, a lease that
 * is not one): refused before anything was sent. `argument` names it; the message says what it takes.
 */
export class InvalidArgumentError extends InvalidRequestError {
  override name = 'InvalidArgumentError';
  constructor(
    readonly argument: string,
    message: string,
    code = 'INVALID_REQUEST',
  ) {
    super(message, [{ path: argument, message }], undefined, code);
  }
}

/**
 * An endpoint the client was given is not latchkey's API (a WebSocket URL without its stage, say):
 * no retry helps, fix the configuration. `endpoint` is the URL, `api` which of the two it is.
 */
export class EndpointError extends LatchkeyClientError {
  override name = 'EndpointError';
  constructor(
    message: string,
    readonly api: 'http' | 'websocket',
    endpoint: string,
    status?: number,
  ) {
    super(message, 'BAD_ENDPOINT', status, false);
    this.endpoint = endpoint;
  }
}

/** latchkey or DynamoDB could not be reached or answered 5xx / 429, after the SDK's retries. */
export class UnavailableError extends LatchkeyClientError {
  override name = 'UnavailableError';
  /** Why it could not be reached (e.g. `connect ECONNREFUSED 127.0.0.1:3000`), when it could not. */
  readonly reason: string | undefined;
  /**
   * Set when the call's attempts are spent: whether any of them may have reached the service and
   * been applied (a 5xx, or no answer to a request that may have been sent), so a write's outcome
   * is unknown; false when every attempt was refused unsent or throttled. Undefined: not known.
   */
  mayHaveApplied: boolean | undefined;
  constructor(
    message: string,
    status?: number,
    options?: { cause?: unknown; endpoint?: string; reason?: string },
  ) {
    super(message, 'UNAVAILABLE', status, true, options);
    this.reason = options?.reason;
    if (options?.endpoint !== undefined) this.endpoint = options.endpoint;
  }
}

/**
 * Not an error thrown, a warning (LockClientOptions.onWarning): a call failed transiently (a
 * throttle, a 5xx such as DynamoDB being unavailable, no answer) and is being tried again.
 * `attempt` is the attempt about to be made, of `attempts`; `cause` is the failure.
 */
export class RetryWarning extends UnavailableError {
  override name = 'RetryWarning';
  constructor(
    failure: UnavailableError,
    readonly attempt: number,
    readonly attempts: number,
    /** The call being retried, as people name it: `renew jobs/a`, `acquire jobs/a`, `GET /api/v1/…`. */
    readonly call = '',
  ) {
    // No answer: which endpoint and why, without the advice the final error gives. The service's
    // own "retry shortly" is what this does.
    const said =
      failure.reason !== undefined && failure.endpoint !== undefined
        ? `latchkey at ${new URL(failure.endpoint).origin} is unreachable (${failure.reason})`
        : failure.message.replace(/[;,:]? retry shortly\.?$/, '');
    super(
      `${call ? `${call}: ` : ''}${said}: trying again (attempt ${attempt} of ${attempts})`,
      failure.status,
      {
        cause: failure,
        ...(failure.endpoint === undefined ? {} : { endpoint: failure.endpoint }),
        ...(failure.reason === undefined ? {} : { reason: failure.reason }),
      },
    );
  }
}

/**
 * An acquire that failed after a lock was granted and could not be released again: its
 * UnavailableError says the lock may be held (until its ttl).
 */
export function markMayHaveApplied(error: unknown): void {
  if (error instanceof UnavailableError) error.mayHaveApplied = true;
}

/** The request was not signed, or signed with credentials not allowed to call latchkey (403). */
export class UnauthorizedError extends LatchkeyClientError {
  override name = 'UnauthorizedError';
  constructor(message: string) {
    super(message, 'UNAUTHORIZED', 403, false);
  }
}

/**
 * The lock, session or connection belongs to another IAM principal (403 FORBIDDEN): only the
 * principal that took it may release, renew, heartbeat, close or cancel it. For a lease you held,
 * it means the lease is gone (it lapsed and another principal holds the lock now): a LeaseLostError.
 */
export class ForbiddenError extends LeaseLostError {
  override name = 'ForbiddenError';
  constructor(message: string, lock?: string) {
    super(message, 'FORBIDDEN', { lock }, 403);
  }
}

/**
 * A limit of the service was reached (429 with a code: QUEUE_FULL, TOO_MANY_WAITERS, TOO_MANY_WAITS, TOO_MANY_HOLDERS):
 * the request changed nothing. Try later (`retryAfterMs`), or ask the operator to raise the limit.
 */
export class LimitExceededError extends LatchkeyClientError {
  override name = 'LimitExceededError';
  constructor(
    message: string,
    code: string,
    readonly retryAfterMs: number,
  ) {
    super(message, code, 429, true);
  }
}

/** The session ended (closed, or expired past ttl + grace): its locks are gone. */
export class SessionExpiredError extends LeaseLostError {
  override name = 'SessionExpiredError';
  constructor(message: string, sessionId?: string) {
    super(message, 'SESSION_EXPIRED', { sessionId });
  }
}

/**
 * A semaphore asked for with another `maxHolders` than the one its holders hold it with (409
 * MAX_HOLDERS_MISMATCH): every holder of a shared lock must ask for the same maxHolders (or all
 * for none). The request changed nothing. `maxHoldersInForce` is the holders' N, or undefined when
 * they hold it without one (a shared lock that is no semaphore). It is not a bad request (the
 * same call succeeds once the lock's holders are gone) but no retry helps while they hold it:
 * fix whichever caller asks for the wrong N.
 */
export class MaxHoldersMismatchError extends LatchkeyClientError {
  override name = 'MaxHoldersMismatchError';
  /** The maxHolders the lock's holders hold it with; undefined: none (a plain shared lock). */
  readonly maxHoldersInForce: number | undefined;
  constructor(
    message: string,
    readonly details: readonly { path: string; message: string }[] = [],
  ) {
    super(message, 'MAX_HOLDERS_MISMATCH', 409, false);
    this.maxHoldersInForce = maxHoldersInForce(message, details);
  }
}

/** The N in force, from the details (`{path: 'max_holders', message: '3 in force' | 'none in force'}`) or else the message. */
function maxHoldersInForce(
  message: string,
  details: readonly { path: string; message: string }[],
): number | undefined {
  const said = details.find((d) => d?.path === 'max_holders')?.message;
  const n = said === undefined ? /max_holders (\d+)/.exec(message) : /^\s*(\d+) in force/.exec(said);
  return n ? Number(n[1]) : undefined;
}

/**
 * One party of a wait-for graph: the client id a lock is held or waited for under, an opaque id
 * telling apart parties of different principals with one client id, and whether it is your own
 * principal's (the service does not show other principals' IAM names).
 */
export interface WaitParty {
  readonly clientId: string;
  readonly party: string;
  readonly mine: boolean;
}

/**
 * One edge of the wait-for graph: `waiter`'s wait for `lock` cannot be granted before `blocker`
 * is gone from it. `blockerIs`: `'holder'` (it holds `lock` in a conflicting mode) or `'ahead'`
 * (it waits ahead of `waiter` in `lock`'s queue in a conflicting mode, so it is served first).
 * `through`: in a hierarchical namespace, the lock above or below `lock` whose hold by the
 * blocker keeps the wait out (the blocker holds that lock, not `lock`).
 */
export interface WaitEdge {
  readonly waiter: WaitParty;
  readonly lock: string;
  readonly blocker: WaitParty;
  readonly blockerIs: 'holder' | 'ahead';
  readonly through?: string;
}

// biome-ignore lint/suspicious/noExplicitAny: a wire edge, checked field by field
type WireEdge = any;

const partyFrom = (p: WireEdge): WaitParty | undefined =>
  typeof p?.party === 'string' && typeof p?.client_id === 'string'
    ? { clientId: p.client_id, party: p.party, mine: p.mine === true }
    : undefined;

/**
 * Edges as the SDK types them, from the service's (`{waiter: {client_id, party, mine}, lock,
 * blocker, blocker_is, through?}`): anything that is not an array is none, and an edge missing a field is left out.
 */
export function waitEdgesFrom(wire: unknown): WaitEdge[] {
  if (!Array.isArray(wire)) return [];
  return wire.flatMap((e: WireEdge): WaitEdge[] => {
    const waiter = partyFrom(e?.waiter);
    const blocker = partyFrom(e?.blocker);
    if (!waiter || !blocker || typeof e.lock !== 'string') return [];
    const blockerIs = e.blocker_is === 'ahead' ? ('ahead' as const) : ('holder' as const);
    const through = typeof e.through === 'string' ? { through: e.through as string } : {};
    return [{ waiter, lock: e.lock, blocker, blockerIs, ...through }];
  });
}

/**
 * A wait refused because it would close a cycle of waits (409 DEADLOCK): every party in the cycle
 * waits for the next, so none could ever be granted. The refused wait left the queue; the call
 * that waited changed nothing else. `cycle` is the cycle, its first edge the refused wait's own
 * (empty when the service did not say it: a retry of a request refused before). No retry of the
 * same call helps while this client still holds what the others wait for: release what it holds
 * (withLocks did already, for the locks it had taken), then try again.
 */
export class DeadlockError extends LatchkeyClientError {
  override name = 'DeadlockError';
  /** The cycle of waits, from the refused wait's own edge around; empty if the service did not say. */
  readonly cycle: WaitEdge[];
  /** The lock whose wait was refused (the cycle's first edge's), when the cycle is known. */
  readonly lock: string | undefined;
  constructor(message: string, cycle: WaitEdge[] = []) {
    super(message, 'DEADLOCK', 409, false);
    this.cycle = cycle;
    this.lock = cycle[0]?.lock;
  }
}

/** 429s that are a limit of the service (not a throttle to retry through at once). */
export const LIMIT_CODES = new Set(['QUEUE_FULL', 'TOO_MANY_WAITERS', 'TOO_MANY_WAITS', 'TOO_MANY_HOLDERS']);

interface ErrorBody {
  error?: {
    code?: string;
    message?: string;
    details?: { path: string; message: string }[];
    retry_after_ms?: number;
    cycle?: unknown;
  };
  message?: string;
}

/** The API's fields an SDK call sends from its options, by the options' names. */
const OPTION_NAMES: Readonly<Record<string, string>> = {
  ttl_ms: 'ttlMs',
  wait_timeout_ms: 'waitTimeoutMs',
  max_holders: 'maxHolders',
  grace_ms: 'graceMs',
  lock_delay_ms: 'lockDelayMs',
  priority: 'priority',
};

/**
 * A 400's message in the SDK's terms when every field it refuses is one an option sets (`ttlMs
 * must be at least 1000`, a limit of this service's, not `request body is invalid: ttl_ms: …`);
 * else the service's. `details` keep the API's field names.
 */
function inOptionTerms(
  message: string,
  details: readonly { path: string; message: string }[] | undefined,
): string {
  if (!details?.length || !details.every((d) => OPTION_NAMES[d.path] !== undefined)) return message;
  return details
    .map((d) => {
      const option = OPTION_NAMES[d.path] as string;
      return d.message.startsWith(d.path)
        ? `${option}${d.message.slice(d.path.length)}`
        : `${option}: ${d.message}`;
    })
    .join('; ');
}

/**
 * The typed error for an HTTP error answer from latchkey (or from API Gateway in front of it);
 * `lock`: the lock the call was about (a LeaseLostError names it).
 */
export function errorFromResponse(status: number, body: unknown, lock?: string): LatchkeyClientError {
  const b = (body ?? {}) as ErrorBody;
  const code = b.error?.code ?? '';
  const message = b.error?.message ?? b.message ?? `HTTP ${status}`;
  if (status === 400)
    return new InvalidRequestError(
      inOptionTerms(message, b.error?.details),
      b.error?.details,
      400,
      code || undefined,
    );
  if (status === 403)
    return code === 'FORBIDDEN' ? new ForbiddenError(message, lock) : new UnauthorizedError(message);
  if (status === 429 && LIMIT_CODES.has(code))
    return new LimitExceededError(message, code, Number(b.error?.retry_after_ms ?? 1_000));
  if (status === 429 || status >= 500) return new UnavailableError(message, status);
  if (code === 'SESSION_EXPIRED') return new SessionExpiredError(message);
  if (code === 'DEADLOCK') return new DeadlockError(message, waitEdgesFrom(b.error?.cycle));
  if (code === 'MAX_HOLDERS_MISMATCH') return new MaxHoldersMismatchError(message, b.error?.details);
  if (code === 'LEASE_EXPIRED' || code === 'NOT_HOLDER') return new LeaseLostError(message, code, { lock });
  return new LatchkeyClientError(message, code || `HTTP_${status}`, status, false);
}
