/**
 * A cancelled transaction, as the DynamoDB adapter answers it: refused
 * conditions are an answer (each step's verdict, with the item as it was);
 * a conflict or throttle is retryable; anything else (a ValidationError, an
 * item too large) is a bug, never retried as a conflict (defect 2f of
 * "Trust I": it used to end as a 503).
 */
import { marshall } from '@aws-sdk/util-dynamodb';
import { describe, expect, it } from 'vitest';
import { cancellationOutcome } from '../../lambdas/store/dynamo-storage';

describe('cancellationOutcome', () => {
  it('answers refused conditions with each step’s verdict and the item as it was', () => {
    const old = { pk: 'LOCK#a', sk: 'LOCK', holder: 'x', fence: 3 };
    expect(
      cancellationOutcome([{ Code: 'None' }, { Code: 'ConditionalCheckFailed', Item: marshall(old) }]),
    ).toEqual({ ok: false, steps: [{ refused: false }, { refused: true, old }] });
  });

  it('makes a conflict or a throttle retryable', () => {
    for (const Code of ['TransactionConflict', 'ThrottlingError', 'ProvisionedThroughputExceeded']) {
      expect(() => cancellationOutcome([{ Code: 'ConditionalCheckFailed' }, { Code }])).toThrow(
        expect.objectContaining({ code: 'UNAVAILABLE', retryable: true }),
      );
    }
  });

  it('a lock item too large for another shared holder is TOO_MANY_HOLDERS: a 429 that changed nothing', () => {
    expect(() =>
      cancellationOutcome([
        { Code: 'ValidationError', Message: 'Item size has exceeded the maximum allowed size' },
      ]),
    ).toThrow(expect.objectContaining({ code: 'TOO_MANY_HOLDERS', status: 429, retryable: true }));
  });

  it('makes anything else an internal error naming the reason, never retryable', () => {
    for (const Code of ['ValidationError', 'ItemCollectionSizeLimitExceeded']) {
      expect(() =>
        cancellationOutcome([
          { Code: 'None' },
          {
            Code,
            Message:
              Code === 'ValidationError'
                ? 'Invalid UpdateExpression'
                : 'Item size has exceeded the maximum allowed size',
          },
        ]),
      ).toThrow(
        expect.objectContaining({
          code: 'INTERNAL',
          retryable: false,
          message: expect.stringContaining(Code),
        }),
      );
    }
  });
});
