/**
 * Waiting, end to end through the local stack: real WebSocket connections
 * that only deliver (a client says `hello` to learn its connection id, and
 * asks for a wait over HTTP naming it), the stream notifier fed from
 * DynamoDB Local's stream, and the timer queue.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpWaitRef } from '../../lambdas/core/items';
import { localPrincipal } from '../../lambdas/core/principal';
import { RELAY_CLIENT_ID } from '../../lambdas/service/relay';
import type { LocalStack } from '../../local/stack';
import { queueVanishedWaiter, testServices } from '../support/dynamo';
import { signedClient } from '../support/signed-fetch';
import { ALICE, BOB, startTestStack } from '../support/stack';
import { type AnyFrame, type Credentials, TestSocket } from '../support/ws-client';

let stack: LocalStack;
let api: ReturnType<typeof signedClient>;
const sockets: TestSocket[] = [];

beforeAll(async () => {
  stack = await startTestStack('wait'); // principals local, alice and bob
  api = signedClient(stack.url);
});
afterAll(async () => {
  await Promise.all(sockets.map((s) => s.close()));
  await stack.stop();
});

const open = async (clientId: string, credentials?: Credentials) => {
  const socket = await TestSocket.open(stack, clientId, credentials ? { credentials } : {});
  sockets.push(socket);
  return socket;
};
const lockName = () => `wait/${randomUUID()}`;
/** A lease long enough to outlast a queue's filling on a loaded machine (tests release it). */
const acquireHttp = async (lock: string, client: string, extra: Record<string, unknown> = {}) =>
  (await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: client, ttl_ms: 60_000, ...extra })).body;
const releaseHttp = async (lock: string, client: string, token: number) =>
  api.post(`/api/v1/locks/${lock}/release`, { client_id: client, fencing_token: token });
const inspect = async (lock: string) => (await api.get(`/api/v1/locks/${lock}`)).body;
const granted = (f: AnyFrame) => f.type === 'granted';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Queues one socket per entry, in order, each after the previous one was told its position. */
async function queueInOrder(lock: string, priorities: readonly number[]) {
  const waiters: { socket: TestSocket; client: string; position: number }[] = [];
  for (const [i, priority] of priorities.entries()) {
    const client = `w${i}`;
    const socket = await open(client);
    const answer = await socket.acquire(lock, { priority, with_position: true });
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ acquired: false, queued: true, lock, request_id: answer.requestId });
    waiters.push({ socket, client, position: answer.body.position });
  }
  return waiters;
}

/** Releases the lock each time a waiter gets it, and returns who got it, in order, with their tokens. */
async function drain(
  lock: string,
  waiters: { socket: TestSocket; client: string }[],
  first: { client: string; token: number },
) {
  const served: { client: string; token: number }[] = [];
  let holder = first;
  const grantsSoFar = () => waiters.flatMap((w) => w.socket.frames.filter(granted).map((f) => ({ w, f })));
  for (let i = 0; i < waiters.length; i++) {
    expect((await releaseHttp(lock, holder.client, holder.token)).status).toBe(200);
    await expect.poll(() => grantsSoFar().length, { timeout: 10_000 }).toBeGreaterThan(i);
    const all = grantsSoFar();
    expect(all).toHaveLength(i + 1); // one release woke exactly one waiter
    const { w, f } = all.sort((a, b) => a.f.receivedAt - b.f.receivedAt)[i] as (typeof all)[number];
    served.push({ client: w.client, token: f.fencing_token });
    holder = { client: w.client, token: f.fencing_token };
  }
  return served;
}

describe('the queue', () => {
  it('serves 8 waiters in exactly the order they queued, one release waking one waiter', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'holder');
    const waiters = await queueInOrder(lock, [0, 0, 0, 0, 0, 0, 0, 0]);
    expect(waiters.map((w) => w.position)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const served = await drain(lock, waiters, { client: 'holder', token: held.fencing_token });
    expect(served.map((s) => s.client)).toEqual(['w0', 'w1', 'w2', 'w3', 'w4', 'w5', 'w6', 'w7']);
    const tokens = served.map((s) => s.token);
    expect(tokens).toEqual([...tokens].sort((a, b) => a - b));
    expect(tokens[0]).toBeGreaterThan(held.fencing_token);
    // Nobody was told twice, nobody else was told at all.
    for (const w of waiters) expect(w.socket.frames.filter(granted)).toHaveLength(1);
  });

  it('serves higher priorities first, FIFO within a priority', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'holder');
    const waiters = await queueInOrder(lock, [0, 5, 0, 10, 5, -1, 10, 0]);
    const served = await drain(lock, waiters, { client: 'holder', token: held.fencing_token });
    expect(served.map((s) => s.client)).toEqual(['w3', 'w6', 'w1', 'w4', 'w0', 'w2', 'w7', 'w5']);
  });

  it('does not let a plain acquire barge in while waiters are queued', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'holder');
    const [w] = await queueInOrder(lock, [0]);
    const grant = (w as { socket: TestSocket }).socket.next(granted);
    await releaseHttp(lock, 'holder', held.fencing_token);
    const barger = await acquireHttp(lock, 'barger');
    expect(barger.acquired).toBe(false);
    expect((await grant).client_id).toBe('w0');
  });

  it('keeps one place for a waiting acquire retried with the same request_id, and grants it once', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'holder');
    const [ahead] = await queueInOrder(lock, [0]);
    const socket = await open('retrier');
    const first = await socket.acquire(lock, { request_id: 'once', with_position: true });
    expect(first.body).toMatchObject({ queued: true, position: 2, request_id: 'once' });
    // The retry (its answer was lost, say) finds the first attempt and keeps its place.
    expect((await socket.acquire(lock, { request_id: 'once', with_position: true })).body).toMatchObject({
      queued: true,
      position: 2,
    });
    expect((await inspect(lock)).queued).toBe(2);

    await releaseHttp(lock, 'holder', held.fencing_token);
    const toAhead = await (ahead as { socket: TestSocket }).socket.next(granted);
    await releaseHttp(lock, 'w0', toAhead.fencing_token);
    const mine = await socket.next(granted);
    expect(mine).toMatchObject({ request_id: 'once', client_id: 'retrier' });
    await releaseHttp(lock, 'retrier', mine.fencing_token);
    // Nothing is left to grant that request a second time: the lock stays free, the queue empty.
    await sleep(300);
    expect(socket.frames.filter(granted)).toHaveLength(1);
    expect(await inspect(lock)).toMatchObject({ state: 'free', queued: 0 });
  });
});

describe('reconnecting', () => {
  it('a retry naming a new connection keeps the place, and the grant is pushed there', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'holder');
    const [ahead] = await queueInOrder(lock, [0]);
    const old = await open('mover');
    const first = await old.acquire(lock, { request_id: 'move-me', with_position: true });
    expect(first.body).toMatchObject({ queued: true, position: 2 });
    // The client gave up on its connection (no frames came, say) and asks again from a new one.
    const fresh = await open('mover');
    const again = await fresh.acquire(lock, { request_id: 'move-me', with_position: true });
    expect(again.body).toMatchObject({ queued: true, position: 2, request_id: 'move-me' });
    expect((await inspect(lock)).queued).toBe(2);
    // The old connection's $disconnect no longer takes the waiter with it.
    await old.close();
    await sleep(300);
    expect((await inspect(lock)).waiters.map((w: AnyFrame) => w.client_id)).toEqual(['w0', 'mover']);

    await releaseHttp(lock, 'holder', held.fencing_token);
    const toAhead = await (ahead as { socket: TestSocket }).socket.next(granted);
    await releaseHttp(lock, 'w0', toAhead.fencing_token);
    const grant = await fresh.next(granted);
    expect(grant).toMatchObject({ request_id: 'move-me', client_id: 'mover' });
    expect(old.frames.filter(granted)).toEqual([]);
  });

  it('a retry after the connection closed has the request’s one outcome: the wait ended with it', async () => {
    const lock = lockName();
    await acquireHttp(lock, 'holder');
    const old = await open('dropped');
    expect((await old.acquire(lock, { request_id: 'dropped-1' })).body).toMatchObject({ queued: true });
    await old.close();
    await expect.poll(async () => (await inspect(lock)).queued).toBe(0); // $disconnect: it left the queue
    const fresh = await open('dropped');
    const again = await fresh.acquire(lock, { request_id: 'dropped-1' });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ acquired: false, lock });
    expect(again.body.queued).not.toBe(true);
    expect((await inspect(lock)).queued).toBe(0);
  });
});

describe('handoff without a release', () => {
  // How soon after the lease end is measured by `npm run bench` (the waiting section), not asserted
  // here: a loaded machine delays timers by whole seconds.
  it('grants the head waiter after a crashed holder’s lease end, never before, with a larger token', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'crashed', { ttl_ms: 1_000 });
    const leaseEnd = Date.parse(held.expires_at);
    const socket = await open('next');
    expect((await socket.acquire(lock)).body.queued).toBe(true);
    const frame = await socket.next(granted, 15_000);
    expect(frame.receivedAt).toBeGreaterThanOrEqual(leaseEnd);
    expect(frame.fencing_token).toBeGreaterThan(held.fencing_token);
  });

  it('skips a waiter whose connection closed', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'holder');
    const [gone, stays] = await queueInOrder(lock, [0, 0]);
    await gone?.socket.close();
    // $disconnect removes its waiter; the lock view shows one waiter left.
    await expect.poll(async () => (await inspect(lock)).waiters.length).toBe(1);
    const next = stays?.socket.next(granted);
    await releaseHttp(lock, 'holder', held.fencing_token);
    expect((await next)?.client_id).toBe('w1');
  });

  it('tells a waiter whose wait ran out, and serves the next one', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'holder');
    const impatient = await open('impatient');
    // Long enough for the patient one to queue behind it on a loaded machine.
    const asked = await impatient.acquire(lock, { wait_timeout_ms: 2_000 });
    expect(asked.body.queued).toBe(true);
    const patient = await open('patient');
    expect((await patient.acquire(lock, { with_position: true })).body.position).toBe(2);
    const timeout = await impatient.next((f) => f.type === 'timeout', 10_000);
    expect(timeout).toMatchObject({ lock, request_id: asked.requestId });
    const next = patient.next(granted);
    await releaseHttp(lock, 'holder', held.fencing_token);
    expect((await next).client_id).toBe('patient');
    expect(impatient.frames.filter(granted)).toHaveLength(0);
  });

  it('takes back a grant pushed to a vanished connection and serves the next waiter', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'holder');
    // A waiter whose connection vanished without $disconnect (API Gateway does not promise one).
    await queueVanishedWaiter(stack.tableName, lock);
    const live = await open('live');
    expect((await live.acquire(lock, { with_position: true })).body.position).toBe(2);
    const next = live.next(granted);
    await releaseHttp(lock, 'holder', held.fencing_token);
    const frame = await next;
    expect(frame.fencing_token).toBe(held.fencing_token + 2); // the ghost's token was spent, then undone
    const view = await inspect(lock);
    expect(view.holders).toEqual([expect.objectContaining({ client_id: 'live' })]);
    expect(view.waiters).toEqual([]);
  });
});

describe('HTTP waits', () => {
  it('answers when the lock is handed over', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'holder');
    const waiting = acquireHttp(lock, 'http-waiter', { wait_timeout_ms: 5_000 });
    await expect.poll(async () => (await inspect(lock)).waiters.length).toBe(1);
    await releaseHttp(lock, 'holder', held.fencing_token);
    const answer = await waiting;
    expect(answer).toMatchObject({ acquired: true, client_id: 'http-waiter' });
    expect(answer.fencing_token).toBeGreaterThan(held.fencing_token);
  });

  it('rings the waiting function on its own WebSocket connection, opened with the functions’ signature', async () => {
    const { storage, services } = testServices(stack.tableName, { endpoint: stack.dynamoEndpoint });
    const pushed = () =>
      Number(/latchkey_pushes_total\{outcome="delivered"\} (\d+)/.exec(stack.metrics())?.[1] ?? 0);
    // The relay opens at the process's first HTTP wait: a wait joins with it once it is open.
    for (let attempt = 1; ; attempt++) {
      const lock = lockName();
      const held = await acquireHttp(lock, 'holder');
      const waiting = acquireHttp(lock, 'rung', { wait_timeout_ms: 5_000 });
      await expect.poll(async () => (await storage.queue(lock, 1)).waiters.length).toBe(1);
      const [waiter] = (await storage.queue(lock, 1)).waiters;
      const bell = waiter?.bell;
      const before = pushed();
      await releaseHttp(lock, 'holder', held.fencing_token);
      // The waiter named its function's HTTP-wait slot, which the release's handoff freed (on
      // DynamoDB Local: a conditional write by holder) before the release answered.
      const slotAfterRelease =
        bell === undefined ? undefined : await storage.read(httpWaitRef(waiter?.slot?.index as number));
      expect(await waiting).toMatchObject({ acquired: true, client_id: 'rung' });
      if (bell === undefined && attempt < 5) continue;
      expect(waiter?.slot).toEqual({ index: expect.any(Number), holder: expect.any(String) });
      expect(slotAfterRelease?.holder).not.toBe(waiter?.slot?.holder);
      // The relay's connection: the functions' own principal, as its own client.
      expect(await services.connections.get(bell as string)).toMatchObject({
        owner: localPrincipal('local'),
        clientId: RELAY_CLIENT_ID,
      });
      // The release pushed one frame: the ring, which carried the grant.
      expect(pushed() - before).toBe(1);
      break;
    }
  });

  it('answers not acquired when the wait runs out, and leaves the queue', async () => {
    const lock = lockName();
    await acquireHttp(lock, 'holder');
    const started = Date.now();
    const answer = await acquireHttp(lock, 'http-waiter', { wait_timeout_ms: 400 });
    expect(answer).toMatchObject({ acquired: false, holder: { client_id: 'holder' }, queued: 0 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(400);
    expect((await inspect(lock)).waiters).toEqual([]);
  });

  it('refuses waits over 25 s in the request with a 400 that points at the WebSocket API', async () => {
    const res = await api.post(`/api/v1/locks/${lockName()}/acquire`, {
      client_id: 'a',
      ttl_ms: 5_000,
      wait_timeout_ms: 25_001,
    });
    expect(res.status).toBe(400);
    expect(res.body.error.message).toMatch(/WebSocket/);
    expect(res.body.error.message).toMatch(/connection_id/);
  });
});

describe('the WebSocket protocol', () => {
  it('welcomes a hello with the connection id and the client id', async () => {
    const s = await open('greeted');
    s.send({ action: 'hello', request_id: 'h1' });
    const welcome = await s.next((f) => f.request_id === 'h1');
    expect(welcome).toMatchObject({ type: 'welcome', client_id: 'greeted' });
    expect(welcome.connection_id).toEqual(expect.any(String));
    // Another connection has another id.
    expect(await (await open('greeted')).hello()).not.toBe(welcome.connection_id);
  });

  it('an acquire naming a connection: a free lock at once in the answer, a held one busy without a wait', async () => {
    const lock = lockName();
    const a = await open('a');
    const first = await a.acquire(lock, { wait_timeout_ms: 0 });
    expect(first.body).toMatchObject({ acquired: true, client_id: 'a', lock });
    const b = await open('b');
    const busy = await b.acquire(lock, { wait_timeout_ms: 0 });
    expect(busy.body).toMatchObject({ acquired: false, holder: { client_id: 'a' } });
    expect(busy.body.queued).not.toBe(true);
    await releaseHttp(lock, 'a', first.body.fencing_token);
    // A wait on a free lock is granted in the answer; nothing is pushed for it.
    const c = await open('c');
    const at = await c.acquire(lock, { wait_timeout_ms: 5_000 });
    expect(at.body).toMatchObject({ acquired: true, client_id: 'c' });
    await sleep(200);
    expect(c.frames.filter(granted)).toEqual([]);
  });

  it('answers every bad message with an error frame and a code, and an acquire over the socket changes nothing', async () => {
    const lock = lockName();
    const s = await open('bad');
    s.ws.send('not json');
    expect(await s.next()).toMatchObject({ type: 'error', error: { code: 'INVALID_REQUEST' } });
    s.send({ action: 'dance', request_id: 'x' });
    expect(await s.next()).toMatchObject({ type: 'error', error: { code: 'INVALID_REQUEST' } });
    // Waits moved to HTTP: the socket refuses them, pointing there.
    s.send({ action: 'acquire', lock, ttl_ms: 10_000, wait_timeout_ms: 5_000, request_id: 'y' });
    expect(await s.next()).toMatchObject({ type: 'error', error: { code: 'INVALID_REQUEST' } });
    s.send({ action: 'cancel', lock, request_id: 'y' });
    expect(await s.next()).toMatchObject({ type: 'error', error: { code: 'INVALID_REQUEST' } });
    s.send({ action: 'ping', request_id: 'p' });
    expect(await s.next()).toEqual(expect.objectContaining({ type: 'pong', request_id: 'p' }));
    await sleep(200);
    expect(await inspect(lock)).toMatchObject({ state: 'free', holders: [], queued: 0 });
    expect(s.frames.filter(granted)).toEqual([]);
  });

  it('tells a client that sends an acquire over the socket where waits went: HTTP', async () => {
    const s = await open('old-client');
    s.send({ action: 'acquire', lock: lockName(), ttl_ms: 10_000, wait_timeout_ms: 5_000, request_id: 'z' });
    const refused = await s.next();
    expect(refused).toMatchObject({ type: 'error', error: { code: 'INVALID_REQUEST' } });
    expect(refused.error.message).toMatch(/POST \/api\/v1\/locks\/\{name\}\/acquire/);
    expect(refused.error.message).toMatch(/connection_id/);
  });

  it('cancels a queued wait over HTTP', async () => {
    const lock = lockName();
    await acquireHttp(lock, 'holder');
    const s = await open('canceller');
    const queued = await s.acquire(lock);
    expect(queued.body.queued).toBe(true);
    const cancelled = await s.cancel(lock, { request_id: queued.requestId });
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({ cancelled: true, lock, removed: 1 });
    expect((await inspect(lock)).waiters).toEqual([]);
  });

  it('refuses unsigned handshakes, and says how to write the URL when client_id or the stage is missing', async () => {
    await expect(TestSocket.open(stack, 'x', { sign: false })).rejects.toThrow(/403/);
    const url = stack.wsUrl; // no client_id
    const { default: WebSocket } = await import('ws');
    const { signedHeaders } = await import('../support/ws-client');
    const refusal = async (target: string, signed = true) => {
      const ws = new WebSocket(target, { headers: signed ? await signedHeaders(new URL(target)) : {} });
      return new Promise<{ status: number | undefined; body: AnyFrame }>((resolve) =>
        ws.once('unexpected-response', (_q, r) => {
          let text = '';
          r.on('data', (c: Buffer) => (text += c));
          r.on('end', () => resolve({ status: r.statusCode, body: JSON.parse(text) }));
        }),
      );
    };
    // $connect's own answer, passed on: what is missing and how to write the URL.
    const noClient = await refusal(url);
    expect(noClient.status).toBe(400);
    expect(noClient.body.error).toEqual({ code: 'INVALID_REQUEST', message: noClient.body.message });
    expect(noClient.body.message).toMatch(/^the WebSocket URL needs \?client_id=NAME/);
    expect(noClient.body.message).toContain(`e.g. ${url}?client_id=worker-1`);
    const badClient = await refusal(`${url}?client_id=${encodeURIComponent('a b')}`);
    expect(badClient.status).toBe(400);
    expect(badClient.body.message).toMatch(
      /client_id may contain only .*the WebSocket URL takes only \?client_id=NAME/,
    );
    // A URL without its stage: where the API is.
    const origin = new URL(url).origin.replace(/^http/, 'ws');
    for (const path of ['/', '/v2', '/api/v1']) {
      const wrong = await refusal(`${origin}${path}?client_id=me`, false);
      expect(wrong.status, path).toBe(404);
      expect(wrong.body.error).toEqual({
        code: 'NOT_FOUND',
        message: `no WebSocket API at ${path}: the WebSocket URL is ${url}?client_id=NAME`,
      });
    }
  });
});

describe('whose connection', () => {
  it('alice cannot name bob’s connection in an acquire: 403 FORBIDDEN, nothing queued', async () => {
    const lock = lockName();
    await acquireHttp(lock, 'holder');
    const bobs = await open('bob-client', BOB);
    const connection = await bobs.hello();
    const alice = signedClient(stack.url, { ...ALICE });
    const refused = await alice.post(`/api/v1/locks/${lock}/acquire`, {
      client_id: 'bob-client',
      ttl_ms: 10_000,
      wait_timeout_ms: 5_000,
      connection_id: connection,
    });
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe('FORBIDDEN');
    expect(await inspect(lock)).toMatchObject({ queued: 0, waiters: [] });
    // Not even on a free lock: no grant is made for a connection that is not the caller's.
    const free = lockName();
    const onFree = await alice.post(`/api/v1/locks/${free}/acquire`, {
      client_id: 'bob-client',
      ttl_ms: 10_000,
      wait_timeout_ms: 5_000,
      connection_id: connection,
    });
    expect(onFree.status).toBe(403);
    expect(await inspect(free)).toMatchObject({ state: 'free', holders: [], queued: 0 });
    await sleep(200);
    expect(bobs.frames.filter(granted)).toEqual([]);
    // Bob names it: queued.
    expect((await bobs.acquire(lock, { with_position: true })).body).toMatchObject({
      queued: true,
      position: 1,
    });
  });

  it('a principal waits on its own connection, and its grant is its own', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'holder');
    const alice = await open('alice-client', ALICE);
    expect((await alice.acquire(lock)).body).toMatchObject({ queued: true });
    await releaseHttp(lock, 'holder', held.fencing_token);
    const grant = await alice.next(granted);
    expect(grant).toMatchObject({ client_id: 'alice-client', lock });
    // local sees it held, but not alice's token.
    const seen = await inspect(lock);
    expect(seen.holders[0]).toMatchObject({ client_id: 'alice-client', mine: false });
    expect(seen.holders[0].fencing_token).toBeUndefined();
  });

  it('an unknown connection id: 404 NOT_FOUND, nothing queued', async () => {
    const lock = lockName();
    await acquireHttp(lock, 'holder');
    const res = await api.post(`/api/v1/locks/${lock}/acquire`, {
      client_id: 'nobody',
      ttl_ms: 10_000,
      wait_timeout_ms: 5_000,
      connection_id: 'bm8tc3VjaC1jb25uZWN0aW9u=',
    });
    expect(res.status).toBe(404);
    expect(res.body.error.code).toBe('NOT_FOUND');
    expect(await inspect(lock)).toMatchObject({ queued: 0, waiters: [] });
    // On a free lock too: no grant is made for a connection that is not there.
    const free = lockName();
    const onFree = await api.post(`/api/v1/locks/${free}/acquire`, {
      client_id: 'nobody',
      ttl_ms: 10_000,
      wait_timeout_ms: 5_000,
      connection_id: 'bm8tc3VjaC1jb25uZWN0aW9u=',
    });
    expect(onFree.status).toBe(404);
    expect(await inspect(free)).toMatchObject({ state: 'free', holders: [], queued: 0 });
  });

  it('a closed connection is unknown too', async () => {
    const lock = lockName();
    await acquireHttp(lock, 'holder');
    const s = await open('closing');
    const id = await s.hello();
    await s.close();
    await expect
      .poll(
        async () =>
          (
            await api.post(`/api/v1/locks/${lock}/acquire`, {
              client_id: 'closing',
              ttl_ms: 10_000,
              wait_timeout_ms: 0, // busy until $disconnect has run: nothing queued meanwhile
              connection_id: id,
            })
          ).status,
      )
      .toBe(404);
    expect(await inspect(lock)).toMatchObject({ holders: [{ client_id: 'holder' }], queued: 0 });
  });
});

describe('mutual exclusion under contention', () => {
  it('16 WebSocket clients contending for 20 s never overlap', { timeout: 60_000 }, async () => {
    const lock = lockName();
    const clients = await Promise.all(Array.from({ length: 16 }, (_, i) => open(`c${i}`)));
    let inside = 0;
    let overlaps = 0;
    let grants = 0;
    const tokens: number[] = [];
    const until = Date.now() + 20_000;
    await Promise.all(
      clients.map(async (socket, i) => {
        while (Date.now() < until) {
          const answer = await socket.acquire(lock, { request_id: randomUUID(), wait_timeout_ms: 30_000 });
          const frame = await socket.outcome(answer, 40_000);
          expect(frame.type).toBe('granted');
          inside++;
          if (inside > 1) overlaps++;
          grants++;
          tokens.push(frame.fencing_token);
          await sleep(2);
          inside--;
          expect((await releaseHttp(lock, `c${i}`, frame.fencing_token)).status).toBe(200);
        }
      }),
    );
    expect(overlaps).toBe(0);
    expect(grants).toBeGreaterThan(50);
    expect(tokens).toEqual([...tokens].sort((a, b) => a - b));
    expect(new Set(tokens).size).toBe(tokens.length);
  });
});
