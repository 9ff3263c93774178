/**
 * Tables made, and first written, at the start of the test run, for the test files to claim one
 * each instead of making their own as they start.
 *
 * Why: DynamoDB Local makes every write to a table with a stream scan the stream records written,
 * to any table, before that table's first record (its SQLite query for a shard's first sequence
 * number walks its record table from the start; measured in test/bench/floor.ts). A table first
 * written late in a run pays, on every write, for all the records the files before it left. A
 * table written once at the start pays for none, however late it is used.
 */
import { randomUUID } from 'node:crypto';
import {
  ConditionalCheckFailedException,
  CreateTableCommand,
  DeleteItemCommand,
  DynamoDBClient,
  PutItemCommand,
} from '@aws-sdk/client-dynamodb';
import { ensureTable } from '../../local/table-setup';

export interface TablePool {
  /** A table without a stream where each claim is a conditional put of the claimed name. */
  readonly claims: string;
  readonly tables: readonly string[];
}

/** More than the files that make tables (about 30): the rest make their own, as before. */
const POOL_SIZE = 48;
const MAKING_AT_ONCE = 4;

const client = (endpoint: string) =>
  new DynamoDBClient({
    endpoint,
    region: process.env.AWS_REGION ?? 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });

/** Makes the pool's tables, each with its first stream record written (a marker put and deleted). */
export async function makeTablePool(endpoint: string): Promise<TablePool> {
  const admin = client(endpoint);
  const run = randomUUID().slice(0, 8);
  const claims = `test-pool-claims-${run}`;
  await admin.send(
    new CreateTableCommand({
      TableName: claims,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
      KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
    }),
  );
  const tables = Array.from({ length: POOL_SIZE }, (_, i) => `test-pool-${run}-${i}`);
  const marker = { pk: { S: '~pool' }, sk: { S: '~pool' } };
  for (let i = 0; i < tables.length; i += MAKING_AT_ONCE) {
    await Promise.all(
      tables.slice(i, i + MAKING_AT_ONCE).map(async (TableName) => {
        await ensureTable(admin, TableName);
        await admin.send(new PutItemCommand({ TableName, Item: marker }));
        await admin.send(new DeleteItemCommand({ TableName, Key: marker }));
      }),
    );
  }
  admin.destroy();
  return { claims, tables };
}

/** A pool table no other file has claimed, or undefined once all are taken. */
export async function claimPooledTable(endpoint: string, pool: TablePool): Promise<string | undefined> {
  const db = client(endpoint);
  try {
    // From a random start, so that files starting together rarely try the same names.
    const start = Math.floor(Math.random() * pool.tables.length);
    for (let i = 0; i < pool.tables.length; i++) {
      const name = pool.tables[(start + i) % pool.tables.length] as string;
      try {
        await db.send(
          new PutItemCommand({
            TableName: pool.claims,
            Item: { pk: { S: name } },
            ConditionExpression: 'attribute_not_exists(pk)',
          }),
        );
        return name;
      } catch (error) {
        if (!(error instanceof ConditionalCheckFailedException)) throw error;
      }
    }
    return undefined;
  } finally {
    db.destroy();
  }
}
