/**
 * Pure builders of the DynamoDB requests for locks. Sending lives in
 * lock-store.ts; these are read as text by the unit tests.
 */
import type {
  BatchGetCommandInput,
  GetCommandInput,
  QueryCommandInput,
  UpdateCommandInput,
} from '@aws-sdk/lib-dynamodb';
import { set, type Write } from '../core/expr';
import { LockAttr } from '../core/lock';
import { compile } from './compile';
import { GC_ATTRIBUTE, LIST_INDEX, LOCK_LIST_PARTITION, lockKey, lockListing } from './table';

export interface StoreSettings {
  readonly tableName: string;
  /** How long a lock item is kept after its lease ends or it is released, in seconds. */
  readonly retentionSeconds: number;
  /**
   * Time budget of one lock operation, retries included, in milliseconds. Past it the
   * operation fails as UNAVAILABLE, well inside the function's timeout.
   * @default 6000
   */
  readonly deadlineMs?: number;
}

export const DEFAULT_DEADLINE_MS = 6_000;

/** When the item may be garbage-collected: `retention` after the lease it records ends. */
export function gcAt(write: Write, now: number, retentionSeconds: number): number {
  const leaseEnd = write.update.find((a) => a.kind === 'set' && a.attr === LockAttr.expiresAt);
  const until = leaseEnd?.kind === 'set' && typeof leaseEnd.value === 'number' ? leaseEnd.value : now;
  return Math.ceil(until / 1000) + retentionSeconds;
}

/** What every write of a lock item also sets: its listing-index keys and when it may be collected. */
export function lockHousekeeping(settings: StoreSettings, name: string, write: Write, now: number) {
  return [
    ...Object.entries(lockListing(name)).map(([attr, value]) => set(attr, value)),
    set(GC_ATTRIBUTE, gcAt(write, now, settings.retentionSeconds)),
  ];
}

/** One conditional UpdateItem that carries out `write` on the lock `name`. */
export function lockWriteRequest(
  settings: StoreSettings,
  name: string,
  write: Write,
  now: number,
): UpdateCommandInput {
  const housekeeping = lockHousekeeping(settings, name, write, now);
  return {
    TableName: settings.tableName,
    Key: lockKey(name),
    ...compile(write.condition, [...write.update, ...housekeeping]),
    ReturnValues: 'ALL_NEW',
    ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
  };
}

export function lockReadRequest(settings: StoreSettings, name: string): GetCommandInput {
  return { TableName: settings.tableName, Key: lockKey(name), ConsistentRead: true };
}

export function lockListRequest(
  settings: StoreSettings,
  prefix: string,
  limit: number,
  startKey?: Record<string, string>,
): QueryCommandInput {
  return {
    TableName: settings.tableName,
    IndexName: LIST_INDEX.name,
    KeyConditionExpression: prefix ? '#pk = :pk AND begins_with(#sk, :prefix)' : '#pk = :pk',
    ExpressionAttributeNames: prefix
      ? { '#pk': LIST_INDEX.pk, '#sk': LIST_INDEX.sk }
      : { '#pk': LIST_INDEX.pk },
    ExpressionAttributeValues: prefix
      ? { ':pk': LOCK_LIST_PARTITION, ':prefix': prefix }
      : { ':pk': LOCK_LIST_PARTITION },
    Limit: limit,
    ...(startKey ? { ExclusiveStartKey: startKey } : {}),
  };
}

export function lockBatchReadRequest(
  settings: StoreSettings,
  names: readonly string[],
): BatchGetCommandInput {
  return {
    RequestItems: { [settings.tableName]: { Keys: names.map(lockKey), ConsistentRead: true } },
  };
}
