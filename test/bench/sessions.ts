/**
 * The "sessions" section of `npm run bench`, straight against the stores
 * (no HTTP): what one heartbeat costs for a session holding 1, 10 and 100
 * locks, and what one sweeper run costs with 100 sessions due among few or
 * 10,000 live ones (it must not grow with the live ones: it reads the due
 * index, never Scans). DynamoDB calls are counted by command; the sweeper's
 * reads also by items returned. And what heartbeats cost the due index
 * (`by_due`) in the steady state: sessions heartbeating at the recommended
 * interval (ttl / 3) for 10 minutes of a virtual clock, with the write units
 * DynamoDB Local reports per index (ReturnConsumedCapacity: INDEXES).
 *
 *   BENCH_SESSIONS_LIVE=10000 npx tsx test/bench/sessions.ts   (starts its own DynamoDB Local)
 *   BENCH_SESSIONS_ONLY=index npx tsx test/bench/sessions.ts   (only the due index table, ~10 s)
 */

import { randomUUID } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { throughSession } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { dueLeadMs, heartbeatIntervalMs } from '../../lambdas/core/session';
import { type Services, wireServices } from '../../lambdas/service/services';
import type { Storage } from '../../lambdas/service/storage';
import { DUE_INDEX, OWNER_INDEX } from '../../lambdas/store/table';
import { startDynamoDbLocal } from '../../local/dynamodb-local';
import { ensureTable } from '../../local/table-setup';
import { meterIndexWrites } from '../support/capacity';
import { manualClock, servicesOn } from '../support/services';
import { percentile } from './common';

/** The principal the bench's clients act as. */
const BENCH = localPrincipal('bench');

const LIVE = Number(process.env.BENCH_SESSIONS_LIVE ?? 10_000);
const EXPIRED = 100;
const HEARTBEATS = 50;

async function services(endpoint: string) {
  const tableName = `bench-sessions-${randomUUID()}`;
  await ensureTable(new DynamoDBClient({ endpoint }), tableName);
  const calls = new Map<string, number>();
  const counter = { record: (c: string) => calls.set(c, (calls.get(c) ?? 0) + 1) };
  const { db, storage, services: base, acquire } = servicesOn(tableName, { endpoint, counter });
  const indexWrites = meterIndexWrites(db);
  const { counted, dueRead } = countingDueReads(storage);
  const wire = (clock = base.clock): Services =>
    wireServices({ ...base, storage: counted, ids: randomUUID, clock });
  const services = wire();
  /** A sweeper whose clock runs `aheadMs` ahead: it finds expired what has not expired yet. */
  const sweeperAhead = (aheadMs: number) =>
    wire({ now: () => base.clock.now() + aheadMs, sleep: (ms) => base.clock.sleep(ms) }).sweeper;
  return {
    calls,
    sessions: services.sessions,
    acquire,
    dueRead,
    sweeper: services.sweeper,
    sweeperAhead,
    indexWrites,
  };
}

/** Sessions heartbeating in the steady state, per setting: how much of the due index a heartbeat writes. */
const INDEX_SETTINGS = [
  { ttlMs: 30_000, graceMs: 5_000, note: "the SDK's defaults" },
  { ttlMs: 15_000, graceMs: 5_000, note: 'the README example' },
  { ttlMs: 60_000, graceMs: 5_000, note: '' },
  { ttlMs: 30_000, graceMs: 0, note: 'no grace' },
  { ttlMs: 3_000, graceMs: 1_000, note: '' },
];
const INDEX_SESSIONS = 20;
const INDEX_MINUTES = 10;

/**
 * Each setting: INDEX_SESSIONS sessions heartbeating every ttl / 3 (each at its own offset) for
 * INDEX_MINUTES minutes of a virtual clock, straight on DynamoDB Local; by_due write units as
 * DynamoDB reports them. Before this change every heartbeat moved its entry: 2 units each. The
 * expected figure: one move (2 units) every n = ceil((ttl + grace - lead) / interval) heartbeats.
 */
export async function indexWritesSection(endpoint: string): Promise<string[]> {
  const out = [
    `\n### Sessions: due index writes per heartbeat (${INDEX_SESSIONS} sessions, a heartbeat every ttl / 3, ${INDEX_MINUTES} virtual minutes)\n`,
    '| ttl / grace | heartbeats | by_due write units | per heartbeat, measured | expected | before | by_owner (session listing) write units | DynamoDB calls per heartbeat |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const { ttlMs, graceMs, note } of INDEX_SETTINGS) {
    const tableName = `bench-due-${randomUUID()}`;
    await ensureTable(new DynamoDBClient({ endpoint }), tableName);
    let now = 1_800_000_000_000;
    const calls = new Map<string, number>();
    const counter = { record: (c: string) => calls.set(c, (calls.get(c) ?? 0) + 1) };
    const { db, services } = servicesOn(tableName, { endpoint, counter, clock: manualClock(() => now) });
    const meter = meterIndexWrites(db);
    const interval = heartbeatIntervalMs(ttlMs);
    const start = now;
    const ids: string[] = [];
    for (let i = 0; i < INDEX_SESSIONS; i++)
      ids.push((await services.sessions.create(BENCH, `due-${i}`, { ttlMs, graceMs, lockDelayMs: 0 })).id);
    // Every heartbeat in time order: session i at start + i * interval / INDEX_SESSIONS + k * interval.
    const beats: { at: number; i: number }[] = [];
    for (let i = 0; i < INDEX_SESSIONS; i++)
      for (let k = 1; ; k++) {
        const at = start + Math.floor((i * interval) / INDEX_SESSIONS) + k * interval;
        if (at > start + INDEX_MINUTES * 60_000) break;
        beats.push({ at, i });
      }
    beats.sort((a, b) => a.at - b.at || a.i - b.i);
    calls.clear();
    meter.reset();
    for (const { at, i } of beats) {
      now = at;
      await services.sessions.heartbeat(ids[i] as string, BENCH, `due-${i}`);
    }
    const units = meter.of(DUE_INDEX.name);
    // The session listing's keys never change while a session lives: 0 expected.
    const listingUnits = meter.of(OWNER_INDEX.name);
    const n = Math.max(1, Math.ceil((ttlMs + graceMs - dueLeadMs(ttlMs)) / interval));
    out.push(
      `| ${ttlMs / 1000} s / ${graceMs / 1000} s${note ? ` (${note})` : ''} | ${beats.length} | ${units} | ${(units / beats.length).toFixed(3)} | ${(2 / n).toFixed(3)} (a move every ${n}) | 2 | ${listingUnits} | ${describeCalls(calls, beats.length)} |`,
    );
    db.destroy();
  }
  return out;
}

/** `storage` that counts what the sweeper reads from the due index: items returned, summed over its Queries. */
export function countingDueReads(storage: Storage) {
  const dueRead = { items: 0 };
  const counted = new Proxy(storage, {
    get(target, prop, receiver) {
      if (prop !== 'dueIn') return Reflect.get(target, prop, receiver);
      return async (...args: Parameters<Storage['dueIn']>) => {
        const due = await target.dueIn(...args);
        dueRead.items += due.length;
        return due;
      };
    },
  });
  return { counted, dueRead };
}

/** Runs `task` for every item, `concurrency` at a time. */
export async function inParallel<T>(
  items: readonly T[],
  concurrency: number,
  task: (item: T) => Promise<void>,
) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await task(items[next++] as T);
    }),
  );
}

export const describeCalls = (calls: Map<string, number>, per = 1) =>
  [...calls]
    .sort()
    .map(([c, n]) => `${c.replace(/Command$/, '')} ${(n / per).toFixed(n % per ? 2 : 0)}`)
    .join(', ');

export async function sessionsSection(endpoint: string): Promise<string[]> {
  const out: string[] = [];
  const { calls, sessions, acquire, indexWrites } = await services(endpoint);

  out.push(
    `\n### Sessions: heartbeat cost (${HEARTBEATS} heartbeats each, one at a time)\n`,
    'Back to back on the real clock, so the due entry (60 s ahead) never has to move: the steady state is the due index table below.\n',
    '| locks in the session | DynamoDB calls per heartbeat | writes per heartbeat | due index writes per heartbeat | p50 / p99 ms |',
    '| --- | --- | --- | --- | --- |',
  );
  for (const lockCount of [1, 10, 100]) {
    const s = await sessions.create(BENCH, 'bench', { ttlMs: 60_000, graceMs: 0, lockDelayMs: 0 });
    await inParallel(
      Array.from({ length: lockCount }, (_, i) => i),
      16,
      async (i) => {
        await acquire({
          name: `hb/${s.id}/${i}`,
          owner: BENCH,
          clientId: 'bench',
          tenure: throughSession(s.id),
        });
      },
    );
    calls.clear();
    indexWrites.reset();
    const took: number[] = [];
    for (let i = 0; i < HEARTBEATS; i++) {
      const t = performance.now();
      await sessions.heartbeat(s.id, BENCH, 'bench');
      took.push(performance.now() - t);
    }
    took.sort((a, b) => a - b);
    const writes = [...calls]
      .filter(([c]) => /Update|Put|Delete|Transact/.test(c))
      .reduce((n, [, v]) => n + v, 0);
    out.push(
      `| ${lockCount} | ${describeCalls(calls, HEARTBEATS)} | ${(writes / HEARTBEATS).toFixed(0)} | ${(indexWrites.of(DUE_INDEX.name) / HEARTBEATS).toFixed(2)} | ${percentile(took, 0.5).toFixed(1)} / ${percentile(took, 0.99).toFixed(1)} |`,
    );
  }
  out.push(...(await indexWritesSection(endpoint)));

  out.push(
    `\n### Sessions: one sweeper run ending ${EXPIRED} expired sessions (one lock each)\n`,
    '| live sessions beside them | run ms | DynamoDB calls | due-index items read | sessions ended |',
    '| --- | --- | --- | --- | --- |',
  );
  for (const live of [100, LIVE]) {
    const fresh = await services(endpoint);
    // Live sessions due in an hour; the expiring ones (below) in 10 s, each holding one lock.
    await inParallel(
      Array.from({ length: live }, (_, i) => i),
      32,
      async () => {
        await fresh.sessions.create(BENCH, 'live', { ttlMs: 3_600_000, graceMs: 0, lockDelayMs: 0 });
      },
    );
    await fresh.sweeper.sweep(); // the first run sets the cursor (reads an hour back)
    // Expiring 10 s from now: the measured run is a sweeper whose clock is 20 s ahead, as if it
    // ran 10 s after they expired (no sleep, and no race with a slow machine creating them).
    const expireMs = 10_000;
    await inParallel(
      Array.from({ length: EXPIRED }, (_, i) => i),
      16,
      async (i) => {
        const s = await fresh.sessions.create(BENCH, 'gone', { ttlMs: expireMs, graceMs: 0, lockDelayMs: 0 });
        await fresh.acquire({
          name: `sw/${i}/${s.id}`,
          owner: BENCH,
          clientId: 'gone',
          tenure: throughSession(s.id),
        });
      },
    );
    const sweeper = fresh.sweeperAhead(2 * expireMs + 100);
    fresh.calls.clear();
    fresh.dueRead.items = 0;
    const t = performance.now();
    const report = await sweeper.sweep();
    const ms = performance.now() - t;
    out.push(
      `| ${live} | ${ms.toFixed(0)} | ${describeCalls(fresh.calls)} | ${fresh.dueRead.items} | ${report.expired} |`,
    );
  }
  return out;
}

async function main() {
  const dynamo = await startDynamoDbLocal({ maxHeap: '768m', inMemory: true });
  try {
    const only = process.env.BENCH_SESSIONS_ONLY;
    const lines =
      only === 'index' ? await indexWritesSection(dynamo.endpoint) : await sessionsSection(dynamo.endpoint);
    for (const line of lines) console.log(line);
  } finally {
    await dynamo.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
