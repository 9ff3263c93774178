/**
 * The DynamoDB Local launcher: a scratch database whose stream records are indexed (without the
 * index, every write to a streamed table slows with all the stream records written before it),
 * that works with streams, and is removed on stop. This starts a DynamoDB Local of its own, so it
 * also fails when a new jar's schema no longer has the table or columns the index names.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateTableCommand, DynamoDBClient, PutItemCommand } from '@aws-sdk/client-dynamodb';
import initSqlJs from 'sql.js';
import { expect, it } from 'vitest';
import { startDynamoDbLocal } from '../../local/dynamodb-local';
import { indexStreamRecords } from '../../local/stream-index';

async function indexesOf(file: string): Promise<string[]> {
  const SQL = await initSqlJs();
  const db = new SQL.Database(readFileSync(file));
  try {
    const rows = db.exec("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'us'");
    return (rows[0]?.values ?? []).map((row) => String(row[0]));
  } finally {
    db.close();
  }
}

it('a scratch DynamoDB Local has its stream records indexed, serves streamed writes, and is removed on stop', async () => {
  const dynamo = await startDynamoDbLocal({ maxHeap: '256m' });
  const directory = dynamo.dataDirectory;
  if (!directory) throw new Error('a scratch DynamoDB Local names its directory');
  const file = join(directory, 'shared-local-instance.db');
  try {
    expect(dynamo.indexFailure).toBeUndefined();
    expect(await indexesOf(file)).toContain('latchkey_stream_records');
    const client = new DynamoDBClient({
      endpoint: dynamo.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    });
    try {
      await client.send(
        new CreateTableCommand({
          TableName: 'streamed',
          BillingMode: 'PAY_PER_REQUEST',
          AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
          KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
          StreamSpecification: { StreamEnabled: true, StreamViewType: 'NEW_AND_OLD_IMAGES' },
        }),
      );
      for (let i = 0; i < 5; i++)
        await client.send(new PutItemCommand({ TableName: 'streamed', Item: { pk: { S: `k${i}` } } }));
    } finally {
      client.destroy();
    }
  } finally {
    await dynamo.stop();
  }
  expect(existsSync(directory)).toBe(false);
}, 60_000);

it('a database without the stream records table is answered with why, not thrown', async () => {
  const SQL = await initSqlJs();
  const empty = new SQL.Database();
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-index-test-'));
  try {
    const file = join(dir, 'other.db');
    writeFileSync(file, empty.export());
    expect(await indexStreamRecords(file)).toMatch(/no such table: (main\.)?us\b/);
  } finally {
    empty.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
