/**
 * The SDK's WebSocket waiter follows a request's one outcome, against a
 * scripted server that plays both APIs: the WebSocket (`hello` answered
 * `welcome` with a connection id, grants and timeouts pushed) and the HTTP
 * acquire and cancel. The same grant twice is one grant; a grant nobody
 * waits for is released; a dropped connection or an HTTP answer that never
 * came means "ask again, same request"; a wait past its end is cancelled
 * and the cancel's answer is the outcome.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { type WebSocket, WebSocketServer } from 'ws';
import { ForbiddenError, WaitTimeoutError } from '../../sdk/errors';
import type { GrantAnswer } from '../../sdk/lease';
import { SignedTransport } from '../../sdk/transport';
import { WsWaiter } from '../../sdk/ws-waiter';

// biome-ignore lint/suspicious/noExplicitAny: scripted frames and bodies
type Message = Record<string, any>;

/** What the fake answers an HTTP call with: a status and body, or no answer at all (the socket dropped). */
type Reply = { status?: number; body: Message } | 'drop';

interface Call {
  readonly action: string;
  readonly path: string;
  readonly body: Message;
}

interface Fake {
  /** HTTP calls, in order. */
  readonly calls: Call[];
  /** WebSocket messages, in order, with the connection they came on. */
  readonly messages: (Message & { connection: string })[];
  /** Connection ids handed out, in order. */
  readonly connections: string[];
  /** Pushes a frame to a connection (the newest by default). */
  push(frame: Message, connection?: string): void;
  /** Closes a connection from the server's side (the newest by default). */
  drop(connection?: string): void;
  readonly waiter: WsWaiter;
  /** The grants the waiter released, nobody being there to use them. */
  readonly released: GrantAnswer[];
}

let http: Server | undefined;
let wss: WebSocketServer | undefined;
let current: WsWaiter | undefined;
afterEach(async () => {
  current?.close();
  current = undefined;
  for (const client of wss?.clients ?? []) client.terminate();
  await new Promise<void>((resolve) => (wss ? wss.close(() => resolve()) : resolve()));
  http?.closeAllConnections();
  await new Promise<void>((resolve) => (http ? http.close(() => resolve()) : resolve()));
  http = undefined;
  wss = undefined;
});

const grant = (request_id: string, token = 7) => ({
  type: 'granted',
  lock: 'L',
  request_id,
  client_id: 'me',
  fencing_token: token,
  expires_at: new Date(Date.now() + 5_000).toISOString(),
  remaining_ms: 5_000,
  ttl_ms: 5_000,
  mode: 'exclusive',
});
/** A grant as an HTTP answer says it (acquire, or cancel that found the request granted). */
const grantAnswer = (token = 7) => {
  const { type: _type, request_id: _id, ...rest } = grant('', token);
  return { acquired: true, ...rest, reentry: 1 };
};
const queued = (request_id: string, position = 1) => ({
  acquired: false,
  queued: true,
  lock: 'L',
  request_id,
  position,
  wait_until: new Date(Date.now() + 2_000).toISOString(),
});

async function readJson(req: IncomingMessage): Promise<Message> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return chunks.length ? (JSON.parse(Buffer.concat(chunks).toString('utf8')) as Message) : {};
}

/**
 * A server playing latchkey's two APIs on one port. `acquire` and `cancel` answer the HTTP calls
 * (by default: queued, and cancelled); `onHello` runs after a connection was welcomed.
 */
async function scripted(
  script: {
    acquire?: (body: Message, fake: Fake, nth: number) => Reply;
    cancel?: (body: Message, fake: Fake, nth: number) => Reply;
  } = {},
  options: { attempts?: number } = {},
): Promise<Fake> {
  const calls: Call[] = [];
  const messages: (Message & { connection: string })[] = [];
  const connections: string[] = [];
  const sockets = new Map<string, WebSocket>();
  const released: GrantAnswer[] = [];
  const newest = () => connections.at(-1) as string;
  const fake: Fake = {
    calls,
    messages,
    connections,
    push: (frame, connection = newest()) => sockets.get(connection)?.send(JSON.stringify(frame)),
    drop: (connection = newest()) => sockets.get(connection)?.terminate(),
    get waiter() {
      return current as WsWaiter;
    },
    released,
  };

  http = createServer(async (req, res) => {
    const body = await readJson(req);
    const action = (req.url ?? '').split('/').at(-1) ?? '';
    calls.push({ action, path: req.url ?? '', body });
    const nth = calls.filter((c) => c.action === action).length;
    const reply: Reply =
      action === 'acquire'
        ? (script.acquire?.(body, fake, nth) ?? { body: queued(body.request_id) })
        : action === 'cancel'
          ? (script.cancel?.(body, fake, nth) ?? { body: { cancelled: true, lock: 'L', removed: 1 } })
          : { status: 404, body: { error: { code: 'NOT_FOUND', message: 'no route' } } };
    if (reply === 'drop') {
      req.socket.destroy(); // the request arrived; its answer never does
      return;
    }
    res.writeHead(reply.status ?? 200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(reply.body));
  });
  wss = new WebSocketServer({ server: http });
  wss.on('connection', (socket) => {
    const id = `conn-${connections.length + 1}=`;
    connections.push(id);
    sockets.set(id, socket);
    socket.on('message', (data) => {
      const message = JSON.parse(String(data)) as Message;
      messages.push({ ...message, connection: id });
      if (message.action === 'hello')
        socket.send(JSON.stringify({ type: 'welcome', connection_id: id, client_id: 'me' }));
      else if (message.action === 'ping') socket.send(JSON.stringify({ type: 'pong' }));
      else
        socket.send(
          JSON.stringify({ type: 'error', error: { code: 'INVALID_REQUEST', message: 'use HTTP' } }),
        );
    });
  });
  await new Promise<void>((resolve) => http?.listen(0, '127.0.0.1', resolve));
  const port = (http.address() as AddressInfo).port;
  const transport = new SignedTransport({
    endpoint: `http://127.0.0.1:${port}`,
    ...(options.attempts ? { maxAttempts: options.attempts } : {}),
  });
  current = new WsWaiter(
    new URL(`ws://127.0.0.1:${port}/v1`),
    'me',
    transport,
    async (g) => void released.push(g),
    100,
  );
  return fake;
}

const request = (requestId: string, waitMs = 2_000) => ({ lock: 'L', ttlMs: 5_000, waitMs, requestId });
const until = async (check: () => boolean) => {
  for (let i = 0; i < 300 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const acquires = (fake: Fake) => fake.calls.filter((c) => c.action === 'acquire').map((c) => c.body);

describe('WsWaiter', () => {
  it('says hello, asks over HTTP naming the connection it was told, and takes the grant pushed there', async () => {
    const fake = await scripted({
      acquire: (body, f) => {
        setTimeout(() => f.push(grant(body.request_id)), 20);
        return { body: queued(body.request_id) };
      },
    });
    const waiting = fake.waiter.wait({ ...request('r1', 3_000), priority: 5 });
    expect(await waiting).toMatchObject({ fencing_token: 7, request_id: 'r1' });
    expect(fake.messages[0]).toMatchObject({ action: 'hello', connection: 'conn-1=' });
    expect(fake.calls).toHaveLength(1);
    expect(fake.calls[0]?.path).toBe('/api/v1/locks/L/acquire');
    const [asked] = acquires(fake);
    expect(asked).toMatchObject({
      client_id: 'me',
      request_id: 'r1',
      connection_id: 'conn-1=',
      ttl_ms: 5_000,
      priority: 5,
    });
    expect(asked?.wait_timeout_ms).toBeGreaterThan(2_900);
    expect(asked?.wait_timeout_ms).toBeLessThanOrEqual(3_000);
    expect(fake.released).toEqual([]);
  });

  it('takes a grant in the HTTP answer; the same grant pushed as well is one grant, and kept', async () => {
    const fake = await scripted({
      acquire: (body, f) => {
        f.push(grant(body.request_id)); // pushed first, then answered with it too
        return { body: grantAnswer() };
      },
    });
    expect(await fake.waiter.wait(request('r1'))).toMatchObject({ fencing_token: 7 });
    fake.push(grant('r1')); // and once more, late
    await sleep(100);
    expect(fake.released).toEqual([]);
    expect(acquires(fake)).toHaveLength(1);
  });

  it('releases a grant it did not expect: it is this client’s, and nobody will use it', async () => {
    const fake = await scripted({
      acquire: (body, f) => {
        f.push(grant('someone-else-s', 9));
        f.push(grant(body.request_id));
        return { body: queued(body.request_id) };
      },
    });
    expect(await fake.waiter.wait(request('r1'))).toMatchObject({ fencing_token: 7 });
    await until(() => fake.released.length > 0);
    expect(fake.released).toEqual([expect.objectContaining({ fencing_token: 9 })]);
  });

  it('when the connection drops, asks again with the same request on a new connection, and takes the grant there', async () => {
    const fake = await scripted({
      acquire: (body, f, nth) => {
        if (nth === 1)
          setTimeout(() => f.drop(), 20); // queued, then the connection goes
        else setTimeout(() => f.push(grant(body.request_id, 21)), 20);
        return { body: queued(body.request_id) };
      },
    });
    expect(await fake.waiter.wait(request('r1', 3_000))).toMatchObject({ fencing_token: 21 });
    expect(fake.connections).toEqual(['conn-1=', 'conn-2=']);
    const [first, second] = acquires(fake);
    expect(first).toMatchObject({ request_id: 'r1', connection_id: 'conn-1=' });
    expect(second).toMatchObject({ request_id: 'r1', connection_id: 'conn-2=' });
    // What is left of the wait, not more.
    expect(second?.wait_timeout_ms).toBeGreaterThan(0);
    expect(second?.wait_timeout_ms).toBeLessThanOrEqual(first?.wait_timeout_ms);
    expect(fake.messages.filter((m) => m.action === 'hello').map((m) => m.connection)).toEqual([
      'conn-1=',
      'conn-2=',
    ]);
    expect(fake.released).toEqual([]);
  });

  it('asks again with the same request when the HTTP answer never came', async () => {
    const fake = await scripted(
      {
        acquire: (_body, _f, nth) => (nth === 1 ? 'drop' : { body: grantAnswer(8) }),
      },
      { attempts: 1 }, // the transport gives up at once: the waiter's own retry is what is tested
    );
    expect(await fake.waiter.wait(request('r1', 3_000))).toMatchObject({ fencing_token: 8 });
    const tries = acquires(fake);
    expect(tries.map((t) => t.request_id)).toEqual(['r1', 'r1']);
    expect(tries.map((t) => t.connection_id)).toEqual(['conn-1=', 'conn-1=']);
    expect(tries[1]?.wait_timeout_ms).toBeGreaterThan(0);
    expect(fake.connections).toHaveLength(1);
  });

  it('cancels a wait past its end with no answer, and takes the grant if that is the cancel’s answer', async () => {
    const fake = await scripted({
      cancel: () => ({ body: { cancelled: false, ...grantAnswer(11) } }),
    });
    const started = Date.now();
    expect(await fake.waiter.wait(request('r1', 100))).toMatchObject({ fencing_token: 11 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(100);
    const cancel = fake.calls.find((c) => c.action === 'cancel');
    expect(cancel?.path).toBe('/api/v1/locks/L/cancel');
    expect(cancel?.body).toEqual({ client_id: 'me', request_id: 'r1', connection_id: 'conn-1=' });
    expect(fake.released).toEqual([]);
  });

  it('fails with WaitTimeoutError when the cancel answers that it was cancelled', async () => {
    const fake = await scripted();
    await expect(fake.waiter.wait(request('r1', 100))).rejects.toBeInstanceOf(WaitTimeoutError);
    expect(fake.calls.map((c) => c.action)).toEqual(['acquire', 'cancel']);
  });

  it('ends the wait with WaitTimeoutError on the server’s timeout frame, without a cancel', async () => {
    const fake = await scripted({
      acquire: (body, f) => {
        setTimeout(() => f.push({ type: 'timeout', lock: 'L', request_id: body.request_id }), 20);
        return { body: queued(body.request_id) };
      },
    });
    await expect(fake.waiter.wait(request('r1', 2_000))).rejects.toBeInstanceOf(WaitTimeoutError);
    expect(fake.calls.map((c) => c.action)).toEqual(['acquire']);
  });

  it('takes an answer of not acquired (nothing queued) at the end of the wait as its end', async () => {
    const fake = await scripted({
      acquire: () => ({ body: { acquired: false, lock: 'L', holder: null, queued: 0 } }),
    });
    const started = Date.now();
    await expect(fake.waiter.wait(request('r1', 300))).rejects.toBeInstanceOf(WaitTimeoutError);
    expect(Date.now() - started).toBeLessThan(300 + 100); // no cancel needed: that was the outcome
    expect(fake.calls.map((c) => c.action)).toEqual(['acquire']);
  });

  it('fails with the typed error of a refused acquire, and does not ask again', async () => {
    const fake = await scripted({
      acquire: () => ({
        status: 403,
        body: { error: { code: 'FORBIDDEN', message: 'another principal’s connection' } },
      }),
    });
    await expect(fake.waiter.wait(request('r1', 2_000))).rejects.toBeInstanceOf(ForbiddenError);
    await sleep(100);
    expect(acquires(fake)).toHaveLength(1);
  });

  it('on abort, cancels and releases a grant that was already on its way', async () => {
    const fake = await scripted({
      cancel: () => ({ body: { cancelled: false, ...grantAnswer(13) } }),
    });
    const abort = new AbortController();
    const waiting = fake.waiter.wait(request('r1', 5_000), abort.signal);
    await until(() => acquires(fake).length > 0);
    abort.abort(new Error('stop'));
    await expect(waiting).rejects.toThrow('stop');
    await until(() => fake.released.length > 0);
    expect(fake.released).toEqual([expect.objectContaining({ fencing_token: 13 })]);
  });

  it('releases a grant pushed after its wait was given up (the cancel found nobody to answer)', async () => {
    const fake = await scripted({
      cancel: () => ({ status: 500, body: { error: { code: 'INTERNAL', message: 'x' } } }),
    });
    await expect(fake.waiter.wait(request('r1', 100))).rejects.toBeInstanceOf(WaitTimeoutError);
    fake.push(grant('r1', 17)); // the grant that was on its way
    await until(() => fake.released.length > 0);
    expect(fake.released).toEqual([expect.objectContaining({ fencing_token: 17 })]);
  });
});
