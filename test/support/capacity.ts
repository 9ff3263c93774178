/**
 * Write units DynamoDB reports per index (ReturnConsumedCapacity: INDEXES, which DynamoDB Local
 * answers too): how many index writes a call really cost. A write that leaves an index's key
 * attributes as they were costs that index nothing; one that changes them costs 2 (a delete and a
 * put), one that adds or removes an entry 1.
 */
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';

const WRITES = /^(UpdateItem|PutItem|DeleteItem|TransactWriteItems|BatchWriteItem)Command$/;

interface Capacity {
  readonly GlobalSecondaryIndexes?: Record<string, { readonly CapacityUnits?: number }>;
}

export class IndexWriteMeter {
  /** Write units per index name, summed since the last reset. */
  readonly units = new Map<string, number>();
  reset() {
    this.units.clear();
  }
  of(index: string) {
    return this.units.get(index) ?? 0;
  }
  add(capacity: Capacity | readonly Capacity[] | undefined) {
    for (const c of Array.isArray(capacity) ? capacity : capacity ? [capacity] : [])
      for (const [index, used] of Object.entries((c as Capacity).GlobalSecondaryIndexes ?? {}))
        this.units.set(index, this.of(index) + (used.CapacityUnits ?? 0));
  }
}

/** Asks DynamoDB for the capacity of every write `db` sends, and sums it per index in the meter returned. */
export function meterIndexWrites(db: DynamoDBDocumentClient): IndexWriteMeter {
  const meter = new IndexWriteMeter();
  db.middlewareStack.add(
    (next, context) => async (args) => {
      const write = WRITES.test(context.commandName ?? '');
      if (write) (args.input as Record<string, unknown>).ReturnConsumedCapacity = 'INDEXES';
      const result = await next(args);
      if (write) meter.add((result.output as { ConsumedCapacity?: Capacity | Capacity[] }).ConsumedCapacity);
      return result;
    },
    { step: 'serialize', priority: 'high', name: 'latchkeyIndexWriteMeter', override: true },
  );
  return meter;
}
