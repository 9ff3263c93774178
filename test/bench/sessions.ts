/**
 * The "sessions" section of `npm run bench`, straight against the stores
 * (no HTTP): what one heartbeat costs for a session holding 1, 10 and 100
 * locks, and what one sweeper run costs with 100 sessions due among few or
 * 10,000 live ones (it must not grow with the live ones: it reads the due
 * index, never Scans). DynamoDB calls are counted by command; the sweeper's
 * reads also by items returned.
 *
 *   BENCH_SESSIONS_LIVE=10000 npx tsx test/bench/sessions.ts   (starts its own DynamoDB Local)
 */

import { randomUUID } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { throughSession } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { type Services, wireServices } from '../../lambdas/service/services';
import type { Storage } from '../../lambdas/service/storage';
import { startDynamoDbLocal } from '../../local/dynamodb-local';
import { ensureTable } from '../../local/table-setup';
import { servicesOn } from '../support/services';
import { percentile, sleep } from './common';

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
  const { storage, services: base, acquire } = servicesOn(tableName, { endpoint, counter });
  const { counted, dueRead } = countingDueReads(storage);
  const services: Services = wireServices({ ...base, storage: counted, ids: randomUUID });
  return { calls, sessions: services.sessions, acquire, dueRead, sweeper: services.sweeper };
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
  const { calls, sessions, acquire } = await services(endpoint);

  out.push(
    `\n### Sessions: heartbeat cost (${HEARTBEATS} heartbeats each, one at a time)\n`,
    '| locks in the session | DynamoDB calls per heartbeat | writes per heartbeat | p50 / p99 ms |',
    '| --- | --- | --- | --- |',
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
      `| ${lockCount} | ${describeCalls(calls, HEARTBEATS)} | ${(writes / HEARTBEATS).toFixed(0)} | ${percentile(took, 0.5).toFixed(1)} / ${percentile(took, 0.99).toFixed(1)} |`,
    );
  }

  out.push(
    `\n### Sessions: one sweeper run ending ${EXPIRED} expired sessions (one lock each)\n`,
    '| live sessions beside them | run ms | DynamoDB calls | due-index items read | sessions ended |',
    '| --- | --- | --- | --- | --- |',
  );
  for (const live of [100, LIVE]) {
    const fresh = await services(endpoint);
    // Live sessions due in an hour; expired ones due in 300 ms, each holding one lock.
    await inParallel(
      Array.from({ length: live }, (_, i) => i),
      32,
      async () => {
        await fresh.sessions.create(BENCH, 'live', { ttlMs: 3_600_000, graceMs: 0, lockDelayMs: 0 });
      },
    );
    await fresh.sweeper.sweep(); // the first run sets the cursor (reads an hour back)
    // Long enough to create them all before the first expires, on a busy 2-core machine too.
    const expireMs = 10_000;
    const created = performance.now();
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
    if (performance.now() - created > expireMs)
      throw new Error('creating the expiring sessions took too long');
    await sleep(expireMs - (performance.now() - created) + expireMs + 100);
    fresh.calls.clear();
    fresh.dueRead.items = 0;
    const t = performance.now();
    const report = await fresh.sweeper.sweep();
    const ms = performance.now() - t;
    out.push(
      `| ${live} | ${ms.toFixed(0)} | ${describeCalls(fresh.calls)} | ${fresh.dueRead.items} | ${report.expired} |`,
    );
  }
  return out;
}

async function main() {
  const dynamo = await startDynamoDbLocal({ maxHeap: '768m' });
  try {
    for (const line of await sessionsSection(dynamo.endpoint)) console.log(line);
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
