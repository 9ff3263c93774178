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
import { readFileSync, writeFileSync } from 'node:fs';
import initSqlJs, { type Database } from 'sql.js';

const INDEX = 'CREATE INDEX IF NOT EXISTS latchkey_stream_records ON us (StreamID, ShardID, SequenceNumber)';

/**
 * Adds the index to the DynamoDB Local database `file` (DynamoDB Local must not be running on it).
 * Answers why it could not (no such file, or a jar whose schema has no such table or columns), or
 * undefined.
 */
export async function indexStreamRecords(file: string): Promise<string | undefined> {
  let db: Database | undefined;
  try {
    const SQL = await initSqlJs();
    db = new SQL.Database(readFileSync(file));
    db.run(INDEX);
    writeFileSync(file, db.export());
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  } finally {
    db?.close();
  }
}
