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
 * writes per grant on this machine, not a design to ship. The table is the stack's (its stream
 * on, as the service's notifier needs), so each write costs what the service's writes cost.
 */
import { randomUUID } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { ensureTable } from '../../local/table-setup';
import { measurementWindow, sleep } from './common';
import { type ContendedGrant, type ContentionStats, contentionStats } from './contention-stats';
import type { Counts } from './waiting';

const WARM_UP_MS = 2_000;

export const floorName = 'floor: one-item queue, 2 writes, pushed in process';

const isCondition = (error: unknown) => (error as Error).name === 'ConditionalCheckFailedException';

const KEY = { pk: 'bench/floor', sk: 'lock' };

/**
 * Makes the floor's table and writes its lock item, before any other run writes: DynamoDB Local
 * makes every write to a streamed table scan the stream records written (to any table) before
 * that table's first one, so a table first written after the other runs would pay for all of
 * them (measured: a first write after two latchkey runs made the floor's writes 40 ms at p50,
 * against 3 ms). The stack's table is first written at its start too.
 */
export async function floorTable(endpoint: string): Promise<string> {
  const raw = new DynamoDBClient({ endpoint });
  const TableName = `bench-floor-${randomUUID()}`;
  await ensureTable(raw, TableName);
  await DynamoDBDocumentClient.from(raw).send(
    new UpdateCommand({
      TableName,
      Key: KEY,
      UpdateExpression: 'SET #t = :zero',
      ExpressionAttributeNames: { '#t': 'token' },
      ExpressionAttributeValues: { ':zero': 0 },
    }),
  );
  raw.destroy();
  return TableName;
}

export async function floor(
  proxy: { url: string; take(): Counts },
  options: {
    readonly workers: number;
    readonly holdMs: number;
    readonly seconds: number;
    readonly table: string;
  },
): Promise<{ lines: string[]; stats: ContentionStats }> {
  const raw = new DynamoDBClient({ endpoint: proxy.url });
  const TableName = options.table;
  const db = DynamoDBDocumentClient.from(raw);
  const Key = KEY;

  /** Resolves the grant of the worker the handoff named, as a push would. */
  const pending = new Map<string, (token: number) => void>();
  const push = (holder: string, token: number) => {
    const deliver = pending.get(holder);
    pending.delete(holder);
    deliver?.(token);
  };

  /** One write to join; a second only when the lock is found free. Resolves with the token. */
  async function join(me: string): Promise<number> {
    const granted = new Promise<number>((resolve) => pending.set(me, resolve));
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
    if (item?.holder === undefined && item?.queue?.[0] === me) {
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
    }
    return granted;
  }

  /** One write hands the lock to the queue's head; a lock with nobody queued is freed. */
  async function release(me: string, token: number): Promise<void> {
    for (;;) {
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
        return;
      } catch (error) {
        // Someone joined between the two: hand it over after all.
        if (!isCondition(error)) throw error;
      }
    }
  }

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
  if (mostHolders > 1) throw new Error(`floor: ${mostHolders} workers held the lock at once`);

  const stats = contentionStats({
    grants,
    releaseSent,
    window,
    counts: counts ?? proxy.take(),
    workers: options.workers,
  });
  const fmt = (x: number, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');
  const lines = [
    `\n### Waiting: ${floorName}, ${options.workers} workers, one lock (hold ${options.holdMs} ms), ${fmt(stats.seconds)} s after ${WARM_UP_MS / 1000} s warm-up\n`,
    '| metric | value |',
    '| --- | --- |',
    `| grants/s | ${fmt(stats.grantsPerSecond)} |`,
    `| handoff to another worker p50 ms (release sent -> granted) | ${fmt(stats.handoffP50)} (n=${stats.handoffs.length}) |`,
    `| write p50 ms | ${fmt(stats.writeP50)} |`,
    `| DynamoDB calls per grant | ${fmt(stats.callsPerGrant, 2)} |`,
    `| grants per worker | ${stats.perWorker.join(', ')} |`,
  ];
  return { lines, stats };
}
