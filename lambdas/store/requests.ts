/**
 * Pure builders of every DynamoDB request the adapter sends: a step (the
 * core's vocabulary) plus its housekeeping becomes an UpdateItem, a
 * DeleteItem or a part of TransactWriteItems. Sending lives in
 * dynamo-storage.ts; the unit tests read these as text.
 */
import type { TransactWriteCommandInput, UpdateCommandInput } from '@aws-sdk/lib-dynamodb';
import { remove, set, type UpdateAction } from '../core/expr';
import type { Housekeeping, ItemRef, ItemWrite, Step } from '../core/items';
import { compile, compileCondition } from './compile';
import {
  connectionOwner,
  DUE_INDEX,
  dueBucket,
  GC_ATTRIBUTE,
  KEY,
  keyOf,
  lockListing,
  minuteOf,
  OWNER_INDEX,
  sessionListing,
} from './table';

export interface StoreSettings {
  readonly tableName: string;
  /** How long an item is kept once nothing it records is in force (see Housekeeping.gcFrom), in seconds. */
  readonly retentionSeconds: number;
  /**
   * Time budget of one call, retries included, in milliseconds. Past it the
   * call fails as UNAVAILABLE, well inside the function's timeout.
   * @default 6000
   */
  readonly deadlineMs?: number;
}

export const DEFAULT_DEADLINE_MS = 6_000;

/** The key attributes of an item, as DynamoDB wants them. */
export const tableKey = (ref: ItemRef) => {
  const key = keyOf(ref);
  return { [KEY.pk]: key.pk, [KEY.sk]: key.sk };
};

/**
 * The attribute updates a write's housekeeping means: the due index keys
 * (`sweepAt`), the TTL attribute (`gcFrom` + retention), the owner index
 * keys (`owner`), and, for a lock or session item, its listing index keys.
 */
export function housekeepingActions(settings: StoreSettings, ref: ItemRef, h: Housekeeping): UpdateAction[] {
  const actions: UpdateAction[] = [];
  if (ref.kind === 'lock')
    for (const [attr, value] of Object.entries(lockListing(ref.lock))) actions.push(set(attr, value));
  if (ref.kind === 'session') {
    if (h.listed === false) actions.push(remove(OWNER_INDEX.pk), remove(OWNER_INDEX.sk));
    else
      for (const [attr, value] of Object.entries(sessionListing(ref.session))) actions.push(set(attr, value));
  }
  if (h.sweepAt === null) actions.push(remove(DUE_INDEX.pk), remove(DUE_INDEX.sk));
  else if (h.sweepAt !== undefined)
    actions.push(set(DUE_INDEX.pk, dueBucket(minuteOf(h.sweepAt), keyOf(ref))), set(DUE_INDEX.sk, h.sweepAt));
  if (h.gcFrom === null) actions.push(remove(GC_ATTRIBUTE));
  else if (h.gcFrom !== undefined)
    actions.push(set(GC_ATTRIBUTE, Math.ceil(h.gcFrom / 1000) + settings.retentionSeconds));
  if (h.owner === null) actions.push(remove(OWNER_INDEX.pk), remove(OWNER_INDEX.sk));
  else if (h.owner !== undefined) {
    const sk = ref.kind === 'waiter' ? `${ref.lock}#${ref.order}` : keyOf(ref).pk;
    actions.push(set(OWNER_INDEX.pk, connectionOwner(h.owner)), set(OWNER_INDEX.sk, sk));
  }
  return actions;
}

/** A write's own updates followed by its housekeeping. */
export const fullUpdate = (settings: StoreSettings, ref: ItemRef, write: ItemWrite): UpdateAction[] => [
  ...write.update,
  ...housekeepingActions(settings, ref, write),
];

/** The expressions of an update step, with or without a condition. */
function updateParts(settings: StoreSettings, ref: ItemRef, write: ItemWrite) {
  const compiled = compile(write.condition, fullUpdate(settings, ref, write));
  const { ConditionExpression, ...rest } = compiled;
  return ConditionExpression === undefined ? rest : compiled;
}

/** One conditional UpdateItem: the item after it, or (refused) the item as it was. */
export function updateRequest(settings: StoreSettings, ref: ItemRef, write: ItemWrite): UpdateCommandInput {
  return {
    TableName: settings.tableName,
    Key: tableKey(ref),
    ...updateParts(settings, ref, write),
    ReturnValues: 'ALL_NEW',
    ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
  };
}

/** TransactWriteItems for `steps`; every refusing step returns the item as it was. */
export function transactRequest(settings: StoreSettings, steps: readonly Step[]): TransactWriteCommandInput {
  const TableName = settings.tableName;
  return {
    TransactItems: steps.map((step) => {
      const Key = tableKey(step.ref);
      const ReturnValuesOnConditionCheckFailure = 'ALL_OLD' as const;
      if (step.kind === 'check')
        return {
          ConditionCheck: {
            TableName,
            Key,
            ...compileCondition(step.condition),
            ReturnValuesOnConditionCheckFailure,
          },
        };
      if (step.kind === 'delete')
        return {
          Delete: {
            TableName,
            Key,
            ...(step.condition ? compileCondition(step.condition) : {}),
            ReturnValuesOnConditionCheckFailure,
          },
        };
      return {
        Update: {
          TableName,
          Key,
          ...updateParts(settings, step.ref, step),
          ReturnValuesOnConditionCheckFailure,
        },
      };
    }),
  };
}
