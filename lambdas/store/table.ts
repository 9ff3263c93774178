/**
 * The table's key schema: the only place that knows keys. Everything else
 * names items by ItemRef (lambdas/core/items.ts).
 *
 * | item       | pk             | sk           | index keys                             |
 * |------------|----------------|--------------|----------------------------------------|
 * | lock       | LOCK#<name>    | LOCK         | list_pk=LIST#<shard>, list_sk=<name>   |
 * | waiter     | LOCK#<name>    | WAIT#<order> | owner=CONN#<id>, owner_sk (if WS);     |
 * |            |                |              | due_bucket, due_at (its deadline)      |
 * | keeper     | LOCK#<name>    | KEEP#<hash>  | (a wait that keeps the lock: deadlock) |
 * | request    | REQ#<hash>     | REQ          |                                        |
 * | connection | CONN#<id>      | CONN         | due_bucket, due_at (2 h after open)    |
 * | session    | SESS#<id>      | SESS         | due_bucket=DUE#<minute>#<shard>, due_at|
 * |            |                |              | owner=SESSLIST#<shard>, owner_sk=<id>  |
 * | session's  | SESS#<id>      | LOCK#<name>  |                                        |
 * |   lock link|                |              |                                        |
 * | sweeper    | SWEEPER        | CURSOR       |                                        |
 * | quota      | QUOTA#<scope>  | QUOTA        |                                        |
 * | HTTP wait  | HTTPWAIT#<n>   | SLOT         |                                        |
 *
 * Shared index partitions are sharded so no one partition takes every
 * write: a lock's listing entry goes to one of LIST_SHARDS partitions (by a
 * hash of its name; a listing queries them all and merges), and a due entry
 * to one of DUE_SHARDS partitions of its minute (by a hash of its key).
 *
 * A request record's key is a hash of the lock name and the request key
 * (client and request_id), so records spread over partitions and a long
 * client id cannot make a key too long.
 *
 * A lock and its waiters share a partition: one strongly consistent Query
 * reads the lock item ('LOCK' sorts before 'WAIT#') and then its queue in
 * serving order.
 *
 * `by_name` is a KEYS_ONLY index over (list_pk, list_sk) for listing locks
 * by prefix with a Query per shard. Its key attributes never change after the first
 * write of a lock, so an acquire or release does not write to the index.
 * `by_owner` is a sparse KEYS_ONLY index over (owner, owner_sk): the waiters
 * of one WebSocket connection, found when it disconnects; and the sessions not
 * yet swept, in SESSION_LIST_SHARDS partitions by a hash of their id, listed by
 * id (the operators' session listing). A session enters it when it opens and
 * leaves it once swept; every other write of a session sets the same keys
 * again, which writes nothing to the index.
 * A keeper record (core/deadlock.ts) sits in the partition of the lock it is about, beside the
 * lock item and its queue, so deadlock detection reads it strongly consistently by key. It sorts
 * before 'LOCK', outside the queue's range.
 * `by_due` is a sparse KEYS_ONLY index over (due_bucket, due_at): what falls
 * due in each minute (sessions, waiters' deadlines, connections' 2-hour
 * limit), so the sweeper reads only what is due, never a Scan. Its keys are
 * housekeeping (a step's `sweepAt`), not part of any item's state: the
 * sweeper moves an item that keeps failing to a later minute. A session
 * leaves it once swept; a waiter or connection when its item goes. A
 * session's entry is never later than its expiry but may be earlier: a
 * heartbeat moves it only when it must (core/session.ts, keepsDueEntry), so
 * most heartbeats write nothing to the index.
 * `gc_at` (epoch seconds) is the TTL attribute (a step's `gcFrom` plus the
 * retention period): it only garbage-collects, it never decides expiry.
 */
import { createHash } from 'node:crypto';
import type { Item } from '../core/expr';
import type { ItemRef } from '../core/items';
import { lockNameSyntaxProblem } from '../core/names';

export const KEY = { pk: 'pk', sk: 'sk' } as const;
export const LIST_INDEX = { name: 'by_name', pk: 'list_pk', sk: 'list_sk' } as const;
export const OWNER_INDEX = { name: 'by_owner', pk: 'owner', sk: 'owner_sk' } as const;
export const DUE_INDEX = { name: 'by_due', pk: 'due_bucket', sk: 'due_at' } as const;
export const GC_ATTRIBUTE = 'gc_at';

const LOCK_PK_PREFIX = 'LOCK#';
export const LOCK_SK = 'LOCK';
export const WAITER_SK_PREFIX = 'WAIT#';
const REQUEST_PK_PREFIX = 'REQ#';
const REQUEST_SK = 'REQ';
const CONNECTION_PK_PREFIX = 'CONN#';
const CONNECTION_SK = 'CONN';
const SESSION_PK_PREFIX = 'SESS#';
export const SESSION_SK = 'SESS';
export const SESSION_LINK_PREFIX = 'LOCK#';
const SWEEPER_KEY = { pk: 'SWEEPER', sk: 'CURSOR' };
const QUOTA_PK_PREFIX = 'QUOTA#';
const HTTP_WAIT_PK_PREFIX = 'HTTPWAIT#';
const LIST_PK_PREFIX = 'LIST#';
const DUE_PK_PREFIX = 'DUE#';
const KEEPER_SK_PREFIX = 'KEEP#';
const SESSION_LIST_PREFIX = 'SESSLIST#';

/**
 * The first characters of every partition key value, by what lives there: the
 * IAM policies' `dynamodb:LeadingKeys` conditions (lib/constructs/lock-function.ts)
 * allow each function only the partitions its spec names.
 */
export const PARTITIONS = {
  lock: LOCK_PK_PREFIX,
  request: REQUEST_PK_PREFIX,
  session: SESSION_PK_PREFIX,
  connection: CONNECTION_PK_PREFIX,
  quota: QUOTA_PK_PREFIX,
  httpWait: HTTP_WAIT_PK_PREFIX,
  sweeper: SWEEPER_KEY.pk,
  /** by_name's partitions. */
  list: LIST_PK_PREFIX,
  /** by_due's partitions. */
  due: DUE_PK_PREFIX,
} as const;

export type Partition = keyof typeof PARTITIONS;

/** Listing entries spread over this many index partitions (1,000 new names/s is ~63/s each). */
export const LIST_SHARDS = 16;
/**
 * Due entries of one minute spread over this many: 2,000 heartbeats/s at the SDK's defaults are
 * ~83 index writes/s each (a session's entry moves on every 3rd heartbeat: core/session.ts).
 */
export const DUE_SHARDS = 16;
/** Sessions not yet swept spread over this many owner index partitions (written when one opens and once swept). */
export const SESSION_LIST_SHARDS = 16;

const shardOf = (text: string, shards: number) =>
  createHash('sha256').update(text).digest().readUInt32BE(0) % shards;

export type TableKey = { readonly pk: string; readonly sk: string };

const requestHash = (lock: string, key: string) =>
  createHash('sha256').update(lock).update('\u0000').update(key).digest('base64url');

/** The table key of an item. */
export function keyOf(ref: ItemRef): TableKey {
  switch (ref.kind) {
    case 'lock':
      return { pk: `${LOCK_PK_PREFIX}${ref.lock}`, sk: LOCK_SK };
    case 'waiter':
      return { pk: `${LOCK_PK_PREFIX}${ref.lock}`, sk: `${WAITER_SK_PREFIX}${ref.order}` };
    case 'keeper':
      return { pk: `${LOCK_PK_PREFIX}${ref.lock}`, sk: `${KEEPER_SK_PREFIX}${ref.party}` };
    case 'request':
      return { pk: `${REQUEST_PK_PREFIX}${requestHash(ref.lock, ref.key)}`, sk: REQUEST_SK };
    case 'session':
      return { pk: `${SESSION_PK_PREFIX}${ref.session}`, sk: SESSION_SK };
    case 'session-lock':
      return { pk: `${SESSION_PK_PREFIX}${ref.session}`, sk: `${SESSION_LINK_PREFIX}${ref.lock}` };
    case 'connection':
      return { pk: `${CONNECTION_PK_PREFIX}${ref.connection}`, sk: CONNECTION_SK };
    case 'sweeper':
      return SWEEPER_KEY;
    case 'quota':
      return { pk: `${QUOTA_PK_PREFIX}${ref.scope}`, sk: 'QUOTA' };
    case 'http-wait':
      return { pk: `${HTTP_WAIT_PK_PREFIX}${ref.slot}`, sk: 'SLOT' };
  }
}

/** The item a table key names, for the kinds found by key alone (index results, stream records). */
export function refOfKey(key: Record<string, unknown>): ItemRef | undefined {
  const pk = key[KEY.pk];
  const sk = key[KEY.sk];
  if (typeof pk !== 'string' || typeof sk !== 'string') return undefined;
  if (pk.startsWith(LOCK_PK_PREFIX)) {
    const lock = pk.slice(LOCK_PK_PREFIX.length);
    if (sk === LOCK_SK) return { kind: 'lock', lock };
    if (sk.startsWith(WAITER_SK_PREFIX))
      return { kind: 'waiter', lock, order: sk.slice(WAITER_SK_PREFIX.length) };
    if (sk.startsWith(KEEPER_SK_PREFIX))
      return { kind: 'keeper', lock, party: sk.slice(KEEPER_SK_PREFIX.length) };
    return undefined;
  }
  if (pk.startsWith(SESSION_PK_PREFIX)) {
    const session = pk.slice(SESSION_PK_PREFIX.length);
    if (sk === SESSION_SK) return { kind: 'session', session };
    if (sk.startsWith(SESSION_LINK_PREFIX))
      return { kind: 'session-lock', session, lock: sk.slice(SESSION_LINK_PREFIX.length) };
    return undefined;
  }
  if (pk.startsWith(CONNECTION_PK_PREFIX) && sk === CONNECTION_SK)
    return { kind: 'connection', connection: pk.slice(CONNECTION_PK_PREFIX.length) };
  if (pk.startsWith(QUOTA_PK_PREFIX) && sk === 'QUOTA')
    return { kind: 'quota', scope: pk.slice(QUOTA_PK_PREFIX.length) };
  if (pk.startsWith(HTTP_WAIT_PK_PREFIX) && sk === 'SLOT')
    return { kind: 'http-wait', slot: Number(pk.slice(HTTP_WAIT_PK_PREFIX.length)) };
  return undefined;
}

export const lockPartition = (name: string) => `${LOCK_PK_PREFIX}${name}`;
export const sessionPartition = (id: string) => `${SESSION_PK_PREFIX}${id}`;
/** The owner index partition of a connection's waiters. */
export const connectionOwner = (id: string) => `${CONNECTION_PK_PREFIX}${id}`;
/** The due index partitions of one minute (ms since the epoch / 60,000), one per shard. */
export const dueBuckets = (minute: number): string[] =>
  Array.from({ length: DUE_SHARDS }, (_, shard) => `${DUE_PK_PREFIX}${minute}#${shard}`);
/** The due index partition of an item falling due in `minute`. */
export const dueBucket = (minute: number, key: TableKey) =>
  `${DUE_PK_PREFIX}${minute}#${shardOf(`${key.pk}\u0000${key.sk}`, DUE_SHARDS)}`;
export const minuteOf = (ms: number) => Math.floor(ms / 60_000);
/** When an item read from the table is filed as due (its due index sort key); undefined if it is not in the index. */
export const filedDueAt = (item: Item | undefined): number | undefined => {
  const at = item?.[DUE_INDEX.sk];
  return typeof at === 'number' ? at : undefined;
};

/** The listing index partitions, one per shard. */
export const LIST_PARTITIONS: readonly string[] = Array.from(
  { length: LIST_SHARDS },
  (_, shard) => `${LIST_PK_PREFIX}${shard}`,
);

/** The owner index partitions of the session listing, one per shard. */
export const SESSION_LIST_PARTITIONS: readonly string[] = Array.from(
  { length: SESSION_LIST_SHARDS },
  (_, shard) => `${SESSION_LIST_PREFIX}${shard}`,
);

/** Attributes every write of a session item not yet swept (re)sets so the session is listed. */
export const sessionListing = (id: string) => ({
  [OWNER_INDEX.pk]: SESSION_LIST_PARTITIONS[shardOf(id, SESSION_LIST_SHARDS)] as string,
  [OWNER_INDEX.sk]: id,
});

/** Attributes every write of a lock item (re)sets so the item appears in the listing index. */
export const lockListing = (name: string) => ({
  [LIST_INDEX.pk]: LIST_PARTITIONS[shardOf(name, LIST_SHARDS)] as string,
  [LIST_INDEX.sk]: name,
});

/**
 * The cursor of a listing page: the name of its last lock. Checked on the way back in to be one
 * this API could have issued for the prefix, so a forged one is a 400, never a storage error. Only
 * the name's syntax is checked: a lock stored before its last level became reserved is still listed.
 */
export const encodeListCursor = (after: string) =>
  Buffer.from(JSON.stringify({ after })).toString('base64url');

export function decodeListCursor(cursor: string, prefix: string): string | undefined {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    const after = (parsed as { after?: unknown } | null)?.after;
    if (typeof after === 'string' && after.startsWith(prefix) && lockNameSyntaxProblem(after) === undefined)
      return after;
  } catch {
    // not JSON: refused by the caller
  }
  return undefined;
}

/**
 * The sort key range of names after `after` (exclusive) that start with `prefix`, for a listing
 * Query. Names use A-Z a-z 0-9 . _ - : / (core/names.ts): '-' is the smallest of them and '~'
 * sorts after all, so `after + '-'` is the first name after `after`, and `prefix + '~'` is past
 * every name starting with `prefix`.
 */
export const listRange = (prefix: string, after: string) => ({ from: `${after}-`, to: `${prefix}~` });

/** Housekeeping and key attributes: not part of a lock's state. */
export const STORAGE_ATTRIBUTES: readonly string[] = [
  KEY.pk,
  KEY.sk,
  LIST_INDEX.pk,
  LIST_INDEX.sk,
  OWNER_INDEX.pk,
  OWNER_INDEX.sk,
  DUE_INDEX.pk,
  DUE_INDEX.sk,
  GC_ATTRIBUTE,
];

/** The table as the local stack and the tests create it; lib/ declares the same keys for AWS. */
export function tableDefinition(tableName: string) {
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST' as const,
    AttributeDefinitions: [
      { AttributeName: KEY.pk, AttributeType: 'S' as const },
      { AttributeName: KEY.sk, AttributeType: 'S' as const },
      { AttributeName: LIST_INDEX.pk, AttributeType: 'S' as const },
      { AttributeName: LIST_INDEX.sk, AttributeType: 'S' as const },
      { AttributeName: OWNER_INDEX.pk, AttributeType: 'S' as const },
      { AttributeName: OWNER_INDEX.sk, AttributeType: 'S' as const },
      { AttributeName: DUE_INDEX.pk, AttributeType: 'S' as const },
      { AttributeName: DUE_INDEX.sk, AttributeType: 'N' as const },
    ],
    KeySchema: [
      { AttributeName: KEY.pk, KeyType: 'HASH' as const },
      { AttributeName: KEY.sk, KeyType: 'RANGE' as const },
    ],
    GlobalSecondaryIndexes: [
      {
        IndexName: LIST_INDEX.name,
        KeySchema: [
          { AttributeName: LIST_INDEX.pk, KeyType: 'HASH' as const },
          { AttributeName: LIST_INDEX.sk, KeyType: 'RANGE' as const },
        ],
        Projection: { ProjectionType: 'KEYS_ONLY' as const },
      },
      {
        IndexName: OWNER_INDEX.name,
        KeySchema: [
          { AttributeName: OWNER_INDEX.pk, KeyType: 'HASH' as const },
          { AttributeName: OWNER_INDEX.sk, KeyType: 'RANGE' as const },
        ],
        Projection: { ProjectionType: 'KEYS_ONLY' as const },
      },
      {
        IndexName: DUE_INDEX.name,
        KeySchema: [
          { AttributeName: DUE_INDEX.pk, KeyType: 'HASH' as const },
          { AttributeName: DUE_INDEX.sk, KeyType: 'RANGE' as const },
        ],
        Projection: { ProjectionType: 'KEYS_ONLY' as const },
      },
    ],
    StreamSpecification: { StreamEnabled: true, StreamViewType: 'NEW_AND_OLD_IMAGES' as const },
  };
}
