/**
 * The wait queue and WebSocket connections in DynamoDB: reads a lock with
 * its queue in one Query, runs the queue's transactions (core/queue.ts), and
 * keeps connection items.
 */
import type { TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import {
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  TransactWriteCommand,
  type TransactWriteCommandInput,
} from '@aws-sdk/lib-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { type Item, set } from '../core/expr';
import { type Step, WaitAttr, type Waiter, waiterOf } from '../core/queue';
import { compile, compileCondition } from './compile';
import { toStoreError } from './errors';
import { DEFAULT_DEADLINE_MS, lockHousekeeping, type StoreSettings } from './lock-requests';
import { queryAll } from './query-all';
import {
  connectionKey,
  connectionOwner,
  DUE_INDEX,
  dueBucket,
  GC_ATTRIBUTE,
  KEY,
  LOCK_SK,
  lockKey,
  lockPartition,
  minuteOf,
  OWNER_INDEX,
  sessionKey,
  sessionLockKey,
  WAITER_SK_PREFIX,
  waiterFromKey,
  waiterKey,
} from './table';

export interface QueueSnapshot {
  /** The lock item, read strongly consistently together with the queue. */
  readonly lock: Item | undefined;
  /** The first waiters in serving order. */
  readonly waiters: readonly Waiter[];
  /** True when `waiters` is the whole queue. */
  readonly complete: boolean;
}

/** Outcome of a transaction: done, or refused with the lock item as it was (when the lock step refused). */
export type TransactResult =
  | { readonly ok: true }
  | {
      readonly ok: false;
      readonly lockRefused: boolean;
      readonly lockOld: Item | undefined;
      /** The session a grant was to be tied to is no longer live (or not the grantee's). */
      readonly sessionRefused?: boolean;
    };

export interface Connection {
  readonly id: string;
  readonly clientId: string;
  readonly connectedAt: number;
}

/** API Gateway closes a WebSocket connection after two hours; its item is collected a day after that. */
const CONNECTION_GC_SECONDS = 2 * 3600 + 86_400;
const CONNECTION_DUE_MS = 2 * 3_600_000 + 60_000;

/** Builds the TransactWriteItems request for `steps` on lock `name`. Pure: read by the unit tests. */
export function transactRequest(
  settings: StoreSettings,
  name: string,
  steps: readonly Step[],
  now: number,
): TransactWriteCommandInput {
  return {
    TransactItems: steps.map((step) => {
      if (step.target === 'lock') {
        const housekeeping = lockHousekeeping(settings, name, step, now);
        return {
          Update: {
            TableName: settings.tableName,
            Key: lockKey(name),
            ...compile(step.condition, [...step.update, ...housekeeping]),
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD' as const,
          },
        };
      }
      if (step.target === 'session')
        return {
          ConditionCheck: {
            TableName: settings.tableName,
            Key: sessionKey(step.sessionId),
            ...compileCondition(step.condition),
          },
        };
      if (step.target === 'session-lock')
        return {
          Put: {
            TableName: settings.tableName,
            Item: { ...sessionLockKey(step.sessionId, name), lock_name: name },
          },
        };
      const Key = waiterKey(name, step.order);
      if ('delete' in step)
        return { Delete: { TableName: settings.tableName, Key, ...compileCondition(step.condition) } };
      const deadline = step.update.find((a) => a.kind === 'set' && a.attr === WaitAttr.deadline);
      const until = deadline?.kind === 'set' && typeof deadline.value === 'number' ? deadline.value : now;
      const connection = step.update.find((a) => a.kind === 'set' && a.attr === WaitAttr.connection);
      const owner =
        connection?.kind === 'set'
          ? [
              {
                kind: 'set' as const,
                attr: OWNER_INDEX.pk,
                value: connectionOwner(String(connection.value)),
              },
              { kind: 'set' as const, attr: OWNER_INDEX.sk, value: `${name}#${step.order}` },
            ]
          : [];
      const gc = set(GC_ATTRIBUTE, Math.ceil(until / 1000) + settings.retentionSeconds);
      // In the due index at its deadline: the sweeper's backstop for a waiter nobody served or expired.
      const due = deadline ? [set(DUE_INDEX.pk, dueBucket(minuteOf(until))), set(DUE_INDEX.sk, until)] : [];
      return {
        Update: {
          TableName: settings.tableName,
          Key,
          ...compile(step.condition, [...step.update, ...owner, ...due, gc]),
        },
      };
    }),
  };
}

export interface QueueHead {
  readonly lock: Item | undefined;
  /** In serving order, up to and including the waiter asked about. */
  readonly waiters: readonly { readonly order: string; readonly requestKey: string }[];
}

export class QueueStore {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly settings: StoreSettings,
  ) {}

  /** The lock item and its first `limit` waiters, in one strongly consistent Query. */
  async read(name: string, limit = 25): Promise<QueueSnapshot> {
    const out = await this.send((abortSignal) =>
      this.db.send(
        new QueryCommand({
          TableName: this.settings.tableName,
          KeyConditionExpression: '#pk = :pk AND #sk BETWEEN :lock AND :waiters',
          ExpressionAttributeNames: { '#pk': KEY.pk, '#sk': KEY.sk },
          ExpressionAttributeValues: {
            ':pk': lockPartition(name),
            ':lock': LOCK_SK,
            ':waiters': `${WAITER_SK_PREFIX}\uffff`,
          },
          ConsistentRead: true,
          Limit: limit + 1,
        }),
        { abortSignal },
      ),
    );
    let lock: Item | undefined;
    const waiters: Waiter[] = [];
    for (const item of out.Items ?? []) {
      const sk = item[KEY.sk];
      if (sk === LOCK_SK) lock = item as Item;
      else if (typeof sk === 'string' && sk.startsWith(WAITER_SK_PREFIX))
        waiters.push(waiterOf(sk.slice(WAITER_SK_PREFIX.length), item as Item));
    }
    return { lock, waiters, complete: out.LastEvaluatedKey === undefined };
  }

  /**
   * The lock item and the waiters up to and including `order` (their order
   * and request only), read strongly consistent: where a waiter stands and
   * whether an earlier one carries the same request.
   */
  async upTo(name: string, order: string): Promise<QueueHead> {
    let lock: Item | undefined;
    const waiters: { order: string; requestKey: string }[] = [];
    const items = await queryAll(this.db, this.settings, {
      KeyConditionExpression: '#pk = :pk AND #sk BETWEEN :lock AND :me',
      ExpressionAttributeNames: { '#pk': KEY.pk, '#sk': KEY.sk },
      ExpressionAttributeValues: {
        ':pk': lockPartition(name),
        ':lock': LOCK_SK,
        ':me': `${WAITER_SK_PREFIX}${order}`,
      },
      ConsistentRead: true,
    });
    for (const item of items) {
      const sk = item[KEY.sk];
      if (sk === LOCK_SK) lock = item as Item;
      else if (typeof sk === 'string' && sk.startsWith(WAITER_SK_PREFIX))
        waiters.push({
          order: sk.slice(WAITER_SK_PREFIX.length),
          requestKey: String(item[WaitAttr.requestKey]),
        });
    }
    return { lock, waiters };
  }

  async transact(name: string, steps: readonly Step[], now: number): Promise<TransactResult> {
    try {
      await this.db.send(new TransactWriteCommand(transactRequest(this.settings, name, steps, now)), {
        abortSignal: AbortSignal.timeout(this.settings.deadlineMs ?? DEFAULT_DEADLINE_MS),
      });
      return { ok: true };
    } catch (error) {
      if (error instanceof Error && error.name === 'TransactionCanceledException') {
        const reasons = (error as TransactionCanceledException).CancellationReasons ?? [];
        if (reasons.some((r) => r.Code && r.Code !== 'None' && r.Code !== 'ConditionalCheckFailed')) {
          // A conflicting transaction or throttling on an item: retryable, not a refusal.
          throw toStoreError({ name: 'TransactionConflictException', $retryable: {} });
        }
        const lockIndex = steps.findIndex((s) => s.target === 'lock');
        const lockReason = lockIndex >= 0 ? reasons[lockIndex] : undefined;
        const old = lockReason?.Item;
        const sessionIndex = steps.findIndex((s) => s.target === 'session');
        return {
          ok: false,
          sessionRefused: sessionIndex >= 0 && reasons[sessionIndex]?.Code === 'ConditionalCheckFailed',
          lockRefused: lockReason?.Code === 'ConditionalCheckFailed',
          lockOld: old ? (unmarshall(old as Parameters<typeof unmarshall>[0]) as Item) : undefined,
        };
      }
      throw toStoreError(error);
    }
  }

  /** Waiters queued by one WebSocket connection (the owner index is eventually consistent). */
  async waitersOf(connectionId: string): Promise<{ lock: string; order: string }[]> {
    const keys = await queryAll(this.db, this.settings, {
      IndexName: OWNER_INDEX.name,
      KeyConditionExpression: '#o = :o',
      ExpressionAttributeNames: { '#o': OWNER_INDEX.pk },
      ExpressionAttributeValues: { ':o': connectionOwner(connectionId) },
    });
    return keys.flatMap((key) => waiterFromKey(key) ?? []);
  }

  async putConnection(c: Connection): Promise<void> {
    await this.send((abortSignal) =>
      this.db.send(
        new PutCommand({
          TableName: this.settings.tableName,
          Item: {
            ...connectionKey(c.id),
            client_id: c.clientId,
            connected_at: c.connectedAt,
            // Due when API Gateway has surely closed it: the sweeper's backstop for a lost $disconnect.
            [DUE_INDEX.pk]: dueBucket(minuteOf(c.connectedAt + CONNECTION_DUE_MS)),
            [DUE_INDEX.sk]: c.connectedAt + CONNECTION_DUE_MS,
            [GC_ATTRIBUTE]: Math.ceil(c.connectedAt / 1000) + CONNECTION_GC_SECONDS,
          },
        }),
        { abortSignal },
      ),
    );
  }

  async getConnection(id: string): Promise<Connection | undefined> {
    const out = await this.send((abortSignal) =>
      this.db.send(
        new GetCommand({ TableName: this.settings.tableName, Key: connectionKey(id), ConsistentRead: true }),
        { abortSignal },
      ),
    );
    const item = out.Item;
    if (!item || typeof item.client_id !== 'string') return undefined;
    return { id, clientId: item.client_id, connectedAt: Number(item.connected_at ?? 0) };
  }

  async deleteConnection(id: string): Promise<void> {
    await this.send((abortSignal) =>
      this.db.send(new DeleteCommand({ TableName: this.settings.tableName, Key: connectionKey(id) }), {
        abortSignal,
      }),
    );
  }

  private async send<T>(call: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
    try {
      return await call(AbortSignal.timeout(this.settings.deadlineMs ?? DEFAULT_DEADLINE_MS));
    } catch (error) {
      throw toStoreError(error);
    }
  }
}
