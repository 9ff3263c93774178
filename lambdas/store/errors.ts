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

/** Failures on the way to DynamoDB (no answer at all). */
const NETWORK_ERRORS = new Set(['TimeoutError', 'RequestTimeout', 'AbortError', 'NetworkingError']);

interface AwsLikeError {
  name?: string;
  message?: string;
  code?: string;
  $fault?: 'client' | 'server';
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
  const status = e.$metadata?.httpStatusCode ?? 0;
  const networkFault = NETWORK_ERRORS.has(name) || /^E[A-Z]+$/.test(e.code ?? '');
  if (networkFault || e.$fault === 'server' || status >= 500) {
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
  return new LatchkeyError('INTERNAL', `DynamoDB rejected the request (${name})`, undefined, undefined, {
    cause: error,
  });
}
