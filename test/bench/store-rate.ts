/**
 * DynamoDB Local's own rate for the calls a contended grant is made of, measured in the same run
 * as the contention runs and on the same DynamoDB Local: single-item writes, reads, and
 * transactions of as many items as the runs' transactions carried. Dividing a run's calls per
 * grant by these rates gives the most grants a second that call mix could reach on this
 * DynamoDB Local, whatever the service around it did: the ceiling each run is set against in the
 * side-by-side table.
 *
 * It is generous on purpose: 4 calls in flight (the contention runs have 1-2 transactions in
 * flight, where DynamoDB Local's transactions already run at their peak), a table of its own
 * without a stream (the stack's table keeps stream records, which slow DynamoDB Local's writes),
 * no counting proxy, and nothing else running.
 */
import { randomUUID } from 'node:crypto';
import { CreateTableCommand, DeleteTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  DynamoDBDocumentClient,
  GetCommand,
  TransactWriteCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import type { ContentionStats } from './contention-stats';

const IN_FLIGHT = 4;
const WARM_UP_MS = 500;
const MEASURE_MS = 2000;
const ROUNDS = 3;

export interface StoreRates {
  /** Conditional UpdateItems of one item a second. */
  readonly singleWrites: number;
  /** GetItems a second. */
  readonly reads: number;
  /** TransactWriteItems a second, by items per transaction. */
  readonly transactions: ReadonlyMap<number, number>;
}

/** Calls a second with IN_FLIGHT callers repeating `call` (each with its own number). */
async function rate(call: (caller: number) => Promise<unknown>): Promise<number> {
  const run = async (ms: number) => {
    let calls = 0;
    const end = performance.now() + ms;
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async (_, caller) => {
        while (performance.now() < end) {
          await call(caller);
          calls++;
        }
      }),
    );
    return calls / (ms / 1000);
  };
  await run(WARM_UP_MS);
  return run(MEASURE_MS);
}

/** Every transaction size the runs sent (items per transaction): each is measured. */
export const transactionSizes = (stats: readonly ContentionStats[]) =>
  [...new Set(stats.flatMap((s) => [...s.transactionsBySize.keys()]))].sort((a, b) => a - b);

/** Measures the rates on a table of its own on `endpoint` (removed after). */
export async function storeRates(endpoint: string, transactionItems: readonly number[]): Promise<StoreRates> {
  const raw = new DynamoDBClient({ endpoint });
  const db = DynamoDBDocumentClient.from(raw);
  const TableName = `bench-store-rate-${randomUUID()}`;
  await raw.send(
    new CreateTableCommand({
      TableName,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: [
        { AttributeName: 'pk', AttributeType: 'S' },
        { AttributeName: 'sk', AttributeType: 'S' },
      ],
      KeySchema: [
        { AttributeName: 'pk', KeyType: 'HASH' },
        { AttributeName: 'sk', KeyType: 'RANGE' },
      ],
    }),
  );
  // A counter bumped under a condition, as the service's writes are conditional.
  const bump = (pk: string) => ({
    TableName,
    Key: { pk, sk: 'item' },
    UpdateExpression: 'SET n = if_not_exists(n, :zero) + :one',
    ConditionExpression: 'attribute_not_exists(gone)',
    ExpressionAttributeValues: { ':zero': 0, ':one': 1 },
  });
  try {
    const calls = new Map<string, (caller: number) => Promise<unknown>>([
      ['single', (caller) => db.send(new UpdateCommand(bump(`single#${caller}`)))],
      [
        'read',
        (caller) => db.send(new GetCommand({ TableName, Key: { pk: `single#${caller}`, sk: 'item' } })),
      ],
      ...transactionItems.map((items): [string, (caller: number) => Promise<unknown>] => [
        `tx${items}`,
        (caller) =>
          db.send(
            new TransactWriteCommand({
              // Each item in a partition of its own, as a join's or a handoff's are.
              TransactItems: Array.from({ length: items }, (_, i) => ({
                Update: bump(`tx${items}#${caller}#${i}`),
              })),
            }),
          ),
      ]),
    ]);
    // Each kind measured in ROUNDS rounds, the order turned each round, and its best kept: one
    // measured first runs while DynamoDB Local is still compiling that path, and reads low.
    const best = new Map<string, number>();
    const kinds = [...calls.keys()];
    for (let round = 0; round < ROUNDS; round++)
      for (const kind of [...kinds.slice(round % kinds.length), ...kinds.slice(0, round % kinds.length)])
        best.set(
          kind,
          Math.max(best.get(kind) ?? 0, await rate(calls.get(kind) as (caller: number) => Promise<unknown>)),
        );
    const singleWrites = best.get('single') as number;
    const reads = best.get('read') as number;
    const transactions = new Map(transactionItems.map((items) => [items, best.get(`tx${items}`) as number]));
    return { singleWrites, reads, transactions };
  } finally {
    await raw.send(new DeleteTableCommand({ TableName })).catch(() => undefined);
    raw.destroy();
  }
}

/**
 * The most grants a second a run's call mix could reach at DynamoDB Local's own rates: one over
 * the store's time per grant (each kind of call per grant over its rate; each transaction size at
 * its own rate). NaN if a transaction size was not measured.
 */
export function storeCeiling(stats: ContentionStats, rates: StoreRates): number {
  let secondsPerGrant = stats.singleWritesPerGrant / rates.singleWrites + stats.readsPerGrant / rates.reads;
  for (const [size, perGrant] of stats.transactionsBySize) {
    const rate = rates.transactions.get(size);
    if (rate === undefined) return Number.NaN;
    secondsPerGrant += perGrant / rate;
  }
  return 1 / secondsPerGrant;
}

/** The rates as a table. */
export function storeRateLines(rates: StoreRates): string[] {
  return [
    `\n### Waiting: DynamoDB Local's own rate, same run (${IN_FLIGHT} calls in flight, a table of its own without a stream, no proxy; the best of ${ROUNDS} rounds)\n`,
    '| call | per second |',
    '| --- | --- |',
    `| UpdateItem, one item, conditional | ${rates.singleWrites.toFixed(0)} |`,
    `| GetItem | ${rates.reads.toFixed(0)} |`,
    ...[...rates.transactions].map(
      ([items, perSecond]) => `| TransactWriteItems of ${items} items | ${perSecond.toFixed(0)} |`,
    ),
  ];
}
