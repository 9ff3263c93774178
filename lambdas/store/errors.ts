/**
 * Maps DynamoDB and network failures to typed, retryable errors. A fault on
 * the way to DynamoDB must never read as "not acquired".
 */
import { LatchkeyError } from '../core/errors';

const THROTTLING = new Set([
  'ProvisionedThroughputExceededException',
  'ThrottlingException',
  'RequestLimitExceeded',
  'TooManyRequestsException',
]);

/**
 * Refused because another transaction was writing the same item at that moment: a single-item
 * write that meets a transaction in flight (TransactionConflictException), a transaction resent
 * while its first attempt still runs (TransactionInProgressException, after a lost answer: it
 * may have been applied), a cancellation without reasons. The SDK does not retry the first and
 * gives up on the second after its attempts; the outcome is for the caller to retry or look up.
 */
const CONFLICTS = new Set([
  'TransactionConflictException',
  'TransactionInProgressException',
  'TransactionCanceledException',
]);

/** Failures on the way to DynamoDB (no answer at all), or of the function's own credentials. */
const TRANSIENT_ERRORS = new Set([
  'TimeoutError',
  'RequestTimeout',
  'AbortError',
  'NetworkingError',
  'ExpiredTokenException',
  'UnrecognizedClientException',
  'CredentialsProviderError',
]);
/** Node's network error codes: ECONNRESET, EAI_AGAIN, ERR_SOCKET_CONNECTION_TIMEOUT, UND_ERR_SOCKET... */
const NETWORK_CODE = /^(E[A-Z_]+|ERR_[A-Z_]+|UND_ERR_[A-Z_]+)$/;

interface AwsLikeError {
  name?: string;
  message?: string;
  code?: string;
  $fault?: 'client' | 'server';
  $retryable?: unknown;
  $metadata?: { httpStatusCode?: number };
}

export function toStoreError(error: unknown): LatchkeyError {
  if (error instanceof LatchkeyError) return error;
  const e = (error ?? {}) as AwsLikeError;
  const name = e.name ?? 'Error';
  if (THROTTLING.has(name)) {
    return new LatchkeyError(
      'UNAVAILABLE',
      'DynamoDB is throttling requests; retry shortly',
      undefined,
      500,
      {
        cause: error,
      },
    );
  }
  if (CONFLICTS.has(name)) {
    return new LatchkeyError(
      'UNAVAILABLE',
      `DynamoDB refused the call while a transaction was writing the same item (${name}); retry shortly`,
      undefined,
      200,
      { cause: error },
    );
  }
  const status = e.$metadata?.httpStatusCode ?? 0;
  const transient =
    TRANSIENT_ERRORS.has(name) || NETWORK_CODE.test(e.code ?? '') || e.$retryable !== undefined;
  if (transient || e.$fault === 'server' || status >= 500) {
    return new LatchkeyError(
      'UNAVAILABLE',
      `DynamoDB is unavailable (${name}); retry shortly`,
      undefined,
      1000,
      {
        cause: error,
      },
    );
  }
  // A lock item full of shared holders (its 400 KB): the grant that would not fit changed nothing.
  if (name === 'ValidationException' && /item size/i.test(e.message ?? ''))
    return new LatchkeyError(
      'TOO_MANY_HOLDERS',
      'the lock has as many shared holders as its item can record (DynamoDB items are at most 400 KB): retry once some have released',
      undefined,
      1000,
      { cause: error },
    );
  return new LatchkeyError('INTERNAL', `DynamoDB rejected the request (${name})`, undefined, undefined, {
    cause: error,
  });
}
