/**
 * Deadlock detection end to end: the local stack on DynamoDB Local, used through the SDK (and the
 * HTTP API where the SDK would refuse to send). A wait that closes a cycle of waits is refused
 * with 409 DEADLOCK naming the cycle, exactly once; a chain without a cycle, or a client whose
 * concurrent tasks hold and wait independently, is left alone; GET .../waits shows the graph.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalStack } from '../../local/stack';
import { DeadlockError, type Lease, LockClient, type WaitEdge } from '../../sdk/index';
import { runCli, stackFlags } from '../support/cli-process';
import { signedClient } from '../support/signed-fetch';
import { startTestStack } from '../support/stack';

let stack: LocalStack;
const clients: LockClient[] = [];

beforeAll(async () => {
  stack = await startTestStack('deadlock');
});
afterAll(async () => {
  for (const c of clients) c.close();
  await stack.stop();
});

/** Clients alternate between WebSocket waits and HTTP waits: detection runs on both. */
const client = (clientId: string, ws = clients.length % 2 === 0) => {
  const c = new LockClient({
    endpoint: stack.url,
    clientId: `${clientId}-${randomUUID().slice(0, 8)}`,
    ...(ws ? { wsEndpoint: stack.wsUrl } : {}),
  });
  clients.push(c);
  return c;
};
const lockName = (what: string) => `deadlock/${randomUUID()}/${what}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` every 20 ms until it holds (at most 10 s). */
async function waitUntil(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await check()) return;
    await sleep(20);
  }
  throw new Error('timed out waiting for a wait to queue');
}

/** A gate: `open()` lets every `passed` through. */
function gate() {
  let open!: () => void;
  const passed = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, passed };
}

/**
 * Each worker holds its first lock, then (once all hold theirs, one after another in `order`)
 * waits for its second while still holding the first. Resolves each worker's outcome.
 */
async function cross(pairs: readonly { c: LockClient; hold: string; want: string }[]) {
  const holding = pairs.map(() => gate());
  const turn = pairs.map(() => gate());
  const results = pairs.map((p, i) =>
    p.c
      .withLock(p.hold, { ttlMs: 30_000, waitTimeoutMs: 10_000 }, async () => {
        holding[i]?.open();
        await turn[i]?.passed;
        const lease = await p.c.acquire(p.want, { ttlMs: 30_000, waitTimeoutMs: 20_000 });
        await p.c.release(lease);
        return 'done' as const;
      })
      .catch((error: unknown) => error),
  );
  await Promise.all(holding.map((h) => h.passed));
  // One at a time: each wait is in its queue before the next one joins (so the last closes the cycle).
  for (const [i, t] of turn.entries()) {
    t.open();
    const p = pairs[i] as (typeof pairs)[number];
    if (i < turn.length - 1) await waitUntil(async () => (await p.c.inspect(p.want)).queued > 0);
  }
  return Promise.all(results);
}

describe('deadlock detection', () => {
  it('two clients that each hold one lock and wait for the other: exactly one DEADLOCK, naming the cycle; the other is served', {
    timeout: 60_000,
  }, async () => {
    const [x, y] = [lockName('x'), lockName('y')];
    const [a, b] = [client('a'), client('b')];
    const [first, second] = await cross([
      { c: a, hold: x, want: y },
      { c: b, hold: y, want: x },
    ]);
    expect(first).toBe('done');
    expect(second).toBeInstanceOf(DeadlockError);
    const refused = second as DeadlockError;
    expect(refused.status).toBe(409);
    expect(refused.code).toBe('DEADLOCK');
    expect(refused.cycle.map((e) => [e.waiter.clientId, e.lock, e.blocker.clientId, e.blockerIs])).toEqual([
      [b.clientId, x, a.clientId, 'holder'],
      [a.clientId, y, b.clientId, 'holder'],
    ]);
    expect(refused.message).toMatch(/would close a cycle of waits/);
    // Nothing was left behind: both locks are free and nobody waits.
    for (const name of [x, y]) {
      const view = await a.inspect(name);
      expect(view.holders).toEqual([]);
      expect(view.queued).toBe(0);
    }
  });

  it('a three-client cycle is found when the third wait closes it, and the rest then complete', {
    timeout: 60_000,
  }, async () => {
    const [x, y, z] = [lockName('x'), lockName('y'), lockName('z')];
    const [a, b, c] = [client('a'), client('b'), client('c')];
    const outcomes = await cross([
      { c: a, hold: x, want: y },
      { c: b, hold: y, want: z },
      { c: c, hold: z, want: x },
    ]);
    expect(outcomes.slice(0, 2)).toEqual(['done', 'done']);
    const refused = outcomes[2] as DeadlockError;
    expect(refused).toBeInstanceOf(DeadlockError);
    expect(refused.cycle.map((e) => e.lock)).toEqual([x, y, z]);
    expect(refused.cycle.map((e) => e.waiter.clientId)).toEqual([c.clientId, a.clientId, b.clientId]);
  });

  it('a chain without a cycle is left alone, and GET .../waits shows it from a lock outward', {
    timeout: 60_000,
  }, async () => {
    const [x, y, z] = [lockName('x'), lockName('y'), lockName('z')];
    const [a, b, c] = [client('a'), client('b'), client('c')];
    const zHeld = await c.acquire(z, { ttlMs: 30_000 });
    const waits = [
      { c: a, hold: x, want: y },
      { c: b, hold: y, want: z },
    ];
    const running = cross(waits);
    // Both waits queued: a for y (held by b), b for z (held by c), each keeping its first lock.
    let fromY = await a.waits(y);
    for (let i = 0; i < 50 && fromY.edges.length < 2; i++) {
      await sleep(100);
      fromY = await a.waits(y);
    }
    // From y outward: a waits for y held by b, and b (which keeps y while it waits) waits for z held by c.
    expect(fromY.edges.map((e) => [e.waiter.clientId, e.lock, e.blocker.clientId, e.blockerIs])).toEqual([
      [a.clientId, y, b.clientId, 'holder'],
      [b.clientId, z, c.clientId, 'holder'],
    ]);
    expect(fromY.cycles).toEqual([]);
    expect(fromY.complete).toBe(true);
    // From z, its end: only b's wait (a waits for y, not z).
    const fromZ = await a.waits(z);
    expect(fromZ.lock).toBe(z);
    expect(fromZ.edges.map((e) => [e.waiter.clientId, e.lock, e.blocker.clientId])).toEqual([
      [b.clientId, z, c.clientId],
    ]);
    const cli = await runCli([
      'deadlocks',
      '--prefix',
      x.slice(0, x.lastIndexOf('/') + 1),
      ...stackFlags(stack),
    ]);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toMatch(/no deadlock among/);
    await c.release(zHeld);
    expect(await running).toEqual(['done', 'done']);
  });

  it('a client whose concurrent tasks hold one lock and wait for another is no deadlock: only what a wait names is kept', {
    timeout: 60_000,
  }, async () => {
    const [x, y] = [lockName('x'), lockName('y')];
    const a = client('a');
    const b = client('b');
    // a's first task holds x for a while; its second task (not inside the first) waits for y.
    const aHolds = gate();
    const release = gate();
    const task1 = a.withLock(x, { ttlMs: 30_000 }, async () => {
      aHolds.open();
      await release.passed;
    });
    await aHolds.passed;
    let yLease: Lease | undefined;
    const bInside = gate();
    const task2 = b.withLock(y, { ttlMs: 30_000 }, async () => {
      bInside.open();
      await sleep(300); // a's second task queues for y meanwhile
      const lease = await b.acquire(x, { ttlMs: 30_000, waitTimeoutMs: 20_000 });
      await b.release(lease);
    });
    await bInside.passed;
    const aSecond = a.acquire(y, { ttlMs: 30_000, waitTimeoutMs: 20_000 }).then((l) => {
      yLease = l;
    });
    await sleep(800);
    release.open();
    await Promise.all([task1, task2, aSecond]);
    expect(yLease?.name).toBe(y);
    await a.release(yLease as Lease);
  });

  it("a client enclosed by another (a run inside a run's command) keeps the enclosing client's holds: nesting in opposite orders is refused once", async () => {
    const [x, y] = [lockName('x'), lockName('y')];
    const [outerA, outerB] = [client('outer-a'), client('outer-b')];
    const ax = await outerA.acquire(x, { ttlMs: 30_000 });
    const by = await outerB.acquire(y, { ttlMs: 30_000 });
    const enclosedBy = (outer: LockClient, held: string, ws: boolean) => {
      const c = new LockClient({
        endpoint: stack.url,
        ...(ws ? { wsEndpoint: stack.wsUrl } : {}),
        enclosing: { clientId: outer.clientId, holding: [held] },
      });
      clients.push(c);
      return c;
    };
    // Over WebSocket one, over HTTP the other: both send what they keep.
    const [innerA, innerB] = [enclosedBy(outerA, x, true), enclosedBy(outerB, y, false)];
    const first = innerA.acquire(y, { ttlMs: 30_000, waitTimeoutMs: 20_000 });
    await waitUntil(async () => (await outerA.inspect(y)).queued > 0);
    const refused = await innerB.acquire(x, { ttlMs: 30_000, waitTimeoutMs: 20_000 }).catch((e) => e);
    expect(refused).toBeInstanceOf(DeadlockError);
    expect(refused.cycle.map((e: WaitEdge) => [e.waiter.clientId, e.lock, e.blocker.clientId])).toEqual([
      [innerB.clientId, x, outerA.clientId],
      [innerA.clientId, y, outerB.clientId],
    ]);
    expect(refused.message).toContain(
      `client ${innerA.clientId} (enclosed by client ${outerA.clientId}, which waits for it)`,
    );
    expect(refused.message).toContain(
      `client ${outerB.clientId}, which encloses this one, holds ${y}: take these locks in one order`,
    );
    // The refused wait left x's queue; the other waits on, and is served when y is released.
    expect((await outerA.inspect(x)).queued).toBe(0);
    await outerB.release(by);
    const granted = await first;
    expect(granted.name).toBe(y);
    await innerA.release(granted);
    await outerA.release(ax);
  });

  it('a wait for a lock its enclosing client holds is a cycle of one, refused at once (it would wait for its own end)', async () => {
    const x = lockName('x');
    const outer = client('outer');
    const held = await outer.acquire(x, { ttlMs: 30_000 });
    const inner = new LockClient({
      endpoint: stack.url,
      enclosing: { clientId: outer.clientId, holding: [x] },
    });
    clients.push(inner);
    const refused = await inner.acquire(x, { ttlMs: 30_000, waitTimeoutMs: 20_000 }).catch((e) => e);
    expect(refused).toBeInstanceOf(DeadlockError);
    expect(refused.cycle.map((e: WaitEdge) => [e.waiter.clientId, e.lock, e.blocker.clientId])).toEqual([
      [inner.clientId, x, outer.clientId],
    ]);
    expect(refused.message).toContain(
      `client ${outer.clientId}, which encloses this one, holds ${x}: it would wait for its own end`,
    );
    // Both shared: no wait at all.
    await outer.release(held);
    const reader = await outer.acquire(x, { ttlMs: 30_000, mode: 'shared' });
    const alongside = await inner.acquire(x, { ttlMs: 30_000, mode: 'shared', waitTimeoutMs: 5_000 });
    await inner.release(alongside);
    await outer.release(reader);
    // A semaphore of one: its one place is the enclosing client's.
    const one = { mode: 'shared', maxHolders: 1 } as const;
    const only = await outer.acquire(x, { ttlMs: 30_000, ...one });
    const full = await inner.acquire(x, { ttlMs: 30_000, ...one, waitTimeoutMs: 20_000 }).catch((e) => e);
    expect(full).toBeInstanceOf(DeadlockError);
    await outer.release(only);
  });

  it('bad enclosing is a 400 that changes nothing', async () => {
    const http = signedClient(stack.url);
    const name = lockName('bad');
    const entry = (holding: string[], clientId = 'c0') => ({ client_id: clientId, holding });
    for (const enclosing of [
      'a',
      { client_id: 'c0', holding: ['a'] }, // one client: still a list
      [{}],
      [{ client_id: 'c0' }],
      [entry([])],
      [entry(['a'], 'has space')],
      [entry(['x/acquire'])],
      [entry(['a', 'a'])],
      [{ ...entry(['a']), extra: 1 }],
      Array.from({ length: 9 }, (_, i) => entry([`l/${i}`], `c${i}`)),
      [
        entry(Array.from({ length: 20 }, (_, i) => `a/${i}`)),
        entry(
          Array.from({ length: 13 }, (_, i) => `b/${i}`),
          'c1',
        ),
      ],
    ]) {
      const res = await http.post(`/api/v1/locks/${name}/acquire`, {
        client_id: 'c1',
        ttl_ms: 5_000,
        wait_timeout_ms: 1_000,
        enclosing,
      });
      expect(res.status, JSON.stringify(enclosing)).toBe(400);
      expect(res.body.error.code).toBe('INVALID_REQUEST');
      expect(res.body.error.message).toMatch(/enclosing/);
    }
    const view = await http.get(`/api/v1/locks/${name}`);
    expect(view.body.holders ?? []).toEqual([]);
  });

  it('bad holding is a 400 that changes nothing', async () => {
    const http = signedClient(stack.url);
    const name = lockName('bad');
    for (const holding of [
      'a',
      [1],
      ['a b'],
      ['x/acquire'],
      Array.from({ length: 33 }, (_, i) => `h/${i}`),
      ['d', 'd'],
    ]) {
      const res = await http.post(`/api/v1/locks/${name}/acquire`, {
        client_id: 'c1',
        ttl_ms: 5_000,
        wait_timeout_ms: 1_000,
        holding,
      });
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe('INVALID_REQUEST');
      expect(res.body.error.message).toMatch(/holding/);
    }
    const view = await http.get(`/api/v1/locks/${name}`);
    expect(view.body.holders ?? []).toEqual([]);
    const waits = await http.get(`/api/v1/locks/${name}/waits`);
    expect(waits.status).toBe(200);
    expect(waits.body).toEqual({ lock: name, edges: [], cycles: [], complete: true });
  });
});
