/**
 * The table's key schema: the only place that knows keys.
 *
 * | item       | pk          | sk             | index keys                          |
 * |------------|-------------|----------------|-------------------------------------|
 * | lock       | LOCK#<name> | LOCK           | list_pk=LOCK, list_sk=<name>        |
 * | waiter     | LOCK#<name> | WAIT#<order>   | owner=CONN#<id>, owner_sk (if WS);  |
 * |            |             |                | due_bucket, due_at (its deadline)   |
 * | connection | CONN#<id>   | CONN           | due_bucket, due_at (2 h after open) |
 * | session    | SESS#<id>   | SESS           | due_bucket=DUE#<minute>, due_at     |
 * | session's  | SESS#<id>   | LOCK#<name>    |                                     |
 * |   lock link|             |                |                                     |
 * | sweeper    | SWEEPER     | CURSOR         |                                     |
 *
 * A lock and its waiters share a partition: one strongly consistent Query
 * reads the lock item ('LOCK' sorts before 'WAIT#') and then its queue in
 * serving order.
 *
 * `by_name` is a KEYS_ONLY index over (list_pk, list_sk) for listing locks
 * by prefix with a Query. Its key attributes never change after the first
 * write of a lock, so an acquire or release does not write to the index.
 * `by_owner` is a sparse KEYS_ONLY index over (owner, owner_sk): the waiters
 * of one WebSocket connection, found when it disconnects.
 * `by_due` is a sparse KEYS_ONLY index over (due_bucket, due_at): what falls
 * due in each minute (sessions, waiters' deadlines, connections' 2-hour
 * limit), so the sweeper reads only what is due, never a Scan. A session
 * leaves it once swept; a waiter or connection when its item goes.
 * `gc_at` (epoch seconds) is the TTL attribute: it only garbage-collects, it
 * never decides expiry.
 */
export const KEY = { pk: 'pk', sk: 'sk' } as const;
export const LIST_INDEX = { name: 'by_name', pk: 'list_pk', sk: 'list_sk' } as const;
export const OWNER_INDEX = { name: 'by_owner', pk: 'owner', sk: 'owner_sk' } as const;
export const DUE_INDEX = { name: 'by_due', pk: 'due_bucket', sk: 'due_at' } as const;
export const GC_ATTRIBUTE = 'gc_at';

const LOCK_PK_PREFIX = 'LOCK#';
export const LOCK_SK = 'LOCK';
export const WAITER_SK_PREFIX = 'WAIT#';
const CONNECTION_PK_PREFIX = 'CONN#';
const CONNECTION_SK = 'CONN';

const SESSION_PK_PREFIX = 'SESS#';
export const SESSION_SK = 'SESS';
const LINK_SK_PREFIX = 'LOCK#';

export const sessionKey = (id: string) => ({ [KEY.pk]: `${SESSION_PK_PREFIX}${id}`, [KEY.sk]: SESSION_SK });
export const sessionPartition = (id: string) => `${SESSION_PK_PREFIX}${id}`;
/** The record that a session holds (or held) a lock: how its locks are found when it ends. */
export const sessionLockKey = (id: string, lock: string) => ({
  [KEY.pk]: `${SESSION_PK_PREFIX}${id}`,
  [KEY.sk]: `${LINK_SK_PREFIX}${lock}`,
});
export const SESSION_LINK_PREFIX = LINK_SK_PREFIX;
export const sessionIdOfKey = (pk: unknown): string | undefined =>
  typeof pk === 'string' && pk.startsWith(SESSION_PK_PREFIX) ? pk.slice(SESSION_PK_PREFIX.length) : undefined;
/** The due index partition of one minute (ms since the epoch / 60,000). */
export const dueBucket = (minute: number) => `DUE#${minute}`;
export const minuteOf = (ms: number) => Math.floor(ms / 60_000);
/** What a key of the due index names: a session, a waiter (of a lock) or a WebSocket connection. */
export type DueItem =
  | { readonly kind: 'session'; readonly id: string }
  | { readonly kind: 'waiter'; readonly lock: string }
  | { readonly kind: 'connection'; readonly id: string };

export function dueItemOfKey(key: Record<string, unknown>): DueItem | undefined {
  const pk = key[KEY.pk];
  if (typeof pk !== 'string') return undefined;
  const session = sessionIdOfKey(pk);
  if (session !== undefined) return { kind: 'session', id: session };
  const waiter = waiterFromKey(key);
  if (waiter) return { kind: 'waiter', lock: waiter.lock };
  if (pk.startsWith(CONNECTION_PK_PREFIX))
    return { kind: 'connection', id: pk.slice(CONNECTION_PK_PREFIX.length) };
  return undefined;
}

export const SWEEPER_CURSOR_KEY = { [KEY.pk]: 'SWEEPER', [KEY.sk]: 'CURSOR' };

/** The one partition of the listing index. */
export const LOCK_LIST_PARTITION = 'LOCK';

export const lockKey = (name: string) => ({ [KEY.pk]: `${LOCK_PK_PREFIX}${name}`, [KEY.sk]: LOCK_SK });
export const lockPartition = (name: string) => `${LOCK_PK_PREFIX}${name}`;
export const waiterKey = (name: string, order: string) => ({
  [KEY.pk]: `${LOCK_PK_PREFIX}${name}`,
  [KEY.sk]: `${WAITER_SK_PREFIX}${order}`,
});
export const connectionKey = (id: string) => ({
  [KEY.pk]: `${CONNECTION_PK_PREFIX}${id}`,
  [KEY.sk]: CONNECTION_SK,
});
/** The owner index partition of a connection's waiters. */
export const connectionOwner = (id: string) => `${CONNECTION_PK_PREFIX}${id}`;

/** The lock name and queue order of a waiter from its table keys. */
export function waiterFromKey(key: Record<string, unknown>): { lock: string; order: string } | undefined {
  const pk = key[KEY.pk];
  const sk = key[KEY.sk];
  if (typeof pk !== 'string' || typeof sk !== 'string') return undefined;
  if (!pk.startsWith(LOCK_PK_PREFIX) || !sk.startsWith(WAITER_SK_PREFIX)) return undefined;
  return { lock: pk.slice(LOCK_PK_PREFIX.length), order: sk.slice(WAITER_SK_PREFIX.length) };
}

/** The lock name of a lock item's or a waiter's partition key. */
export const lockNameOfPartition = (pk: unknown): string | undefined =>
  typeof pk === 'string' && pk.startsWith(LOCK_PK_PREFIX) ? pk.slice(LOCK_PK_PREFIX.length) : undefined;

/** Attributes every lock write (re)sets so the item appears in the listing index. */
export const lockListing = (name: string) => ({
  [LIST_INDEX.pk]: LOCK_LIST_PARTITION,
  [LIST_INDEX.sk]: name,
});

/** Housekeeping and key attributes: not part of a lock's state. */
export const STORAGE_ATTRIBUTES: readonly string[] = [
  KEY.pk,
  KEY.sk,
  LIST_INDEX.pk,
  LIST_INDEX.sk,
  OWNER_INDEX.pk,
  OWNER_INDEX.sk,
  DUE_INDEX.pk,
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
