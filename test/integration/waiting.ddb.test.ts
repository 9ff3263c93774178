/**
 * Waiting, end to end through the local stack: real WebSocket connections,
 * the stream notifier fed from DynamoDB Local's stream, and the timer queue.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalStack } from '../../local/stack';
import { queueVanishedWaiter } from '../support/dynamo';
import { signedClient } from '../support/signed-fetch';
import { startTestStack } from '../support/stack';
import { type AnyFrame, TestSocket } from '../support/ws-client';

let stack: LocalStack;
let api: ReturnType<typeof signedClient>;
const sockets: TestSocket[] = [];

beforeAll(async () => {
  stack = await startTestStack('wait');
  api = signedClient(stack.url);
});
afterAll(async () => {
  await Promise.all(sockets.map((s) => s.close()));
  await stack.stop();
});

const open = async (clientId: string) => {
  const socket = await TestSocket.open(stack.wsUrl, clientId);
  sockets.push(socket);
  return socket;
};
const lockName = () => `wait/${randomUUID()}`;
const acquireHttp = async (lock: string, client: string, extra: Record<string, unknown> = {}) =>
  (await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: client, ttl_ms: 10_000, ...extra })).body;
const releaseHttp = async (lock: string, client: string, token: number) =>
  api.post(`/api/v1/locks/${lock}/release`, { client_id: client, fencing_token: token });
const granted = (f: AnyFrame) => f.type === 'granted';

/** Queues one socket per entry, in order, each after the previous one was told its position. */
async function queueInOrder(lock: string, priorities: readonly number[]) {
  const waiters: { socket: TestSocket; client: string }[] = [];
  for (const [i, priority] of priorities.entries()) {
    const client = `w${i}`;
    const socket = await open(client);
    const answer = await socket.acquire(lock, { priority });
    expect(answer).toMatchObject({ type: 'queued', lock });
    waiters.push({ socket, client });
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
    const positions = waiters.map((w) => w.socket.frames.find((f) => f.type === 'queued')?.position);
    expect(positions).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
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
    const first = await socket.acquire(lock, { request_id: 'once' });
    expect(first).toMatchObject({ type: 'queued', position: 2 });
    // The retry (its answer was lost, say) finds the first attempt and keeps its place.
    socket.frames.length = 0;
    expect(await socket.acquire(lock, { request_id: 'once' })).toMatchObject({ type: 'queued', position: 2 });
    const inspect = async () => (await api.get(`/api/v1/locks/${lock}`)).body;
    expect((await inspect()).queued).toBe(2);

    await releaseHttp(lock, 'holder', held.fencing_token);
    const toAhead = await (ahead as { socket: TestSocket }).socket.next(granted);
    await releaseHttp(lock, 'w0', toAhead.fencing_token);
    const mine = await socket.next(granted);
    expect(mine).toMatchObject({ request_id: 'once', client_id: 'retrier' });
    await releaseHttp(lock, 'retrier', mine.fencing_token);
    // Nothing is left to grant that request a second time: the lock stays free, the queue empty.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(socket.frames.filter(granted)).toHaveLength(1);
    expect(await inspect()).toMatchObject({ state: 'free', queued: 0 });
  });
});

describe('handoff without a release', () => {
  it('grants the head waiter within 200 ms of a crashed holder’s lease end, with a larger token', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'crashed', { ttl_ms: 1_000 });
    const leaseEnd = Date.parse(held.expires_at);
    const socket = await open('next');
    expect((await socket.acquire(lock)).type).toBe('queued');
    const frame = await socket.next(granted, 5_000);
    const delay = frame.receivedAt - leaseEnd;
    expect(delay).toBeGreaterThanOrEqual(0);
    expect(delay).toBeLessThanOrEqual(200);
    expect(frame.fencing_token).toBeGreaterThan(held.fencing_token);
  });

  it('skips a waiter whose connection closed', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'holder');
    const [gone, stays] = await queueInOrder(lock, [0, 0]);
    await gone?.socket.close();
    // $disconnect removes its waiter; the lock view shows one waiter left.
    await expect.poll(async () => (await api.get(`/api/v1/locks/${lock}`)).body.waiters.length).toBe(1);
    const next = stays?.socket.next(granted);
    await releaseHttp(lock, 'holder', held.fencing_token);
    expect((await next)?.client_id).toBe('w1');
  });

  it('tells a waiter whose wait ran out, and serves the next one', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'holder');
    const impatient = await open('impatient');
    expect((await impatient.acquire(lock, { wait_timeout_ms: 300 })).type).toBe('queued');
    const patient = await open('patient');
    expect((await patient.acquire(lock)).position).toBe(2);
    const timeout = await impatient.next((f) => f.type === 'timeout', 3_000);
    expect(timeout.lock).toBe(lock);
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
    expect((await live.acquire(lock)).position).toBe(2);
    const next = live.next(granted);
    await releaseHttp(lock, 'holder', held.fencing_token);
    const frame = await next;
    expect(frame.fencing_token).toBe(held.fencing_token + 2); // the ghost's token was spent, then undone
    const view = (await api.get(`/api/v1/locks/${lock}`)).body;
    expect(view.holders).toEqual([expect.objectContaining({ client_id: 'live' })]);
    expect(view.waiters).toEqual([]);
  });
});

describe('HTTP waits', () => {
  it('answers when the lock is handed over', async () => {
    const lock = lockName();
    const held = await acquireHttp(lock, 'holder');
    const waiting = acquireHttp(lock, 'http-waiter', { wait_timeout_ms: 5_000 });
    await expect.poll(async () => (await api.get(`/api/v1/locks/${lock}`)).body.waiters.length).toBe(1);
    await releaseHttp(lock, 'holder', held.fencing_token);
    const answer = await waiting;
    expect(answer).toMatchObject({ acquired: true, client_id: 'http-waiter' });
    expect(answer.fencing_token).toBeGreaterThan(held.fencing_token);
  });

  it('answers not acquired when the wait runs out, and leaves the queue', async () => {
    const lock = lockName();
    await acquireHttp(lock, 'holder');
    const started = Date.now();
    const answer = await acquireHttp(lock, 'http-waiter', { wait_timeout_ms: 400 });
    expect(answer).toMatchObject({ acquired: false, holder: { client_id: 'holder' }, queued: 0 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(400);
    expect((await api.get(`/api/v1/locks/${lock}`)).body.waiters).toEqual([]);
  });

  it('refuses waits over 25 s with a 400 that points at the WebSocket API', async () => {
    const res = await api.post(`/api/v1/locks/${lockName()}/acquire`, {
      client_id: 'a',
      ttl_ms: 5_000,
      wait_timeout_ms: 25_001,
    });
    expect(res.status).toBe(400);
    expect(res.body.error.message).toMatch(/WebSocket/);
  });
});

describe('the WebSocket protocol', () => {
  it('grants a free lock at once, and answers busy to a try on a held one', async () => {
    const lock = lockName();
    const a = await open('a');
    const first = await a.acquire(lock, { wait_timeout_ms: 0 });
    expect(first).toMatchObject({ type: 'granted', client_id: 'a', lock });
    const b = await open('b');
    expect(await b.acquire(lock, { wait_timeout_ms: 0 })).toMatchObject({
      type: 'busy',
      holder: { client_id: 'a' },
    });
  });

  it('answers every bad message with an error frame and a code', async () => {
    const s = await open('bad');
    s.ws.send('not json');
    expect(await s.next()).toMatchObject({ type: 'error', error: { code: 'INVALID_REQUEST' } });
    s.send({ action: 'dance', request_id: 'x' });
    expect(await s.next()).toMatchObject({ type: 'error', error: { code: 'INVALID_REQUEST' } });
    s.send({ action: 'acquire', lock: '../x', ttl_ms: 10, request_id: 'y' });
    const frame = await s.next();
    expect(frame).toMatchObject({ type: 'error', request_id: 'y', error: { code: 'INVALID_REQUEST' } });
    s.send({ action: 'ping', request_id: 'p' });
    expect(await s.next()).toEqual(expect.objectContaining({ type: 'pong', request_id: 'p' }));
  });

  it('cancels a queued wait', async () => {
    const lock = lockName();
    await acquireHttp(lock, 'holder');
    const s = await open('canceller');
    const queued = await s.acquire(lock);
    s.send({ action: 'cancel', lock, request_id: queued.request_id });
    expect(await s.next((f) => f.type === 'cancelled')).toMatchObject({ removed: 1 });
    expect((await api.get(`/api/v1/locks/${lock}`)).body.waiters).toEqual([]);
  });

  it('refuses unsigned connections and connections without a client_id', async () => {
    await expect(TestSocket.open(stack.wsUrl, 'x', { sign: false })).rejects.toThrow(/403/);
    const url = stack.wsUrl; // no client_id
    const { default: WebSocket } = await import('ws');
    const { signedHeaders } = await import('../support/ws-client');
    const ws = new WebSocket(url, { headers: await signedHeaders(new URL(url)) });
    const status = await new Promise((resolve) =>
      ws.once('unexpected-response', (_q, r) => resolve(r.statusCode)),
    );
    expect(status).toBe(400);
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
          const requestId = randomUUID();
          const first = await socket.acquire(lock, { request_id: requestId, wait_timeout_ms: 30_000 });
          const frame =
            first.type === 'granted'
              ? first
              : await socket.next((f) => f.request_id === requestId && f.type !== 'queued', 40_000);
          expect(frame.type).toBe('granted');
          inside++;
          if (inside > 1) overlaps++;
          grants++;
          tokens.push(frame.fencing_token);
          await new Promise((resolve) => setTimeout(resolve, 2));
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
