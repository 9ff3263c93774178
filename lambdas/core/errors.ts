/**
 * Every failure a caller can see, with its HTTP status and whether a retry
 * can help. Handlers, the local stack and (later) the SDK share these codes.
 */
export const ERROR_CODES = {
  INVALID_REQUEST: { status: 400, retryable: false },
  /** A lock name or listing prefix that breaks the naming rule (sdk/names.ts), or a percent-encoded lock path. */
  INVALID_NAME: { status: 400, retryable: false },
  UNAUTHORIZED: { status: 403, retryable: false },
  /** A lock, session, wait or connection that belongs to another principal. */
  FORBIDDEN: { status: 403, retryable: false },
  NOT_FOUND: { status: 404, retryable: false },
  NOT_HOLDER: { status: 409, retryable: false },
  LEASE_EXPIRED: { status: 409, retryable: false },
  /** Renewing a lock held through a session: it has no lease; the session's heartbeats keep it. */
  HELD_BY_SESSION: { status: 409, retryable: false },
  SESSION_EXPIRED: { status: 409, retryable: false },
  /** A semaphore asked for with another max_holders than the one its holders hold it with. */
  MAX_HOLDERS_MISMATCH: { status: 409, retryable: false },
  NOT_SESSION_OWNER: { status: 409, retryable: false },
  /** A wait that would close a cycle of waits: refused (the victim), its body names the cycle. */
  DEADLOCK: { status: 409, retryable: false },
  /** Limits (README: "Limits"): the request changed nothing; others are not slowed by it. */
  QUEUE_FULL: { status: 429, retryable: true },
  TOO_MANY_WAITERS: { status: 429, retryable: true },
  TOO_MANY_WAITS: { status: 429, retryable: true },
  /** A shared grant that would not fit in the lock item (400 KB): nothing changed. */
  TOO_MANY_HOLDERS: { status: 429, retryable: true },
  INTERNAL: { status: 500, retryable: false },
  UNAVAILABLE: { status: 503, retryable: true },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorDetail {
  readonly path: string;
  readonly message: string;
}

export class LatchkeyError extends Error {
  override readonly name = 'LatchkeyError';
  readonly status: number;
  readonly retryable: boolean;
  readonly fields: Readonly<Record<string, unknown>> | undefined;

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: readonly ErrorDetail[],
    /** For retryable errors: how long the caller should wait before retrying. */
    readonly retryAfterMs?: number,
    options?: {
      cause?: unknown;
      /** More machine-readable fields of the error body (a deadlock's `cycle`). */
      fields?: Readonly<Record<string, unknown>>;
    },
  ) {
    super(message, options);
    this.fields = options?.fields;
    this.status = ERROR_CODES[code].status;
    this.retryable = ERROR_CODES[code].retryable;
  }

  toBody(): {
    error: {
      code: ErrorCode;
      message: string;
      details?: readonly ErrorDetail[];
      retry_after_ms?: number;
      [field: string]: unknown;
    };
  } {
    return {
      error: {
        ...this.fields,
        code: this.code,
        message: this.message,
        ...(this.details ? { details: this.details } : {}),
        ...(this.retryAfterMs === undefined ? {} : { retry_after_ms: this.retryAfterMs }),
      },
    };
  }
}

export const invalidRequest = (message: string, details?: readonly ErrorDetail[]) =>
  new LatchkeyError('INVALID_REQUEST', message, details);
