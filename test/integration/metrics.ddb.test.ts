/**
 * The local stack's GET /metrics (local/prometheus.ts): a scripted workload through the SDK, then a
 * scrape whose counts must equal what the workload did. The series come from the very EMF lines
 * the functions write (shared/metrics.ts), so this also checks the functions count right.
 */
import { randomUUID } from 'node:crypto';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalStack } from '../../local/stack';
import { LockClient } from '../../sdk/index';
import { startTestStack } from '../support/stack';

let stack: LocalStack;
const clients: LockClient[] = [];

beforeAll(async () => {
  // No sweeper runs: its metrics would come at times of their own.
  stack = await startTestStack('metrics', { sweepIntervalMs: 0 });
});
afterAll(async () => {
  for (const c of clients) c.close();
  await stack.stop();
});

const client = (clientId: string) => {
  const c = new LockClient({ endpoint: stack.url, clientId });
  clients.push(c);
  return c;
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function scrape(host?: string): Promise<{ status: number; type: string; body: string }> {
  const url = new URL('/metrics', stack.url);
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: host ? { host } : {} }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

/** The value of one sample, e.g. value(text, 'latchkey_requests_total', {operation: 'acquire'}); 0 if absent. */
function value(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/);
    if (!match || match[1] !== name) continue;
    const have = Object.fromEntries(
      [...(match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => [
        m[1],
        m[2],
      ]),
    );
    if (Object.keys(have).length !== Object.keys(labels).length) continue;
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(match[3]);
  }
  return 0;
}

/** Scrapes until `ready` holds (what the stream notifier counts comes a little later). */
async function scrapeUntil(ready: (text: string) => boolean, ms = 15_000): Promise<string> {
  const until = Date.now() + ms;
  for (;;) {
    const { body } = await scrape();
    if (ready(body) || Date.now() > until) return body;
    await sleep(100);
  }
}

describe('GET /metrics', () => {
  it('counts exactly what a scripted workload did', async () => {
    const holder = client('metrics-holder');
    const other = client('metrics-other');
    const prefix = `metrics/${randomUUID()}`;
    const names = ['a', 'b', 'c', 'd', 'e'].map((n) => `${prefix}/${n}`);
    const [a, b] = names as [string, string];

    // 5 acquires, all granted at once.
    const leases = await Promise.all(names.map((n) => holder.tryAcquire(n, { ttlMs: 30_000 })));
    expect(leases.every((l) => l !== null)).toBe(true);
    // 2 refused.
    expect(await other.tryAcquire(a, { ttlMs: 30_000 })).toBeNull();
    expect(await other.tryAcquire(b, { ttlMs: 30_000 })).toBeNull();
    // 3 released.
    for (const lease of leases.slice(2)) if (lease) await holder.release(lease);
    // One wait handed over: `other` waits for a (an HTTP wait), a is released, `other` gets it.
    const waiting = other.acquire(a, { ttlMs: 30_000, waitTimeoutMs: 10_000 });
    // Released only once it is queued (its own metrics are written when its wait ends).
    const queuedUntil = Date.now() + 10_000;
    while ((await holder.inspect(a)).queued !== 1 && Date.now() < queuedUntil) await sleep(50);
    if (leases[0]) await holder.release(leases[0]);
    const handed = await waiting;
    expect(handed.fencingToken).toBeGreaterThan(leases[0]?.fencingToken ?? 0);

    const text = await scrapeUntil(
      (t) =>
        value(t, 'latchkey_hold_duration_seconds_count') === 4 &&
        value(t, 'latchkey_handoff_latency_seconds_count') === 1,
    );
    const requests = (operation: string, outcome: string) =>
      value(text, 'latchkey_requests_total', { operation, outcome });
    expect(requests('acquire', 'granted')).toBe(6); // 5 at once, 1 handed over
    expect(requests('acquire', 'refused')).toBe(2);
    expect(requests('release', 'ok')).toBe(4);
    expect(value(text, 'latchkey_latency_seconds_count', { operation: 'acquire' })).toBe(8);
    expect(value(text, 'latchkey_latency_seconds_count', { operation: 'release' })).toBe(4);
    expect(value(text, 'latchkey_contention_total', { outcome: 'granted' })).toBe(5);
    expect(value(text, 'latchkey_contention_total', { outcome: 'refused' })).toBe(2);
    expect(value(text, 'latchkey_contention_total', { outcome: 'queued' })).toBe(1);
    expect(value(text, 'latchkey_queue_depth_count')).toBe(1);
    expect(value(text, 'latchkey_queue_depth_bucket', { le: '0' })).toBe(1); // nobody ahead
    expect(value(text, 'latchkey_wait_time_seconds_count')).toBe(1);
    expect(value(text, 'latchkey_hold_duration_seconds_count')).toBe(4);
    expect(value(text, 'latchkey_handoff_latency_seconds_count')).toBe(1);
    expect(value(text, 'latchkey_leases_lapsed_total')).toBe(0);
    // Each uncontended acquire and release is one DynamoDB call; the waits cost more.
    expect(value(text, 'latchkey_dynamo_calls_total', { operation: 'acquire' })).toBeGreaterThanOrEqual(8);
    expect(value(text, 'latchkey_dynamo_calls_total', { operation: 'release' })).toBeGreaterThanOrEqual(4);
    // A refused acquire is a condition DynamoDB refused.
    expect(
      value(text, 'latchkey_dynamo_condition_failures_total', { operation: 'acquire' }),
    ).toBeGreaterThanOrEqual(2);
    expect(value(text, 'latchkey_dynamo_throttles_total', { operation: 'acquire' })).toBe(0);
    expect(value(text, 'latchkey_requests_total', { operation: 'notify', outcome: 'ok' })).toBeGreaterThan(0);
  });

  it('is Prometheus text: HELP and TYPE for every family, well-formed samples, cumulative buckets', async () => {
    const { status, type, body } = await scrape();
    expect(status).toBe(200);
    expect(type).toMatch(/^text\/plain; version=0\.0\.4/);
    const families = new Map<string, string>();
    for (const line of body.trimEnd().split('\n')) {
      const comment = line.match(/^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/);
      if (comment) {
        if (comment[1] === 'TYPE') families.set(comment[2] as string, comment[3] as string);
        continue;
      }
      expect(line).toMatch(
        /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? -?[0-9.e+-]+$/,
      );
      const name = line.split(/[{ ]/)[0] as string;
      const family = name.replace(/_(bucket|sum|count)$/, '');
      expect(families.has(name) || families.get(family) === 'histogram').toBe(true);
    }
    for (const [name, kind] of families) {
      expect(['counter', 'histogram']).toContain(kind);
      if (kind === 'counter') expect(name).toMatch(/_total$/);
    }
    // Buckets never decrease, and +Inf equals the count.
    const latency = body
      .split('\n')
      .filter((l) => l.startsWith('latchkey_latency_seconds_bucket{operation="acquire"'));
    const counts = latency.map((l) => Number(l.split(' ').pop()));
    expect(counts.length).toBeGreaterThan(2);
    expect([...counts].sort((x, y) => x - y)).toEqual(counts);
    expect(counts.at(-1)).toBe(value(body, 'latchkey_latency_seconds_count', { operation: 'acquire' }));
  });

  it('keeps the Host check (DNS rebinding) and is not under /api/v1', async () => {
    expect((await scrape('evil.example')).status).toBe(403);
    expect((await scrape('127.0.0.1')).status).toBe(200);
  });
});
