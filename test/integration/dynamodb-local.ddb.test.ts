/**
 * The DynamoDB Local launcher: a scratch database whose stream records are indexed (without the
 * index, every write to a streamed table slows with all the stream records written before it),
 * that works with streams, and is removed on stop; the kept copy later starts begin from; and a
 * `--db-path` directory's: a new one indexed from its first run, one an earlier version filled
 * before the start after the run that made each of its databases. This
 * starts DynamoDB Locals of its own, so it also fails when a new jar's schema no longer has the
 * table or columns the index names.
 */
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import {
  CreateTableCommand,
  DynamoDBClient,
  GetItemCommand,
  ListTablesCommand,
  PutItemCommand,
} from '@aws-sdk/client-dynamodb';
import initSqlJs from 'sql.js';
import { expect, it } from 'vitest';
import {
  freePort,
  jarDirectory,
  onFreePort,
  PortInUseError,
  startDynamoDbLocal,
} from '../../local/dynamodb-local';
import { removeAbandonedScratch, SHARED_DATABASE } from '../../local/scratch-database';
import { indexKeptDatabases, indexStreamRecords, STREAM_INDEXES } from '../../local/stream-index';

const clientOf = (endpoint: string) =>
  new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });

/** A table with a stream, as the service's table has: its writes add stream records. */
async function createStreamedTable(client: DynamoDBClient, name: string): Promise<void> {
  await client.send(
    new CreateTableCommand({
      TableName: name,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
      KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
      StreamSpecification: { StreamEnabled: true, StreamViewType: 'NEW_AND_OLD_IMAGES' },
    }),
  );
}

/**
 * The lookups DynamoDB Local makes on each write to a streamed table (its SQL, from the jar) use
 * the indexes: without them SQLite walks every stream record of every table from the oldest. The
 * plan is sql.js's SQLite's, not the jar's own (sqlite4java), whose planner is of the same kind.
 */
async function expectIndexedLookups(file: string): Promise<void> {
  const SQL = await initSqlJs();
  const db = new SQL.Database(readFileSync(file));
  try {
    const plan = (sql: string) =>
      (db.exec(`EXPLAIN QUERY PLAN ${sql}`)[0]?.values ?? []).map((row) => String(row.at(-1))).join('; ');
    // A shard's first record (GET_EARLIEST_SEQNUM_FOR_SHARD_SQL): found by shard, already in order.
    expect(
      plan(
        'SELECT SequenceNumber, CreationDateTime FROM us WHERE ShardID = ? AND CreationDateTime >= ? ORDER BY SequenceNumber ASC LIMIT 1',
      ),
    ).toMatch(/^SEARCH us USING (COVERING )?INDEX latchkey_shard_records \(ShardID=\?\)$/);
    // A stream's records.
    expect(plan('SELECT * FROM us WHERE StreamID = ? AND ShardID = ? AND SequenceNumber >= ?')).toMatch(
      /^SEARCH us USING INDEX latchkey_stream_records \(StreamID=\? AND ShardID=\? AND SequenceNumber>\?\)$/,
    );
  } finally {
    db.close();
  }
}

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

it('the first start on a machine makes the indexed database and keeps it; a later start copies it', async () => {
  const templates = mkdtempSync(join(tmpdir(), 'latchkey-template-test-'));
  try {
    // What an earlier version kept for this jar, with fewer indexes: never read again, removed.
    writeFileSync(join(templates, `${basename(jarDirectory())}.db`), '');
    const first = await startDynamoDbLocal({ maxHeap: '256m', templateDirectory: templates });
    await first.stop();
    const kept = readdirSync(templates);
    expect(kept).toEqual([expect.stringMatching(/^dynamodb_local_.*\.[0-9a-f]{8}\.db$/)]);
    expect(await indexesOf(join(templates, kept[0] as string))).toEqual(
      expect.arrayContaining(STREAM_INDEXES),
    );
    const second = await startDynamoDbLocal({ maxHeap: '256m', templateDirectory: templates });
    try {
      expect(second.indexFailure).toBeUndefined();
      expect(await indexesOf(join(second.dataDirectory as string, 'shared-local-instance.db'))).toEqual(
        expect.arrayContaining(STREAM_INDEXES),
      );
    } finally {
      await second.stop();
    }
  } finally {
    rmSync(templates, { recursive: true, force: true });
  }
}, 60_000);

it('a scratch DynamoDB Local has its stream records indexed, serves streamed writes, and is removed on stop', async () => {
  const dynamo = await startDynamoDbLocal({ maxHeap: '256m', templateDirectory: null });
  const directory = dynamo.dataDirectory;
  if (!directory) throw new Error('a scratch DynamoDB Local names its directory');
  const file = join(directory, 'shared-local-instance.db');
  try {
    expect(dynamo.indexFailure).toBeUndefined();
    expect(await indexesOf(file)).toEqual(expect.arrayContaining(STREAM_INDEXES));
    await expectIndexedLookups(file);
    const client = clientOf(dynamo.endpoint);
    try {
      await createStreamedTable(client, 'streamed');
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

it('a database without the stream records table, or no database, is answered with why, not thrown', async () => {
  const SQL = await initSqlJs();
  const empty = new SQL.Database();
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-index-test-'));
  try {
    const file = join(dir, 'other.db');
    writeFileSync(file, empty.export());
    expect(await indexStreamRecords(file)).toMatch(/no such table: (main\.)?us\b/);
    expect(await indexStreamRecords(join(dir, 'missing.db'))).toMatch(/ENOENT/);
  } finally {
    empty.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

it("a scratch directory whose process died is removed at the next start; a live one's, or one being made, is kept", () => {
  const parent = mkdtempSync(join(tmpdir(), 'latchkey-scratch-test-'));
  try {
    const make = (name: string, owner?: number) => {
      mkdirSync(join(parent, name));
      if (owner !== undefined) writeFileSync(join(parent, name, 'owner.pid'), String(owner));
      return join(parent, name);
    };
    const deadPid = spawnSync('true').pid as number;
    const dead = make('latchkey-dynamodb-dead', deadPid);
    const live = make('latchkey-dynamodb-live', process.pid);
    const beingMade = make('latchkey-dynamodb-new');
    const leftHalfMade = make('latchkey-dynamodb-old');
    const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000);
    utimesSync(leftHalfMade, twoHoursAgo, twoHoursAgo);
    const notOurs = make('something-else', deadPid);

    expect(removeAbandonedScratch(parent).sort()).toEqual([dead, leftHalfMade].sort());
    expect([live, beingMade, notOurs].every((dir) => existsSync(dir))).toBe(true);
  } finally {
    rmSync(parent, { recursive: true, force: true });
  }
});

/** Starts DynamoDB Local on `dir`, runs `use` with a client (key `local`, us-east-1), and stops it. */
async function onKept(dir: string, use: (client: DynamoDBClient) => Promise<void>): Promise<void> {
  const running = await startDynamoDbLocal({ maxHeap: '256m', dbPath: dir });
  const client = clientOf(running.endpoint);
  try {
    await use(client);
  } finally {
    client.destroy();
    await running.stop();
  }
}

const readKept = async (client: DynamoDBClient, pk: string) =>
  (await client.send(new GetItemCommand({ TableName: 'kept', Key: { pk: { S: pk } }, ConsistentRead: true })))
    .Item?.pk?.S;

it('a new --db-path directory gets one database, indexed from its first run, that keeps its data', async () => {
  const kept = mkdtempSync(join(tmpdir(), 'latchkey-db-path-test-'));
  try {
    await onKept(kept, async (client) => {
      expect(readdirSync(kept).filter((n) => n.endsWith('.db'))).toEqual([SHARED_DATABASE]);
      expect(await indexesOf(join(kept, SHARED_DATABASE))).toEqual(expect.arrayContaining(STREAM_INDEXES));
      await createStreamedTable(client, 'kept');
      await client.send(new PutItemCommand({ TableName: 'kept', Item: { pk: { S: 'a' } } }));
    });
    await onKept(kept, async (client) => {
      expect(await readKept(client, 'a')).toBe('a');
    });
    expect(readdirSync(kept).filter((n) => n.endsWith('.db'))).toEqual([SHARED_DATABASE]);
  } finally {
    rmSync(kept, { recursive: true, force: true });
  }
}, 90_000);

it('a --db-path directory an earlier version filled keeps its database per key, indexed (once) before the next start', async () => {
  const kept = mkdtempSync(join(tmpdir(), 'latchkey-db-path-test-'));
  try {
    await onKept(kept, async (client) => {
      await createStreamedTable(client, 'kept');
      await client.send(new PutItemCommand({ TableName: 'kept', Item: { pk: { S: 'a' } } }));
    });
    // As an earlier version left it: DynamoDB Local's database for key `local` in us-east-1, unindexed.
    const file = join(kept, 'local_us-east-1.db');
    const SQL = await initSqlJs();
    const db = new SQL.Database(readFileSync(join(kept, SHARED_DATABASE)));
    for (const name of STREAM_INDEXES) db.run(`DROP INDEX ${name}`);
    writeFileSync(file, db.export());
    db.close();
    rmSync(join(kept, SHARED_DATABASE));
    const ours = async () => (await indexesOf(file)).filter((name) => STREAM_INDEXES.includes(name));
    expect(await ours()).toEqual([]);
    // Too large for sql.js: left as it is, with a warning.
    expect(await indexKeptDatabases(kept, 1)).toEqual([expect.stringContaining('not indexed')]);
    expect(await ours()).toEqual([]);

    await onKept(kept, async (client) => {
      expect(await indexesOf(file)).toEqual(expect.arrayContaining(STREAM_INDEXES));
      expect(await readKept(client, 'a')).toBe('a');
      await client.send(new PutItemCommand({ TableName: 'kept', Item: { pk: { S: 'b' } } }));
    });
    // Still a database per key (no shared one made beside it), and indexed already: left alone.
    expect(readdirSync(kept).filter((n) => n.endsWith('.db'))).toEqual(['local_us-east-1.db']);
    const inode = statSync(file).ino;
    expect(await indexKeptDatabases(kept)).toEqual([]);
    expect(statSync(file).ino).toBe(inode);
    // A database indexed by a version with fewer indexes gets the missing ones, and keeps its data.
    const older = new SQL.Database(readFileSync(file));
    older.run(`DROP INDEX ${STREAM_INDEXES.at(-1)}`);
    writeFileSync(file, older.export());
    older.close();
    expect(await ours()).toEqual(STREAM_INDEXES.slice(0, -1));
    expect(await indexKeptDatabases(kept)).toEqual([]);
    expect((await ours()).sort()).toEqual([...STREAM_INDEXES].sort());
    // One of the same name on other columns is made again, with the right ones.
    const wrong = new SQL.Database(readFileSync(file));
    wrong.run('DROP INDEX latchkey_shard_records');
    wrong.run('CREATE INDEX latchkey_shard_records ON us (CreationDateTime, ShardID)');
    writeFileSync(file, wrong.export());
    wrong.close();
    expect(await indexKeptDatabases(kept)).toEqual([]);
    const fixed = new SQL.Database(readFileSync(file));
    expect(fixed.exec("PRAGMA index_info('latchkey_shard_records')")[0]?.values.map((row) => row[2])).toEqual(
      ['ShardID', 'SequenceNumber'],
    );
    fixed.close();
    await onKept(kept, async (client) => {
      expect(await readKept(client, 'b')).toBe('b');
    });
  } finally {
    rmSync(kept, { recursive: true, force: true });
  }
}, 90_000);

it('a port another server listens on is refused as in use, not taken for DynamoDB Local; a picked port taken in the meantime is picked again', async () => {
  // An HTTP server that answers as DynamoDB Local would (any answer): the launcher must not take it
  // for the JVM, which cannot bind the port and exits.
  const other = createServer((_, response) => response.writeHead(400).end());
  await new Promise<void>((resolve) => other.listen(0, resolve));
  const port = (other.address() as AddressInfo).port;
  try {
    const refused = await startDynamoDbLocal({ port, inMemory: true }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(PortInUseError);
    const jvm = (refused as PortInUseError).pid as number;
    expect(() => process.kill(jvm, 0), 'the JVM that could not bind is gone').toThrow();
    const picked = [port];
    const started = await onFreePort(
      (p) => startDynamoDbLocal({ port: p, inMemory: true }),
      async () => picked.shift() ?? freePort(),
    );
    try {
      expect(started.endpoint).not.toBe(`http://127.0.0.1:${port}`);
      await clientOf(started.endpoint).send(new ListTablesCommand({}));
    } finally {
      await started.stop();
    }
  } finally {
    other.close();
  }
});
