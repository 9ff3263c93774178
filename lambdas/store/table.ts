/**
 * The table's key schema: the only place that knows keys.
 *
 * | item | pk            | sk     | list_pk | list_sk |
 * |------|---------------|--------|---------|---------|
 * | lock | LOCK#<name>   | LOCK   | LOCK    | <name>  |
 *
 * `by_name` is a KEYS_ONLY index over (list_pk, list_sk) for listing locks
 * by prefix with a Query. Its key attributes never change after the first
 * write of a lock, so an acquire or release does not write to the index.
 * `gc_at` (epoch seconds) is the TTL attribute: it only garbage-collects, it
 * never decides expiry.
 */
export const KEY = { pk: 'pk', sk: 'sk' } as const;
export const LIST_INDEX = { name: 'by_name', pk: 'list_pk', sk: 'list_sk' } as const;
export const GC_ATTRIBUTE = 'gc_at';

const LOCK_PK_PREFIX = 'LOCK#';
const LOCK_SK = 'LOCK';

/** The one partition of the listing index. */
export const LOCK_LIST_PARTITION = 'LOCK';

export const lockKey = (name: string) => ({ [KEY.pk]: `${LOCK_PK_PREFIX}${name}`, [KEY.sk]: LOCK_SK });

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
    ],
    StreamSpecification: { StreamEnabled: true, StreamViewType: 'NEW_AND_OLD_IMAGES' as const },
  };
}
