/**
 * Hierarchical locks end to end: the local stack on DynamoDB Local with `tenants/` as a
 * hierarchical namespace, used through the SDK (and the HTTP API for the refusal's body). A lock on
 * a parent keeps every lock below it out and the reverse; shared grants mix as the matrix says; a
 * wait for a parent is served when the last grant below it ends, released or lapsed; twelve
 * clients racing over a parent and its children for 20 s never overlap, and none of them
 * starves; a wait below the caller's own lock is refused as a deadlock; names outside the
 * namespace are untouched by it.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalStack } from '../../local/stack';
import { DeadlockError, LockClient, LockHeldError } from '../../sdk/index';
import { runCli, stackFlags } from '../support/cli-process';
import { signedClient } from '../support/signed-fetch';
import { startTestStack } from '../support/stack';

let stack: LocalStack;
const clients: LockClient[] = [];

beforeAll(async () => {
  stack = await startTestStack('hierarchy', { hierarchicalPrefixes: ['tenants/'] });
});
afterAll(async () => {
  for (const c of clients) c.close();
  await stack.stop();
});

const client = (clientId: string, ws = true) => {
  const c = new LockClient({
    endpoint: stack.url,
    clientId: `${clientId}-${randomUUID().slice(0, 8)}`,
    ...(ws ? { wsEndpoint: stack.wsUrl } : {}),
  });
  clients.push(c);
  return c;
};
const tenant = () => `tenants/${randomUUID().slice(0, 8)}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('hierarchical locks on DynamoDB Local', () => {
  it('a parent keeps its subtree out, a child keeps its ancestors out, and the refusal says who', async () => {
    const a = client('a');
    const b = client('b');
    const acme = tenant();
    const parent = await a.tryAcquire(acme, { ttlMs: 30_000 });
    expect(parent).not.toBeNull();
    const refused = await b.tryAcquire(`${acme}/records/1`).catch((e: unknown) => e);
    expect(refused).toBeNull();
    // Over HTTP the body names the lock in the way and why.
    const http = signedClient(stack.url);
    const body = await http.post(`/api/v1/locks/${acme}/records/1/acquire`, {
      client_id: 'c',
      ttl_ms: 5_000,
    });
    expect(body.status).toBe(200);
    expect(body.body).toMatchObject({
      acquired: false,
      blocked_by: { lock: acme, reason: `${acme} is held exclusively` },
    });
    await a.release(parent as NonNullable<typeof parent>);

    const child = await b.tryAcquire(`${acme}/records/1`, { ttlMs: 30_000 });
    expect(child).not.toBeNull();
    // withLock without a wait fails at once, with what keeps it out.
    const parentRefused = await a
      .withLock(acme, { waitTimeoutMs: 0 }, async () => 'granted')
      .catch((e: unknown) => e);
    expect(parentRefused).toBeInstanceOf(LockHeldError);
    expect((parentRefused as LockHeldError).blockedBy?.lock).toBe(`${acme}/records/1`);
    // A sibling and the parent's other subtrees are free.
    const sibling = await a.tryAcquire(`${acme}/records/2`);
    expect(sibling).not.toBeNull();
    const view = await a.inspect(acme);
    expect(view).toMatchObject({ state: 'free', below: { exclusive: 2, shared: 0 } });
    await a.release(sibling as NonNullable<typeof sibling>);
    await b.release(child as NonNullable<typeof child>);
    expect((await a.inspect(acme)).below).toBeUndefined();
  });

  it('shared grants follow the matrix: readers above and below mix, a writer below keeps a reader above out', async () => {
    const a = client('a');
    const b = client('b');
    const acme = tenant();
    const reader = await a.tryAcquire(acme, { mode: 'shared' });
    const childReader = await b.tryAcquire(`${acme}/records/1`, { mode: 'shared' });
    expect(reader && childReader).toBeTruthy();
    expect(await b.tryAcquire(`${acme}/records/2`)).toBeNull(); // X below an S: refused
    await a.release(reader as NonNullable<typeof reader>);
    const writer = await b.tryAcquire(`${acme}/records/2`);
    expect(writer).not.toBeNull();
    expect(await a.tryAcquire(acme, { mode: 'shared' })).toBeNull(); // S above an X: refused
    await b.release(writer as NonNullable<typeof writer>);
    await b.release(childReader as NonNullable<typeof childReader>);
  });

  it('a wait for a parent is served when the last grant below it ends: one released, one lapsed', async () => {
    const acme = tenant();
    const workers = [client('w1'), client('w2')];
    const [w1, w2] = workers as [LockClient, LockClient];
    const released = await w1.tryAcquire(`${acme}/records/1`, { ttlMs: 30_000 });
    // Held by a worker that "crashes": never released, its lease lapses in 1.5 s.
    const crashed = await w2.tryAcquire(`${acme}/records/2`, { ttlMs: 1_500 });
    expect(released && crashed).toBeTruthy();
    const migrator = client('migrator');
    const started = Date.now();
    const migration = migrator.acquire(acme, { ttlMs: 30_000, waitTimeoutMs: 15_000 });
    await sleep(300);
    expect((await migrator.inspect(acme)).queued).toBe(1);
    await w1.release(released as NonNullable<typeof released>);
    const lease = await migration;
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_400);
    // While the parent is held, every record waits or is refused.
    expect(await w1.tryAcquire(`${acme}/records/3`)).toBeNull();
    const record = w1.acquire(`${acme}/records/3`, { ttlMs: 5_000, waitTimeoutMs: 15_000 });
    await sleep(300);
    await migrator.release(lease);
    // Woken by the parent's release (its wake mark), not by polling.
    const recordLease = await record;
    expect(recordLease.fencingToken).toBeGreaterThan(0);
    await w1.release(recordLease);
  });

  it('twelve clients race over a parent and its children for 20 s: never two conflicting holders, nobody starved', async () => {
    const acme = tenant();
    const children = [1, 2, 3].map((i) => `${acme}/records/${i}`);
    type Held = { x: number; s: number };
    const held = new Map<string, Held>([acme, ...children].map((n) => [n, { x: 0, s: 0 }]));
    const conflicts: string[] = [];
    const grants = new Map<string, number>();
    /** Grants made while every client still took its turns (before the race's end), by level. */
    const duringRace = { parent: 0, child: 0 };
    const tokens = new Map<string, number>();
    const at = (name: string) => held.get(name) as Held;
    const enter = (name: string, exclusive: boolean, token: number) => {
      const me = at(name);
      const below = name === acme ? children.map(at) : [];
      const above = name === acme ? [] : [at(acme)];
      if (exclusive && (me.x || me.s || below.some((h) => h.x || h.s) || above.some((h) => h.x || h.s)))
        conflicts.push(`X ${name} beside another holder`);
      if (!exclusive && (me.x || below.some((h) => h.x) || above.some((h) => h.x)))
        conflicts.push(`S ${name} beside an exclusive holder`);
      if ((tokens.get(name) ?? 0) >= token) conflicts.push(`token ${token} of ${name} did not grow`);
      tokens.set(name, token);
      if (exclusive) me.x++;
      else me.s++;
    };
    const leave = (name: string, exclusive: boolean) => {
      if (exclusive) at(name).x--;
      else at(name).s--;
    };
    // 3 writers and 1 reader of the parent, 8 writers of the children (HTTP and WebSocket waits).
    const roles = [
      ...[0, 1, 2].map(() => ({ parent: true, shared: false })),
      { parent: true, shared: true },
      ...Array.from({ length: 8 }, () => ({ parent: false, shared: false })),
    ];
    const until = Date.now() + 20_000;
    await Promise.all(
      roles.map(async (role, i) => {
        const c = client(`racer${i}`, i % 3 !== 0);
        let n = 0;
        while (Date.now() < until) {
          const name = role.parent ? acme : (children[(i + n++) % children.length] as string);
          const mode = role.shared ? ('shared' as const) : ('exclusive' as const);
          await c.withLock(name, { mode, ttlMs: 10_000, waitTimeoutMs: 30_000 }, async (lease) => {
            enter(name, !role.shared, lease.fencingToken);
            if (Date.now() < until) duringRace[role.parent ? 'parent' : 'child']++;
            await sleep(role.parent ? 30 : 10);
            leave(name, !role.shared);
          });
          grants.set(c.clientId, (grants.get(c.clientId) ?? 0) + 1);
        }
      }),
    );
    expect(conflicts).toEqual([]);
    // No level starves the other: waits across levels go in order of arrival, so the children's
    // callers (8 of 12) took turns while the parent's callers still took theirs, not only once
    // those stopped (before that ordering: 0 grants below the parent during the race). A share,
    // not a count per client: late in a CI run DynamoDB Local is several times slower, and a
    // client queued when the race ends is granted after it.
    expect(grants.size).toBe(12);
    for (const count of grants.values()) expect(count).toBeGreaterThan(0);
    expect(duringRace.child).toBeGreaterThanOrEqual((duringRace.parent + duringRace.child) / 4);
    const view = await client('check').inspect(acme);
    expect(view.below).toBeUndefined();
    expect(view.queued).toBe(0);
  }, 60_000);

  it("a nested withLock below the caller's own lock is refused as a deadlock, not left to wait for itself", async () => {
    const a = client('a');
    const acme = tenant();
    const inner = await a.withLock(acme, { ttlMs: 30_000 }, () =>
      a
        .withLock(`${acme}/records/1`, { waitTimeoutMs: 20_000 }, async () => 'ran below its own lock')
        .catch((e: unknown) => e),
    );
    expect(inner).toBeInstanceOf(DeadlockError);
    expect((inner as DeadlockError).cycle).toEqual([
      expect.objectContaining({ lock: `${acme}/records/1`, blockerIs: 'holder', through: acme }),
    ]);
    expect((await a.inspect(`${acme}/records/1`)).queued).toBe(0);
  });

  it('latchkey show --tree shows the subtree with what each lock has below it', async () => {
    const a = client('a');
    const acme = tenant();
    const one = await a.tryAcquire(`${acme}/records/1`);
    const two = await a.tryAcquire(`${acme}/records/2`, { mode: 'shared' });
    const ran = await runCli([...stackFlags(stack), 'show', '--tree', acme]);
    expect(ran.code, ran.stderr).toBe(0);
    const lines = ran.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^LOCK\s+STATE\s+HOLDER\s+MODE\s+BELOW$/);
    expect(lines[1]).toMatch(new RegExp(`^${acme}\\s+free\\s+-\\s+-\\s+x1 s1$`));
    expect(ran.stdout).toMatch(new RegExp(`\\n {2}${acme}/records\\s+free\\s+-\\s+-\\s+x1 s1`));
    expect(ran.stdout).toMatch(
      new RegExp(`\\n {4}${acme}/records/1\\s+held\\s+a-\\S+ \\(yours\\)\\s+exclusive\\s+-`),
    );
    // latchkey acquire says what keeps the parent out.
    const refused = await runCli([...stackFlags(stack), 'acquire', acme, '--ttl', '1m']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(
      new RegExp(`lock ${acme} is not available: ${acme}/records/1, below ${acme}, is held exclusively`),
    );
    await a.release(one as NonNullable<typeof one>);
    await a.release(two as NonNullable<typeof two>);
  });

  it('a grant held through a session keeps its parent out until the session ends', async () => {
    const a = client('a');
    const b = client('b');
    const acme = tenant();
    const session = await a.session({ ttlMs: 10_000 });
    const child = await session.tryAcquire(`${acme}/records/1`);
    expect(child).not.toBeNull();
    expect(await b.tryAcquire(acme)).toBeNull();
    expect((await b.inspect(acme)).below).toEqual({ exclusive: 1, shared: 0 });
    await session.close();
    const parent = await b.tryAcquire(acme);
    expect(parent).not.toBeNull();
    await b.release(parent as NonNullable<typeof parent>);
  });

  it('a name outside the namespace is a plain lock: its parent does not cover it', async () => {
    const a = client('a');
    const b = client('b');
    const base = `jobs/${randomUUID().slice(0, 8)}`;
    const parent = await a.tryAcquire(base);
    const child = await b.tryAcquire(`${base}/nightly`);
    expect(parent && child).toBeTruthy();
    await a.release(parent as NonNullable<typeof parent>);
    await b.release(child as NonNullable<typeof child>);
  });
});
