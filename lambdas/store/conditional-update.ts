/**
 * One conditional UpdateItem answered as a WriteResult: the item as written
 * (ALL_NEW), or, when the condition fails, the item as it was (ALL_OLD), so
 * a refusal can be explained without a read. Other failures are typed store
 * errors.
 */
import type { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { type DynamoDBDocumentClient, UpdateCommand, type UpdateCommandInput } from '@aws-sdk/lib-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import type { Item } from '../core/expr';
import type { WriteResult } from '../core/lock';
import { toStoreError } from './errors';

export async function conditionalUpdate(
  db: DynamoDBDocumentClient,
  input: UpdateCommandInput,
  abortSignal: AbortSignal,
): Promise<WriteResult> {
  try {
    const out = await db.send(
      new UpdateCommand({
        ReturnValues: 'ALL_NEW',
        ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        ...input,
      }),
      { abortSignal },
    );
    return { ok: true, item: (out.Attributes ?? {}) as Item };
  } catch (error) {
    if (error instanceof Error && error.name === 'ConditionalCheckFailedException') {
      // lib-dynamodb leaves the ALL_OLD item marshalled on the exception.
      const old = (error as ConditionalCheckFailedException).Item;
      return { ok: false, old: old ? (unmarshall(old) as Item) : undefined };
    }
    throw toStoreError(error);
  }
}
