/**
 * The authorization matrix, against the local stack with two principals (two SigV4 key pairs):
 * Alice takes a lease, a lock through a session, a waiting request and a WebSocket connection;
 * then Bob, knowing every id and token Alice has (client ids, fencing tokens, the session id,
 * request ids, the connection id), tries every route and WebSocket action on them. Each attempt
 * must be refused or touch only Bob's own things, Alice's items must be exactly as they were, and
 * no answer Bob gets may contain Alice's tokens or session id. Then Alice does the same actions
 * and they work: the refusals are about who asks, not about the requests.
 */
import { randomUUID } from 'node:crypto';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { LocalStack } from '../../local/stack';
import { type SignedResponse, signedClient } from '../support/signed-fetch';
import { startTestStack } from '../support/stack';

const ALICE = { accessKeyId: 'alice', secretAccessKey: 'alice-secret' };
const BOB = { accessKeyId: 'bob', secretAccessKey: 'bob-secret' };

interface Socket {
  readonly ws: WebSocket;
  readonly id: string;
  readonly frames: Record<string, unknown>[];
}

/** A signed WebSocket connection that has said hello: its id, and every frame it receives. */
async function connect(url: string, credentials: typeof ALICE, clientId: string): Promise<Socket> {
  const target = new URL(url);
  target.searchParams.set('client_id', clientId);
  const signer = new SignatureV4({
    credentials,
    region: 'us-east-1',
    service: 'execute-api',
    sha256: Sha256,
  });
  const signed = await signer.sign(
    new HttpRequest({
      method: 'GET',
      protocol: 'http:',
      hostname: target.hostname,
      port: Number(target.port),
      path: target.pathname,
      query: Object.fromEntries(target.searchParams),
      headers: { host: target.host },
    }),
  );
  const ws = new WebSocket(target, { headers: signed.headers as Record<string, string> });
  const frames: Record<string, unknown>[] = [];
  ws.on('message', (data) => frames.push(JSON.parse(String(data))));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.send(JSON.stringify({ action: 'hello' }));
  const welcome = await until(() => frames.find((f) => f.type === 'welcome'));
  return { ws, id: String(welcome.connection_id), frames };
}

async function until<T>(find: () => T | undefined, ms = 5_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const found = find();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('authorization matrix: every route and WebSocket action, owner versus another principal', () => {
  let stack: LocalStack;
  let alice: ReturnType<typeof signedClient>;
  let bob: ReturnType<typeof signedClient>;
  // What Alice has, all of which Bob is assumed to know.
  const lease = { name: `authz/lease-${randomUUID()}`, client: 'alice-1', token: 0 };
  const inSession = { name: `authz/session-${randomUUID()}`, client: 'alice-1', token: 0, session: '' };
  const waiting = { client: 'alice-2', requestId: `wait-${randomUUID()}` };
  let aliceSocket: Socket;
  /** Every answer Bob got, for the leak check. */
  const bobSaw: string[] = [];

  const asBob = async (run: () => Promise<SignedResponse>) => {
    const answer = await run();
    bobSaw.push(answer.text);
    return answer;
  };

  /** Alice's items as Alice sees them: what Bob must not change. */
  async function aliceState() {
    const view = async (name: string) => (await alice.get(`/api/v1/locks/${name}`)).body;
    const session = await alice.post(`/api/v1/sessions/${inSession.session}/heartbeat`, {
      client_id: inSession.client,
    });
    return {
      lease: await view(lease.name),
      inSession: await view(inSession.name),
      // The heartbeat moves the session's deadline: compare what it is, not when it ends.
      session: { id: session.body.session_id, state: session.body.state, status: session.status },
    };
  }

  beforeAll(async () => {
    stack = await startTestStack('authz', { credentials: 'alice:alice-secret,bob:bob-secret' });
    alice = signedClient(stack.url, ALICE);
    bob = signedClient(stack.url, BOB);
    const got = await alice.post(`/api/v1/locks/${lease.name}/acquire`, {
      client_id: lease.client,
      ttl_ms: 600_000,
    });
    expect(got.status).toBe(200);
    lease.token = got.body.fencing_token;
    const session = await alice.post('/api/v1/sessions', { client_id: inSession.client, ttl_ms: 600_000 });
    expect(session.status).toBe(201);
    inSession.session = session.body.session_id;
    const held = await alice.post(`/api/v1/locks/${inSession.name}/acquire`, {
      client_id: inSession.client,
      session_id: inSession.session,
    });
    expect(held.status).toBe(200);
    inSession.token = held.body.fencing_token;
    aliceSocket = await connect(stack.wsUrl, ALICE, waiting.client);
    const queued = await alice.post(`/api/v1/locks/${lease.name}/acquire`, {
      client_id: waiting.client,
      ttl_ms: 10_000,
      wait_timeout_ms: 600_000,
      request_id: waiting.requestId,
      connection_id: aliceSocket.id,
      with_position: true,
    });
    expect(queued.body).toMatchObject({ queued: true, position: 1 });
  });

  afterAll(async () => {
    aliceSocket?.ws.close();
    await stack?.stop();
  });

  it("refuses Bob every action on what is Alice's, changes nothing, and shows him no capability", async () => {
    const before = await aliceState();
    const refusals: { what: string; status: number; code?: string }[] = [];
    const expectRefused = async (what: string, run: () => Promise<SignedResponse>, status = 403) => {
      const answer = await asBob(run);
      refusals.push({ what, status: answer.status, code: answer.body?.error?.code });
      expect(answer.status, `${what}: ${answer.text}`).toBe(status);
    };
    const L = `/api/v1/locks/${lease.name}`;
    const S = `/api/v1/locks/${inSession.name}`;
    // Lock commands with Alice's client ids and tokens.
    await expectRefused('release her lease', () =>
      bob.post(`${L}/release`, { client_id: lease.client, fencing_token: lease.token }),
    );
    await expectRefused('renew her lease', () =>
      bob.post(`${L}/renew`, { client_id: lease.client, fencing_token: lease.token, ttl_ms: 1_000 }),
    );
    await expectRefused('release her session lock', () =>
      bob.post(`${S}/release`, { client_id: inSession.client, fencing_token: inSession.token }),
    );
    await expectRefused('renew her session lock', () =>
      bob.post(`${S}/renew`, { client_id: inSession.client, fencing_token: inSession.token, ttl_ms: 1_000 }),
    );
    // Her session.
    await expectRefused('heartbeat her session', () =>
      bob.post(`/api/v1/sessions/${inSession.session}/heartbeat`, { client_id: inSession.client }),
    );
    await expectRefused('close her session', () =>
      bob.delete(`/api/v1/sessions/${inSession.session}?client_id=${inSession.client}`),
    );
    await expectRefused('acquire through her session', () =>
      bob.post(`/api/v1/locks/authz/other-${randomUUID()}/acquire`, {
        client_id: inSession.client,
        session_id: inSession.session,
      }),
    );
    await expectRefused('wait through her session', () =>
      bob.post(`/api/v1/locks/authz/other-${randomUUID()}/acquire`, {
        client_id: inSession.client,
        session_id: inSession.session,
        wait_timeout_ms: 1_000,
      }),
    );
    // Her WebSocket connection.
    await expectRefused('wait with the grant pushed to her connection', () =>
      bob.post(`${L}/acquire`, {
        client_id: waiting.client,
        ttl_ms: 5_000,
        wait_timeout_ms: 60_000,
        connection_id: aliceSocket.id,
      }),
    );
    await expectRefused('hold a lock through her connection', () =>
      bob.post(`/api/v1/locks/authz/eph-${randomUUID()}/acquire`, {
        client_id: waiting.client,
        ephemeral: true,
        connection_id: aliceSocket.id,
      }),
    );
    await expectRefused('cancel naming her connection', () =>
      bob.post(`${L}/cancel`, {
        client_id: waiting.client,
        request_id: waiting.requestId,
        connection_id: aliceSocket.id,
      }),
    );
    // Her waiting request: Bob's cancels answer, but name only Bob's own requests.
    const byRequest = await asBob(() =>
      bob.post(`${L}/cancel`, { client_id: waiting.client, request_id: waiting.requestId }),
    );
    expect(byRequest.body).toMatchObject({ cancelled: true, removed: 0 });
    const byClient = await asBob(() => bob.post(`${L}/cancel`, { client_id: waiting.client }));
    expect(byClient.body).toMatchObject({ cancelled: true, removed: 0 });
    // Her request id, retried by Bob: a request of Bob's own (it is refused as a try; it is not hers).
    const retry = await asBob(() =>
      bob.post(`${L}/acquire`, { client_id: waiting.client, ttl_ms: 5_000, request_id: waiting.requestId }),
    );
    expect(retry.body.acquired).toBe(false);
    // Re-entering her lock with her client id: not his to re-enter.
    const reenter = await asBob(() =>
      bob.post(`${L}/acquire`, { client_id: lease.client, ttl_ms: 5_000, reentrant: true }),
    );
    expect(reenter.body.acquired).toBe(false);
    // Views: held, by which label, until when; never her tokens or session.
    const view = await asBob(() => bob.get(L));
    expect(view.body.holders[0]).toMatchObject({ client_id: lease.client, mine: false });
    expect(view.body.holders[0]).not.toHaveProperty('fencing_token');
    expect(view.body.fencing_token).toBeNull();
    expect(view.body.waiters).toHaveLength(1);
    const sessionView = await asBob(() => bob.get(S));
    expect(sessionView.body.holders[0]).not.toHaveProperty('session_id');
    await asBob(() => bob.get('/api/v1/list/authz/'));
    await asBob(() => bob.get('/api/v1/list'));
    await asBob(() => bob.post(`${L}/release`, { client_id: lease.client, fencing_token: lease.token + 1 }));
    await asBob(() => bob.post(`${L}/release`, { client_id: 'bob-1', fencing_token: lease.token }));
    // Over his own WebSocket: no commands at all, and his hello tells only his own connection.
    const bobSocket = await connect(stack.wsUrl, BOB, 'bob-1');
    bobSocket.ws.send(
      JSON.stringify({ action: 'acquire', lock: lease.name, ttl_ms: 5_000, wait_timeout_ms: 10_000 }),
    );
    bobSocket.ws.send(JSON.stringify({ action: 'cancel', lock: lease.name, request_id: waiting.requestId }));
    const errors = await until(() => {
      const e = bobSocket.frames.filter((f) => f.type === 'error');
      return e.length >= 2 ? e : undefined;
    });
    for (const e of errors) expect((e.error as { code: string }).code).toBe('INVALID_REQUEST');
    expect(bobSocket.id).not.toBe(aliceSocket.id);
    bobSaw.push(...bobSocket.frames.map((f) => JSON.stringify(f)));
    bobSocket.ws.close();

    // Nothing of Alice's changed.
    expect(await aliceState()).toEqual(before);
    expect((await alice.get(L)).body.waiters).toHaveLength(1);
    // Bob saw none of her capabilities, anywhere.
    const everything = bobSaw.join('\n');
    for (const secret of [String(lease.token), String(inSession.token), inSession.session])
      expect(everything.includes(secret), `Bob saw ${secret}`).toBe(false);
    expect(refusals.every((r) => r.status === 403 && r.code === 'FORBIDDEN')).toBe(true);
  });

  it('lets Alice do every one of those actions on her own things', async () => {
    const L = `/api/v1/locks/${lease.name}`;
    const own = await alice.get(L);
    expect(own.body.holders[0]).toMatchObject({ mine: true, fencing_token: lease.token });
    expect(own.body.fencing_token).toBe(lease.token);
    expect((await alice.get(`/api/v1/locks/${inSession.name}`)).body.holders[0].session_id).toBe(
      inSession.session,
    );
    const renewed = await alice.post(`${L}/renew`, {
      client_id: lease.client,
      fencing_token: lease.token,
      ttl_ms: 600_000,
    });
    expect(renewed.status).toBe(200);
    expect(
      (await alice.post(`/api/v1/sessions/${inSession.session}/heartbeat`, { client_id: inSession.client }))
        .status,
    ).toBe(200);
    const cancelled = await alice.post(`${L}/cancel`, {
      client_id: waiting.client,
      request_id: waiting.requestId,
      connection_id: aliceSocket.id,
    });
    expect(cancelled.body).toMatchObject({ cancelled: true, removed: 1 });
    const released = await alice.post(`${L}/release`, {
      client_id: lease.client,
      fencing_token: lease.token,
    });
    expect(released.body).toMatchObject({ released: true });
    const closed = await alice.delete(`/api/v1/sessions/${inSession.session}?client_id=${inSession.client}`);
    expect(closed.body).toMatchObject({ state: 'ended', locks_released: 1 });
    // A wait pushed to her own connection, held through it.
    const name = `authz/eph-${randomUUID()}`;
    const eph = await alice.post(`/api/v1/locks/${name}/acquire`, {
      client_id: waiting.client,
      ephemeral: true,
      connection_id: aliceSocket.id,
    });
    expect(eph.body).toMatchObject({ acquired: true });
  });

  it('lets an operator force-release any lock, fencing its holder out', async () => {
    // (Locally every signed principal may call every route: IAM policies are AWS's. The route is
    // separate so that IAM grants it separately; test/infra checks its authorization.)
    const name = `authz/forced-${randomUUID()}`;
    const got = await alice.post(`/api/v1/locks/${name}/acquire`, { client_id: 'alice-1', ttl_ms: 600_000 });
    const forced = await bob.post(`/api/v1/admin/locks/${name}/force-release`, { reason: 'stuck job' });
    expect(forced.body).toMatchObject({
      released: true,
      holder: { client_id: 'alice-1', fencing_token: got.body.fencing_token },
      fenced_to: got.body.fencing_token + 1,
      by: 'arn:aws:iam::000000000000:user/bob',
    });
    const late = await alice.post(`/api/v1/locks/${name}/release`, {
      client_id: 'alice-1',
      fencing_token: got.body.fencing_token,
    });
    expect(late.status).toBe(409);
    const next = await bob.post(`/api/v1/locks/${name}/acquire`, { client_id: 'bob-1', ttl_ms: 5_000 });
    expect(next.body.fencing_token).toBe(got.body.fencing_token + 2);
  });
});
