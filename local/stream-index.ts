/**
 * DynamoDB Local keeps every stream record of every table in one SQLite table (`us`), for 24 hours,
 * and keeps them after their table is deleted. Each write to a table with a stream looks its
 * stream's records up by stream id, and nothing indexes that: a write slows with the records of
 * all the tables that came before it. Measured here: a PutItem and a Query on a table with a
 * stream took 4–5 ms on a fresh DynamoDB Local and 260 ms after 100,000 stream records (the test
 * suite writes that many); with the index below, 3–4 ms again.
 *
 * The index goes into the database file while DynamoDB Local is stopped, with sql.js (SQLite
 * compiled to WebAssembly: no native build, works offline). The tables themselves are DynamoDB
 * Local's own, created by the jar on its first request, so a new jar's schema is taken as it is.
 */
import { readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import initSqlJs, { type Database } from 'sql.js';

const INDEX_NAME = 'latchkey_stream_records';
const INDEX = `CREATE INDEX IF NOT EXISTS ${INDEX_NAME} ON us (StreamID, ShardID, SequenceNumber)`;

/**
 * Adds the index to the DynamoDB Local database `file` (DynamoDB Local must not be running on it),
 * unless it has it already. The file is replaced whole (written beside it, then renamed), so a
 * crash meanwhile leaves it as it was. Answers why it could not (no such file, or a jar whose
 * schema has no such table or columns), or undefined.
 */
export async function indexStreamRecords(file: string): Promise<string | undefined> {
  let db: Database | undefined;
  try {
    const SQL = await initSqlJs();
    db = new SQL.Database(readFileSync(file));
    const has = db.exec(`SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = '${INDEX_NAME}'`);
    if (has.length > 0) return undefined;
    db.run(INDEX);
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
