/**
 * The floor issue 14 names for a fair handoff, measured on the same DynamoDB Local in the same
 * run as the contention runs: "one write to release and grant the next waiter, plus one write to
 * join", the grant handed to the next waiter by whoever performed the handoff.
 *
 * It is a queue inside the lock's item, driven in this process, with nothing else around it:
 *   - join: one UpdateItem appends the worker to the item's queue (and, only if the lock turns
 *     out free, one more takes it);
 *   - release: one UpdateItem, conditional on the releaser still holding, makes the queue's head
 *     the holder with the next token and removes it from the queue; the returned holder's grant
 *     is resolved in process (no WebSocket, no HTTP, no Lambda).
 * No leases, sessions, priorities, deadlines, fencing checks or metrics: a service needs all of
 * them, and this has none. So its grants/s is an upper bound for any design of two single-item
 * writes per grant on this machine, not a design to ship. Its table is one of its own made as the
 * stack's is (its stream on, as the service's notifier needs; nothing reads it), so each write
 * costs what the service's writes cost.
 *
 * The second floor run is the same queue with latchkey's WebSocket path's item counts: the join a
 * transaction of 6 items, the handoff one of 5 (the lock item and plain items standing for the
 * waiter, the request's record and the quotas), and a consistent GetItem before each handoff
 * (a transaction returns no values, so the releaser reads the queue's head first). Between the
 * two runs lies what the items alone cost; between it and latchkey's run, the rest of the service
 * (its HTTP and WebSocket hops, checks and metrics).
 */
import { randomUUID } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  type DynamoDBDocumentClient as DocumentClient,
  DynamoDBDocumentClient,
  GetCommand,
  TransactWriteCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import { ensureTable } from '../../local/table-setup';
import { measurementWindow, percentile, sleep } from './common';
import {
  type ContendedGrant,
  type ContentionStats,
  contentionStats,
  fmt,
  runTable,
} from './contention-stats';
import type { Counts } from './waiting';

const WARM_UP_MS = 2_000;

export const floorName = 'floor: one-item queue, 2 writes, pushed in process';
export const transactionFloorName = "the floor with latchkey's items: 6-item join, GetItem + 5-item handoff";

/** A write refused by its condition (or a transaction by a condition or a conflict): try again. */
const isCondition = (error: unknown) => {
  const { name, CancellationReasons } = error as Error & { CancellationReasons?: { Code?: string }[] };
  if (name === 'ConditionalCheckFailedException') return true;
  const retried = new Set(['None', 'ConditionalCheckFailed', 'TransactionConflict']);
  return (
    name === 'TransactionCanceledException' &&
    (CancellationReasons ?? []).every((r) => retried.has(r.Code ?? 'None'))
  );
};

const KEY = { pk: 'bench/floor', sk: 'lock' };
const TRANSACTION_KEY = { pk: 'bench/floor-transactions', sk: 'lock' };
/** latchkey's WebSocket path: a join of 6 items, a handoff of 5 (README: "Against DynamoDB Local's own rate"). */
const JOIN_ITEMS = 6;
const HANDOFF_ITEMS = 5;

/** The two steps of a floor protocol; a grant reaches its worker through `push`. */
interface FloorProtocol {
  join(me: string): Promise<void>;
  release(me: string, token: number): Promise<void>;
}
type Push = (holder: string, token: number) => void;
/** A join or a release gets through within a few tries, unless something is wrong: then it throws. */
const MOST_ATTEMPTS = 100;

/**
 * Makes the floor's table and writes its lock items, before any other run writes: an in-memory
 * DynamoDB Local (the bench's) cannot be given the shard index of local/stream-index.ts, and
 * without it every write to a streamed table walks the stream records written (to any table)
 * before that table's first one: a table first written after the other runs would pay for all of
 * them (measured: the floor's writes took 40 ms at p50 against 2 ms). The stack's table is first
 * written at its start too.
 */
export async function floorTable(endpoint: string): Promise<string> {
  const raw = new DynamoDBClient({ endpoint });
  const TableName = `bench-floor-${randomUUID()}`;
  await ensureTable(raw, TableName);
  for (const Key of [KEY, TRANSACTION_KEY])
    await DynamoDBDocumentClient.from(raw).send(
      new UpdateCommand({
        TableName,
        Key,
        UpdateExpression: 'SET #t = :zero',
        ExpressionAttributeNames: { '#t': 'token' },
        ExpressionAttributeValues: { ':zero': 0 },
      }),
    );
  raw.destroy();
  return TableName;
}

type FloorOptions = {
  readonly workers: number;
  readonly holdMs: number;
  readonly seconds: number;
  readonly table: string;
};

/** The floor: a join and a handoff of one UpdateItem each. */
export const floor = (proxy: { url: string; take(): Counts }, options: FloorOptions) =>
  runFloor(floorName, proxy, options, singleItemProtocol);

/** The floor with latchkey's item counts, in transactions. */
export const transactionFloor = (proxy: { url: string; take(): Counts }, options: FloorOptions) =>
  runFloor(transactionFloorName, proxy, options, transactionProtocol);

function singleItemProtocol(db: DocumentClient, TableName: string, push: Push): FloorProtocol {
  const Key = KEY;
  return {
    /** One write to join; a second only when the lock is found free. */
    async join(me) {
      const { Attributes: item } = await db.send(
        new UpdateCommand({
          TableName,
          Key,
          UpdateExpression: 'SET #q = list_append(if_not_exists(#q, :none), :me)',
          ExpressionAttributeNames: { '#q': 'queue' },
          ExpressionAttributeValues: { ':none': [], ':me': [me] },
          ReturnValues: 'ALL_NEW',
        }),
      );
      if (item?.holder !== undefined || item?.queue?.[0] !== me) return;
      try {
        const { Attributes: now } = await db.send(
          new UpdateCommand({
            TableName,
            Key,
            UpdateExpression: 'SET holder = :me, #t = #t + :one REMOVE #q[0]',
            ConditionExpression: 'attribute_not_exists(holder) AND #q[0] = :me',
            ExpressionAttributeNames: { '#q': 'queue', '#t': 'token' },
            ExpressionAttributeValues: { ':me': me, ':one': 1 },
            ReturnValues: 'UPDATED_NEW',
          }),
        );
        push(me, Number(now?.token));
      } catch (error) {
        // Someone's release handed it to this worker first: its push is on the way.
        if (!isCondition(error)) throw error;
      }
    },

    /** One write hands the lock to the queue's head; a lock with nobody queued is freed. */
    async release(me, token) {
      for (let attempt = 0; attempt < MOST_ATTEMPTS; attempt++) {
        try {
          const { Attributes: now } = await db.send(
            new UpdateCommand({
              TableName,
              Key,
              UpdateExpression: 'SET holder = #q[0], #t = #t + :one REMOVE #q[0]',
              ConditionExpression: 'holder = :me AND #t = :token AND attribute_exists(#q[0])',
              ExpressionAttributeNames: { '#q': 'queue', '#t': 'token' },
              ExpressionAttributeValues: { ':me': me, ':token': token, ':one': 1 },
              ReturnValues: 'UPDATED_NEW',
            }),
          );
          push(String(now?.holder), Number(now?.token));
          return;
        } catch (error) {
          if (!isCondition(error)) throw error;
        }
        if (await freeIfNobodyQueued(db, TableName, Key, me, token)) return;
      }
      throw new Error(`${me} could not release token ${token}: it no longer holds the lock`);
    },
  };
}

/** Frees the lock if nobody is queued; false if someone joined meanwhile (hand it over after all). */
async function freeIfNobodyQueued(
  db: DocumentClient,
  TableName: string,
  Key: typeof KEY,
  me: string,
  token: number,
): Promise<boolean> {
  try {
    await db.send(
      new UpdateCommand({
        TableName,
        Key,
        UpdateExpression: 'REMOVE holder',
        ConditionExpression: 'holder = :me AND #t = :token AND attribute_not_exists(#q[0])',
        ExpressionAttributeNames: { '#q': 'queue', '#t': 'token' },
        ExpressionAttributeValues: { ':me': me, ':token': token },
      }),
    );
    return true;
  } catch (error) {
    if (!isCondition(error)) throw error;
    return false;
  }
}

interface LockUpdate {
  readonly UpdateExpression: string;
  readonly ConditionExpression: string;
  readonly ExpressionAttributeNames: Record<string, string>;
  readonly ExpressionAttributeValues: Record<string, unknown>;
}

function transactionProtocol(db: DocumentClient, TableName: string, push: Push): FloorProtocol {
  const Key = TRANSACTION_KEY;
  /** Plain items standing for what latchkey writes beside the lock item (waiter, record, quotas). */
  const others = (me: string, step: string, n: number) =>
    Array.from({ length: n }, (_, i) => ({
      Put: {
        TableName,
        Item: { pk: `bench/floor-transactions/${me}/${step}/${i}`, sk: 'item', at: Date.now() },
      },
    }));
  const transact = (lockUpdate: LockUpdate, me: string, step: string, items: number) =>
    db.send(
      new TransactWriteCommand({
        TransactItems: [{ Update: { TableName, Key, ...lockUpdate } }, ...others(me, step, items - 1)],
      }),
    );
  /** One transaction joins a held lock; one more takes a free one. */
  const join = async (me: string): Promise<void> => {
    for (let attempt = 0; attempt < MOST_ATTEMPTS; attempt++) {
      try {
        await transact(
          {
            UpdateExpression: 'SET #q = list_append(if_not_exists(#q, :none), :me)',
            ConditionExpression: 'attribute_exists(holder)',
            ExpressionAttributeNames: { '#q': 'queue' },
            ExpressionAttributeValues: { ':none': [], ':me': [me] },
          },
          me,
          'join',
          JOIN_ITEMS,
        );
        return;
      } catch (error) {
        if (!isCondition(error)) throw error;
      }
      // Free when it was read: take it (a release freeing it orders before this, or it fails and
      // this worker tries to join again).
      const { Item: lock } = await db.send(new GetCommand({ TableName, Key, ConsistentRead: true }));
      const token = Number(lock?.token) + 1;
      try {
        await transact(
          {
            UpdateExpression: 'SET holder = :me, #t = :next',
            ConditionExpression: 'attribute_not_exists(holder) AND #t = :seen',
            ExpressionAttributeNames: { '#t': 'token' },
            ExpressionAttributeValues: { ':me': me, ':next': token, ':seen': token - 1 },
          },
          me,
          'join',
          JOIN_ITEMS,
        );
        push(me, token);
        return;
      } catch (error) {
        if (!isCondition(error)) throw error;
      }
    }
    throw new Error(`${me} could neither join nor take the lock in ${MOST_ATTEMPTS} tries`);
  };
  return {
    join,
    /** A consistent read of the queue's head, then one transaction hands the lock over. */
    async release(me, token) {
      for (let attempt = 0; attempt < MOST_ATTEMPTS; attempt++) {
        const { Item: lock } = await db.send(new GetCommand({ TableName, Key, ConsistentRead: true }));
        if (lock?.holder !== me || Number(lock?.token) !== token) break;
        const head = lock?.queue?.[0] as string | undefined;
        if (head === undefined) {
          if (await freeIfNobodyQueued(db, TableName, Key, me, token)) return;
          continue;
        }
        try {
          await transact(
            {
              UpdateExpression: 'SET holder = :head, #t = #t + :one REMOVE #q[0]',
              ConditionExpression: 'holder = :me AND #t = :token AND #q[0] = :head',
              ExpressionAttributeNames: { '#q': 'queue', '#t': 'token' },
              ExpressionAttributeValues: { ':me': me, ':token': token, ':one': 1, ':head': head },
            },
            me,
            'handoff',
            HANDOFF_ITEMS,
          );
          push(head, token + 1);
          return;
        } catch (error) {
          if (!isCondition(error)) throw error;
        }
      }
      throw new Error(`${me} could not release token ${token}: it no longer holds the lock`);
    },
  };
}

async function runFloor(
  name: string,
  proxy: { url: string; take(): Counts },
  options: FloorOptions,
  protocolOn: (db: DocumentClient, table: string, push: Push) => FloorProtocol,
): Promise<{ lines: string[]; stats: ContentionStats }> {
  const raw = new DynamoDBClient({ endpoint: proxy.url });
  const db = DynamoDBDocumentClient.from(raw);
  /** Resolves the grant of the worker the handoff named, as a push would. */
  const pending = new Map<string, (token: number) => void>();
  const protocol = protocolOn(db, options.table, (holder, token) => {
    const deliver = pending.get(holder);
    pending.delete(holder);
    deliver?.(token);
  });
  /** Joins, and resolves with the token once the grant is pushed. */
  const join = (me: string) => {
    const granted = new Promise<number>((resolve) => pending.set(me, resolve));
    return protocol.join(me).then(() => granted);
  };
  const release = (me: string, token: number) => protocol.release(me, token);

  const grants: ContendedGrant[] = [];
  const releaseSent = new Map<number, number>();
  let counts: Counts | undefined;
  const window = measurementWindow(
    WARM_UP_MS,
    options.seconds,
    () => proxy.take(),
    () => {
      counts = proxy.take();
    },
  );
  let holders = 0;
  let mostHolders = 0;
  await Promise.all(
    Array.from({ length: options.workers }, async (_, worker) => {
      const me = `w${worker}`;
      while (performance.now() < window.deadline) {
        const sentAt = performance.now();
        const token = await join(me);
        const at = performance.now();
        mostHolders = Math.max(mostHolders, ++holders);
        grants.push({ worker, order: token, at, waitMs: at - sentAt });
        await sleep(options.holdMs);
        holders--;
        releaseSent.set(token, performance.now());
        await release(me, token);
      }
    }),
  );
  window.stop();
  raw.destroy();
  if (mostHolders > 1) throw new Error(`${name}: ${mostHolders} workers held the lock at once`);

  const taken = counts ?? proxy.take();
  const stats = contentionStats({ grants, releaseSent, window, counts: taken, workers: options.workers });
  const reads = [...taken.latencies]
    .filter(([op]) => op.endsWith('.GetItem'))
    .flatMap(([, took]) => took)
    .sort((a, b) => a - b);
  const lines = runTable(name, { ...options, warmUpMs: WARM_UP_MS }, stats, [
    ['write p50 ms', fmt(stats.writeP50)],
    [
      'GetItem p50 ms (the handoff reads the head first)',
      reads.length ? fmt(percentile(reads, 0.5)) : 'none',
    ],
    ['failed conditional writes per grant', fmt(stats.failedWritesPerGrant, 2)],
  ]);
  return { lines, stats };
}
