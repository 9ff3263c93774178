/**
 * The SDK against the local stack: withLock, waiting over WebSocket (and
 * over HTTP without it), typed errors, sessions, and a lease whose service
 * dies mid-lease.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type WebSocket from 'ws';
import { freePort } from '../../local/dynamodb-local';
import type { LocalStack } from '../../local/stack';
import {
  FenceGuard,
  ForbiddenError,
  InvalidRequestError,
  Lease,
  LeaseLostError,
  LockClient,
  LockHeldError,
  SessionExpiredError,
  UnauthorizedError,
  UnavailableError,
  WaitTimeoutError,
} from '../../sdk/index';
import { dynamoEndpoint } from '../support/dynamo';
import { startServiceProcess } from '../support/service-process';
import { ALICE, startTestStack } from '../support/stack';

let stack: LocalStack;
const clients: LockClient[] = [];

beforeAll(async () => {
  stack = await startTestStack('sdk');
});
afterAll(async () => {
  for (const c of clients) c.close();
  await stack.stop();
});

const client = (
  options: {
    ws?: boolean;
    clientId?: string;
    credentials?: { accessKeyId: string; secretAccessKey: string };
  } = {},
) => {
  const c = new LockClient({
    endpoint: stack.url,
    ...(options.ws === false ? {} : { wsEndpoint: stack.wsUrl }),
    ...(options.clientId ? { clientId: options.clientId } : {}),
    ...(options.credentials ? { credentials: { ...options.credentials } } : {}),
  });
  clients.push(c);
  return c;
};
const lockName = () => `sdk/${randomUUID()}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('withLock', () => {
  it('runs the callback once per grant, never two at once, with growing tokens, and returns its value', async () => {
    const name = lockName();
    const inside: number[] = [];
    let running = 0;
    let maxRunning = 0;
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        client().withLock(name, { ttlMs: 5_000, waitTimeoutMs: 30_000 }, async (lease, signal) => {
          running++;
          maxRunning = Math.max(maxRunning, running);
          inside.push(lease.fencingToken);
          expect(signal.aborted).toBe(false);
          // A live lease of at most its ttl (how much is left depends on how long the grant took).
          expect(lease.remainingMs()).toBeGreaterThan(0);
          expect(lease.remainingMs()).toBeLessThanOrEqual(5_000);
          await sleep(30);
          running--;
          return i;
        }),
      ),
    );
    expect(results).toEqual([0, 1, 2, 3, 4, 5]);
    expect(maxRunning).toBe(1);
    expect(inside).toHaveLength(6);
    expect([...inside].sort((a, b) => a - b)).toEqual(inside); // granted in token order
    expect((await client().inspect(name)).state).toBe('free'); // released after each
  });

  it('renews in the background: the callback outlives its ttl with the same lease', async () => {
    const name = lockName();
    const c = client();
    // Over two ttls; a ttl of 3 s leaves a renewal about 2 s to be confirmed, even on a loaded machine.
    const token = await c.withLock(name, { ttlMs: 3_000 }, async (lease, signal) => {
      await sleep(6_500);
      expect(signal.aborted).toBe(false);
      expect((await c.inspect(name)).holders[0].fencing_token).toBe(lease.fencingToken);
      return lease.fencingToken;
    });
    expect(typeof token).toBe('number');
  });

  it('aborts the signal at once when the lease is lost (someone else holds it now), and throws that, not the result', async () => {
    const name = lockName();
    const c = client();
    let reason: unknown;
    const outcome = c.withLock(name, { ttlMs: 1_200 }, async (lease, signal) => {
      // Simulate a pause longer than the lease: the grant is released from under the holder (by
      // another Lease object for it, as another process could: this one's keeper knows nothing).
      const sameGrant = {
        lock: lease.name,
        client_id: lease.clientId,
        fencing_token: lease.fencingToken,
        expires_at: new Date().toISOString(),
        remaining_ms: 1_000,
        ttl_ms: 1_200,
      };
      await c.release(new Lease(sameGrant, performance.now()));
      const other = await client().tryAcquire(name, { ttlMs: 5_000 });
      expect(other?.fencingToken).toBeGreaterThan(lease.fencingToken);
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      reason = signal.reason;
      return 'finished after the lease was lost';
    });
    await expect(outcome).rejects.toBeInstanceOf(LeaseLostError);
    expect(await outcome.catch((e) => e)).toBe(reason);
  });

  it('a callback that releases its lease itself, then works on unlocked, returns its result (nothing was lost)', async () => {
    const name = lockName();
    const c = client();
    const value = await c.withLock(name, { ttlMs: 1_200 }, async (lease, signal) => {
      expect(await c.release(lease)).toEqual({ remainingReentries: 0 });
      await sleep(1_500); // past renewals and the lease's deadline: nothing renews or aborts
      expect(signal.aborted).toBe(false);
      return 'done';
    });
    expect(value).toBe('done');
    expect(await client().tryAcquire(name, { ttlMs: 1_000 })).not.toBeNull();
  });

  it('a callback that blocks the event loop past its lease gets LeaseLostError, not its result', async () => {
    const name = lockName();
    const c = client();
    const outcome = c.withLock(name, { ttlMs: 1_000 }, (lease) => {
      const until = performance.now() + 1_300; // no timer runs: nothing renews, nothing aborts
      while (performance.now() < until) {}
      return lease.fencingToken;
    });
    const error = await outcome.catch((e) => e);
    expect(error).toBeInstanceOf(LeaseLostError);
    expect(error.message).toMatch(/passed its deadline before the callback settled/);
    // Meanwhile anyone could have taken it: the lease had ended on the server too.
    expect(await client().tryAcquire(name, { ttlMs: 1_000 })).not.toBeNull();
  });

  it('fails with LockHeldError without a wait, and WaitTimeoutError when the wait runs out', async () => {
    const name = lockName();
    const holder = client();
    const lease = await holder.tryAcquire(name, { ttlMs: 5_000 });
    expect(lease).not.toBeNull();
    await expect(client().withLock(name, { ttlMs: 1_000 }, async () => 1)).rejects.toBeInstanceOf(
      LockHeldError,
    );
    expect(await client().tryAcquire(name, { ttlMs: 1_000 })).toBeNull();
    await expect(client().acquire(name, { ttlMs: 1_000, waitTimeoutMs: 300 })).rejects.toBeInstanceOf(
      WaitTimeoutError,
    );
    await expect(
      client({ ws: false }).acquire(name, { ttlMs: 1_000, waitTimeoutMs: 300 }),
    ).rejects.toBeInstanceOf(WaitTimeoutError);
  });

  it('an aborted wait leaves the queue: the lock is not handed to it afterwards', async () => {
    const name = lockName();
    const holder = client();
    const lease = await holder.tryAcquire(name, { ttlMs: 5_000 });
    const controller = new AbortController();
    const waiting = client().acquire(name, {
      ttlMs: 2_000,
      waitTimeoutMs: 10_000,
      signal: controller.signal,
    });
    await sleep(200);
    controller.abort(new Error('changed my mind'));
    await expect(waiting).rejects.toThrow('changed my mind');
    await sleep(100);
    await holder.release(lease as NonNullable<typeof lease>);
    await sleep(300);
    expect(await holder.inspect(name)).toMatchObject({ state: 'free', queued: 0 });
  });

  it('waits over HTTP when there is no WebSocket API', async () => {
    const name = lockName();
    const holder = client();
    const lease = await holder.tryAcquire(name, { ttlMs: 5_000 });
    const waiting = client({ ws: false }).acquire(name, { ttlMs: 2_000, waitTimeoutMs: 10_000 });
    await sleep(200);
    await holder.release(lease as NonNullable<typeof lease>);
    expect((await waiting).fencingToken).toBeGreaterThan((lease as NonNullable<typeof lease>).fencingToken);
  });
});

describe('a wait for a lock this very client holds', () => {
  /** Acquire requests the stack has answered so far (its /metrics, every outcome). */
  const acquireRequests = async () => {
    const text = await (await fetch(new URL('/metrics', stack.url))).text();
    let n = 0;
    for (const line of text.split('\n'))
      if (line.startsWith('latchkey_requests_total{') && line.includes('operation="acquire"'))
        n += Number(line.slice(line.lastIndexOf(' ') + 1));
    return n;
  };
  type Held = NonNullable<Awaited<ReturnType<LockClient['tryAcquire']>>>;

  // Asking again at once spun until the hold ended: about 10 requests a second over WebSocket, 100 over HTTP.
  for (const ws of [true, false])
    it(`pauses on the hold instead of asking again, and resumes at its release through this client (${ws ? 'WebSocket' : 'HTTP'})`, async () => {
      const name = lockName();
      const c = client({ ws, clientId: `own-${randomUUID()}` });
      const first = (await c.tryAcquire(name, { ttlMs: 20_000 })) as Held;
      const before = await acquireRequests();
      const second = c.acquire(name, { ttlMs: 5_000, waitTimeoutMs: 30_000 });
      await sleep(1_500);
      expect((await acquireRequests()) - before).toBeLessThanOrEqual(2);
      await c.release(first);
      const lease = await second;
      // Resumed by the release, long before the 20 s hold's lease would have ended.
      expect(lease.fencingToken).toBeGreaterThan(first.fencingToken);
      expect(Date.now()).toBeLessThan((first.expiresAt as Date).getTime() - 10_000);
      await c.release(lease);
    });

  it('tasks sharing one client take turns, each resumed by the release before it, not by a lease end', async () => {
    const name = lockName();
    const c = client({ clientId: `own-${randomUUID()}` });
    const before = await acquireRequests();
    const started = Date.now();
    let running = 0;
    const tokens = await Promise.all(
      Array.from({ length: 4 }, () =>
        c.withLock(name, { ttlMs: 20_000, waitTimeoutMs: 30_000 }, async (lease) => {
          expect(++running).toBe(1);
          await sleep(30);
          running--;
          return lease.fencingToken;
        }),
      ),
    );
    expect(new Set(tokens).size).toBe(4);
    // Far less than one 20 s lease: nobody waited for a lease end.
    expect(Date.now() - started).toBeLessThan(10_000);
    // Each task asks once, and once more after each release it waited behind (at most 1 + 2 + 3 + 4).
    expect((await acquireRequests()) - before).toBeLessThanOrEqual(10);
  });

  it('resumes at the end of a hold it did not release, and a wait that runs out first says whose hold it was', async () => {
    const name = lockName();
    const clientId = `own-${randomUUID()}`;
    const c = client({ clientId });
    const forgotten = (await c.tryAcquire(name, { ttlMs: 2_500 })) as Held;
    const refused = c.acquire(name, { ttlMs: 5_000, waitTimeoutMs: 1_000 });
    await expect(refused).rejects.toBeInstanceOf(WaitTimeoutError);
    await expect(refused).rejects.toMatchObject({
      heldByClient: clientId,
      message: expect.stringMatching(
        /held by this client .* itself.*tryAcquire\(name, \{ reentrant: true \}\)/,
      ),
    });
    const before = await acquireRequests();
    const lease = await c.acquire(name, { ttlMs: 5_000, waitTimeoutMs: 10_000 });
    expect(lease.fencingToken).toBeGreaterThan(forgotten.fencingToken);
    // One ask, one after the lease end (retry_after_ms), perhaps one more if it came a little early.
    expect((await acquireRequests()) - before).toBeLessThanOrEqual(3);
    await c.release(lease);
  });
});

describe('waiting over WebSocket', () => {
  /** The WebSocket connection of a client's waiter (private: a test drops it to play a network failure). */
  const connectionOf = (c: LockClient) =>
    (c as unknown as { waiter: { connection: Promise<{ ws: WebSocket; id: string }> | undefined } }).waiter
      .connection;

  it('waits as its own principal: the connection and the HTTP acquire are signed by the same key', async () => {
    const name = lockName();
    const holder = client();
    const lease = (await holder.tryAcquire(name, { ttlMs: 5_000 })) as NonNullable<
      Awaited<ReturnType<LockClient['tryAcquire']>>
    >;
    const alice = client({ credentials: ALICE });
    const waiting = alice.acquire(name, { ttlMs: 5_000, waitTimeoutMs: 10_000 });
    await expect.poll(async () => (await holder.inspect(name)).queued).toBe(1);
    expect((await holder.inspect(name)).waiters[0]).toMatchObject({ via: 'websocket' });
    await holder.release(lease);
    const got = await waiting;
    expect(got.fencingToken).toBeGreaterThan(lease.fencingToken);
    // Alice's lease: local sees it held but not its token, and cannot release it.
    expect((await holder.inspect(name)).holders[0]).toMatchObject({ mine: false });
    await expect(holder.release(got)).rejects.toBeInstanceOf(ForbiddenError);
    await alice.release(got);
  });

  it('a wait whose connection drops still gets the lock within its time', async () => {
    const name = lockName();
    const holder = client();
    const lease = (await holder.tryAcquire(name, { ttlMs: 5_000 })) as NonNullable<
      Awaited<ReturnType<LockClient['tryAcquire']>>
    >;
    const waiter = client();
    const waiting = waiter.acquire(name, { ttlMs: 5_000, waitTimeoutMs: 10_000 });
    await expect.poll(async () => (await holder.inspect(name)).queued).toBe(1);
    const dropped = await connectionOf(waiter);
    dropped?.ws.terminate(); // the network drops the connection: the waiter reconnects and asks again
    await sleep(500);
    await holder.release(lease);
    const got = await waiting;
    expect(got.fencingToken).toBeGreaterThan(lease.fencingToken);
    expect((await connectionOf(waiter))?.id).not.toBe(dropped?.id);
  });
});

describe('typed errors', () => {
  it('InvalidRequestError, UnauthorizedError, UnavailableError (after retries)', async () => {
    await expect(client().tryAcquire(lockName(), { ttlMs: 5 })).rejects.toBeInstanceOf(InvalidRequestError);
    const forged = new LockClient({
      endpoint: stack.url,
      credentials: { accessKeyId: 'local', secretAccessKey: 'wrong' },
    });
    await expect(forged.tryAcquire(lockName(), { ttlMs: 1_000 })).rejects.toBeInstanceOf(UnauthorizedError);
    const nowhere = new LockClient({ endpoint: `http://127.0.0.1:${await freePort()}` });
    const t = Date.now();
    const error = await nowhere.tryAcquire(lockName(), { ttlMs: 1_000 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnavailableError);
    expect((error as UnavailableError).retryable).toBe(true);
    expect(Date.now() - t).toBeLessThan(20_000);
  });
});

describe('sessions', () => {
  it('one heartbeat keeps its locks past their ttl; closing releases them; done resolves', async () => {
    const c = client();
    const session = await c.session({ ttlMs: 1_000 });
    const names = [lockName(), lockName()];
    const leases = await Promise.all(names.map((n) => session.tryAcquire(n)));
    expect(leases.every((l) => l?.sessionId === session.id)).toBe(true);
    await sleep(2_000); // two ttls: only heartbeats keep it
    expect(session.signal.aborted).toBe(false);
    for (const n of names) expect((await c.inspect(n)).holders[0].session_id).toBe(session.id);
    await session.close();
    expect(await session.done).toBeUndefined();
    for (const n of names) expect((await c.inspect(n)).state).toBe('free');
  });

  it('signals a session lost on the server (ended from elsewhere) at its next heartbeat', async () => {
    const c = client();
    const session = await c.session({ ttlMs: 1_500 });
    await c.delete(`/api/v1/sessions/${session.id}?client_id=${encodeURIComponent(c.clientId)}`);
    const reason = await session.done;
    expect(reason).toBeInstanceOf(SessionExpiredError);
    expect(session.signal.aborted).toBe(true);
  });
});

describe('FenceGuard', () => {
  it('refuses a token lower than one already seen for that lock', async () => {
    const name = lockName();
    const first = await client().tryAcquire(name, { ttlMs: 1_000 });
    const guard = new FenceGuard();
    guard.check(name, (first as NonNullable<typeof first>).fencingToken);
    await client()
      .release(first as NonNullable<typeof first>)
      .catch(() => {});
    const second = await client().tryAcquire(name, { ttlMs: 1_000 });
    guard.check(name, (second as NonNullable<typeof second>).fencingToken);
    expect(() => guard.check(name, (first as NonNullable<typeof first>).fencingToken)).toThrow(/stale/);
  });
});

describe('a service that dies mid-lease', () => {
  const startService = () =>
    startServiceProcess(['--table', `dies-${randomUUID()}`], { AWS_ENDPOINT_URL_DYNAMODB: dynamoEndpoint() });

  it('aborts the signal before the lease’s local deadline', { timeout: 60_000 }, async () => {
    const service = await startService();
    onTestFinished(() => {
      if (service.child.exitCode === null && service.child.signalCode === null) service.child.kill('SIGKILL');
    });
    const c = new LockClient({ endpoint: service.url });
    let abortedAt = 0;
    let deadline = 0;
    const error = await c
      .withLock(lockName(), { ttlMs: 2_000 }, async (lease, signal) => {
        service.child.kill('SIGKILL');
        await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
        abortedAt = performance.now();
        deadline = lease.deadline;
        expect(signal.reason).toBeInstanceOf(LeaseLostError);
      })
      .catch((e: unknown) => e);
    // Not confirmed is lost (the release in `finally` cannot reach the dead service, and says nothing).
    expect(error).toBeInstanceOf(LeaseLostError);
    expect(abortedAt).toBeGreaterThan(0);
    expect(abortedAt).toBeLessThan(deadline);
  });
});

describe('an SDK script', () => {
  it('keeps nothing alive once its wait is served: the idle WebSocket connection holds no process open', {
    timeout: 30_000,
  }, async () => {
    const name = lockName();
    const holder = new LockClient({ endpoint: stack.url });
    const lease = await holder.tryAcquire(name, { ttlMs: 30_000 });
    const script = join(mkdtempSync(join(tmpdir(), 'latchkey-sdk-')), 'waiter.mts');
    // What keeps the event loop alive right after withLock returns (Node lists only what does).
    writeFileSync(
      script,
      [
        `import { LockClient } from ${JSON.stringify(join(process.cwd(), 'sdk/index.ts'))};`,
        `const client = new LockClient({ endpoint: ${JSON.stringify(stack.url)}, wsEndpoint: ${JSON.stringify(stack.wsUrl)} });`,
        `await client.withLock(${JSON.stringify(name)}, { waitTimeoutMs: 20_000 }, async () => {});`,
        'console.log(JSON.stringify(process.getActiveResourcesInfo()));',
      ].join('\n'),
    );
    const child = spawn(
      process.execPath,
      ['--import', createRequire(import.meta.url).resolve('tsx'), script],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    // Served over the WebSocket: the wait has joined the queue before the holder lets go.
    await expect.poll(async () => (await holder.inspect(name)).queued, { timeout: 20_000 }).toBe(1);
    await holder.release(lease as NonNullable<typeof lease>);
    const code = await new Promise((resolve) => child.on('close', resolve));
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).not.toContain('TCPSocketWrap');
  });
});
