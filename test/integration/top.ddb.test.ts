import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalStack } from '../../local/stack';
import type { TopSnapshot } from '../../sdk/cli/top';
import { type Lease, LockClient } from '../../sdk/index';
import { type Ran, runCli } from '../support/cli-process';
import { startTestStack } from '../support/stack';

let stack: LocalStack;
const clients: LockClient[] = [];

beforeAll(async () => {
  // No sweeper runs: only the workload's traffic.
  stack = await startTestStack('top', { sweepIntervalMs: 0 });
});
afterAll(async () => {
  for (const c of clients) c.close();
  await stack.stop();
});

const client = (clientId: string) => {
  const c = new LockClient({ endpoint: stack.url, wsEndpoint: stack.wsUrl, clientId });
  clients.push(c);
  return c;
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const latchkey = (args: string[], endpoint = stack.url): Promise<Ran> =>
  runCli(['--endpoint', endpoint, ...args]);

/**
 * A contended lock (a holder and two waiters in its queue) for as long as `during` runs, and
 * meanwhile acquires and releases of other locks, refused tries of the held one, and sessions
 * opened and closed.
 */
async function withWorkload<T>(
  prefix: string,
  during: () => Promise<T>,
): Promise<{ result: T; hot: string }> {
  const hot = `${prefix}hot`;
  const holder = client('top-holder');
  const worker = client('top-worker');
  const lease = await holder.tryAcquire(hot, { ttlMs: 120_000 });
  if (!lease) throw new Error('the hot lock was not free');
  const stop = new AbortController();
  const waits = ['top-waiter-1', 'top-waiter-2'].map((id) => {
    const waiter = client(id);
    return waiter
      .acquire(hot, { ttlMs: 10_000, waitTimeoutMs: 120_000, signal: stop.signal })
      .then((l: Lease) => waiter.release(l))
      .catch(() => undefined);
  });
  // Both waiters are queued before top starts.
  for (let i = 0; (await holder.inspect(hot)).queued < 2; i++) {
    if (i > 200) throw new Error('the waiters did not queue');
    await sleep(25);
  }
  // Three loops side by side, so that each kind of traffic falls in top's interval even on a slow machine.
  let running = true;
  const repeat = async (step: (i: number) => Promise<unknown>) => {
    for (let i = 0; running; i++) {
      await step(i);
      await sleep(20);
    }
  };
  const sessions = client('top-sessions');
  const loops = Promise.all([
    repeat(async (i) => {
      const l = await worker.tryAcquire(`${prefix}busy-${i % 3}`, { ttlMs: 5_000 });
      if (l) await worker.release(l);
    }),
    repeat(() => worker.tryAcquire(hot, { ttlMs: 5_000 })), // refused: held
    repeat(async () => (await sessions.session({ ttlMs: 15_000 })).close()),
  ]);
  try {
    return { result: await during(), hot };
  } finally {
    running = false;
    await loops;
    stop.abort();
    await Promise.all(waits);
    await holder.release(lease);
  }
}

describe('latchkey top', () => {
  it('--once --json: one object with the workload it sampled', { timeout: 90_000 }, async () => {
    const prefix = `top/${randomUUID()}/`;
    const { result: ran, hot } = await withWorkload(prefix, () =>
      latchkey(['--json', 'top', '--once', '--every', '4s', '--prefix', prefix]),
    );
    expect(ran.stderr).toBe('');
    expect(ran.code).toBe(0);
    const lines = ran.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const top = JSON.parse(lines[0] as string) as TopSnapshot;

    expect(top.source).toBe('prometheus');
    expect(top.endpoint).toBe(stack.url);
    expect(top.window_ms).toBeGreaterThanOrEqual(3_900);
    expect(top.window_ms).toBeLessThan(15_000);
    const rate = (operation: string, outcome: string) =>
      top.requests.find((r) => r.operation === operation && r.outcome === outcome)?.per_second ?? 0;
    expect(rate('acquire', 'granted')).toBeGreaterThan(0);
    expect(rate('acquire', 'refused')).toBeGreaterThan(0);
    expect(rate('release', 'ok')).toBeGreaterThan(0);
    expect(top.operations.map((o) => o.operation)).toEqual(
      expect.arrayContaining(['acquire', 'release', 'open', 'close']),
    );
    for (const o of top.operations) expect(o.per_second).toBeGreaterThan(0);
    const acquire = top.latency.find((l) => l.operation === 'acquire');
    expect(acquire?.count).toBeGreaterThan(0);
    expect(acquire?.p50_ms).toBeGreaterThan(0);
    expect(acquire?.p99_ms).toBeGreaterThanOrEqual(acquire?.p50_ms ?? 0);
    expect(top.contention.find((c) => c.outcome === 'refused')?.per_second).toBeGreaterThan(0);

    // The contended lock, from the listing: held, two waiters, first.
    expect(top.locks.prefix).toBe(prefix);
    expect(top.locks.queued).toBe(2);
    expect(top.contended[0]).toEqual({ lock: hot, state: 'held', holder: 'top-holder', queued: 2 });
    expect(top.queues[0]?.lock).toBe(hot);
    expect(top.queues[0]?.waiters.map((w) => w.client_id).sort()).toEqual(['top-waiter-1', 'top-waiter-2']);

    expect(top.sessions.opened_per_second).toBeGreaterThan(0);
    expect(top.sessions.closed_per_second).toBeGreaterThan(0);
    // Locally every signed principal may use the admin routes: the live count is there.
    expect(top.sessions.live).toEqual(expect.any(Number));
    expect(top.sessions.live_unavailable).toBeUndefined();
  });

  it('--once for people: the tables, the contended lock and its queue', { timeout: 90_000 }, async () => {
    const prefix = `top/${randomUUID()}/`;
    const { result: ran, hot } = await withWorkload(prefix, () =>
      latchkey(['top', '--once', '--every', '1s', '--prefix', prefix]),
    );
    expect(ran.code).toBe(0);
    expect(ran.stdout).toMatch(
      /^latchkey top {2}http:\/\/127\.0\.0\.1:\d+ {2}\(local \/metrics, rates over /,
    );
    expect(ran.stdout).toMatch(/^OPERATION +OUTCOME +REQ\/S +COUNT$/m);
    expect(ran.stdout).toMatch(/^acquire +granted +\d/m);
    expect(ran.stdout).toMatch(/^LATENCY +P50 +P99 +COUNT$/m);
    expect(ran.stdout).toContain('MOST CONTENDED');
    expect(ran.stdout).toMatch(new RegExp(`^${hot} +held +top-holder +2$`, 'm'));
    expect(ran.stdout).toContain(`${hot}: 2 queued`);
    expect(ran.stdout).toMatch(/^sessions {2}opened [\d.]+\/s .* live \d+/m);
  });

  it('says what is wrong: no stack there, a duration without a unit', async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = createServer();
      probe.listen(0, '127.0.0.1', () => {
        const p = (probe.address() as AddressInfo).port;
        probe.close(() => resolve(p));
      });
    });
    const down = await latchkey(['top', '--once', '--every', '100ms'], `http://127.0.0.1:${port}`);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(
      /cannot scrape http:\/\/127\.0\.0\.1:\d+\/metrics \(ECONNREFUSED\).*npm start/,
    );
    const bare = await latchkey(['top', '--once', '--every', '2']);
    expect(bare.code).not.toBe(0);
    expect(bare.stderr).toMatch(/no unit/);
  });
});
