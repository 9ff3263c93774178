/**
 * The table's key schema: the only place that knows keys. Everything else
 * names items by ItemRef (lambdas/core/items.ts).
 *
 * | item       | pk             | sk           | index keys                             |
 * |------------|----------------|--------------|----------------------------------------|
 * | lock       | LOCK#<name>    | LOCK         | list_pk=LOCK, list_sk=<name>           |
 * | waiter     | LOCK#<name>    | WAIT#<order> | owner=CONN#<id>, owner_sk (if WS);     |
 * |            |                |              | due_bucket, due_at (its deadline)      |
 * | request    | REQ#<hash>     | REQ          |                                        |
 * | connection | CONN#<id>      | CONN         | due_bucket, due_at (2 h after open)    |
 * | session    | SESS#<id>      | SESS         | due_bucket=DUE#<minute>, due_at        |
 * | session's  | SESS#<id>      | LOCK#<name>  |                                        |
 * |   lock link|                |              |                                        |
 * | sweeper    | SWEEPER        | CURSOR       |                                        |
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
 * by prefix with a Query. Its key attributes never change after the first
 * write of a lock, so an acquire or release does not write to the index.
 * `by_owner` is a sparse KEYS_ONLY index over (owner, owner_sk): the waiters
 * of one WebSocket connection, found when it disconnects.
 * `by_due` is a sparse KEYS_ONLY index over (due_bucket, due_at): what falls
 * due in each minute (sessions, waiters' deadlines, connections' 2-hour
 * limit), so the sweeper reads only what is due, never a Scan. Its keys are
 * housekeeping (a step's `sweepAt`), not part of any item's state: the
 * sweeper moves an item that keeps failing to a later minute. A session
 * leaves it once swept; a waiter or connection when its item goes.
 * `gc_at` (epoch seconds) is the TTL attribute (a step's `gcFrom` plus the
 * retention period): it only garbage-collects, it never decides expiry.
 */
import { createHash } from 'node:crypto';
import type { ItemRef } from '../core/items';

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
  return undefined;
}

export const lockPartition = (name: string) => `${LOCK_PK_PREFIX}${name}`;
export const sessionPartition = (id: string) => `${SESSION_PK_PREFIX}${id}`;
/** The owner index partition of a connection's waiters. */
export const connectionOwner = (id: string) => `${CONNECTION_PK_PREFIX}${id}`;
/** The due index partition of one minute (ms since the epoch / 60,000). */
export const dueBucket = (minute: number) => `DUE#${minute}`;
export const minuteOf = (ms: number) => Math.floor(ms / 60_000);

/** The one partition of the listing index. */
export const LOCK_LIST_PARTITION = 'LOCK';

/** Attributes every write of a lock item (re)sets so the item appears in the listing index. */
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
