/**
 * The "waiting" section of `npm run bench`: the local stack (HTTP API,
 * WebSocket API, stream notifier, timers) with a counting HTTP proxy in
 * front of DynamoDB Local, measuring
 *   1. 8 workers contending for one lock through the SDK, as users call it
 *      (LockClient.acquire waiting over the worker's WebSocket connection,
 *      hold 5 ms, release, again): throughput, handoff latency, fairness and
 *      DynamoDB calls per grant;
 *   2. a crashed holder (HTTP, ttl 3 s, never released) with one WebSocket
 *      waiter: delay from the lease's end to the waiter's grant;
 *   3. the same with HTTP waits (http-waiting.ts);
 *   4. the same contention on a peer's protocol (polling-peer.ts);
 *   5. the same on the two-write floor, on the floor with latchkey's items
 *      per grant, and on the queue-in-the-lock-item design proposed on issue
 *      14, bare and with each kind of item it adds (floor.ts); and the
 *      contention runs side by side, with ratios (contention-stats.ts).
 * BENCH_ONLY=ws, http, peer or floor runs that one alone (ws: without the crashed holder; floor: every floor row).
 * The peer and floor rows run in BENCH_FLOOR_ROUNDS rounds (default 3), each
 * in another order, for the seconds of one row split among them.
 *
 * Handlers keep their configuration for the life of the process (as on
 * Lambda), so this runs in a process of its own, with a DynamoDB Local of
 * its own (or BENCH_DYNAMO_ENDPOINT's). Standalone:
 *
 *   BENCH_WAIT_SECONDS=15 npx tsx test/bench/waiting.ts
 */

import { randomUUID } from 'node:crypto';
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { startDynamoDbLocal } from '../../local/dynamodb-local';
import { startLocalStack } from '../../local/stack';
import { type Lease, LockClient } from '../../sdk/index';
import { signedClient } from '../support/signed-fetch';
import { TestSocket } from '../support/ws-client';
import { measurementWindow, percentile, sleep } from './common';
import {
  type ContendedGrant,
  type ContentionStats,
  contentionStats,
  isStreamCall,
  sideBySide,
} from './contention-stats';
import {
  floor,
  floorName,
  floorTable,
  PROPOSED_VARIANTS,
  proposedFloor,
  transactionFloor,
  transactionFloorName,
} from './floor';
import { httpWaiting, httpWaitReads } from './http-waiting';
import { pollingPeer, pollingPeerName } from './polling-peer';
import { storeRateLines, storeRates, transactionSizes } from './store-rate';

const SECONDS = Number(process.env.BENCH_WAIT_SECONDS ?? 15);
/**
 * The peer and floor rows, which drive DynamoDB Local from this process, run in rounds, each in
 * another order: DynamoDB Local's speed drifts within a run (the first row after a pause ran up to
 * 40 % slower than the same row later, and late rows slower again as its in-memory stream grows),
 * so one pass in a fixed order favours some rows. Each row shows its round of median grants/s (of
 * an even number of rounds, the lower middle one).
 */
const FLOOR_ROUNDS = Number(process.env.BENCH_FLOOR_ROUNDS ?? 3);
if (!Number.isInteger(FLOOR_ROUNDS) || FLOOR_ROUNDS < 1)
  throw new Error(
    `BENCH_FLOOR_ROUNDS must be a whole number of rounds, 1 or more (got ${process.env.BENCH_FLOOR_ROUNDS})`,
  );
/**
 * A fresh DynamoDB Local spends its first 15-20 s compiling itself (the JVM's C2 compiler took
 * 30-70 % of a core then, measured with top -H), which slowed every call of a 2 s warm-up's
 * measurement: 15-20 grants/s became 23-26 with 20 s. BENCH_WAIT_WARMUP_SECONDS sets it.
 */
const WARM_UP_MS = 1000 * Number(process.env.BENCH_WAIT_WARMUP_SECONDS ?? 20);
const WORKERS = 8;
const HOLD_MS = 5;
const CRASH_RUNS = 5;

const bump = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1);
const sum = (map: Map<string, number>, keep: (key: string) => boolean = () => true) =>
  [...map].reduce((n, [k, v]) => (keep(k) ? n + v : n), 0);
const short = (target: string) =>
  target.replace(/^DynamoDB(Streams)?_\d+\./, (_, s) => (s ? 'Streams.' : ''));

export interface Counts {
  /** Requests by `x-amz-target`. */
  readonly calls: Map<string, number>;
  /** 400s that are ConditionalCheckFailedException or TransactionCanceledException, by target. */
  readonly failedWrites: Map<string, number>;
  /** Cancelled transactions by their list of reasons, one per step ([None, ConditionalCheckFailed]...). */
  readonly cancelReasons: Map<string, number>;
  /** Any other error answer, by target and type. */
  readonly errors: Map<string, number>;
  /** Round-trip ms through the proxy, by target. */
  readonly latencies: Map<string, number[]>;
  /** Items each TransactWriteItems carried, in the order sent. */
  readonly transactionItems: number[];
}

export const emptyCounts = (): Counts => ({
  calls: new Map(),
  failedWrites: new Map(),
  cancelReasons: new Map(),
  errors: new Map(),
  latencies: new Map(),
  transactionItems: [],
});

/** A pass-through HTTP proxy in front of DynamoDB that counts requests and failed conditional writes. */
export async function startCountingProxy(target: string, onRequest?: (op: string, body: Buffer) => void) {
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  let counts = emptyCounts();
  const server = createServer((req, res) => {
    const op = String(req.headers['x-amz-target'] ?? `${req.method} ${req.url}`);
    const tally = counts;
    bump(tally.calls, op);
    const started = performance.now();
    const upstream = request(
      new URL(req.url ?? '/', target),
      { method: req.method, headers: req.headers, agent },
      (up) => {
        const chunks: Buffer[] = [];
        up.on('data', (chunk: Buffer) => chunks.push(chunk));
        up.on('end', () => {
          const body = Buffer.concat(chunks);
          const status = up.statusCode ?? 502;
          if (status >= 400) classify(tally, op, status, up.headers['content-encoding'], body);
          const took = tally.latencies.get(op) ?? [];
          took.push(performance.now() - started);
          tally.latencies.set(op, took);
          res.writeHead(status, up.headers);
          res.end(body);
        });
        up.on('error', () => res.destroy());
      },
    );
    upstream.on('error', (error) => {
      bump(tally.errors, `${short(op)} proxy: ${error.message}`);
      res.writeHead(502);
      res.end();
    });
    // Buffered: each request goes upstream in one write.
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (op.endsWith('.TransactWriteItems')) tally.transactionItems.push(transactionItemCount(body));
      onRequest?.(op, body);
      upstream.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    /** The counts since the last reset (the live object: snapshot it with `take`). */
    take(): Counts {
      const taken = counts;
      counts = emptyCounts();
      return taken;
    },
    async stop() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      agent.destroy();
    },
  };
}

function transactionItemCount(body: Buffer): number {
  try {
    const items = (JSON.parse(body.toString('utf8')) as { TransactItems?: unknown }).TransactItems;
    return Array.isArray(items) ? items.length : 0;
  } catch {
    return 0;
  }
}

function classify(tally: Counts, op: string, status: number, encoding: unknown, raw: Buffer): void {
  let type = `HTTP ${status}`;
  let message = '';
  try {
    const text = (encoding === 'gzip' ? gunzipSync(raw) : raw).toString('utf8');
    const body = JSON.parse(text) as { __type?: string; message?: string; Message?: string };
    type = body.__type?.split('#').pop() ?? type;
    message = body.message ?? body.Message ?? '';
  } catch {
    // not JSON: keep the status
  }
  if (status === 400 && /ConditionalCheckFailed|TransactionCanceled/.test(type)) {
    bump(tally.failedWrites, op);
    // "Transaction cancelled, please refer cancellation reasons for specific reasons [None, ConditionalCheckFailed]"
    const reasons = /\[(.*)\]/.exec(message)?.[1];
    if (reasons) bump(tally.cancelReasons, `[${reasons}]`);
  } else {
    bump(tally.errors, `${short(op)} ${type}`);
  }
}

/** How many times the timer function has run, from the stack's metrics (Prometheus text). */
export function timerRuns(metrics: string): number {
  let runs = 0;
  for (const line of metrics.split('\n'))
    if (line.startsWith('latchkey_requests_total{') && line.includes('operation="timer"'))
      runs += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
  return runs;
}

async function contention(
  stack: { url: string; wsUrl: string; metrics(): string },
  proxy: { take(): Counts },
) {
  const lock = `bench/wait/${randomUUID()}`;
  // One SDK client per worker, as users run it: each waits over its own WebSocket connection.
  const clients = Array.from(
    { length: WORKERS },
    (_, i) => new LockClient({ endpoint: stack.url, wsEndpoint: stack.wsUrl, clientId: `w${i}` }),
  );
  const grants: ContendedGrant[] = [];
  /** performance.now() when the holder of each fence sent its release. */
  const releaseSent = new Map<number, number>();
  const problems = new Map<string, number>();

  let counts = emptyCounts();
  let timersAtOpen = 0;
  let timers = 0;
  const window = measurementWindow(
    WARM_UP_MS,
    SECONDS,
    () => {
      proxy.take();
      timersAtOpen = timerRuns(stack.metrics());
    },
    () => {
      counts = proxy.take();
      timers = timerRuns(stack.metrics()) - timersAtOpen;
    },
  );
  const { deadline } = window;

  await Promise.all(
    clients.map(async (client, worker) => {
      while (performance.now() < deadline) {
        const sentAt = performance.now();
        let lease: Lease;
        try {
          // Granted in the HTTP answer, or pushed over the worker's connection later.
          lease = await client.acquire(lock, { ttlMs: 10_000, waitTimeoutMs: 30_000 });
        } catch (error) {
          bump(problems, `acquire ${(error as Error).name}: ${(error as Error).message.slice(0, 80)}`);
          await sleep(20);
          continue;
        }
        const at = performance.now();
        const fence = lease.fencingToken;
        grants.push({ worker, order: fence, at, waitMs: at - sentAt });
        await sleep(HOLD_MS);
        releaseSent.set(fence, performance.now());
        await client
          .release(lease)
          .catch((error: unknown) => bump(problems, `release ${(error as Error).name}`));
      }
    }),
  );
  window.stop();
  for (const client of clients) client.close();

  const stats = contentionStats({ grants, releaseSent, window, counts, workers: WORKERS });
  const { seconds, handoffs, waits, backToReleaser, followers } = stats;
  const mean = stats.grants / WORKERS;
  const n = stats.grants;
  const perWorker = Array.from({ length: WORKERS }, (_, w) =>
    grants.filter((g) => g.worker === w && window.contains(g.at)),
  );
  const perGrant = (x: number) => (n ? (x / n).toFixed(2) : 'n/a');

  const out: string[] = [];
  out.push(
    `\n### Waiting: ${WORKERS} SDK clients waiting over WebSocket, one lock (hold ${HOLD_MS} ms), ${seconds.toFixed(1)} s after ${WARM_UP_MS / 1000} s warm-up\n`,
    '| metric | value |',
    '| --- | --- |',
    `| grants | ${n} |`,
    `| grants/s | ${(n / seconds).toFixed(1)} |`,
    `| handoff to another worker p50 / p99 ms (release sent -> granted received) | ${percentile(handoffs, 0.5).toFixed(1)} / ${percentile(handoffs, 0.99).toFixed(1)} (n=${handoffs.length}, max ${(handoffs.at(-1) ?? NaN).toFixed(1)}) |`,
    `| grants straight back to the releaser | ${followers ? ((100 * backToReleaser) / followers).toFixed(1) : 'n/a'} % (${backToReleaser} of ${followers}) |`,
    `| grants per worker min-max | ${Math.min(...perWorker.map((g) => g.length))}-${Math.max(...perWorker.map((g) => g.length))} (mean ${mean.toFixed(1)}) |`,
    `| wait p50 / p99 / longest ms (acquire sent -> granted) | ${percentile(waits, 0.5).toFixed(1)} / ${percentile(waits, 0.99).toFixed(1)} / ${(waits.at(-1) ?? NaN).toFixed(1)} |`,
    `| DynamoDB calls per grant (stream polling excluded) | ${stats.callsPerGrant.toFixed(2)} |`,
    `| failed conditional writes per grant | ${perGrant(sum(counts.failedWrites))} (${sum(counts.failedWrites)} total) |`,
    `| timer runs per grant (SQS messages delivered: lease ends, deadlines) | ${perGrant(timers)} (${timers} total) |`,
    `| stream polling (DynamoDB Streams calls/s, not per grant) | ${(sum(counts.calls, isStreamCall) / seconds).toFixed(1)} |`,
    `| other DynamoDB errors | ${counts.errors.size ? [...counts.errors].map(([k, v]) => `${k}: ${v}`).join(', ') : 'none'} |`,
    `| client-side problems | ${problems.size ? [...problems].map(([k, v]) => `${k}: ${v}`).join(', ') : 'none'} |`,
  );
  out.push('\n| worker | grants | vs mean | longest wait ms |', '| --- | --- | --- | --- |');
  perWorker.forEach((g, w) => {
    const dev = mean ? ((g.length - mean) / mean) * 100 : NaN;
    const longest = Math.max(0, ...g.map((x) => x.waitMs));
    out.push(`| w${w} | ${g.length} | ${dev >= 0 ? '+' : ''}${dev.toFixed(1)} % | ${longest.toFixed(1)} |`);
  });
  const p50Of = (op: string) =>
    percentile(
      [...(counts.latencies.get(op) ?? [])].sort((a, b) => a - b),
      0.5,
    );
  out.push(
    '\n| DynamoDB call | per grant | failed per grant | p50 ms (through the proxy) |',
    '| --- | --- | --- | --- |',
  );
  for (const [op, count] of [...counts.calls].sort((a, b) => b[1] - a[1])) {
    if (isStreamCall(op)) continue;
    const line = `| ${short(op)} | ${perGrant(count)} | ${perGrant(counts.failedWrites.get(op) ?? 0)} |`;
    out.push(`${line} ${p50Of(op).toFixed(1)} |`);
  }
  // The goal: a handoff within two DynamoDB write latencies, measured side by side.
  const write = stats.writeP50;
  out.push(
    `\nhandoff p50 ${percentile(handoffs, 0.5).toFixed(1)} ms = ${(percentile(handoffs, 0.5) / write).toFixed(1)} x the p50 of a DynamoDB write (${write.toFixed(1)} ms, all writes through the proxy); goal: at most 2 x`,
  );
  if (counts.cancelReasons.size)
    out.push(
      `\ncancelled transactions by reasons (one per step): ${[...counts.cancelReasons].map(([k, v]) => `${k} x${v}`).join(', ')}`,
    );
  return { lines: out, stats };
}

async function crashedHolder(stack: { url: string; wsUrl: string }) {
  const api = signedClient(stack.url);
  const rows: { expiresAt: number; delay: number; queuedAfter: number }[] = [];
  for (let run = 0; run < CRASH_RUNS; run++) {
    const lock = `bench/crash/${randomUUID()}`;
    const held = await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'crashed', ttl_ms: 3_000 });
    if (held.status !== 200 || !held.body.acquired) throw new Error(`holder's acquire failed: ${held.text}`);
    const expiresAt = Date.parse(held.body.expires_at);
    const socket = await TestSocket.open(stack, `waiter-${run}`);
    const request_id = `crash-${run}`;
    const first = await socket.acquire(lock, { ttl_ms: 10_000, wait_timeout_ms: 30_000, request_id });
    if (first.body?.queued !== true) throw new Error(`waiter was not queued: ${first.status} ${first.text}`);
    const queuedAt = Date.now();
    const granted = await socket.outcome(first, 20_000);
    if (granted.type !== 'granted') throw new Error(`waiter got ${JSON.stringify(granted)}`);
    // Wall clock on both sides: the server stamped expires_at, the socket stamps each frame's arrival.
    rows.push({
      expiresAt,
      delay: Number(granted.receivedAt) - expiresAt,
      queuedAfter: expiresAt - queuedAt,
    });
    await api.post(`/api/v1/locks/${lock}/release`, {
      client_id: `waiter-${run}`,
      fencing_token: granted.fencing_token,
    });
    await socket.close();
  }
  const out = [
    `\n### Waiting: crashed holder (HTTP acquire, ttl_ms 3000, never released), one WebSocket waiter, ${CRASH_RUNS} runs\n`,
    '| run | waiter queued, ms before lease end | lease end -> waiter granted, ms |',
    '| --- | --- | --- |',
  ];
  rows.forEach((r, i) => {
    out.push(`| ${i + 1} | ${r.queuedAfter.toFixed(0)} | ${r.delay.toFixed(1)} |`);
  });
  out.push(`| max | | ${Math.max(...rows.map((r) => r.delay)).toFixed(1)} |`);
  return out;
}

type ContentionRun = { lines: string[]; stats: ContentionStats };
type OwnProxy = Awaited<ReturnType<typeof startCountingProxy>>;

/**
 * Runs each row FLOOR_ROUNDS times, each through a counting proxy of its own, each round starting
 * a share of the rows further along (so each row runs early in one round, late in another); per
 * row, in the given order, the round of median grants/s and every round's grants/s.
 */
async function inRounds<O>(
  rows: readonly { name: string; run: (proxy: OwnProxy, options: O) => Promise<ContentionRun> }[],
  endpoint: string,
  options: O,
): Promise<{ name: string; median: ContentionRun; each: string[] }[]> {
  const runs = new Map(rows.map((r) => [r.name, [] as ContentionRun[]]));
  for (let round = 0; round < FLOOR_ROUNDS; round++) {
    const shift = (round * Math.ceil(rows.length / FLOOR_ROUNDS)) % Math.max(1, rows.length);
    for (const row of [...rows.slice(shift), ...rows.slice(0, shift)]) {
      const ownProxy = await startCountingProxy(endpoint);
      try {
        runs.get(row.name)?.push(await row.run(ownProxy, options));
      } finally {
        await ownProxy.stop();
      }
    }
  }
  return rows.flatMap(({ name }) => {
    const all = runs.get(name) ?? [];
    const median = [...all].sort((a, b) => a.stats.grantsPerSecond - b.stats.grantsPerSecond)[
      Math.floor((all.length - 1) / 2)
    ];
    return median ? [{ name, median, each: all.map((r) => r.stats.grantsPerSecond.toFixed(1)) }] : [];
  });
}

async function main() {
  const external = process.env.BENCH_DYNAMO_ENDPOINT;
  const dynamo = external ? undefined : await startDynamoDbLocal({ maxHeap: '768m', inMemory: true });
  const endpoint = external ?? (dynamo?.endpoint as string);
  const proxy = await startCountingProxy(endpoint, httpWaitReads.record);
  const floorTableName = await floorTable(endpoint);
  const stack = await startLocalStack({
    port: 0,
    wsPort: 0,
    dynamoEndpoint: proxy.url,
    tableName: `bench-wait-${randomUUID()}`,
    // The sweeper is a backstop, not part of a handoff: its first run alone reads an hour of the
    // due index (16 partitions a minute), which would be counted per grant here.
    sweepIntervalMs: 0,
  });
  try {
    console.log(`\nwaiting bench: local stack, DynamoDB through a counting proxy, warming up...`);
    const rows: { name: string; stats: ContentionStats }[] = [];
    const only = process.env.BENCH_ONLY;
    if (!only || only === 'ws') {
      const webSocket = await contention(stack, proxy);
      rows.push({ name: 'latchkey, WebSocket waits', stats: webSocket.stats });
      console.log([...webSocket.lines, ...(only ? [] : await crashedHolder(stack))].join('\n'));
    }
    if (!only || only === 'http') {
      const http = await httpWaiting(stack, proxy);
      rows.push({ name: 'latchkey, HTTP waits', stats: http.stats });
      console.log(http.lines.join('\n'));
    }
    // The peer and the floor on the same DynamoDB Local, each through a proxy of its own: the
    // stack's background calls (stream polling, timers) are not counted as theirs.
    const others = [
      { name: pollingPeerName, run: pollingPeer, key: 'peer' },
      { name: floorName, run: floor, key: 'floor' },
      { name: transactionFloorName, run: transactionFloor, key: 'floor' },
      ...PROPOSED_VARIANTS.map((v) => ({ name: v.name, run: proposedFloor(v), key: 'floor' })),
    ];
    const options = {
      workers: WORKERS,
      holdMs: HOLD_MS,
      seconds: SECONDS / FLOOR_ROUNDS,
      table: floorTableName,
    };
    const chosen = others.filter((o) => !only || only === o.key);
    for (const { name, median, each } of await inRounds(chosen, endpoint, options)) {
      rows.push({ name, stats: median.stats });
      console.log(
        [
          ...median.lines,
          `(the round of median grants/s; grants/s in rounds 1-${each.length}: ${each.join(', ')})`,
        ].join('\n'),
      );
    }
    // Measured after the runs, with the stack idle: the same DynamoDB Local, its own rate.
    const rates = await storeRates(endpoint, transactionSizes(rows.map((r) => r.stats)));
    console.log(storeRateLines(rates).join('\n'));
    console.log(sideBySide(rows, rates).join('\n'));
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
