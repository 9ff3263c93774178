/**
 * `npm run bench:scale`: the service at the scale of its seeds (10,000
 * clients, 1,000,000 locks, 1,000 lock requests/s at peak), straight against
 * the real services (no HTTP) on a DynamoDB Local of its own. Not a test and
 * not run in CI: it takes a while, and the numbers are DynamoDB Local's on
 * this machine. What matters is what grows with the total count and what
 * does not: DynamoDB calls per operation are exact (counted by SDK
 * middleware, retries included, per operation); latencies are DynamoDB
 * Local's (in memory, like the other benchmarks), not DynamoDB's. The table
 * has no stream: nothing here reads it (no notifier runs), and DynamoDB
 * Local keeps every stream record in one unindexed SQLite table that each
 * later write searches (README, "The local stack"), so a million writes'
 * records would slow every write after them, a cost DynamoDB's streams do
 * not add. (On DynamoDB Local's indexed scratch file instead, a batch fill
 * ran at ~130 names/s against ~3,000 in memory: hours for a million.)
 *
 * 1. Lock names: fills the table with BENCH_SCALE_LOCKS names (default
 *    1,000,000) through the service's acquire, 64 at a time, under 8 tenant
 *    prefixes (3 in 4 left held on a 24 h lease, 1 in 4 released), and at
 *    checkpoints (10k, 100k, 1M) measures the listing, inspecting a lock,
 *    acquire and release of an existing name, and a sweeper run. DynamoDB
 *    Local takes ~100-200 writes/s on 2 cores, so 1,000,000 names through
 *    the service take hours: BENCH_SCALE_FILL=batch creates the names past
 *    the first 10,000 with the real services on the in-memory storage and
 *    writes those very items with BatchWriteItem (~10x faster).
 * 2. Sessions: opens BENCH_SCALE_SESSIONS sessions (default 10,000) beside
 *    those locks; the heartbeat cost with 0 and with 5 locks held, one
 *    heartbeat of every session, and sweeper runs among them.
 * 3. Sustained load: acquire+release pairs at BENCH_SCALE_RATE pairs/s
 *    (default 1,000, open loop, at most 128 pairs in flight) for
 *    BENCH_SCALE_SECONDS (default 30) over released names of the fill.
 *
 *   BENCH_SCALE_LOCKS=20000 BENCH_SCALE_SESSIONS=1000 BENCH_SCALE_SECONDS=10 npm run bench:scale
 *   BENCH_SCALE_FILL=batch npm run bench:scale     (the full scale, ~10 minutes)
 */

import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { BatchWriteCommand } from '@aws-sdk/lib-dynamodb';
import { LatchkeyError } from '../../lambdas/core/errors';
import { type AcquireCommand, lease, throughSession } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { wireServices } from '../../lambdas/service/services';
import { startDynamoDbLocal } from '../../local/dynamodb-local';
import { ensureTable } from '../../local/table-setup';
import { MemoryStorage } from '../support/memory-storage';
import { servicesOn } from '../support/services';
import { percentile, sleep } from './common';
import { countingDueReads, describeCalls, inParallel } from './sessions';

/** The principal the bench's clients act as. */
const BENCH = localPrincipal('bench');

const LOCKS = Number(process.env.BENCH_SCALE_LOCKS ?? 1_000_000);
const SESSIONS = Number(process.env.BENCH_SCALE_SESSIONS ?? 10_000);
const RATE = Number(process.env.BENCH_SCALE_RATE ?? 1_000);
const SECONDS = Number(process.env.BENCH_SCALE_SECONDS ?? 30);
/** Acquires in flight while filling (and opening sessions). */
const FILL_CONCURRENCY = 64;
/**
 * How names past the first 10,000 are created: `service` (default), or `batch`: the real services
 * acquire (and release) them on the in-memory storage (test/support/memory-storage.ts: the core's
 * evaluator and the DynamoDB adapter's own housekeeping, so the very items the service writes),
 * and those items are written with BatchWriteItem. For when DynamoDB Local is too slow to create
 * 1,000,000 names one request at a time.
 */
const FILL = process.env.BENCH_SCALE_FILL === 'batch' ? 'batch' : 'service';
/** Names the first segment creates through the service whatever BENCH_SCALE_FILL says. */
const SERVICE_FILL_FIRST = 10_000;
/** Pairs in flight at most under the sustained load: beyond it a due pair is skipped (and counted). */
const MAX_IN_FLIGHT = 128;
const TENANTS = 8;
/** A small prefix of its own, filled first: listed whole at every checkpoint while the total grows. */
const SMALL_PREFIX = 'tenants/small/jobs/';
const SMALL_COUNT = 120;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const pad = (n: number, width: number) => String(n).padStart(width, '0');
const tenantPrefix = (t: number) => `tenants/t${pad(t, 4)}/jobs/`;
/** The i-th name of the fill, round-robin over the tenants. */
const lockName = (i: number) => `${tenantPrefix(i % TENANTS)}j${pad(i, 7)}`;
/** 1 name in 4 is released after its acquire; the others stay held on a 24 h lease. */
const releasedInFill = (i: number) => i % 4 === 3;

/** DynamoDB calls are counted for the operation running in the async context that sent them. */
const context = new AsyncLocalStorage<Map<string, number>>();
const counter = {
  record: (command: string) => {
    const calls = context.getStore();
    if (calls) calls.set(command, (calls.get(command) ?? 0) + 1);
  },
};

/** One operation's record: DynamoDB calls by command, latencies, errors by code. */
class Op {
  readonly calls = new Map<string, number>();
  readonly took: number[] = [];
  readonly errors = new Map<string, number>();
  private sorted = false;

  async run<T>(task: () => Promise<T>): Promise<T | undefined> {
    const t = performance.now();
    try {
      return await context.run(this.calls, task);
    } catch (error) {
      const code =
        error instanceof LatchkeyError ? error.code : error instanceof Error ? error.name : String(error);
      this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
      return undefined;
    } finally {
      this.took.push(performance.now() - t);
      this.sorted = false;
    }
  }

  get count() {
    return this.took.length;
  }
  get totalCalls() {
    return [...this.calls.values()].reduce((a, b) => a + b, 0);
  }
  /** DynamoDB calls per operation, by command. */
  describe() {
    return this.count ? describeCalls(this.calls, this.count) : '-';
  }
  p(q: number) {
    if (!this.sorted) this.took.sort((a, b) => a - b);
    this.sorted = true;
    return percentile(this.took, q);
  }
  latency() {
    return `${this.p(0.5).toFixed(1)} / ${this.p(0.99).toFixed(1)}`;
  }
  errorText() {
    return this.errors.size ? [...this.errors].map(([c, n]) => `${c} ${n}`).join(', ') : '0';
  }
}

const fmtInt = (n: number) => Math.round(n).toLocaleString('en-US');

async function setup() {
  const dynamo = await startDynamoDbLocal({ maxHeap: '2g', inMemory: true });
  const tableName = `bench-scale-${randomUUID()}`;
  const client = new DynamoDBClient({ endpoint: dynamo.endpoint });
  await ensureTable(client, tableName, { stream: false });
  client.destroy();
  const {
    db,
    settings,
    storage,
    services: base,
    acquire,
  } = servicesOn(tableName, { endpoint: dynamo.endpoint, counter });
  const { counted, dueRead } = countingDueReads(storage);
  const services = wireServices({ ...base, storage: counted, ids: randomUUID });
  return { dynamo, tableName, db, settings, storage, services, acquire, dueRead };
}

type Bench = Awaited<ReturnType<typeof setup>>;

/** Acquires a lock that must be free; the fencing token of the grant. */
async function acquireFree(bench: Bench, cmd: AcquireCommand): Promise<number> {
  const out = await bench.acquire(cmd);
  if (!('acquired' in out) || !out.acquired) throw new Error(`acquire of a free lock refused: ${cmd.name}`);
  return out.grant.fencingToken;
}

// ---------------------------------------------------------------------------------------------
// 1. Lock names

interface FillSegment {
  how: 'service' | 'batch';
  from: number;
  to: number;
  seconds: number;
  acquire: Op;
  release: Op;
}

async function fill(bench: Bench, from: number, to: number): Promise<FillSegment> {
  const acquire = new Op();
  const release = new Op();
  const start = performance.now();
  let done = 0;
  const progress = setInterval(() => {
    const s = (performance.now() - start) / 1000;
    process.stderr.write(
      `  fill ${fmtInt(from + done)} / ${fmtInt(to)} locks, ${fmtInt(done / s)} locks/s over ${s.toFixed(0)} s\n`,
    );
  }, 30_000);
  try {
    await inParallel(
      Array.from({ length: to - from }, (_, k) => from + k),
      FILL_CONCURRENCY,
      async (i) => {
        const name = lockName(i);
        const clientId = `c${i % 10_000}`;
        const token = await acquire.run(() =>
          acquireFree(bench, { name, owner: BENCH, clientId, tenure: lease(DAY) }),
        );
        if (token !== undefined && releasedInFill(i))
          await release.run(() =>
            bench.services.locks.release({ name, owner: BENCH, clientId, fencingToken: token }),
          );
        done++;
      },
    );
  } finally {
    clearInterval(progress);
  }
  return { how: 'service', from, to, seconds: (performance.now() - start) / 1000, acquire, release };
}

/**
 * Names `from` to `to` acquired (and 1 in 4 released) by the real services on the in-memory
 * storage, a chunk at a time; each chunk's items then written with BatchWriteItem (25 a request).
 * `acquire` times the service's work in memory; `release` times and counts the BatchWriteItems.
 */
async function fillBatch(bench: Bench, from: number, to: number): Promise<FillSegment> {
  const acquire = new Op();
  const write = new Op();
  const start = performance.now();
  const CHUNK = 5_000;
  let last = start;
  for (let chunk = from; chunk < to; chunk += CHUNK) {
    const memory = new MemoryStorage(bench.settings);
    const { pusher, timers, clock } = bench.services;
    const local = wireServices({ storage: memory, pusher, timers, clock, ids: randomUUID });
    for (let i = chunk; i < Math.min(to, chunk + CHUNK); i++) {
      const name = lockName(i);
      const clientId = `c${i % 10_000}`;
      await acquire.run(async () => {
        const out = await local.locks.acquire({ name, owner: BENCH, clientId, tenure: lease(DAY) });
        if (out.kind !== 'done' || !('acquired' in out.outcome) || !out.outcome.acquired)
          throw new Error(`acquire of a free lock refused: ${name}`);
        if (releasedInFill(i))
          await local.locks.release({
            name,
            owner: BENCH,
            clientId,
            fencingToken: out.outcome.grant.fencingToken,
          });
      });
    }
    const items = memory.all().map(({ item }) => item);
    const batches = Array.from({ length: Math.ceil(items.length / 25) }, (_, b) =>
      items.slice(b * 25, b * 25 + 25),
    );
    await inParallel(batches, 8, async (batch) => {
      await write.run(async () => {
        let pending = batch.map((Item) => ({ PutRequest: { Item } }));
        for (let round = 0; pending.length; round++) {
          const out = await bench.db.send(
            new BatchWriteCommand({ RequestItems: { [bench.tableName]: pending } }),
          );
          pending = (out.UnprocessedItems?.[bench.tableName] ?? []) as typeof pending;
          if (pending.length) await sleep(Math.min(1_000, 20 * 2 ** round));
        }
      });
    });
    if (performance.now() - last > 30_000) {
      last = performance.now();
      const s = (last - start) / 1000;
      const done = Math.min(to, chunk + CHUNK) - from;
      process.stderr.write(
        `  fill (batch) ${fmtInt(from + done)} / ${fmtInt(to)} locks, ${fmtInt(done / s)} locks/s over ${s.toFixed(0)} s\n`,
      );
    }
  }
  return { how: 'batch', from, to, seconds: (performance.now() - start) / 1000, acquire, release: write };
}

/** Runs `task` `times` times, one at a time, as one operation. */
async function repeat(times: number, task: (k: number) => Promise<unknown>): Promise<Op> {
  const op = new Op();
  for (let k = 0; k < times; k++) await op.run(() => task(k));
  return op;
}

interface Checkpoint {
  locks: number;
  rows: { label: string; op: Op; note?: string }[];
}

async function checkpoint(bench: Bench, locks: number): Promise<Checkpoint> {
  const { storage, services } = bench;
  const rows: Checkpoint['rows'] = [];
  const pick = (k: number) => (k * 7_919 + 13) % locks;
  const tenantCount = Math.ceil(locks / TENANTS);

  rows.push({
    label: `list one tenant's prefix, first page of 50 (${fmtInt(tenantCount)} names under it)`,
    op: await repeat(20, () => storage.listLocks(tenantPrefix(1), 50)),
  });
  rows.push({
    label: `list every name, first page of 50 (${fmtInt(locks + SMALL_COUNT)} names)`,
    op: await repeat(20, () => storage.listLocks('', 50)),
  });
  let pages = 0;
  let listed = 0;
  const whole = await repeat(10, async () => {
    pages = 0;
    listed = 0;
    let cursor: string | undefined;
    do {
      const page = await storage.listLocks(SMALL_PREFIX, 50, cursor);
      pages++;
      listed += page.locks.length;
      cursor = page.nextCursor;
    } while (cursor);
  });
  rows.push({
    label: `list a small prefix whole (${SMALL_COUNT} names, pages of 50)`,
    op: whole,
    note: `${pages} pages, ${listed} names`,
  });
  // A page deep into a tenant: the cursor of the page before it, as a client paging would have.
  const deep = await storage.listLocks(tenantPrefix(2), 50);
  rows.push({
    label: `list one tenant's prefix, second page (cursor)`,
    op: await repeat(20, () => storage.listLocks(tenantPrefix(2), 50, deep.nextCursor)),
  });
  rows.push({
    label: 'inspect one lock (GET /locks/{name}: the lock and its first 100 waiters, 1 Query)',
    op: await repeat(50, (k) => storage.queue(lockName(pick(k)), 100)),
  });
  // Acquire and release an existing released name; a refused acquire of a held one.
  const acquireOp = new Op();
  const releaseOp = new Op();
  for (let k = 0; k < 50; k++) {
    const i = pick(k) - (pick(k) % 4) + 3;
    if (i >= locks) continue;
    const name = lockName(i);
    const token = await acquireOp.run(() =>
      acquireFree(bench, { name, owner: BENCH, clientId: 'probe', tenure: lease(60_000) }),
    );
    if (token !== undefined)
      await releaseOp.run(() =>
        services.locks.release({ name, owner: BENCH, clientId: 'probe', fencingToken: token }),
      );
  }
  rows.push({ label: 'acquire an existing free name', op: acquireOp });
  rows.push({ label: 'release it', op: releaseOp });
  rows.push({
    label: 'acquire a held name (refused)',
    op: await repeat(50, (k) =>
      bench.acquire({
        name: lockName(pick(k) - (pick(k) % 4)),
        owner: BENCH,
        clientId: 'probe',
        tenure: lease(60_000),
      }),
    ),
  });
  // The first run after a fill catches up every minute since the last run (16 Queries a minute).
  rows.push({ ...(await sweeperRow(bench, 1)), label: 'sweeper run, first after the fill' });
  rows.push(await sweeperRow(bench, 5));
  return { locks, rows };
}

async function sweeperRow(bench: Bench, runs: number) {
  bench.dueRead.items = 0;
  let expired = 0;
  let minutes = 0;
  const op = await repeat(runs, async () => {
    const report = await bench.services.sweeper.sweep();
    expired += report.expired;
    minutes += report.minutes;
  });
  return {
    label: 'sweeper run',
    op,
    note: `${(minutes / runs).toFixed(1)} minute buckets read, ${(bench.dueRead.items / runs).toFixed(0)} due items, ${expired} sessions ended per run`,
  };
}

function checkpointTable(checkpoints: Checkpoint[]): string[] {
  const out = [
    '\n### Lock names: what one operation costs as the table fills\n',
    'Each row at each total: DynamoDB calls per operation (by command, exact) and latency p50 / p99 in ms',
    '(DynamoDB Local; one operation at a time). "total" counts the lock items in the table.\n',
  ];
  const labels = checkpoints[0]?.rows.map((r) => r.label.replace(/ \([\d,]+ names.*\)$/, '')) ?? [];
  out.push(
    `| operation | ${checkpoints.map((c) => `calls at ${fmtInt(c.locks)} | p50 / p99 ms at ${fmtInt(c.locks)}`).join(' | ')} |`,
    `| --- | ${checkpoints.map(() => '--- | ---').join(' | ')} |`,
  );
  labels.forEach((label, r) => {
    out.push(
      `| ${label} | ${checkpoints
        .map((c) => {
          const row = c.rows[r];
          return row ? `${row.op.describe()} | ${row.op.latency()}` : '- | -';
        })
        .join(' | ')} |`,
    );
  });
  const notes = checkpoints.flatMap((c) =>
    c.rows.flatMap((r) => {
      const errors = r.op.errors.size ? `; errors: ${r.op.errorText()}` : '';
      return r.note || errors ? [`- at ${fmtInt(c.locks)}, ${r.label}: ${r.note ?? ''}${errors}`] : [];
    }),
  );
  if (notes.length) out.push('', ...notes);
  return out;
}

function fillTable(segments: FillSegment[]): string[] {
  const out = [
    '\n### Lock names: filling the table through the service\n',
    `Each name created by the service's acquire (a 24 h lease), ${FILL_CONCURRENCY} in flight; 1 in 4 released right after.`,
    '"locks/s": names created per second (an acquire, plus a release for 1 in 4).\n',
    '| names | seconds | locks/s | acquire: calls | acquire p50 / p99 ms | release: calls | release p50 / p99 ms | errors |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const s of segments) {
    const errors = [s.acquire, s.release].map((o) => o.errorText()).join(' / ');
    if (s.how === 'batch')
      out.push(
        `| ${fmtInt(s.from)} to ${fmtInt(s.to)}, bulk: the service in memory, then BatchWriteItem | ${s.seconds.toFixed(0)} | ${fmtInt((s.to - s.from) / s.seconds)} | in memory, no call | ${s.acquire.latency()} | per batch of 25 items: ${s.release.describe()} | ${s.release.latency()} | ${errors} |`,
      );
    else
      out.push(
        `| ${fmtInt(s.from)} to ${fmtInt(s.to)} | ${s.seconds.toFixed(0)} | ${fmtInt((s.to - s.from) / s.seconds)} | ${s.acquire.describe()} | ${s.acquire.latency()} | ${s.release.describe()} | ${s.release.latency()} | ${errors} |`,
      );
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// 2. Sessions

async function sessionsSection(bench: Bench): Promise<string[]> {
  const { sessions } = bench.services;
  const ids: { id: string; client: string }[] = [];
  const open = new Op();
  const start = performance.now();
  await inParallel(
    Array.from({ length: SESSIONS }, (_, i) => i),
    FILL_CONCURRENCY,
    async (i) => {
      const s = await open.run(() =>
        sessions.create(BENCH, `s${i}`, { ttlMs: HOUR, graceMs: 0, lockDelayMs: 0 }),
      );
      if (s) ids.push({ id: s.id, client: `s${i}` });
    },
  );
  const openSeconds = (performance.now() - start) / 1000;

  // Heartbeats one at a time: sessions with no lock, then sessions holding 5 locks each.
  const withLocks = await Promise.all(
    Array.from({ length: 20 }, async () => {
      const s = await sessions.create(BENCH, 'holder', { ttlMs: HOUR, graceMs: 0, lockDelayMs: 0 });
      for (let k = 0; k < 5; k++)
        await acquireFree(bench, {
          name: `sessions/${s.id}/lock${k}`,
          owner: BENCH,
          clientId: 'holder',
          tenure: throughSession(s.id),
        });
      return s.id;
    }),
  );
  const bare = await Promise.all(
    Array.from({ length: 20 }, async () => {
      const s = await sessions.create(BENCH, 'bare', { ttlMs: HOUR, graceMs: 0, lockDelayMs: 0 });
      return s.id;
    }),
  );
  const hbBare = await repeat(200, (k) => sessions.heartbeat(bare[k % bare.length] as string, BENCH, 'bare'));
  const hbLocks = await repeat(200, (k) =>
    sessions.heartbeat(withLocks[k % withLocks.length] as string, BENCH, 'holder'),
  );
  // One heartbeat of every open session, FILL_CONCURRENCY at a time: the rate 10,000 clients need.
  const round = new Op();
  const hbStart = performance.now();
  await inParallel(ids, FILL_CONCURRENCY, async ({ id, client }) => {
    await round.run(() => sessions.heartbeat(id, BENCH, client));
  });
  const roundSeconds = (performance.now() - hbStart) / 1000;

  const out = [
    `\n### Sessions: ${fmtInt(ids.length)} open beside ${fmtInt(LOCKS)} lock names\n`,
    '"calls": DynamoDB calls per operation (by command, exact); p50 / p99 in ms (DynamoDB Local).\n',
    '| operation | count | calls per operation | p50 / p99 ms | rate | errors |',
    '| --- | --- | --- | --- | --- | --- |',
    `| open a session (1 h TTL), ${FILL_CONCURRENCY} in flight | ${fmtInt(open.count)} | ${open.describe()} | ${open.latency()} | ${fmtInt(open.count / openSeconds)}/s | ${open.errorText()} |`,
    `| heartbeat, session with 0 locks, one at a time | ${hbBare.count} | ${hbBare.describe()} | ${hbBare.latency()} | - | ${hbBare.errorText()} |`,
    `| heartbeat, session with 5 locks, one at a time | ${hbLocks.count} | ${hbLocks.describe()} | ${hbLocks.latency()} | - | ${hbLocks.errorText()} |`,
    `| one heartbeat of every session, ${FILL_CONCURRENCY} in flight | ${fmtInt(round.count)} | ${round.describe()} | ${round.latency()} | ${fmtInt(round.count / roundSeconds)}/s | ${round.errorText()} |`,
  ];

  // Sweeper runs: nothing due among them, then 100 sessions (one lock each) expired among them.
  const idle = await sweeperRow(bench, 5);
  const EXPIRED = 100;
  const expireMs = 5_000;
  const created = performance.now();
  await inParallel(
    Array.from({ length: EXPIRED }, (_, i) => i),
    16,
    async (i) => {
      const s = await sessions.create(BENCH, 'gone', { ttlMs: expireMs, graceMs: 0, lockDelayMs: 0 });
      await acquireFree(bench, {
        name: `sessions/gone/${i}/${s.id}`,
        owner: BENCH,
        clientId: 'gone',
        tenure: throughSession(s.id),
      });
    },
  );
  if (performance.now() - created > expireMs) throw new Error('creating the expiring sessions took too long');
  await sleep(expireMs - (performance.now() - created) + expireMs + 100);
  const busy = await sweeperRow(bench, 1);
  out.push(
    `\n### Sessions: sweeper runs among ${fmtInt(ids.length)} live sessions and ${fmtInt(LOCKS)} lock names\n`,
    '| sweeper run | runs | DynamoDB calls per run | p50 / p99 ms | what it read and did, per run |',
    '| --- | --- | --- | --- | --- |',
    `| nothing due | ${idle.op.count} | ${idle.op.describe()} | ${idle.op.latency()} | ${idle.note} |`,
    `| ${EXPIRED} sessions expired (1 lock each) | ${busy.op.count} | ${busy.op.describe()} | ${busy.op.latency()} | ${busy.note} |`,
  );
  return out;
}

// ---------------------------------------------------------------------------------------------
// 3. Sustained load

interface Pair {
  started: number;
  acquireMs?: number;
  releaseMs?: number;
}

async function loadSection(bench: Bench): Promise<string[]> {
  const acquire = new Op();
  const release = new Op();
  const pairs: Pair[] = [];
  // Released names of the fill, in an order that spreads them over tenants; distinct while the run lasts.
  const released = Math.max(1, Math.floor(LOCKS / 4));
  const nameOf = (k: number) => lockName((((k * 7_919) % released) * 4 + 3) % Math.max(4, LOCKS));
  let issued = 0;
  let skipped = 0;
  let inFlight = 0;
  const running = new Set<Promise<void>>();
  const start = performance.now();
  const pair = async (k: number) => {
    const p: Pair = { started: (performance.now() - start) / 1000 };
    const name = nameOf(k);
    const clientId = `load${k % 10_000}`;
    let t = performance.now();
    const token = await acquire.run(() =>
      acquireFree(bench, { name, owner: BENCH, clientId, tenure: lease(60_000) }),
    );
    p.acquireMs = performance.now() - t;
    if (token !== undefined) {
      t = performance.now();
      await release.run(() =>
        bench.services.locks.release({ name, owner: BENCH, clientId, fencingToken: token }),
      );
      p.releaseMs = performance.now() - t;
    }
    pairs.push(p);
  };
  while (performance.now() - start < SECONDS * 1000) {
    const due = Math.floor(((performance.now() - start) / 1000) * RATE);
    while (issued < due) {
      if (inFlight >= MAX_IN_FLIGHT) {
        skipped += due - issued;
        issued = due;
        break;
      }
      const k = issued++;
      inFlight++;
      const run: Promise<void> = pair(k).finally(() => {
        inFlight--;
        running.delete(run);
      });
      running.add(run);
    }
    await sleep(2);
  }
  const issuedFor = (performance.now() - start) / 1000;
  await Promise.all(running);
  const elapsed = (performance.now() - start) / 1000;

  const window = (from: number, to: number) => {
    const inside = pairs.filter((p) => p.started >= from && p.started < to);
    const ms = (key: 'acquireMs' | 'releaseMs') =>
      inside.flatMap((p) => (p[key] === undefined ? [] : [p[key] as number])).sort((a, b) => a - b);
    const a = ms('acquireMs');
    const r = ms('releaseMs');
    return `| ${from.toFixed(0)}-${to.toFixed(0)} s | ${fmtInt(inside.length / (to - from))} | ${percentile(a, 0.5).toFixed(1)} / ${percentile(a, 0.99).toFixed(1)} | ${percentile(r, 0.5).toFixed(1)} / ${percentile(r, 0.99).toFixed(1)} |`;
  };
  const edge = Math.min(5, SECONDS / 2);
  return [
    `\n### Sustained load: acquire+release pairs at a target of ${fmtInt(RATE)} pairs/s for ${SECONDS} s\n`,
    `Open loop: a pair is started every 1/${fmtInt(RATE)} s whatever the answers, at most ${MAX_IN_FLIGHT} in flight (a pair due beyond that is skipped and counted);`,
    `each pair acquires a distinct existing name of the fill (a 60 s lease) and releases it. ${fmtInt(LOCKS)} lock names and ${fmtInt(SESSIONS)} sessions in the table.\n`,
    '| target pairs/s | pairs started | skipped (in-flight cap) | achieved pairs/s | DynamoDB requests/s |',
    '| --- | --- | --- | --- | --- |',
    `| ${fmtInt(RATE)} | ${fmtInt(pairs.length)} | ${fmtInt(skipped)} | ${fmtInt(pairs.length / issuedFor)} | ${fmtInt((acquire.totalCalls + release.totalCalls) / elapsed)} |`,
    '',
    '| operation | count | DynamoDB calls per operation | p50 / p99 ms | errors by code |',
    '| --- | --- | --- | --- | --- |',
    `| acquire | ${fmtInt(acquire.count)} | ${acquire.describe()} | ${acquire.latency()} | ${acquire.errorText()} |`,
    `| release | ${fmtInt(release.count)} | ${release.describe()} | ${release.latency()} | ${release.errorText()} |`,
    '',
    'Drift: the first and the last seconds of the run (pairs by the second they started in).\n',
    '| window | pairs/s | acquire p50 / p99 ms | release p50 / p99 ms |',
    '| --- | --- | --- | --- |',
    window(0, edge),
    window(SECONDS - edge, SECONDS),
  ];
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const bench = await setup();
  const out: string[] = [];
  try {
    console.log(
      `latchkey scale bench: DynamoDB Local ${bench.dynamo.endpoint} (2 GB heap), ${fmtInt(LOCKS)} lock names, ${fmtInt(SESSIONS)} sessions, ${fmtInt(RATE)} pairs/s for ${SECONDS} s`,
    );
    await bench.services.sweeper.sweep(); // the first run sets the cursor (reads an hour back)
    for (let i = 0; i < SMALL_COUNT; i++)
      await acquireFree(bench, {
        name: `${SMALL_PREFIX}j${pad(i, 4)}`,
        owner: BENCH,
        clientId: 'small',
        tenure: lease(DAY),
      });
    const marks = [...new Set([10_000, 100_000, 1_000_000, LOCKS].filter((n) => n <= LOCKS))].sort(
      (a, b) => a - b,
    );
    const segments: FillSegment[] = [];
    const checkpoints: Checkpoint[] = [];
    let filled = 0;
    for (const mark of marks) {
      const segment =
        FILL === 'batch' && filled >= SERVICE_FILL_FIRST
          ? await fillBatch(bench, filled, mark)
          : await fill(bench, filled, mark);
      filled = mark;
      segments.push(segment);
      console.error(
        `  filled ${fmtInt(mark)} locks (${fmtInt((segment.to - segment.from) / segment.seconds)} locks/s); measuring`,
      );
      checkpoints.push(await checkpoint(bench, mark));
    }
    out.push(...fillTable(segments), ...checkpointTable(checkpoints));
    console.error('  sessions');
    out.push(...(await sessionsSection(bench)));
    console.error('  sustained load');
    out.push(...(await loadSection(bench)));
    for (const line of out) console.log(line);
  } finally {
    await bench.dynamo.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
