/**
 * Sessions end to end through the local stack (sweeper driven by hand):
 * heartbeats, locks tied to a session, their release when it ends, and
 * sweepers that race or die midway.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockRef, sessionLockRef, sessionRef } from '../../lambdas/core/items';
import { throughSession } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { SessionAttr } from '../../lambdas/core/session';
import type { LocalStack } from '../../local/stack';
import { CallCounter, testServices } from '../support/dynamo';
import { PushClient } from '../support/push-client';
import { signedClient } from '../support/signed-fetch';
import { startTestStack } from '../support/stack';
import type { AnyFrame } from '../support/ws-client';

let stack: LocalStack;
/** The local principal (local:local). */
let api: ReturnType<typeof signedClient>;
/** Another principal of the same stack: it may use the API, but nothing of the local principal's. */
let mallory: ReturnType<typeof signedClient>;
const sockets: PushClient[] = [];

const OWNER = localPrincipal('local');
const MALLORY = localPrincipal('mallory');

beforeAll(async () => {
  // The session timers end sessions here; the sweeper (tested on its own) does not run.
  stack = await startTestStack('sessions', { sweepIntervalMs: 0, credentials: 'mallory:mallory-secret' });
  api = signedClient(stack.url);
  mallory = signedClient(stack.url, { accessKeyId: 'mallory', secretAccessKey: 'mallory-secret' });
});
afterAll(async () => {
  await Promise.all(sockets.map((s) => s.close()));
  await stack.stop();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const granted = (f: AnyFrame) => f.type === 'granted';
const lockName = () => `sess/${randomUUID()}`;

async function openSession(client: string, ttl_ms = 1_000, grace_ms = 300) {
  const res = await api.post('/api/v1/sessions', { client_id: client, ttl_ms, grace_ms });
  expect(res.status).toBe(201);
  return res.body as { session_id: string; heartbeat_interval_ms: number; expires_at: string };
}
const acquireIn = async (lock: string, client: string, session: string) =>
  (await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: client, session_id: session })).body;
/** A WebSocket client of the local principal (hello, then HTTP acquires naming its connection). */
const connect = async (client: string) => {
  const socket = await PushClient.open(stack.wsUrl, api, client);
  sockets.push(socket);
  return socket;
};
const waitOn = async (lock: string, client: string) => {
  const socket = await connect(client);
  expect(await socket.queue(lock)).toMatchObject({ acquired: false, queued: true, lock });
  return socket;
};
const view = async (lock: string) => (await api.get(`/api/v1/locks/${lock}`)).body;

describe('sessions over HTTP', () => {
  it('opens, heartbeats and closes a session; errors are 404 or 409 with a code, never 500', async () => {
    const s = await openSession('alice', 3_000);
    expect(s.heartbeat_interval_ms).toBe(1_000);
    const beat = await api.post(`/api/v1/sessions/${s.session_id}/heartbeat`, { client_id: 'alice' });
    expect(beat.status).toBe(200);
    expect(beat.body).toMatchObject({
      session_id: s.session_id,
      state: 'alive',
      grace_until: expect.any(String),
    });

    const unknown = await api.post(`/api/v1/sessions/${randomUUID()}/heartbeat`, { client_id: 'alice' });
    expect(unknown).toMatchObject({ status: 404, body: { error: { code: 'NOT_FOUND' } } });
    // Another client of the same principal: a 409 (the principal's own mix-up, not a trespass).
    const foreign = await api.post(`/api/v1/sessions/${s.session_id}/heartbeat`, { client_id: 'not-alice' });
    expect(foreign).toMatchObject({ status: 409, body: { error: { code: 'NOT_SESSION_OWNER' } } });
    const malformed = await api.post('/api/v1/sessions/not-a-uuid/heartbeat', { client_id: 'alice' });
    expect(malformed).toMatchObject({ status: 400, body: { error: { code: 'INVALID_REQUEST' } } });
    const noTtl = await api.post('/api/v1/sessions', { client_id: 'alice' });
    expect(noTtl).toMatchObject({ status: 400, body: { error: { code: 'INVALID_REQUEST' } } });

    const closed = await api.delete(`/api/v1/sessions/${s.session_id}?client_id=alice`);
    expect(closed).toMatchObject({ status: 200, body: { state: 'ended', locks_released: 0 } });
    // Closing again (a retry) is answered the same; a heartbeat after it is refused.
    expect((await api.delete(`/api/v1/sessions/${s.session_id}?client_id=alice`)).status).toBe(200);
    const late = await api.post(`/api/v1/sessions/${s.session_id}/heartbeat`, { client_id: 'alice' });
    expect(late).toMatchObject({ status: 409, body: { error: { code: 'SESSION_EXPIRED' } } });
  });

  it('ties a lock to a session: no ttl needed, shown on the lock, released (to the next waiter) by closing', async () => {
    const s = await openSession('bob', 5_000);
    const lock = lockName();
    const held = await acquireIn(lock, 'bob', s.session_id);
    expect(held).toMatchObject({ acquired: true, client_id: 'bob' });
    expect((await view(lock)).holders[0]).toMatchObject({ client_id: 'bob', session_id: s.session_id });
    const waiter = await waitOn(lock, 'carol');
    const grant = waiter.next(granted);
    const closed = await api.delete(`/api/v1/sessions/${s.session_id}?client_id=bob`);
    expect(closed.body).toMatchObject({ locks_released: 1 });
    expect((await grant).fencing_token).toBeGreaterThan(held.fencing_token);
    // A closed session takes no more locks.
    const refused = await api.post(`/api/v1/locks/${lockName()}/acquire`, {
      client_id: 'bob',
      session_id: s.session_id,
    });
    expect(refused).toMatchObject({ status: 409, body: { error: { code: 'SESSION_EXPIRED' } } });
    const withTtl = await api.post(`/api/v1/locks/${lockName()}/acquire`, {
      client_id: 'bob',
      session_id: s.session_id,
      ttl_ms: 5_000,
    });
    expect(withTtl).toMatchObject({ status: 400, body: { error: { code: 'INVALID_REQUEST' } } });
    const foreign = await api.post(`/api/v1/locks/${lockName()}/acquire`, {
      client_id: 'carol',
      session_id: s.session_id,
    });
    expect(foreign).toMatchObject({ status: 409, body: { error: { code: 'NOT_SESSION_OWNER' } } });
  });
});

describe('a session belongs to the principal that opened it', () => {
  it('another principal is refused FORBIDDEN on heartbeat, close, and locking in it; nothing changes', async () => {
    const s = await openSession('alice', 10_000);
    const lock = lockName();
    const held = await acquireIn(lock, 'alice', s.session_id);
    expect(held).toMatchObject({ acquired: true });
    const t = testServices(stack.tableName, { endpoint: stack.dynamoEndpoint });
    const state = async () => ({
      session: await t.storage.read(sessionRef(s.session_id)),
      link: await t.storage.read(sessionLockRef(s.session_id, lock)),
      lock: await t.storage.read(lockRef(lock)),
    });
    const before = await state();
    expect(before.session).toMatchObject({ [SessionAttr.owner]: OWNER, client_id: 'alice' });

    // Over HTTP, with the session's client_id: the principal decides.
    const attempts = [
      () => mallory.post(`/api/v1/sessions/${s.session_id}/heartbeat`, { client_id: 'alice' }),
      () => mallory.delete(`/api/v1/sessions/${s.session_id}?client_id=alice`),
      () =>
        mallory.post(`/api/v1/locks/${lockName()}/acquire`, { client_id: 'alice', session_id: s.session_id }),
      () =>
        mallory.post(`/api/v1/locks/${lock}/release`, {
          client_id: 'alice',
          fencing_token: held.fencing_token,
        }),
      () =>
        mallory.post(`/api/v1/locks/${lock}/renew`, {
          client_id: 'alice',
          fencing_token: held.fencing_token,
          ttl_ms: 5_000,
        }),
    ];
    for (const attempt of attempts)
      expect(await attempt()).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN' } } });
    // And the services themselves, for the same principal and client.
    await expect(t.services.sessions.heartbeat(s.session_id, MALLORY, 'alice')).rejects.toMatchObject({
      code: 'FORBIDDEN',
      status: 403,
    });
    await expect(t.services.sessions.close(s.session_id, MALLORY, 'alice')).rejects.toMatchObject({
      code: 'FORBIDDEN',
      status: 403,
    });
    await expect(t.services.sessions.live(s.session_id, MALLORY, 'alice')).rejects.toMatchObject({
      code: 'FORBIDDEN',
    });
    expect(await state()).toEqual(before);
    // Mallory is not even shown the session's capabilities (the holder's token, its session id).
    const seen = (await mallory.get(`/api/v1/locks/${lock}`)).body;
    expect(seen).toMatchObject({
      state: 'held',
      fencing_token: null,
      holders: [{ client_id: 'alice', mine: false }],
    });
    expect(seen.holders[0]).not.toHaveProperty('fencing_token');
    expect(seen.holders[0]).not.toHaveProperty('session_id');
    expect((await view(lock)).holders[0]).toMatchObject({ mine: true, session_id: s.session_id });

    // The owner still heartbeats and closes it.
    expect(
      (await api.post(`/api/v1/sessions/${s.session_id}/heartbeat`, { client_id: 'alice' })).status,
    ).toBe(200);
    expect((await api.delete(`/api/v1/sessions/${s.session_id}?client_id=alice`)).body).toMatchObject({
      locks_released: 1,
    });
  });

  it("another principal can neither name someone's WebSocket connection nor cancel their wait", async () => {
    const lock = lockName();
    const held = await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'holder', ttl_ms: 10_000 });
    const socket = await connect('waiter');
    const queued = await socket.queue(lock, { request_id: 'mine' });
    // Its grants would go to a connection it does not own.
    const borrowed = await mallory.post(`/api/v1/locks/${lock}/acquire`, {
      client_id: 'waiter',
      ttl_ms: 5_000,
      wait_timeout_ms: 5_000,
      connection_id: socket.connectionId,
    });
    expect(borrowed).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN' } } });
    const cancelVia = await mallory.post(`/api/v1/locks/${lock}/cancel`, {
      client_id: 'waiter',
      request_id: 'mine',
      connection_id: socket.connectionId,
    });
    expect(cancelVia).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN' } } });
    // The same client_id and request_id under another principal name another request: nothing to cancel.
    const cancelled = await mallory.post(`/api/v1/locks/${lock}/cancel`, {
      client_id: 'waiter',
      request_id: 'mine',
    });
    expect(cancelled.body).toMatchObject({ cancelled: true, removed: 0 });
    const all = await mallory.post(`/api/v1/locks/${lock}/cancel`, { client_id: 'waiter' });
    expect(all.body).toMatchObject({ cancelled: true, removed: 0 });
    expect((await view(lock)).queued).toBe(1);
    // The waiter is still served.
    const grant = socket.granted(queued.request_id);
    await api.post(`/api/v1/locks/${lock}/release`, {
      client_id: 'holder',
      fencing_token: held.body.fencing_token,
    });
    expect(await grant).toMatchObject({ lock, client_id: 'waiter' });
  });
});

describe('a session that stops heartbeating', () => {
  it('ends at ttl + grace by its timer (no sweeper): its 3 locks go to their head waiters at once', async () => {
    // The waiters connect first, and the session is heartbeaten between the steps of setting up,
    // so its 2.5 s do not run out on a slow machine before the test begins.
    const waiters = await Promise.all([0, 1, 2].map((i) => connect(`w${i}`)));
    const s = await openSession('dave', 2_000, 500);
    const heartbeat = async () => {
      const beat = await api.post(`/api/v1/sessions/${s.session_id}/heartbeat`, { client_id: 'dave' });
      expect(beat.status).toBe(200);
      return Date.parse(beat.body.grace_until);
    };
    const locks = [lockName(), lockName(), lockName()];
    const held = await Promise.all(locks.map((l) => acquireIn(l, 'dave', s.session_id)));
    await heartbeat();
    await Promise.all(locks.map((l, i) => waiters[i]?.queue(l)));
    const grants = waiters.map((w) => w.next(granted));
    // Heartbeats keep all three (and the session) past the first ttl + grace (4 x 700 ms > 2.5 s)...
    let due = await heartbeat();
    for (let i = 0; i < 4; i++) {
      await sleep(700);
      due = await heartbeat();
    }
    for (const l of locks) expect((await view(l)).state).toBe('held');
    // ...then they stop: at the due time the session's timer ends it, and every waiter is served.
    const got = await Promise.all(grants);
    const lateness = Date.now() - due;
    expect(lateness).toBeGreaterThanOrEqual(-50); // not before it was due (50 ms: clocks of one machine)
    got.forEach((g, i) => {
      expect(g.fencing_token).toBeGreaterThan((held[i] as { fencing_token: number }).fencing_token);
    });
    const late = await api.post(`/api/v1/sessions/${s.session_id}/heartbeat`, { client_id: 'dave' });
    expect(late).toMatchObject({ status: 409, body: { error: { code: 'SESSION_EXPIRED' } } });
  });
});

describe('heartbeat cost', () => {
  it('is one read and one write, whether the session holds 1 or 10 locks', async () => {
    const counter = new CallCounter();
    const t = testServices(stack.tableName, { endpoint: stack.dynamoEndpoint, counter });
    const costOf = async (lockCount: number) => {
      const s = await t.services.sessions.create(OWNER, 'fay', { ttlMs: 5_000, graceMs: 0, lockDelayMs: 0 });
      for (let i = 0; i < lockCount; i++)
        expect(
          await t.acquire({ name: lockName(), owner: OWNER, clientId: 'fay', tenure: throughSession(s.id) }),
        ).toMatchObject({
          acquired: true,
        });
      counter.reset();
      await t.services.sessions.heartbeat(s.id, OWNER, 'fay');
      return [...counter.calls].sort();
    };
    // The documented figure (README, "Sessions"): GetItem + UpdateItem.
    expect(await costOf(1)).toEqual(['GetItemCommand', 'UpdateItemCommand']);
    expect(await costOf(10)).toEqual(['GetItemCommand', 'UpdateItemCommand']);
  });
});

describe('lock-delay', () => {
  it('keeps an expired session’s lock ungrantable for lock_delay_ms, then hands it to the head waiter', async () => {
    const res = await api.post('/api/v1/sessions', {
      client_id: 'gus',
      ttl_ms: 1_000,
      grace_ms: 0,
      lock_delay_ms: 800,
    });
    expect(res.body).toMatchObject({ lock_delay_ms: 800 });
    const lock = lockName();
    const held = await acquireIn(lock, 'gus', res.body.session_id);
    const waiter = await waitOn(lock, 'hal');
    const grant = waiter.next(granted);
    // The session's timer ends it at its due time; its lock is then under lock-delay.
    await expect.poll(async () => (await view(lock)).state, { timeout: 5_000, interval: 20 }).toBe('delayed');
    const releasedAt = Date.now();
    expect(await view(lock)).toMatchObject({ holders: [], blocked_until: expect.any(String) });
    const barger = await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'ivy', ttl_ms: 5_000 });
    expect(barger.body).toMatchObject({ acquired: false, holder: null });
    const got = await grant;
    // Granted at the delay's end (locally within tens of ms), not before.
    expect(Date.now() - releasedAt).toBeGreaterThanOrEqual(700);
    expect(got.fencing_token).toBeGreaterThan(held.fencing_token);
  });

  it('does not delay a lock its session’s client closed', async () => {
    const res = await api.post('/api/v1/sessions', { client_id: 'jo', ttl_ms: 5_000, lock_delay_ms: 5_000 });
    const lock = lockName();
    await acquireIn(lock, 'jo', res.body.session_id);
    await api.delete(`/api/v1/sessions/${res.body.session_id}?client_id=jo`);
    expect(await view(lock)).toMatchObject({ state: 'free' });
    expect(
      (await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'kim', ttl_ms: 5_000 })).body.acquired,
    ).toBe(true);
  });
});

describe('waiting for a lock tied to a session', () => {
  it('a waiter with session_id is granted a lock tied to its session, released when the session closes', async () => {
    const s = await openSession('leader-1', 5_000);
    const lock = lockName();
    const held = await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'other', ttl_ms: 5_000 });
    const socket = await connect('leader-1');
    const queued = await socket.queue(lock, { session_id: s.session_id, ttl_ms: undefined });
    const grant = socket.granted(queued.request_id);
    await api.post(`/api/v1/locks/${lock}/release`, {
      client_id: 'other',
      fencing_token: held.body.fencing_token,
    });
    // Handed over held through the session: no lease of its own, it lasts as long as the session.
    expect(await grant).toMatchObject({
      client_id: 'leader-1',
      session_id: s.session_id,
      expires_at: null,
      ttl_ms: null,
    });
    expect((await view(lock)).holders[0]).toMatchObject({ client_id: 'leader-1', session_id: s.session_id });
    const closed = await api.delete(`/api/v1/sessions/${s.session_id}?client_id=leader-1`);
    expect(closed.body.locks_released).toBe(1);
    expect((await view(lock)).state).toBe('free');
  });

  it('a waiter whose session ended meanwhile is dropped with an error frame; the next waiter is served', async () => {
    const s = await openSession('leader-2', 5_000);
    const lock = lockName();
    const held = await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'other', ttl_ms: 5_000 });
    const doomed = await connect('leader-2');
    const queued = await doomed.queue(lock, { session_id: s.session_id, ttl_ms: undefined });
    const next = await waitOn(lock, 'next-in-line');
    const nextGrant = next.granted();
    await api.delete(`/api/v1/sessions/${s.session_id}?client_id=leader-2`);
    await api.post(`/api/v1/locks/${lock}/release`, {
      client_id: 'other',
      fencing_token: held.body.fencing_token,
    });
    expect(await doomed.next((f) => f.type === 'error')).toMatchObject({
      request_id: queued.request_id,
      error: { code: 'SESSION_EXPIRED' },
    });
    expect((await nextGrant).client_id).toBe('next-in-line');
    expect(doomed.frames.filter(granted)).toHaveLength(0);
  });

  it('an ephemeral lock (tied to the WebSocket connection) is released to the next waiter when it closes', async () => {
    const lock = lockName();
    const owner = await PushClient.open(stack.wsUrl, api, 'eph');
    const got = await owner.acquire(lock, { ephemeral: true, ttl_ms: undefined, wait_timeout_ms: 0 });
    expect(got).toMatchObject({ status: 200, body: { acquired: true, client_id: 'eph', expires_at: null } });
    expect((await view(lock)).holders[0].session_id).toMatch(/^conn-/);
    const waiter = await waitOn(lock, 'after-eph');
    const grant = waiter.granted();
    await owner.close(); // $disconnect
    expect((await grant).fencing_token).toBeGreaterThan(got.body.fencing_token);
    // A lock without ttl_ms and without a session (or ephemeral) is refused.
    const bare = await connect('bare');
    expect(await bare.acquire(lockName(), { ttl_ms: undefined })).toMatchObject({
      status: 400,
      body: { error: { code: 'INVALID_REQUEST' } },
    });
    // Ephemeral needs a connection to be held through.
    expect(
      await api.post(`/api/v1/locks/${lockName()}/acquire`, { client_id: 'bare', ephemeral: true }),
    ).toMatchObject({ status: 400, body: { error: { code: 'INVALID_REQUEST' } } });
  });
});
