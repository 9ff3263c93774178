/**
 * The "HTTP waiters" part of the waiting bench (test/bench/waiting.ts runs it on its stack and
 * counting proxy): waits in the request (POST …/acquire with wait_timeout_ms and no
 * connection_id), where the Lambda holds the request and polls DynamoDB for the outcome.
 *   1. 8 HTTP-waiting workers on one lock through the SDK (a LockClient without the WebSocket
 *      API waits over HTTP), hold 5 ms, release: grants/s, handoff,
 *      fairness, DynamoDB calls per grant, and the write p50 through the proxy in the same run;
 *   2. a long hold (one holder holds ~10 s, 8 HTTP waiters): DynamoDB reads per waiting second,
 *      by what they read;
 *   3. a crashed holder (ttl 3 s, never released) with one HTTP waiter: lease end → grant.
 *
 * Only this part: BENCH_ONLY=http BENCH_WAIT_SECONDS=8 npx tsx test/bench/waiting.ts
 * (BENCH_PROGRESS=1 prints each table as soon as it is measured).
 */
import { randomUUID } from 'node:crypto';
import { type Lease, LockClient } from '../../sdk/index';
import { signedClient } from '../support/signed-fetch';
import { measurementWindow, percentile, sleep } from './common';
import { type ContentionStats, contentionStats, fmt, isStreamCall } from './contention-stats';
import type { Counts } from './waiting';

const SECONDS = Number(process.env.BENCH_WAIT_SECONDS ?? 15);
const WARM_UP_MS = 2_000;
const WORKERS = 8;
const HOLD_MS = 5;
const LONG_HOLD_MS = 10_000;
const CRASH_RUNS = 5;
const WAIT_MS = 20_000;
/** The workers' ttl: a wait longer than a tenth of it is followed by the SDK's one renewal. */
const TTL_MS = 10_000;

const READS = ['GetItem', 'BatchGetItem', 'Query'];
const WRITES = ['UpdateItem', 'TransactWriteItems', 'PutItem', 'DeleteItem'];
const short = (target: string) =>
  target.replace(/^DynamoDB(Streams)?_\d+\./, (_, s) => (s ? 'Streams.' : ''));
const bump = (map: Map<string, number>, key: string, by = 1) => map.set(key, (map.get(key) ?? 0) + by);

/** What a read reads, by the partitions it names: lock, request record, HTTP-wait slot... */
function partitionsOf(body: Buffer): string[] {
  const kinds: string[] = [];
  const text = body.toString('utf8');
  // Partition keys as the document client writes them: {"pk":{"S":"LOCK#…"}} or ":pk":{"S":"LOCK#…"}.
  for (const m of text.matchAll(/"(?::)?pk"\s*:\s*\{\s*"S"\s*:\s*"([A-Za-z-]+)#/g))
    kinds.push(m[1] as string);
  return kinds.length ? kinds : ['?'];
}

/** Reads by operation and what they read; hand `record` to startCountingProxy. */
export const httpWaitReads = {
  byKind: new Map<string, number>(),
  record(op: string, body: Buffer) {
    const name = short(op);
    if (!READS.includes(name)) return;
    let what = partitionsOf(body).join('+');
    if (name === 'Query' && body.includes('"COUNT"')) what += ' (count)';
    bump(httpWaitReads.byKind, `${name} ${what}`);
  },
  take() {
    const taken = new Map(httpWaitReads.byKind);
    httpWaitReads.byKind.clear();
    return taken;
  },
};

interface Proxy {
  take(): Counts;
}
type Stack = { url: string };

const sum = (map: Map<string, number>, keep: (key: string) => boolean = () => true) =>
  [...map].reduce((n, [k, v]) => (keep(k) ? n + v : n), 0);
const isRead = (op: string) => READS.includes(short(op));
const sorted = (xs: Iterable<number>) => [...xs].sort((a, b) => a - b);

interface Grant {
  readonly worker: number;
  readonly fence: number;
  /** performance.now() when the answer with the grant arrived. */
  readonly at: number;
  readonly waitMs: number;
  /** Wall clock: when the server wrote the grant (its lease end less its ttl), and when its answer arrived. */
  readonly grantedAtWall: number;
  readonly answeredAtWall: number;
}

async function contention(stack: Stack, proxy: Proxy): Promise<{ lines: string[]; stats: ContentionStats }> {
  const lock = `bench/http-wait/${randomUUID()}`;
  // One SDK client per worker, as users run it without the WebSocket API: its waits are HTTP waits.
  const clients = Array.from(
    { length: WORKERS },
    (_, i) => new LockClient({ endpoint: stack.url, clientId: `h${i}` }),
  );
  const grants: Grant[] = [];
  const releaseSent = new Map<number, number>();
  const releaseSentWall = new Map<number, number>();
  /** A handoff in two: release sent -> grant written (server clock), grant written -> answer received. */
  const toGrant: number[] = [];
  const toAnswer: number[] = [];
  const problems = new Map<string, number>();
  let counts: Counts | undefined;
  let reads = new Map<string, number>();
  const window = measurementWindow(
    WARM_UP_MS,
    SECONDS,
    () => {
      proxy.take();
      httpWaitReads.take();
    },
    () => {
      counts = proxy.take();
      reads = httpWaitReads.take();
    },
  );
  const { deadline } = window;

  await Promise.all(
    clients.map(async (client, worker) => {
      while (performance.now() < deadline) {
        const sentAt = performance.now();
        let lease: Lease;
        try {
          lease = await client.acquire(lock, { ttlMs: TTL_MS, waitTimeoutMs: WAIT_MS });
        } catch (error) {
          bump(problems, `acquire ${(error as Error).name}: ${(error as Error).message.slice(0, 80)}`);
          await sleep(20);
          continue;
        }
        const at = performance.now();
        const fence = lease.fencingToken;
        const grantedAtWall = (lease.expiresAt?.getTime() ?? Number.NaN) - lease.ttlMs;
        grants.push({ worker, fence, at, waitMs: at - sentAt, grantedAtWall, answeredAtWall: Date.now() });
        await sleep(HOLD_MS);
        releaseSent.set(fence, performance.now());
        releaseSentWall.set(fence, Date.now());
        await client
          .release(lease)
          .catch((error: unknown) => bump(problems, `release ${(error as Error).name}`));
      }
    }),
  );
  window.stop();
  for (const client of clients) client.close();
  const c = counts ?? proxy.take();

  const stats = contentionStats({
    grants: grants.map((g) => ({ ...g, order: g.fence })),
    releaseSent,
    window,
    counts: c,
    workers: WORKERS,
  });
  const { seconds, waits, perWorker } = stats;
  const h = stats.handoffs;
  // The handoff in two halves, from the wall clocks of the release and of the grant's lease.
  const byFence = [...grants].sort((a, b) => a.fence - b.fence);
  for (let i = 1; i < byFence.length; i++) {
    const prev = byFence[i - 1] as Grant;
    const next = byFence[i] as Grant;
    if (!window.contains(next.at) || next.worker === prev.worker) continue;
    const sentWall = releaseSentWall.get(prev.fence);
    if (sentWall !== undefined) toGrant.push(next.grantedAtWall - sentWall);
    toAnswer.push(next.answeredAtWall - next.grantedAtWall);
  }
  const n = stats.grants;
  const perGrant = (x: number) => (n ? (x / n).toFixed(2) : 'n/a');
  const writeP50 = stats.writeP50;
  const handoffP50 = stats.handoffP50;
  const back = stats.backToReleaser;
  const counted = grants.filter((g) => window.contains(g.at));
  const p50Of = (op: string) => percentile(sorted(c.latencies.get(op) ?? []), 0.5);
  const renewed = counted.filter((g) => g.waitMs > TTL_MS / 10).length;

  const out = [
    `\n### Waiting: ${WORKERS} SDK clients waiting over HTTP (no WebSocket endpoint: the wait is in the request), one lock (hold ${HOLD_MS} ms, release over HTTP), ${fmt(seconds)} s after ${WARM_UP_MS / 1000} s warm-up\n`,
    '| metric | value |',
    '| --- | --- |',
    `| grants | ${n} |`,
    `| grants/s | ${fmt(n / seconds)} |`,
    `| handoff to another worker p50 / p99 ms (release sent -> grant answered) | ${fmt(handoffP50)} / ${fmt(percentile(h, 0.99))} (n=${h.length}, max ${fmt(h.at(-1) ?? Number.NaN)}) |`,
    `| of which release sent -> grant written / grant written -> answer received, p50 ms (wall clock, 1 ms; "written" is the lease's start as the SDK returns it, which a renewal moves) | ${fmt(percentile(sorted(toGrant), 0.5), 0)} / ${fmt(percentile(sorted(toAnswer), 0.5), 0)} |`,
    `| acquires that waited over a tenth of the ttl (the SDK renews once after those, before it answers) | ${renewed} of ${n} |`,
    `| DynamoDB write p50 ms (every write, through the proxy, same run) | ${fmt(writeP50)} |`,
    `| handoff p50 / write p50 (goal: under 3) | ${fmt(handoffP50 / writeP50, 2)} |`,
    `| grants straight back to the releaser | ${back} |`,
    `| grants per worker | ${perWorker.join(', ')} (min-max ${Math.min(...perWorker)}-${Math.max(...perWorker)}) |`,
    `| wait p50 / p99 / longest ms (acquire sent -> grant answered) | ${fmt(percentile(waits, 0.5))} / ${fmt(percentile(waits, 0.99))} / ${fmt(waits.at(-1) ?? Number.NaN)} |`,
    `| DynamoDB calls per grant (stream polling excluded) | ${fmt(stats.callsPerGrant, 2)} |`,
    `| reads per grant | ${perGrant(sum(c.calls, isRead))} |`,
    `| failed conditional writes per grant | ${perGrant(sum(c.failedWrites))} (${sum(c.failedWrites)} total) |`,
    `| other DynamoDB errors | ${c.errors.size ? [...c.errors].map(([k, v]) => `${k}: ${v}`).join(', ') : 'none'} |`,
    `| client-side problems | ${problems.size ? [...problems].map(([k, v]) => `${k}: ${v}`).join(', ') : 'none'} |`,
    '\n| DynamoDB call | per grant | failed per grant | p50 ms |',
    '| --- | --- | --- | --- |',
  ];
  for (const [op, count] of [...c.calls].sort((a, b) => b[1] - a[1])) {
    if (isStreamCall(op)) continue;
    out.push(
      `| ${short(op)} | ${perGrant(count)} | ${perGrant(c.failedWrites.get(op) ?? 0)} | ${fmt(p50Of(op))} |`,
    );
  }
  if (c.cancelReasons.size)
    out.push(
      `\ncancelled transactions by reasons (one per step): ${[...c.cancelReasons].map(([k, v]) => `${k} x${v}`).join(', ')}`,
    );
  out.push('\n| read (by partition) | per grant |', '| --- | --- |');
  for (const [what, count] of [...reads].sort((a, b) => b[1] - a[1]))
    out.push(`| ${what} | ${perGrant(count)} |`);
  return { lines: out, stats };
}

/** One holder holds the lock ~10 s with 8 HTTP waiters behind it: reads per waiting second. */
async function longHold(stack: Stack, proxy: Proxy): Promise<string[]> {
  const api = signedClient(stack.url);
  const lock = `bench/http-long/${randomUUID()}`;
  const held = await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'holder', ttl_ms: 30_000 });
  const problems = new Map<string, number>();
  if (!held.body?.acquired) throw new Error(`holder's acquire failed: ${held.text}`);
  const waiters = Array.from({ length: WORKERS }, async (_, w) => {
    const answer = await api.post(`/api/v1/locks/${lock}/acquire`, {
      client_id: `l${w}`,
      ttl_ms: 10_000,
      wait_timeout_ms: 24_000,
      request_id: `long-${w}`,
    });
    if (answer.body?.acquired)
      await api.post(`/api/v1/locks/${lock}/release`, {
        client_id: `l${w}`,
        fencing_token: answer.body.fencing_token,
      });
    if (!answer.body?.acquired)
      bump(problems, `${answer.status} ${answer.body?.error?.code ?? answer.body?.ended ?? ''}`);
    return answer.body?.acquired === true;
  });
  // Let every waiter queue and settle, then count over the rest of the hold.
  await sleep(1_000);
  proxy.take();
  httpWaitReads.take();
  const from = performance.now();
  await sleep(LONG_HOLD_MS - 1_000);
  const c = proxy.take();
  const reads = httpWaitReads.take();
  const seconds = (performance.now() - from) / 1000;
  await api.post(`/api/v1/locks/${lock}/release`, {
    client_id: 'holder',
    fencing_token: held.body.fencing_token,
  });
  const granted = (await Promise.all(waiters)).filter(Boolean).length;
  const waitingSeconds = seconds * WORKERS;
  const out = [
    `\n### Waiting: long hold (one holder holds ${LONG_HOLD_MS / 1000} s, ${WORKERS} HTTP waiters), counted over ${fmt(seconds)} s of the hold\n`,
    '| metric | value |',
    '| --- | --- |',
    `| DynamoDB reads per waiting second (goal: at most 5) | ${fmt(sum(c.calls, isRead) / waitingSeconds, 2)} |`,
    `| DynamoDB writes per waiting second | ${fmt(sum(c.calls, (k) => WRITES.includes(short(k))) / waitingSeconds, 2)} |`,
    `| waiters granted after the release | ${granted} of ${WORKERS} |`,
    `| waiters not granted | ${problems.size ? [...problems].map(([k, v]) => `${k}: ${v}`).join(', ') : 'none'} |`,
  ];
  for (const [what, count] of [...reads].sort((a, b) => b[1] - a[1]))
    out.push(`| ${what} per waiting second | ${fmt(count / waitingSeconds, 2)} |`);
  return out;
}

/** A holder that never releases (ttl 3 s) and one HTTP waiter: from the lease end to the grant. */
async function crashedHolder(stack: Stack, proxy: Proxy): Promise<string[]> {
  const api = signedClient(stack.url);
  const rows: { queuedBefore: number; delay: number; readsPerSecond: number }[] = [];
  const failures: string[] = [];
  const readKinds = new Map<string, number>();
  for (let run = 0; run < CRASH_RUNS; run++) {
    const lock = `bench/http-crash/${randomUUID()}`;
    const held = await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'crashed', ttl_ms: 3_000 });
    if (!held.body?.acquired) throw new Error(`holder's acquire failed: ${held.text}`);
    const expiresAt = Date.parse(held.body.expires_at);
    proxy.take();
    httpWaitReads.take();
    const sentAt = Date.now();
    const answer = await api.post(`/api/v1/locks/${lock}/acquire`, {
      client_id: `crash-waiter-${run}`,
      ttl_ms: 10_000,
      wait_timeout_ms: 10_000,
      request_id: `crash-${run}`,
    });
    const at = Date.now();
    const c = proxy.take();
    const kinds = httpWaitReads.take();
    for (const [k, v] of kinds) bump(readKinds, k, v);
    if (!answer.body?.acquired) {
      failures.push(`run ${run + 1}: ${answer.status} ${answer.text.slice(0, 120)}`);
      continue;
    }
    rows.push({
      queuedBefore: expiresAt - sentAt,
      delay: at - expiresAt,
      readsPerSecond: sum(c.calls, isRead) / ((at - sentAt) / 1000),
    });
    await api.post(`/api/v1/locks/${lock}/release`, {
      client_id: `crash-waiter-${run}`,
      fencing_token: answer.body.fencing_token,
    });
  }
  const out = [
    `\n### Waiting: crashed holder (ttl_ms 3000, never released), one HTTP waiter, ${CRASH_RUNS} runs\n`,
    '| run | waiter asked, ms before lease end | lease end -> grant answered, ms | DynamoDB reads/s during the wait (all callers) |',
    '| --- | --- | --- | --- |',
  ];
  rows.forEach((r, i) => {
    out.push(`| ${i + 1} | ${r.queuedBefore} | ${r.delay} | ${fmt(r.readsPerSecond)} |`);
  });
  out.push(`| max | | ${Math.max(...rows.map((r) => r.delay))} | |`);
  out.push(
    `\nreads during the ${CRASH_RUNS} waits, by what they read: ${[...readKinds].map(([k, v]) => `${k} ${v}`).join(', ')}`,
  );
  if (failures.length) out.push(`\nwaiter not granted: ${failures.join('; ')}`);
  return out;
}

/** A fresh DynamoDB Local (a JVM) is slow for its first few hundred calls: warm it up unmeasured. */
async function warmUp(stack: Stack): Promise<void> {
  const api = signedClient(stack.url);
  const until = performance.now() + 15_000;
  let done = 0;
  await Promise.all(
    Array.from({ length: 4 }, async (_, i) => {
      while (done < 400 && performance.now() < until) {
        const lock = `bench/http-warm/${i}`;
        const got = await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'warm', ttl_ms: 5_000 });
        if (got.body?.acquired)
          await api.post(`/api/v1/locks/${lock}/release`, {
            client_id: 'warm',
            fencing_token: got.body.fencing_token,
          });
        done++;
      }
    }),
  );
}

/** The HTTP waiters section, on the waiting bench's stack and counting proxy. */
export async function httpWaiting(
  stack: Stack,
  proxy: Proxy,
): Promise<{ lines: string[]; stats: ContentionStats }> {
  await warmUp(stack);
  const contended = await contention(stack, proxy);
  const out = [...contended.lines];
  if (process.env.BENCH_PROGRESS) console.log(contended.lines.join('\n'));
  for (const section of [longHold, crashedHolder]) {
    const lines = await section(stack, proxy);
    if (process.env.BENCH_PROGRESS) console.log(lines.join('\n'));
    out.push(...lines);
  }
  return { lines: out, stats: contended.stats };
}
