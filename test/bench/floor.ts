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

/**
 * The design proposed on issue 14 (proposedProtocol), bare and then with each kind of item it
 * writes besides the lock item: what each guarantee costs, measured side by side.
 */
interface ProposedVariant {
  readonly name: string;
  readonly key: string;
  /** The request's record, written in the join's transaction. */
  readonly record: boolean;
  /** The waiter quotas: added to in the join's transaction, taken out of after the grant. */
  readonly quotas: boolean;
}
export const PROPOSED_VARIANTS: readonly ProposedVariant[] = [
  { name: 'proposed, bare: 1-write join, 1-write handoff', key: 'bare', record: false, quotas: false },
  { name: "proposed + the request's record: 2-item join", key: 'record', record: true, quotas: false },
  {
    name: 'proposed + record + quotas: 4-item join, 2 writes after the grant',
    key: 'full',
    record: true,
    quotas: true,
  },
];

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
const proposedKey = (variant: ProposedVariant) => ({ pk: `bench/floor-proposed-${variant.key}`, sk: 'lock' });
/** latchkey's WebSocket path: a join of 6 items, a handoff of 5 (README: "Against DynamoDB Local's own rate"). */
const JOIN_ITEMS = 6;
const HANDOFF_ITEMS = 5;

/** The two steps of a floor protocol; a grant reaches its worker through `push`. */
interface FloorProtocol {
  join(me: string): Promise<void>;
  release(me: string, token: number): Promise<void>;
  /** Writes a protocol makes after a grant, off the handoff's path: waited for before the run ends. */
  settle?(): Promise<void>;
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
  for (const Key of [KEY, TRANSACTION_KEY, ...PROPOSED_VARIANTS.map(proposedKey)])
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

/** The queue-in-the-lock-item design proposed on issue 14, with its writes and conditions. */
export const proposedFloor =
  (variant: ProposedVariant) => (proxy: { url: string; take(): Counts }, options: FloorOptions) =>
    runFloor(variant.name, proxy, options, (db, table, push) => proposedProtocol(db, table, push, variant));

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

/** A queued request as the proposed lock item keeps it: what a grant, a push and a retry need. */
interface QueueEntry {
  readonly id: string;
  readonly request: string;
  readonly client: string;
  readonly principal: string;
  readonly connection: string;
  readonly shard: number;
  readonly kind: 'lease';
  readonly ttl_ms: number;
  readonly priority: number;
  readonly deadline: number;
}
const QUOTA_SHARDS = 16;
const PRINCIPAL_CAP = 1_000;
const CONNECTION_CAP = 100;
const TTL_MS = 10_000;
const WAIT_MS = 60_000;
const proposedNames = { '#q': 'queue', '#t': 'token', '#h': 'holder', '#le': 'lease_end' };

/** One item of a transaction, as the document client takes it. */
type TransactItem = NonNullable<
  ConstructorParameters<typeof TransactWriteCommand>[0]['TransactItems']
>[number];

/**
 * The design proposed on issue 14 for its remaining goals: the queue inside the lock item (a list
 * in serving order), so that the release that hands over is one UpdateItem that reads nothing:
 * it makes the head the holder with the next token and a fresh lease, on the conditions a handoff
 * needs (the releaser holds exactly that grant, its lease is live, the head's wait is, and the head
 * is a plain lease waiter; anything else takes the transaction path, which this bench never
 * needs), and returns the new holder to push to. The request's record is written when it joins
 * and when its wait ends without a grant, never by the grant (a retry finds the grant in the lock
 * item). The join is one transaction: the lock item (appended to, only if it must wait), the
 * request's record, and the waiter quotas kept as sets of request keys (a principal's shard and
 * the connection's item), each capped by its condition. A waiter leaving the queue is taken out
 * of its sets afterwards (a DELETE from a set: idempotent, so the stream notifier can do it at
 * least once); here the releaser does it after the push, off the handoff's path. `variant` leaves
 * the record or the quotas out, to show what each costs.
 */
function proposedProtocol(
  db: DocumentClient,
  TableName: string,
  push: Push,
  variant: ProposedVariant,
): FloorProtocol {
  const Key = proposedKey(variant);
  const item = (kind: string, id: string) => ({ pk: `bench/floor-proposed/${kind}/${id}`, sk: kind });
  const deferred = new Set<Promise<unknown>>();
  /** One item: an UpdateItem; more: a transaction. */
  const writeAll = (items: TransactItem[]) => {
    const [only] = items;
    return items.length === 1 && only?.Update
      ? db.send(new UpdateCommand(only.Update))
      : db.send(new TransactWriteCommand({ TransactItems: items }));
  };
  const entryFor = (me: string): QueueEntry => ({
    id: me,
    request: randomUUID(),
    client: `bench-client-${me}-${randomUUID().slice(0, 8)}`,
    principal: 'arn:aws:sts::123456789012:assumed-role/bench-worker/session',
    connection: `conn-${me}-${randomUUID().slice(0, 12)}`,
    shard: Math.floor(Math.random() * QUOTA_SHARDS),
    kind: 'lease',
    ttl_ms: TTL_MS,
    priority: 0,
    deadline: Date.now() + WAIT_MS,
  });
  const record = (entry: QueueEntry, state: string): TransactItem[] =>
    variant.record
      ? [
          {
            Put: {
              TableName,
              Item: {
                ...item('request', entry.request),
                state,
                client: entry.client,
                deadline: entry.deadline,
              },
              ConditionExpression: 'attribute_not_exists(pk)',
            },
          },
        ]
      : [];
  const quotas = (entry: QueueEntry, action: 'ADD' | 'DELETE') =>
    (variant.quotas
      ? [
          {
            Key: item('quota', `${entry.principal}#${entry.shard}`),
            cap: Math.ceil(PRINCIPAL_CAP / QUOTA_SHARDS),
          },
          { Key: item('connection', entry.connection), cap: CONNECTION_CAP },
        ]
      : []
    ).map(({ Key: QuotaKey, cap }) => ({
      TableName,
      Key: QuotaKey,
      UpdateExpression: `${action} waiting :r`,
      ...(action === 'ADD'
        ? {
            ConditionExpression: 'attribute_not_exists(waiting) OR size(waiting) < :cap',
            ExpressionAttributeValues: { ':r': new Set([entry.request]), ':cap': cap },
          }
        : { ExpressionAttributeValues: { ':r': new Set([entry.request]) } }),
    }));

  /** Takes the lock if it is free and nobody is queued (a read for its token, then the grant with its record). */
  const takeFree = async (entry: QueueEntry): Promise<boolean> => {
    const { Item: lock } = await db.send(new GetCommand({ TableName, Key, ConsistentRead: true }));
    const seen = Number(lock?.token ?? 0);
    const now = Date.now();
    try {
      await writeAll([
        {
          Update: {
            TableName,
            Key,
            UpdateExpression: 'SET #h = :entry, #le = :end, #t = :next',
            ConditionExpression:
              '(attribute_not_exists(#h) OR #le <= :now) AND attribute_not_exists(#q[0]) AND #t = :seen',
            ExpressionAttributeNames: proposedNames,
            ExpressionAttributeValues: {
              ':entry': entry,
              ':end': now + TTL_MS,
              ':now': now,
              ':next': seen + 1,
              ':seen': seen,
            },
          },
        },
        ...record(entry, 'granted'),
      ]);
      push(entry.id, seen + 1);
      return true;
    } catch (error) {
      if (!isCondition(error)) throw error;
      return false;
    }
  };

  return {
    /** One write (a transaction with the record and quotas) joins a held lock; a free one is taken instead. */
    async join(me) {
      const entry = entryFor(me);
      for (let attempt = 0; attempt < MOST_ATTEMPTS; attempt++) {
        try {
          await writeAll([
            {
              Update: {
                TableName,
                Key,
                UpdateExpression: 'SET #q = list_append(if_not_exists(#q, :none), :entry)',
                ConditionExpression: 'attribute_exists(#h) AND #le > :now',
                ExpressionAttributeNames: { '#q': 'queue', '#h': 'holder', '#le': 'lease_end' },
                ExpressionAttributeValues: { ':none': [], ':entry': [entry], ':now': Date.now() },
              },
            },
            ...record(entry, 'queued'),
            ...quotas(entry, 'ADD').map((Update) => ({ Update })),
          ]);
          return;
        } catch (error) {
          if (!isCondition(error)) throw error;
        }
        if (await takeFree(entry)) return;
      }
      throw new Error(`${me} could neither join nor take the lock in ${MOST_ATTEMPTS} tries`);
    },

    /** One UpdateItem hands the lock to the head, reading nothing; the head's quotas are freed after the push. */
    async release(me, token) {
      for (let attempt = 0; attempt < MOST_ATTEMPTS; attempt++) {
        const now = Date.now();
        try {
          const { Attributes: after } = await db.send(
            new UpdateCommand({
              TableName,
              Key,
              UpdateExpression: 'SET #h = #q[0], #le = :end, #t = #t + :one REMOVE #q[0]',
              ConditionExpression:
                '#h.#id = :me AND #t = :token AND #le > :now AND #q[0].#dl > :now AND #q[0].#kind = :lease',
              ExpressionAttributeNames: { ...proposedNames, '#id': 'id', '#dl': 'deadline', '#kind': 'kind' },
              ExpressionAttributeValues: {
                ':me': me,
                ':token': token,
                ':one': 1,
                ':end': now + TTL_MS,
                ':now': now,
                ':lease': 'lease',
              },
              ReturnValues: 'UPDATED_NEW',
            }),
          );
          const holder = after?.holder as QueueEntry;
          push(holder.id, Number(after?.token));
          const freeing = quotas(holder, 'DELETE');
          if (freeing.length) {
            const freed = Promise.all(freeing.map((u) => db.send(new UpdateCommand(u))));
            deferred.add(freed);
            void freed.finally(() => deferred.delete(freed));
          }
          return;
        } catch (error) {
          if (!isCondition(error)) throw error;
        }
        try {
          await db.send(
            new UpdateCommand({
              TableName,
              Key,
              UpdateExpression: 'REMOVE #h, #le',
              ConditionExpression: '#h.#id = :me AND #t = :token AND attribute_not_exists(#q[0])',
              ExpressionAttributeNames: { ...proposedNames, '#id': 'id' },
              ExpressionAttributeValues: { ':me': me, ':token': token },
            }),
          );
          return;
        } catch (error) {
          if (!isCondition(error)) throw error;
        }
      }
      throw new Error(`${me} could not release token ${token}: it no longer holds the lock`);
    },

    async settle() {
      await Promise.all(deferred);
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
  await protocol.settle?.();
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
