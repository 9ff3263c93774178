import {
  TransactionCanceledException,
  TransactionConflictException,
  TransactionInProgressException,
} from '@aws-sdk/client-dynamodb';
import { describe, expect, it } from 'vitest';
import { LatchkeyError } from '../../lambdas/core/errors';
import { toStoreError } from '../../lambdas/store/errors';

const sdkError = (name: string, extra: object = {}) => Object.assign(new Error(name), { name, ...extra });

describe('DynamoDB failures become typed errors', () => {
  it.each([
    [
      'throttling',
      sdkError('ProvisionedThroughputExceededException', { $metadata: { httpStatusCode: 400 } }),
    ],
    ['request limit', sdkError('RequestLimitExceeded', { $metadata: { httpStatusCode: 400 } })],
    ['a 500', sdkError('InternalServerError', { $fault: 'server', $metadata: { httpStatusCode: 500 } })],
    ['a 503', sdkError('ServiceUnavailable', { $metadata: { httpStatusCode: 503 } })],
    ['a reset connection', sdkError('Error', { code: 'ECONNRESET' })],
    ['a DNS failure', sdkError('Error', { code: 'EAI_AGAIN' })],
    ['an undici socket error', sdkError('Error', { code: 'UND_ERR_SOCKET' })],
    ['a timeout', sdkError('TimeoutError')],
    ['an aborted deadline', sdkError('AbortError')],
    [
      'expired function credentials',
      sdkError('ExpiredTokenException', { $metadata: { httpStatusCode: 400 } }),
    ],
  ])('%s is UNAVAILABLE and retryable', (_, error) => {
    const mapped = toStoreError(error);
    expect(mapped).toBeInstanceOf(LatchkeyError);
    expect(mapped).toMatchObject({ code: 'UNAVAILABLE', status: 503, retryable: true });
    expect(mapped.retryAfterMs).toBeGreaterThan(0);
    expect(mapped.cause).toBe(error);
  });

  it.each([
    // Real SDK classes: client faults (400) the SDK does not mark retryable.
    [
      'a single-item write meeting a transaction in flight',
      new TransactionConflictException({
        message: 'ongoing transaction',
        $metadata: { httpStatusCode: 400 },
      }),
    ],
    [
      'a transaction resent while its first attempt runs (a lost answer)',
      new TransactionInProgressException({ message: 'in progress', $metadata: { httpStatusCode: 400 } }),
    ],
    [
      'a cancelled transaction without reasons',
      new TransactionCanceledException({ message: 'cancelled', $metadata: { httpStatusCode: 400 } }),
    ],
  ])('%s is UNAVAILABLE and retryable, never INTERNAL', (_, error) => {
    expect(error.$fault).toBe('client');
    expect(toStoreError(error)).toMatchObject({ code: 'UNAVAILABLE', status: 503, retryable: true });
  });

  it('a request DynamoDB rejects as invalid is INTERNAL (a bug here, not the caller), never "not acquired"', () => {
    const mapped = toStoreError(
      sdkError('ValidationException', { $fault: 'client', $metadata: { httpStatusCode: 400 } }),
    );
    expect(mapped).toMatchObject({ code: 'INTERNAL', status: 500, retryable: false });
  });

  it('passes LatchkeyErrors through', () => {
    const error = new LatchkeyError('INVALID_REQUEST', 'x');
    expect(toStoreError(error)).toBe(error);
  });
});
