/**
 * The storage port on DynamoDB. Requests are built by the pure builders in
 * requests.ts; this module sends them, reads the answers, and turns
 * failures into typed errors (errors.ts): a refused condition is an answer,
 * a fault is UNAVAILABLE, a request DynamoDB finds malformed is INTERNAL.
 */
import type { AttributeValue, CancellationReason } from '@aws-sdk/client-dynamodb';
import {
  BatchGetCommand,
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  QueryCommand,
  type QueryCommandInput,
  TransactWriteCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { invalidRequest, LatchkeyError } from '../core/errors';
import type { Item } from '../core/expr';
import type { ItemRef, ItemWrite, Step } from '../core/items';
import { lockRef } from '../core/items';
import type { WriteResult } from '../core/lock';
import { type Waiter, waiterOf } from '../core/queue';
import type {
  LockPage,
  QueueSnapshot,
  SessionIdPage,
  StepVerdict,
  Storage,
  TransactResult,
} from '../service/storage';
import { toStoreError } from './errors';
import {
  DEFAULT_DEADLINE_MS,
  type StoreSettings,
  tableKey,
  transactRequest,
  updateRequest,
} from './requests';
import {
  connectionOwner,
  DUE_INDEX,
  decodeListCursor,
  dueBuckets,
  encodeListCursor,
  KEY,
  LIST_INDEX,
  LIST_PARTITIONS,
  LOCK_SK,
  listRange,
  lockPartition,
  OWNER_INDEX,
  refOfKey,
  SESSION_LINK_PREFIX,
  SESSION_LIST_PARTITIONS,
  sessionPartition,
  WAITER_SK_PREFIX,
} from './table';

const asItem = (raw: Record<string, AttributeValue> | undefined): Item | undefined =>
  raw ? (unmarshall(raw) as Item) : undefined;

/** Reasons DynamoDB cancels a transaction for that a retry can cure. */
const RETRYABLE_CANCELLATIONS = new Set([
  'TransactionConflict',
  'ThrottlingError',
  'ProvisionedThroughputExceeded',
  'RequestLimitExceeded',
]);

/**
 * A cancelled transaction's reasons as the port's answer: each step's
 * verdict when only conditions failed; a retryable error for a conflict or
 * a throttle; an internal error for anything else (a ValidationError, an
 * item too large): those are bugs, never "try again".
 */
export function cancellationOutcome(reasons: readonly CancellationReason[]): TransactResult {
  const codes = reasons.map((r) => r.Code ?? 'None');
  const other = codes.find((c) => c !== 'None' && c !== 'ConditionalCheckFailed');
  if (other && RETRYABLE_CANCELLATIONS.has(other))
    throw new LatchkeyError(
      'UNAVAILABLE',
      `DynamoDB cancelled a transaction (${other}); retry`,
      undefined,
      100,
    );
  if (other) {
    const detail = reasons.find((r) => r.Code === other)?.Message ?? '';
    // A lock item full of shared holders (400 KB): the grant that would not fit changed nothing.
    if (other === 'ValidationError' && /item size/i.test(detail))
      throw new LatchkeyError(
        'TOO_MANY_HOLDERS',
        'the lock has as many shared holders as its item can record (DynamoDB items are at most 400 KB): retry once some have released',
        undefined,
        1000,
      );
    throw new LatchkeyError('INTERNAL', `DynamoDB refused a transaction (${other}: ${detail})`);
  }
  return {
    ok: false,
    steps: reasons.map(
      (r): StepVerdict =>
        r.Code === 'ConditionalCheckFailed'
          ? { refused: true, old: asItem(r.Item as Record<string, AttributeValue> | undefined) }
          : { refused: false },
    ),
  };
}

/** BatchGetItem calls one readMany makes while DynamoDB leaves keys unprocessed (throttled). */
const BATCH_READ_ROUNDS = 5;
/** Keys one BatchGetItem takes. */
const BATCH_READ_KEYS = 100;

export class DynamoStorage implements Storage {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly settings: StoreSettings,
  ) {}

  async write(ref: ItemRef, write: ItemWrite): Promise<WriteResult> {
    try {
      const out = await this.db.send(new UpdateCommand(updateRequest(this.settings, ref, write)), {
        abortSignal: this.deadline(),
      });
      return { ok: true, item: (out.Attributes ?? {}) as Item };
    } catch (error) {
      if (error instanceof Error && error.name === 'ConditionalCheckFailedException') {
        // lib-dynamodb leaves the ALL_OLD item marshalled on the exception.
        const old = (error as { Item?: Record<string, AttributeValue> }).Item;
        return { ok: false, old: asItem(old) };
      }
      throw toStoreError(error);
    }
  }

  async transact(steps: readonly Step[]): Promise<TransactResult> {
    try {
      // The SDK gives the call one ClientRequestToken for all its attempts: a retry is applied at most once.
      await this.db.send(new TransactWriteCommand(transactRequest(this.settings, steps)), {
        abortSignal: this.deadline(),
      });
      return { ok: true };
    } catch (error) {
      const reasons = (error as { CancellationReasons?: CancellationReason[] }).CancellationReasons;
      if (error instanceof Error && error.name === 'TransactionCanceledException' && reasons)
        return cancellationOutcome(reasons);
      throw toStoreError(error);
    }
  }

  async remove(ref: ItemRef): Promise<void> {
    await this.send((abortSignal) =>
      this.db.send(new DeleteCommand({ TableName: this.settings.tableName, Key: tableKey(ref) }), {
        abortSignal,
      }),
    );
  }

  async read(ref: ItemRef): Promise<Item | undefined> {
    const out = await this.send((abortSignal) =>
      this.db.send(
        new GetCommand({ TableName: this.settings.tableName, Key: tableKey(ref), ConsistentRead: true }),
        { abortSignal },
      ),
    );
    return out.Item as Item | undefined;
  }

  async queue(lock: string, limit: number): Promise<QueueSnapshot> {
    const out = await this.send((abortSignal) =>
      this.db.send(
        new QueryCommand({
          TableName: this.settings.tableName,
          KeyConditionExpression: '#pk = :pk AND #sk BETWEEN :lock AND :waiters',
          ExpressionAttributeNames: { '#pk': KEY.pk, '#sk': KEY.sk },
          ExpressionAttributeValues: {
            ':pk': lockPartition(lock),
            ':lock': LOCK_SK,
            ':waiters': `${WAITER_SK_PREFIX}\uffff`,
          },
          ConsistentRead: true,
          Limit: limit + 1,
        }),
        { abortSignal },
      ),
    );
    let item: Item | undefined;
    const waiters: Waiter[] = [];
    for (const raw of out.Items ?? []) {
      const sk = raw[KEY.sk];
      if (sk === LOCK_SK) item = raw as Item;
      else if (typeof sk === 'string' && sk.startsWith(WAITER_SK_PREFIX))
        waiters.push(waiterOf(sk.slice(WAITER_SK_PREFIX.length), raw as Item));
    }
    return { lock: item, waiters, complete: out.LastEvaluatedKey === undefined };
  }

  async position(lock: string, order: string): Promise<number> {
    let count = 0;
    let startKey: Record<string, unknown> | undefined;
    do {
      const page = await this.send((abortSignal) =>
        this.db.send(
          new QueryCommand({
            TableName: this.settings.tableName,
            KeyConditionExpression: '#pk = :pk AND #sk BETWEEN :first AND :me',
            ExpressionAttributeNames: { '#pk': KEY.pk, '#sk': KEY.sk },
            ExpressionAttributeValues: {
              ':pk': lockPartition(lock),
              ':first': WAITER_SK_PREFIX,
              ':me': `${WAITER_SK_PREFIX}${order}`,
            },
            ConsistentRead: true,
            Select: 'COUNT',
            ExclusiveStartKey: startKey,
          }),
          { abortSignal },
        ),
      );
      count += page.Count ?? 0;
      startKey = page.LastEvaluatedKey;
    } while (startKey);
    return count;
  }

  async sessionLocks(session: string): Promise<string[]> {
    const links = await this.queryAll({
      KeyConditionExpression: '#pk = :pk AND begins_with(#sk, :links)',
      ExpressionAttributeNames: { '#pk': KEY.pk, '#sk': KEY.sk },
      ExpressionAttributeValues: { ':pk': sessionPartition(session), ':links': SESSION_LINK_PREFIX },
      ConsistentRead: true,
    });
    return links.map((item) => String(item[KEY.sk]).slice(SESSION_LINK_PREFIX.length));
  }

  /** Every shard of the minute, read side by side and merged in due order. */
  async dueIn(minute: number, now: number): Promise<ItemRef[]> {
    const shards = await Promise.all(
      dueBuckets(minute).map((bucket) =>
        this.queryAll({
          IndexName: DUE_INDEX.name,
          KeyConditionExpression: '#b = :b AND #at <= :now',
          ExpressionAttributeNames: { '#b': DUE_INDEX.pk, '#at': DUE_INDEX.sk },
          ExpressionAttributeValues: { ':b': bucket, ':now': now },
        }),
      ),
    );
    return shards
      .flat()
      .sort((a, b) => Number(a[DUE_INDEX.sk]) - Number(b[DUE_INDEX.sk]))
      .flatMap((key) => refOfKey(key) ?? []);
  }

  async waitersOf(connection: string): Promise<ItemRef[]> {
    const keys = await this.queryAll({
      IndexName: OWNER_INDEX.name,
      KeyConditionExpression: '#o = :o',
      ExpressionAttributeNames: { '#o': OWNER_INDEX.pk },
      ExpressionAttributeValues: { ':o': connectionOwner(connection) },
    });
    return keys.flatMap((key) => {
      const ref = refOfKey(key);
      return ref?.kind === 'waiter' ? [ref] : [];
    });
  }

  /**
   * The first `limit` sort keys of a sharded index, over every shard read side by side (each its
   * first `limit` in range), merged: the first `limit` overall are among them, up to the last key
   * of any shard whose page was cut short (DynamoDB's 1 MB per Query; not reached at 100 keys).
   * `range` is the sort key's condition on `#sk` (none: the whole partition).
   */
  private async firstOfShards(
    index: { readonly name: string; readonly pk: string; readonly sk: string },
    partitions: readonly string[],
    range: { readonly condition: string; readonly values: Record<string, unknown> } | undefined,
    limit: number,
  ): Promise<{ keys: string[]; more: boolean }> {
    const shards = await Promise.all(
      partitions.map((partition) =>
        this.send((abortSignal) =>
          this.db.send(
            new QueryCommand({
              TableName: this.settings.tableName,
              IndexName: index.name,
              KeyConditionExpression: range ? `#pk = :pk AND ${range.condition}` : '#pk = :pk',
              ExpressionAttributeNames: range ? { '#pk': index.pk, '#sk': index.sk } : { '#pk': index.pk },
              ExpressionAttributeValues: { ':pk': partition, ...range?.values },
              Limit: limit,
            }),
            { abortSignal },
          ),
        ),
      ),
    );
    const keysOf = (page: (typeof shards)[number]) => (page.Items ?? []).map((key) => String(key[index.sk]));
    const cut = shards.flatMap((page) => (page.LastEvaluatedKey ? (keysOf(page).at(-1) ?? []) : []));
    const bound = cut.length > 0 ? cut.sort()[0] : undefined;
    const all = shards
      .flatMap(keysOf)
      .filter((key) => bound === undefined || key <= bound)
      .sort();
    return {
      keys: all.slice(0, limit),
      more: all.length > limit || shards.some((page) => page.LastEvaluatedKey !== undefined),
    };
  }

  async sessionIds(limit: number, after: string): Promise<SessionIdPage> {
    // A key value may not be empty: from the start, no condition on the id.
    const range = after === '' ? undefined : { condition: '#sk > :after', values: { ':after': after } };
    const { keys, more } = await this.firstOfShards(OWNER_INDEX, SESSION_LIST_PARTITIONS, range, limit);
    return { ids: keys, more };
  }

  /** Locks by name from the listing index (firstOfShards). The cursor is the last name returned. */
  async listLocks(prefix: string, limit: number, cursor?: string): Promise<LockPage> {
    const after = cursor === undefined ? undefined : decodeListCursor(cursor, prefix);
    if (cursor !== undefined && after === undefined)
      throw invalidRequest(
        'cursor is not valid for this listing: pass back the next_cursor of the previous page, with the same prefix',
        [{ path: 'cursor', message: 'not a cursor this API issued for this prefix' }],
      );
    const between = after === undefined ? undefined : listRange(prefix, after);
    const range = between
      ? { condition: '#sk BETWEEN :from AND :to', values: { ':from': between.from, ':to': between.to } }
      : prefix
        ? { condition: 'begins_with(#sk, :prefix)', values: { ':prefix': prefix } }
        : undefined;
    const { keys: names, more } = await this.firstOfShards(LIST_INDEX, LIST_PARTITIONS, range, limit);
    const items = await this.readMany(names.map(lockRef));
    const last = names.at(-1);
    return {
      locks: names.flatMap((name, i) => {
        const item = items[i];
        return item ? [{ name, item }] : [];
      }),
      nextCursor: more && last !== undefined ? encodeListCursor(last) : undefined,
    };
  }

  async readMany(refs: readonly ItemRef[]): Promise<(Item | undefined)[]> {
    const items: (Item | undefined)[] = [];
    for (let i = 0; i < refs.length; i += BATCH_READ_KEYS)
      items.push(...(await this.readBatch(refs.slice(i, i + BATCH_READ_KEYS))));
    return items;
  }

  /** At most BATCH_READ_KEYS items in one BatchGetItem, retrying what it leaves unprocessed. */
  private async readBatch(refs: readonly ItemRef[]): Promise<(Item | undefined)[]> {
    if (refs.length === 0) return [];
    const found = new Map<string, Item>();
    const at = (key: Record<string, unknown>) => `${String(key[KEY.pk])}\n${String(key[KEY.sk])}`;
    const table = this.settings.tableName;
    const asked = refs.map(tableKey);
    const answer = () => asked.map((key) => found.get(at(key)));
    let keys: Record<string, unknown>[] = asked;
    for (let round = 0; round < BATCH_READ_ROUNDS; round++) {
      const out = await this.send((abortSignal) =>
        this.db.send(
          new BatchGetCommand({ RequestItems: { [table]: { Keys: keys, ConsistentRead: true } } }),
          {
            abortSignal,
          },
        ),
      );
      for (const item of out.Responses?.[table] ?? []) found.set(at(item), item as Item);
      const unprocessed = out.UnprocessedKeys?.[table]?.Keys;
      if (!unprocessed?.length) return answer();
      keys = unprocessed;
      if (round < BATCH_READ_ROUNDS - 1) await new Promise((resolve) => setTimeout(resolve, 20 * 2 ** round));
    }
    throw toStoreError({ name: 'ProvisionedThroughputExceededException' });
  }

  /** Every item a Query matches, following its pages. */
  private async queryAll(
    input: Omit<QueryCommandInput, 'TableName' | 'ExclusiveStartKey'>,
  ): Promise<Record<string, unknown>[]> {
    const items: Record<string, unknown>[] = [];
    const abortSignal = this.deadline();
    let startKey: Record<string, unknown> | undefined;
    do {
      const page = await this.send(() =>
        this.db.send(
          new QueryCommand({ ...input, TableName: this.settings.tableName, ExclusiveStartKey: startKey }),
          { abortSignal },
        ),
      );
      items.push(...(page.Items ?? []));
      startKey = page.LastEvaluatedKey;
    } while (startKey);
    return items;
  }

  private deadline(): AbortSignal {
    return AbortSignal.timeout(this.settings.deadlineMs ?? DEFAULT_DEADLINE_MS);
  }

  private async send<T>(call: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
    try {
      return await call(this.deadline());
    } catch (error) {
      throw toStoreError(error);
    }
  }
}
