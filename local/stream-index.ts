/**
 * DynamoDB Local keeps every stream record of every table in one SQLite table (`us`), for 24 hours,
 * and keeps them after their table is deleted, and nothing indexes it but its sequence number.
 * Each write to a table with a stream looks its stream's records up by stream id, and looks up its
 * shard's first record (`WHERE ShardID = ? AND CreationDateTime >= ? ORDER BY SequenceNumber
 * LIMIT 1`, which walks the records from the oldest): a write slows with the records of all the
 * tables that came before it, the second even for a table made early and first written late.
 * Measured here: a PutItem and a Query on a table with a stream took 4–5 ms on a fresh DynamoDB
 * Local and 260 ms after 100,000 stream records (the test suite writes that many); with the first
 * index below, 3–4 ms again. The second came from test/bench/floor.ts: writes to a table first
 * written after two contention runs took 40 ms p50 against 2 ms (README: "A DynamoDB Local trap").
 *
 * The index goes into the database file while DynamoDB Local is stopped, with sql.js (SQLite
 * compiled to WebAssembly: no native build, works offline). The tables themselves are DynamoDB
 * Local's own, created by the jar on its first request, so a new jar's schema is taken as it is.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import initSqlJs, { type Database } from 'sql.js';

/** The indexes on `us`, by name: their columns. */
const INDEXES: Readonly<Record<string, readonly string[]>> = {
  /** A stream's records. */
  latchkey_stream_records: ['StreamID', 'ShardID', 'SequenceNumber'],
  /** A shard's records in order: its first one without walking the older shards'. */
  latchkey_shard_records: ['ShardID', 'SequenceNumber'],
};
/** The indexes a database gets, by name. */
export const STREAM_INDEXES = Object.keys(INDEXES);
/** Tells databases indexed with another set apart (a kept template, say): changes with the set. */
export const STREAM_INDEXES_TAG = createHash('sha256')
  .update(JSON.stringify(INDEXES))
  .digest('hex')
  .slice(0, 8);

/**
 * Adds the indexes to the DynamoDB Local database `file` (DynamoDB Local must not be running on
 * it) that it has not got already, with these columns (one of another definition is made again).
 * The file is replaced whole (written beside it, then renamed), so a
 * crash meanwhile leaves it as it was. Answers why it could not (no such file, or a jar whose
 * schema has no such table or columns), or undefined.
 */
export async function indexStreamRecords(file: string): Promise<string | undefined> {
  let db: Database | undefined;
  try {
    const SQL = await initSqlJs();
    db = new SQL.Database(readFileSync(file));
    const open = db;
    const columnsOf = (name: string) =>
      (open.exec(`PRAGMA index_info('${name}')`)[0]?.values ?? []).map((row) => String(row[2]));
    const missing = STREAM_INDEXES.filter(
      (name) => columnsOf(name).join(',') !== (INDEXES[name] ?? []).join(','),
    );
    if (missing.length === 0) return undefined;
    for (const name of missing) {
      db.run(`DROP INDEX IF EXISTS ${name}`);
      db.run(`CREATE INDEX ${name} ON us (${(INDEXES[name] ?? []).join(', ')})`);
    }
    const partial = `${file}.${process.pid}.partial`;
    writeFileSync(partial, db.export());
    renameSync(partial, file);
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  } finally {
    db?.close();
  }
}

/** sql.js holds a whole database in memory: larger kept databases are left as they are. */
export const MAX_INDEXED_BYTES = 256 * 1024 * 1024;

/**
 * Indexes the databases DynamoDB Local kept in `directory` (`--db-path`) in earlier runs, before it
 * starts on them: the one shared database a new directory gets (indexed already), or one `*.db`
 * per access key and region in a directory earlier versions filled, which DynamoDB Local creates
 * as each key first calls it (the start after that indexes it). Each start reads every kept
 * database whole to look for the index (SQLite's schema can only be read through sql.js), and
 * rewrites only those without it: the reason for the size cap. Answers a warning for each
 * database left unindexed.
 */
export async function indexKeptDatabases(directory: string, maxBytes = MAX_INDEXED_BYTES): Promise<string[]> {
  const warnings: string[] = [];
  for (const name of readdirSync(directory).filter((n) => n.endsWith('.db'))) {
    const file = join(directory, name);
    if (statSync(file).size > maxBytes) {
      warnings.push(`${file} is over ${maxBytes / 1024 / 1024} MiB: its stream records are not indexed`);
      continue;
    }
    const failed = await indexStreamRecords(file);
    if (failed) warnings.push(`${file}: its stream records are not indexed: ${failed}`);
  }
  return warnings;
}
