/**
 * `npm run bench`: throughput, latency and DynamoDB calls per operation of
 * the lock store, directly and through the local HTTP API (SigV4 included),
 * measured side by side in one run against one DynamoDB Local. Not a test:
 * numbers vary with the machine; ratios within a run are what to compare.
 * Then the waiting section (waiting.ts: WebSocket waiters contending for one
 * lock, a crashed holder) in a process and a DynamoDB Local of its own:
 * handlers configure themselves once per process, so a second local stack
 * cannot start in this one. BENCH_WAIT_SECONDS=0 skips it. Before it, the
 * sessions section (sessions.ts: heartbeat cost by locks held, one sweeper
 * run among BENCH_SESSIONS_LIVE live sessions, default 10,000), likewise.
 * The deadlock section (deadlock.ts) counts the DynamoDB calls of one waiter join with deadlock
 * detection on, by the length of the chain the walk follows, beside the same join with it off.
 *
 * The cold-start section (cold-start.ts: every function's bundle as deployed, its size and module
 * load time) needs no DynamoDB. BENCH_SECTIONS picks sections: `cold` (that one), `db` (all the
 * others); default both. BENCH_COLD_RUNS: fresh processes per bundle (default 5). `shared` alone
 * runs only the shared-mode section (shared.ts: readers and writers on one lock, a busy semaphore,
 * and the cost of granting a run of queued readers), `tree` only the one on waiting across the
 * levels of a hierarchy (tree-fairness.ts); `db` runs both last, each in a process of its own like
 * waiting.ts.
 *
 *   BENCH_SECONDS=5 BENCH_WAIT_SECONDS=15 npm run bench
 *   BENCH_SECTIONS=cold npm run bench
 */

import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import { lockRef } from '../../lambdas/core/items';
import { lease } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import type { LockService } from '../../lambdas/service/lock-service';
import { createDocumentClient } from '../../lambdas/store/document-client';
import { tableKey } from '../../lambdas/store/requests';
import { startDynamoDbLocal } from '../../local/dynamodb-local';
import { startLocalStack } from '../../local/stack';
import { ensureTable } from '../../local/table-setup';
import { servicesOn } from '../support/services';
import { signedClient } from '../support/signed-fetch';
import { coldStartSection } from './cold-start';
import { percentile } from './common';
import { deadlockSection } from './deadlock';
import { hierarchySection } from './hierarchy';
import { whereTheTimeGoes } from './profile';

/** The principal the direct (no HTTP) clients act as. */
const BENCH = localPrincipal('bench');

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const WAIT_SECONDS = Number(process.env.BENCH_WAIT_SECONDS ?? 15);
const SECTIONS = new Set((process.env.BENCH_SECTIONS ?? 'db,cold').split(',').map((s) => s.trim()));

type Pair = (worker: number, i: number) => Promise<void>;

interface Result {
  label: string;
  concurrency: number;
  pairsPerSecond: number;
  p50: number;
  p99: number;
}

async function measure(label: string, concurrency: number, pair: Pair, seconds = SECONDS): Promise<Result> {
  const latencies: number[] = [];
  const deadline = performance.now() + seconds * 1000;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, worker) => {
      for (let i = 0; performance.now() < deadline; i++) {
        const t = performance.now();
        await pair(worker, i);
        latencies.push(performance.now() - t);
      }
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    label,
    concurrency,
    pairsPerSecond: latencies.length / elapsed,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
  };
}

const fmt = (r: Result) =>
  `${r.label.padEnd(44)} ${String(r.concurrency).padStart(3)}  ${r.pairsPerSecond.toFixed(0).padStart(7)}  ${r.p50.toFixed(1).padStart(7)}  ${r.p99.toFixed(1).padStart(7)}`;

/**
 * Runs a section in a child process (same tsx loader) with a DynamoDB Local of its own:
 * waiting.ts, shared.ts and tree-fairness.ts each start a local stack (handlers configure
 * themselves once per process), and the DynamoDB Local the earlier sections filled (10,000
 * sessions, several tables with streams) answers several times slower, which would measure
 * DynamoDB Local rather than the handoff.
 */
function childSection(file: string): Promise<void> {
  const env = { ...process.env };
  delete env.BENCH_DYNAMO_ENDPOINT;
  const child = spawn(
    process.execPath,
    [...process.execArgv, fileURLToPath(new URL(file, import.meta.url))],
    {
      stdio: 'inherit',
      env,
    },
  );
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${file} failed: ${signal ?? `exit ${code}`}`)),
    );
  });
}

/** A waiting acquire of `name`, held by someone else: queued (its wait ends unanswered). */
async function joinHeld(locks: Pick<LockService, 'acquire'>, name: string, clientId: string) {
  const cmd = { name, owner: BENCH, clientId, tenure: lease(10_000), requestId: randomUUID() };
  const out = await locks.acquire(cmd, { waitMs: 5_000 });
  if (out.kind !== 'queued') throw new Error('a waiting acquire of a held lock was not queued');
}

async function main() {
  if (!SECTIONS.has('db')) {
    if (SECTIONS.has('cold')) for (const line of await coldStartSection()) console.log(line);
    if (SECTIONS.has('shared')) await childSection('./shared.ts');
    if (SECTIONS.has('tree')) await childSection('./tree-fairness.ts');
    return;
  }
  const dynamo = await startDynamoDbLocal({ maxHeap: '768m', inMemory: true });
  const tableName = `bench-${randomUUID()}`;
  await ensureTable(new DynamoDBClient({ endpoint: dynamo.endpoint }), tableName);
  const stack = await startLocalStack({ port: 0, wsPort: 0, dynamoEndpoint: dynamo.endpoint, tableName });
  const calls: string[] = [];
  const db = createDocumentClient({ endpoint: dynamo.endpoint });
  const repo = servicesOn(tableName, {
    endpoint: dynamo.endpoint,
    counter: { record: (c) => calls.push(c) },
  });
  const store = {
    acquire: repo.acquire,
    release: repo.services.locks.release.bind(repo.services.locks),
    renew: repo.services.locks.renew.bind(repo.services.locks),
  };
  const api = signedClient(stack.url);

  const direct: Pair = async (worker) => {
    const name = `bench/direct/${worker}`;
    const out = await store.acquire({ name, owner: BENCH, clientId: `w${worker}`, tenure: lease(10_000) });
    if (!out.acquired) throw new Error('uncontended acquire refused');
    await store.release({ name, owner: BENCH, clientId: `w${worker}`, fencingToken: out.grant.fencingToken });
  };
  const http: Pair = async (worker) => {
    const name = `bench/http/${worker}`;
    const out = await api.post(`/api/v1/locks/${name}/acquire`, { client_id: `w${worker}`, ttl_ms: 10_000 });
    if (out.status !== 200 || !out.body.acquired) throw new Error(`acquire failed: ${out.text}`);
    const released = await api.post(`/api/v1/locks/${name}/release`, {
      client_id: `w${worker}`,
      fencing_token: out.body.fencing_token,
    });
    if (released.status !== 200) throw new Error(`release failed: ${released.text}`);
  };
  // Baseline: the read-then-conditional-put pattern of dynamodb-lock-client (fail-open,
  // fenced), reimplemented on the same table: GetItem, then PutItem conditioned on the
  // version read; release is one conditional PutItem.
  const readThenPut: Pair = async (worker) => {
    const key = tableKey(lockRef(`bench/baseline/${worker}`));
    const current = await db.send(new GetCommand({ TableName: tableName, Key: key, ConsistentRead: true }));
    const fence = Number(current.Item?.fence ?? 0) + 1;
    await db.send(
      new PutCommand({
        TableName: tableName,
        Item: { ...key, holder: `w${worker}`, fence, expires_at: Date.now() + 10_000 },
        ConditionExpression: 'attribute_not_exists(pk) OR fence = :seen',
        ExpressionAttributeValues: { ':seen': fence - 1 },
      }),
    );
    await db.send(
      new PutCommand({
        TableName: tableName,
        Item: { ...key, fence },
        ConditionExpression: 'holder = :me AND fence = :fence',
        ExpressionAttributeValues: { ':me': `w${worker}`, ':fence': fence },
      }),
    );
  };

  console.log(`latchkey bench: DynamoDB Local ${dynamo.endpoint}, ${SECONDS}s per row, warming up...`);
  await measure('warm-up', 16, direct, 4);
  await measure('warm-up', 16, http, 3);
  await measure('warm-up', 16, readThenPut, 2);

  const results: Result[] = [];
  for (const concurrency of [1, 16]) {
    results.push(await measure('repository: acquire+release (latchkey)', concurrency, direct));
    results.push(await measure('baseline: read-then-put acquire + release', concurrency, readThenPut));
    results.push(await measure('HTTP API, SigV4: acquire+release', concurrency, http));
  }

  // DynamoDB calls per operation, counted by SDK middleware (retries included).
  const count = async (run: () => Promise<unknown>) => {
    calls.length = 0;
    await run();
    return calls.length;
  };
  const name = `bench/count/${randomUUID()}`;
  let token = 0;
  const perOp = {
    acquire: await count(async () => {
      const out = await store.acquire({ name, owner: BENCH, clientId: 'c', tenure: lease(10_000) });
      token = out.acquired ? out.grant.fencingToken : 0;
    }),
    'refused acquire': await count(() =>
      store.acquire({ name, owner: BENCH, clientId: 'other', tenure: lease(10_000) }),
    ),
    // With a request_id, a refusal reads the request's record: the request may have waited before.
    'refused acquire, with request_id': await count(() =>
      store.acquire({
        name,
        owner: BENCH,
        clientId: 'other',
        tenure: lease(10_000),
        requestId: randomUUID(),
      }),
    ),
    renew: await count(() =>
      store.renew({ name, owner: BENCH, clientId: 'c', fencingToken: token, ttlMs: 10_000 }),
    ),
    release: await count(() => store.release({ name, owner: BENCH, clientId: 'c', fencingToken: token })),
    // What the SDK's acquire() sends: a wait (its grant and the request's record, one transaction).
    'waiting acquire of a free lock': await count(async () => {
      await new Promise((resolve) => setTimeout(resolve, 2)); // not in the release's millisecond
      const cmd = { name, owner: BENCH, clientId: 'w', tenure: lease(10_000) };
      const out = await repo.services.locks.acquire(cmd, { waitMs: 5_000 });
      if (out.kind !== 'done' || !out.outcome.acquired)
        throw new Error('waiting acquire of a free lock queued');
    }),
    // Held by 'w' now: the first join from an instance that has not seen the lock contended tries
    // the grant first (refused), then joins; the next one joins at once.
    'waiting acquire of a held lock (first)': await count(() => joinHeld(repo.services.locks, name, 'x1')),
    'waiting acquire of a held lock (next)': await count(() => joinHeld(repo.services.locks, name, 'x2')),
    'baseline acquire': 2,
  };

  console.log(
    `\n${'operation'.padEnd(44)} ${'conc'.padStart(3)}  ${'pairs/s'.padStart(7)}  ${'p50 ms'.padStart(7)}  ${'p99 ms'.padStart(7)}`,
  );
  for (const r of results) console.log(fmt(r));
  console.log('\nratios, same run:');
  for (const concurrency of [1, 16]) {
    const [mine, base, viaHttp] = results.filter((r) => r.concurrency === concurrency);
    if (mine && base && viaHttp) {
      console.log(
        `  concurrency ${String(concurrency).padStart(2)}: latchkey/baseline throughput ${(mine.pairsPerSecond / base.pairsPerSecond).toFixed(2)}x, ` +
          `HTTP/repository throughput ${(viaHttp.pairsPerSecond / mine.pairsPerSecond).toFixed(2)}x`,
      );
    }
  }
  console.log('\nDynamoDB calls per operation (target 1, 1, 1):');
  for (const [op, n] of Object.entries(perOp))
    console.log(
      `  ${op.padEnd(40)} ${n}${op.startsWith('baseline') ? '  (GetItem + PutItem, by construction)' : ''}`,
    );
  for (const line of await deadlockSection(dynamo.endpoint, tableName)) console.log(line);
  for (const line of await hierarchySection(dynamo.endpoint, tableName)) console.log(line);
  for (const line of await whereTheTimeGoes(stack, store)) console.log(line);
  if (SECTIONS.has('cold')) for (const line of await coldStartSection()) console.log(line);

  await stack.stop();
  await dynamo.stop();
  // Each in a DynamoDB Local of its own: one that has kept many stream records makes every write to
  // a table first written after them slower (README: "Against the floor").
  await childSection('./sessions.ts');
  if (WAIT_SECONDS > 0) await childSection('./waiting.ts');
  await childSection('./shared.ts');
  await childSection('./tree-fairness.ts');
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
