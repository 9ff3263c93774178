/**
 * The "shared" section of `npm run bench` (BENCH_SECTIONS=shared): shared mode on the local stack,
 * DynamoDB behind a counting proxy, measuring
 *   1. readers and writers on one lock through the SDK (BENCH_SHARED_READERS readers with
 *      mode 'shared', BENCH_SHARED_WRITERS exclusive writers, each waiting over its own WebSocket
 *      connection, holding HOLD_MS, again): grants/s per mode, waits per mode, how long the lock
 *      sat with nobody inside, DynamoDB calls per grant, and a check that no writer overlapped
 *      anyone;
 *   2. a semaphore (BENCH_SEMAPHORE_CLIENTS clients, default 12, on one lock with maxHolders
 *      BENCH_SEMAPHORE_N, default 3, holding 5–40 ms at random): the same measures, plus the most
 *      inside at once and the grants per client (FIFO: a busy semaphore must neither starve nor
 *      turn its waiters away);
 *   3. the cost of granting a run of k queued readers: a writer holds the lock, k readers queue
 *      behind it (WebSocket), the writer releases, and every DynamoDB call until all k have their
 *      grants is counted, with the items of each TransactWriteItems (one transaction grants up to
 *      MAX_RUN readers: expect ceil(k / MAX_RUN) transactions).
 *
 * In a process of its own (handlers configure themselves once per process), with a DynamoDB
 * Local of its own (or BENCH_DYNAMO_ENDPOINT's). Standalone:
 *
 *   BENCH_SHARED_SECONDS=15 npx tsx test/bench/shared.ts
 */

import { randomUUID } from 'node:crypto';
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { MAX_RUN } from '../../lambdas/core/queue';
import { setEmfSink } from '../../lambdas/shared/metrics';
import { startDynamoDbLocal } from '../../local/dynamodb-local';
import { startLocalStack } from '../../local/stack';
import { type Lease, LockClient } from '../../sdk/index';
import { signedClient } from '../support/signed-fetch';
import { measurementWindow, percentile, sleep } from './common';

const SECONDS = Number(process.env.BENCH_SHARED_SECONDS ?? 15);
const READERS = Number(process.env.BENCH_SHARED_READERS ?? 8);
const WRITERS = Number(process.env.BENCH_SHARED_WRITERS ?? 2);
const WARM_UP_MS = 2_000;
const HOLD_MS = 5;
const SEMAPHORE_CLIENTS = Number(process.env.BENCH_SEMAPHORE_CLIENTS ?? 12);
const SEMAPHORE_N = Number(process.env.BENCH_SEMAPHORE_N ?? 3);
/** 17: one more than a transaction's run (MAX_RUN), to show how the rest of the queue is served. */
const RUN_SIZES = [1, 4, 8, 16, 17];

const bump = (map: Map<string, number>, key: string, by = 1) => map.set(key, (map.get(key) ?? 0) + by);
const short = (target: string) =>
  target.replace(/^DynamoDB(Streams)?_\d+\./, (_, s) => (s ? 'Streams.' : ''));
const isStream = (op: string) => op.startsWith('Streams.');

interface Tally {
  /** Requests by operation (`TransactWriteItems`, `Streams.GetRecords`, ...). */
  readonly calls: Map<string, number>;
  /** Items of each TransactWriteItems sent, in order. */
  readonly transactItems: number[];
  /** Refused conditional writes (ConditionalCheckFailed, TransactionCanceled) by operation. */
  readonly refused: Map<string, number>;
  /** Cancelled transactions by their reasons. */
  readonly cancelReasons: Map<string, number>;
  /** Other error answers by operation and type. */
  readonly errors: Map<string, number>;
}
const emptyTally = (): Tally => ({
  calls: new Map(),
  transactItems: [],
  refused: new Map(),
  cancelReasons: new Map(),
  errors: new Map(),
});

/** A pass-through proxy in front of DynamoDB that counts calls, transaction sizes and refusals. */
async function countingProxy(target: string) {
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  let tally = emptyTally();
  const server = createServer((req, res) => {
    const op = short(String(req.headers['x-amz-target'] ?? `${req.method} ${req.url}`));
    const t = tally;
    bump(t.calls, op);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (op === 'TransactWriteItems') {
        try {
          t.transactItems.push((JSON.parse(body.toString('utf8')).TransactItems ?? []).length);
        } catch {
          t.transactItems.push(-1);
        }
      }
      const upstream = request(
        new URL(req.url ?? '/', target),
        { method: req.method, headers: req.headers, agent },
        (up) => {
          const parts: Buffer[] = [];
          up.on('data', (c: Buffer) => parts.push(c));
          up.on('end', () => {
            const answer = Buffer.concat(parts);
            const status = up.statusCode ?? 502;
            if (status >= 400) classify(t, op, up.headers['content-encoding'], answer);
            res.writeHead(status, up.headers);
            res.end(answer);
          });
          up.on('error', () => res.destroy());
        },
      );
      upstream.on('error', (error) => {
        bump(t.errors, `${op} proxy: ${error.message}`);
        res.writeHead(502);
        res.end();
      });
      upstream.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    take(): Tally {
      const taken = tally;
      tally = emptyTally();
      return taken;
    },
    async stop() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      agent.destroy();
    },
  };
}

function classify(t: Tally, op: string, encoding: unknown, raw: Buffer): void {
  let type = 'error';
  let message = '';
  try {
    const text = (encoding === 'gzip' ? gunzipSync(raw) : raw).toString('utf8');
    const body = JSON.parse(text) as { __type?: string; message?: string; Message?: string };
    type = body.__type?.split('#').pop() ?? type;
    message = body.message ?? body.Message ?? '';
  } catch {
    // not JSON
  }
  if (/ConditionalCheckFailed|TransactionCanceled/.test(type)) {
    bump(t.refused, op);
    const reasons = /\[(.*)\]/.exec(message)?.[1];
    if (reasons) bump(t.cancelReasons, `[${reasons.replace(/ConditionalCheckFailed/g, 'CCF')}]`);
  } else bump(t.errors, `${op} ${type}`);
}

const total = (map: Map<string, number>, keep: (k: string) => boolean = () => true) =>
  [...map].reduce((n, [k, v]) => (keep(k) ? n + v : n), 0);

interface Section {
  readonly who: string;
  readonly mode: 'shared' | 'exclusive';
  readonly token: number;
  readonly waitMs: number;
  readonly enter: number;
  exit: number;
}

/** Who contends for the lock, and how each holds it. */
interface Scenario {
  readonly title: string;
  readonly people: readonly { readonly who: string; readonly mode: 'shared' | 'exclusive' }[];
  /** A semaphore's N (shared mode only). */
  readonly maxHolders?: number;
  /** How long one section holds the lock, in ms. */
  readonly hold: () => number;
}

const readersAndWriters: Scenario = {
  title: `${READERS} readers + ${WRITERS} writers (SDK, WebSocket waits), one lock, hold ${HOLD_MS} ms`,
  people: [
    ...Array.from({ length: WRITERS }, (_, i) => ({ who: `w${i}`, mode: 'exclusive' as const })),
    ...Array.from({ length: READERS }, (_, i) => ({ who: `r${i}`, mode: 'shared' as const })),
  ],
  hold: () => HOLD_MS,
};

const semaphore: Scenario = {
  title: `a semaphore of ${SEMAPHORE_N}, ${SEMAPHORE_CLIENTS} SDK clients (WebSocket waits), hold 5–40 ms`,
  people: Array.from({ length: SEMAPHORE_CLIENTS }, (_, i) => ({ who: `c${i}`, mode: 'shared' as const })),
  maxHolders: SEMAPHORE_N,
  hold: () => 5 + Math.random() * 35,
};

async function contention(
  stack: { url: string; wsUrl: string },
  proxy: { take(): Tally },
  scenario: Scenario,
) {
  const lock = `bench/shared/${randomUUID()}`;
  const people = scenario.people.map((p) => ({
    ...p,
    client: new LockClient({
      endpoint: stack.url,
      wsEndpoint: stack.wsUrl,
      clientId: `${p.who}-${randomUUID().slice(0, 6)}`,
    }),
  }));
  const sections: Section[] = [];
  const problems = new Map<string, number>();
  let tally = emptyTally();
  const window = measurementWindow(
    WARM_UP_MS,
    SECONDS,
    () => proxy.take(),
    () => {
      tally = proxy.take();
    },
  );
  await Promise.all(
    people.map(async ({ who, mode, client }) => {
      while (performance.now() < window.deadline) {
        const sentAt = performance.now();
        let lease: Lease;
        try {
          lease = await client.acquire(lock, {
            ...(mode === 'shared' ? { mode, maxHolders: scenario.maxHolders } : {}),
            ttlMs: 15_000,
            waitTimeoutMs: 30_000,
          });
        } catch (error) {
          bump(problems, `acquire ${(error as Error).name}`);
          await sleep(20);
          continue;
        }
        const enter = performance.now();
        const s: Section = { who, mode, token: lease.fencingToken, waitMs: enter - sentAt, enter, exit: 0 };
        sections.push(s);
        await sleep(scenario.hold());
        s.exit = performance.now();
        await client
          .release(lease)
          .catch((error: unknown) => bump(problems, `release ${(error as Error).name}`));
      }
    }),
  );
  window.stop();
  for (const p of people) p.client.close();

  const seconds = window.seconds();
  const counted = sections.filter((s) => window.contains(s.enter));
  const byMode = (m: Section['mode']) => counted.filter((s) => s.mode === m);
  const waits = (m: Section['mode']) =>
    byMode(m)
      .map((s) => s.waitMs)
      .sort((a, b) => a - b);
  const overlapping = (a: Section, b: Section) => a.enter < b.exit && b.enter < a.exit;
  const writerClashes = sections
    .filter((w) => w.mode === 'exclusive')
    .reduce((n, w) => n + sections.filter((s) => s !== w && overlapping(s, w)).length, 0);
  // Time nobody was inside, within the window.
  const ordered = [...counted].sort((a, b) => a.enter - b.enter);
  let idle = 0;
  let busyUntil = ordered[0]?.enter ?? 0;
  let longestIdle = 0;
  let concurrentReads = 0;
  for (const [i, s] of ordered.entries()) {
    if (s.enter > busyUntil) {
      idle += s.enter - busyUntil;
      longestIdle = Math.max(longestIdle, s.enter - busyUntil);
    } else if (i > 0 && s.mode === 'shared') concurrentReads++;
    busyUntil = Math.max(busyUntil, s.exit);
  }
  const span = ordered.length ? busyUntil - (ordered[0]?.enter ?? 0) : 0;
  // The most sections inside at once (a semaphore's N at most; 1 for a writer).
  const edges = sections.flatMap((s) => [
    { at: s.enter, by: 1 },
    { at: s.exit, by: -1 },
  ]);
  edges.sort((a, b) => a.at - b.at || a.by - b.by);
  let inside = 0;
  let most = 0;
  for (const e of edges) {
    inside += e.by;
    most = Math.max(most, inside);
  }
  const perClient = people.map((p) => counted.filter((s) => s.who === p.who).length);
  const n = counted.length;
  const perGrant = (x: number) => (n ? (x / n).toFixed(2) : 'n/a');
  const ms = (xs: number[], p: number) => percentile(xs, p).toFixed(1);
  /** p50 / p99 / max of a mode's waits, or a dash when nobody waited in that mode. */
  const waitCell = (m: Section['mode']) => {
    const xs = waits(m);
    return xs.length ? `${ms(xs, 0.5)} / ${ms(xs, 0.99)} / ${(xs.at(-1) as number).toFixed(0)}` : '–';
  };
  const tokens = sections.map((s) => s.token);

  const out = [
    `\n### Shared: ${scenario.title}, ${seconds.toFixed(1)} s after ${WARM_UP_MS / 1000} s warm-up\n`,
    '| metric | shared | exclusive |',
    '| --- | --- | --- |',
    `| grants | ${byMode('shared').length} | ${byMode('exclusive').length} |`,
    `| grants/s | ${(byMode('shared').length / seconds).toFixed(1)} | ${(byMode('exclusive').length / seconds).toFixed(1)} |`,
    `| wait p50 / p99 / max ms (acquire sent -> lease) | ${waitCell('shared')} | ${waitCell('exclusive')} |`,
    '',
    '| metric | value |',
    '| --- | --- |',
    `| grants/s, all | ${(n / seconds).toFixed(1)} |`,
    `| reader sections entered while another was inside | ${concurrentReads} of ${byMode('shared').length} |`,
    `| most inside at once${scenario.maxHolders ? ` (at most ${scenario.maxHolders})` : ''} | ${most} |`,
    `| grants per client min-max | ${Math.min(...perClient)}-${Math.max(...perClient)} |`,
    `| lock idle (nobody inside) | ${span ? ((100 * idle) / span).toFixed(1) : 'n/a'} % of ${(span / 1000).toFixed(1)} s, longest ${longestIdle.toFixed(0)} ms |`,
    `| writer overlapping anyone (must be 0) | ${writerClashes} |`,
    `| duplicate tokens (must be 0) | ${tokens.length - new Set(tokens).size} |`,
    `| DynamoDB calls per grant (streams excluded) | ${perGrant(total(tally.calls, (k) => !isStream(k)))} |`,
    `| refused conditional writes per grant | ${perGrant(total(tally.refused))} |`,
    `| TransactWriteItems per grant (items per transaction p50 / max) | ${perGrant(tally.transactItems.length)} (${percentile(
      [...tally.transactItems].sort((a, b) => a - b),
      0.5,
    )} / ${Math.max(0, ...tally.transactItems)}) |`,
    `| other DynamoDB errors | ${tally.errors.size ? [...tally.errors].map(([k, v]) => `${k}: ${v}`).join(', ') : 'none'} |`,
    `| client-side problems | ${problems.size ? [...problems].map(([k, v]) => `${k}: ${v}`).join(', ') : 'none'} |`,
    '\n| DynamoDB call | per grant | refused per grant |',
    '| --- | --- | --- |',
  ];
  for (const [op, count] of [...tally.calls].sort((a, b) => b[1] - a[1]))
    if (!isStream(op)) out.push(`| ${op} | ${perGrant(count)} | ${perGrant(tally.refused.get(op) ?? 0)} |`);
  if (tally.cancelReasons.size)
    out.push(
      `\ncancelled transactions by reasons (CCF: ConditionalCheckFailed): ${[...tally.cancelReasons]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 8)
        .map(([k, v]) => `${k} x${v}`)
        .join(', ')}`,
    );
  return out;
}

/** Granting a run of k queued readers when the writer ahead of them releases. */
async function runCost(stack: { url: string; wsUrl: string }, proxy: { take(): Tally }) {
  const api = signedClient(stack.url);
  const out = [
    `\n### Shared: granting k readers queued behind a writer, counted from the writer's release until all k hold it (MAX_RUN ${MAX_RUN})\n`,
    '| k | TransactWriteItems (items each) | expected ceil(k/MAX_RUN) | UpdateItem | Query | other calls | refused | release -> all granted ms | tokens |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const k of RUN_SIZES) {
    const lock = `bench/run/${randomUUID()}`;
    const held = await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'writer', ttl_ms: 120_000 });
    if (!held.body?.acquired) throw new Error(`writer's acquire failed: ${held.text}`);
    const readers = Array.from(
      { length: k },
      (_, i) => new LockClient({ endpoint: stack.url, wsEndpoint: stack.wsUrl, clientId: `run-${k}-${i}` }),
    );
    const granted: number[] = [];
    const leases = readers.map((c) =>
      // A long lease: the SDK then sends no renewal after the wait (it would be counted).
      c.acquire(lock, { mode: 'shared', ttlMs: 600_000, waitTimeoutMs: 60_000 }).then((l) => {
        granted.push(performance.now());
        return l;
      }),
    );
    for (let tries = 0; ; tries++) {
      const view = (await api.get(`/api/v1/locks/${lock}`)).body;
      if (view?.queued === k) break;
      if (tries > 600) throw new Error(`only ${view?.queued} of ${k} readers queued`);
      await sleep(50);
    }
    await sleep(300); // let the queueing calls settle before counting
    proxy.take();
    const releasedAt = performance.now();
    const released = await api.post(`/api/v1/locks/${lock}/release`, {
      client_id: 'writer',
      fencing_token: held.body.fencing_token,
    });
    if (released.status !== 200) throw new Error(`release failed: ${released.text}`);
    const got = await Promise.all(leases);
    const t = proxy.take();
    const tokens = got.map((l) => l.fencingToken).sort((a, b) => a - b);
    const contiguous = tokens.every((x, i) => i === 0 || x === (tokens[i - 1] as number) + 1);
    const other =
      total(t.calls, (op) => !isStream(op)) -
      (t.calls.get('TransactWriteItems') ?? 0) -
      (t.calls.get('UpdateItem') ?? 0) -
      (t.calls.get('Query') ?? 0);
    out.push(
      `| ${k} | ${t.transactItems.length} (${t.transactItems.join(', ')}) | ${Math.ceil(k / MAX_RUN)} | ${t.calls.get('UpdateItem') ?? 0} | ${t.calls.get('Query') ?? 0} | ${other}${
        other
          ? ` (${[...t.calls]
              .filter(([op]) => !isStream(op) && !['TransactWriteItems', 'UpdateItem', 'Query'].includes(op))
              .map(([op, v]) => `${op} ${v}`)
              .join(', ')})`
          : ''
      } | ${total(t.refused)} | ${(Math.max(...granted) - releasedAt).toFixed(0)} | ${tokens[0]}..+${tokens.length - 1}${contiguous ? ' contiguous' : ' NOT contiguous'} |`,
    );
    await Promise.all(got.map((l, i) => readers[i]?.release(l)));
    for (const c of readers) c.close();
  }
  out.push(
    "\nCounted: the writer's release (UpdateItem), the read of the queue that serves it (Query), the grant transactions, and whatever else ran meanwhile (stream-notifier reads are excluded).",
  );
  return out;
}

async function main() {
  setEmfSink(() => {}); // the functions' metrics lines are not this report
  const external = process.env.BENCH_DYNAMO_ENDPOINT;
  const dynamo = external ? undefined : await startDynamoDbLocal({ maxHeap: '768m', inMemory: true });
  const proxy = await countingProxy(external ?? (dynamo?.endpoint as string));
  const stack = await startLocalStack({
    port: 0,
    wsPort: 0,
    dynamoEndpoint: proxy.url,
    tableName: `bench-shared-${randomUUID()}`,
    sweepIntervalMs: 0, // the sweeper is a backstop, not part of a handoff
  });
  try {
    console.log('\nshared bench: local stack, DynamoDB through a counting proxy, warming up...');
    const lines = [
      ...(await runCost(stack, proxy)),
      ...(await contention(stack, proxy, readersAndWriters)),
      ...(await contention(stack, proxy, semaphore)),
    ];
    console.log(lines.join('\n'));
  } finally {
    await stack.stop();
    await proxy.stop();
    await dynamo?.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
