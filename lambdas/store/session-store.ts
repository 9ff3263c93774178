/**
 * Sessions in DynamoDB: the session item, the links from a session to the
 * locks it took (in the session's partition, so one strongly consistent
 * Query finds them when it ends), the due index the sweeper reads, and the
 * transaction that grants a lock only while its session is live.
 */
import type { TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import {
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  TransactWriteCommand,
} from '@aws-sdk/lib-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { LatchkeyError } from '../core/errors';
import {
  and,
  eq,
  type Item,
  lt,
  missing,
  or,
  remove,
  set,
  type UpdateAction,
  type Write,
} from '../core/expr';
import { LockAttr, type WriteResult } from '../core/lock';
import { isLiveAt, type Session, SessionAttr, sessionOfItem } from '../core/session';
import { compile, compileCondition } from './compile';
import { conditionalUpdate } from './conditional-update';
import { toStoreError } from './errors';
import { DEFAULT_DEADLINE_MS, lockHousekeeping, type StoreSettings } from './lock-requests';
import { queryAll } from './query-all';
import {
  DUE_INDEX,
  type DueItem,
  dueBucket,
  dueItemOfKey,
  GC_ATTRIBUTE,
  KEY,
  lockKey,
  minuteOf,
  SESSION_LINK_PREFIX,
  SWEEPER_CURSOR_KEY,
  sessionKey,
  sessionLockKey,
  sessionPartition,
} from './table';

const CURSOR = 'swept_to';

export class SessionStore {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly settings: StoreSettings,
  ) {}

  async get(id: string): Promise<Session | undefined> {
    const out = await this.send((abortSignal) =>
      this.db.send(
        new GetCommand({ TableName: this.settings.tableName, Key: sessionKey(id), ConsistentRead: true }),
        { abortSignal },
      ),
    );
    return out.Item ? sessionOfItem(id, out.Item as Item) : undefined;
  }

  /** One conditional write of a session item; a refusal returns the item as it was. */
  async write(id: string, write: Write, now: number): Promise<WriteResult> {
    return conditionalUpdate(
      this.db,
      {
        TableName: this.settings.tableName,
        Key: sessionKey(id),
        ...compile(write.condition, [...write.update, ...this.housekeeping(write, now)]),
      },
      this.deadline(),
    );
  }

  /**
   * Carries out a lock write only while session `session` is live at `now`
   * and records the link from the session to the lock, in one transaction:
   * either the grant lands before the session ends (and whoever ends it finds
   * the link), or it is refused. A refused session throws; a refused lock
   * write returns the lock item as it was.
   */
  async lockWriteInSession(
    name: string,
    write: Write,
    session: Pick<Session, 'id' | 'clientId'>,
    now: number,
  ): Promise<WriteResult> {
    const table = this.settings.tableName;
    const lockUpdate = [...write.update, ...lockHousekeeping(this.settings, name, write, now)];
    try {
      await this.db.send(
        new TransactWriteCommand({
          TransactItems: [
            {
              ConditionCheck: {
                TableName: table,
                Key: sessionKey(session.id),
                ...compileCondition(and(isLiveAt(now), eq(SessionAttr.client, session.clientId))),
              },
            },
            {
              Put: {
                TableName: table,
                Item: { ...sessionLockKey(session.id, name), lock_name: name },
              },
            },
            {
              Update: {
                TableName: table,
                Key: lockKey(name),
                ...compile(write.condition, lockUpdate),
                ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
              },
            },
          ],
        }),
        { abortSignal: this.deadline() },
      );
    } catch (error) {
      const reasons = (error as Partial<TransactionCanceledException>).CancellationReasons;
      if (!(error instanceof Error) || error.name !== 'TransactionCanceledException' || !reasons)
        throw toStoreError(error);
      if (reasons.some((r) => r.Code && r.Code !== 'None' && r.Code !== 'ConditionalCheckFailed'))
        throw toStoreError({ name: 'TransactionConflictException', $retryable: {} });
      if (reasons[0]?.Code === 'ConditionalCheckFailed')
        throw new LatchkeyError('SESSION_EXPIRED', `session ${session.id} has ended or expired`);
      const old = reasons[2]?.Item;
      return {
        ok: false,
        old: old ? (unmarshall(old as Parameters<typeof unmarshall>[0]) as Item) : undefined,
      };
    }
    // A transaction returns no item: read the grant back. If another write came first (the session
    // ended and the lock was handed on within these milliseconds), the grant is already over.
    const out = await this.send((abortSignal) =>
      this.db.send(new GetCommand({ TableName: table, Key: lockKey(name), ConsistentRead: true }), {
        abortSignal,
      }),
    );
    const written = write.update.find((a) => a.kind === 'set' && a.attr === LockAttr.lastWrite);
    if (!out.Item || written?.kind !== 'set' || out.Item[LockAttr.lastWrite] !== written.value)
      throw new LatchkeyError('SESSION_EXPIRED', `session ${session.id} ended as the lock was granted`);
    return { ok: true, item: out.Item as Item };
  }

  /** Names of the locks a session took (strongly consistent). */
  async lockNames(id: string): Promise<string[]> {
    const links = await queryAll(this.db, this.settings, {
      KeyConditionExpression: '#pk = :pk AND begins_with(#sk, :links)',
      ExpressionAttributeNames: { '#pk': KEY.pk, '#sk': KEY.sk },
      ExpressionAttributeValues: { ':pk': sessionPartition(id), ':links': SESSION_LINK_PREFIX },
      ConsistentRead: true,
    });
    return links.map((item) => String(item[KEY.sk]).slice(SESSION_LINK_PREFIX.length));
  }

  async forgetLock(id: string, name: string): Promise<void> {
    await this.send((abortSignal) =>
      this.db.send(new DeleteCommand({ TableName: this.settings.tableName, Key: sessionLockKey(id, name) }), {
        abortSignal,
      }),
    );
  }

  /** What is due by `now` in one minute's bucket of the due index: sessions, waiters, connections. */
  async dueIn(minute: number, now: number): Promise<DueItem[]> {
    const keys = await queryAll(this.db, this.settings, {
      IndexName: DUE_INDEX.name,
      KeyConditionExpression: '#b = :b AND #at <= :now',
      ExpressionAttributeNames: { '#b': DUE_INDEX.pk, '#at': DUE_INDEX.sk },
      ExpressionAttributeValues: { ':b': dueBucket(minute), ':now': now },
    });
    return keys.flatMap((key) => dueItemOfKey(key) ?? []);
  }

  /** The first minute the sweeper has not finished, if it ever ran. */
  async sweptTo(): Promise<number | undefined> {
    const out = await this.send((abortSignal) =>
      this.db.send(
        new GetCommand({ TableName: this.settings.tableName, Key: SWEEPER_CURSOR_KEY, ConsistentRead: true }),
        { abortSignal },
      ),
    );
    const v = out.Item?.[CURSOR];
    return typeof v === 'number' ? v : undefined;
  }

  /** Moves the sweeper's cursor forward to `minute` (never back: two sweepers may race). */
  async advanceSweptTo(minute: number): Promise<void> {
    // Refused when another sweeper is already further: nothing to do.
    const write = { condition: or(missing(CURSOR), lt(CURSOR, minute)), update: [set(CURSOR, minute)] };
    await conditionalUpdate(
      this.db,
      {
        TableName: this.settings.tableName,
        Key: SWEEPER_CURSOR_KEY,
        ...compile(write.condition, write.update),
      },
      this.deadline(),
    );
  }

  /** The due index keys follow `due_at`; an ended session is kept (for clear answers) until collected. */
  private housekeeping(write: Write, now: number): UpdateAction[] {
    const due = write.update.find((a) => a.attr === SessionAttr.dueAt);
    const index: UpdateAction[] =
      due?.kind === 'set' && typeof due.value === 'number'
        ? [set(DUE_INDEX.pk, dueBucket(minuteOf(due.value)))]
        : due?.kind === 'remove'
          ? [remove(DUE_INDEX.pk)]
          : [];
    const until = due?.kind === 'set' && typeof due.value === 'number' ? due.value : now;
    return [...index, set(GC_ATTRIBUTE, Math.ceil(until / 1000) + this.settings.retentionSeconds)];
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
