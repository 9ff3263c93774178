/**
 * The SDK's WebSocket waiter follows a request's one outcome (against a
 * scripted server): the same grant twice is one grant; a grant nobody waits
 * for is released; a retryable error frame means "ask again, same request";
 * a wait past its end is cancelled and the cancel's answer is the outcome.
 */
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { type WebSocket, WebSocketServer } from 'ws';
import type { GrantAnswer } from '../../sdk/lease';
import { SignedTransport } from '../../sdk/transport';
import { WsWaiter } from '../../sdk/ws-waiter';

// biome-ignore lint/suspicious/noExplicitAny: scripted frames
type Message = Record<string, any>;

let server: WebSocketServer | undefined;
let waiter: WsWaiter | undefined;
afterEach(async () => {
  waiter?.close();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
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

/** A server that answers each message with `script(message, socket)`; returns what the waiter released. */
async function scripted(script: (message: Message, socket: WebSocket) => void) {
  server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  const received: Message[] = [];
  server.on('connection', (socket) =>
    socket.on('message', (data) => {
      const message = JSON.parse(String(data)) as Message;
      received.push(message);
      script(message, socket);
    }),
  );
  await new Promise((resolve) => server?.once('listening', resolve));
  const url = new URL(`ws://127.0.0.1:${(server.address() as AddressInfo).port}/v1`);
  const released: GrantAnswer[] = [];
  const transport = new SignedTransport({ endpoint: 'http://127.0.0.1:1' });
  waiter = new WsWaiter(url, 'me', transport, async (g) => void released.push(g), 100);
  return { waiter, received, released };
}

const send = (socket: WebSocket, frame: Message) => socket.send(JSON.stringify(frame));
const request = (requestId: string, waitMs = 2_000) => ({ lock: 'L', ttlMs: 5_000, waitMs, requestId });
const until = async (check: () => boolean) => {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
};

describe('WsWaiter', () => {
  it('takes the same grant arriving twice (a push, and the answer to a retry) as one, and keeps it', async () => {
    const { waiter, released } = await scripted((m, socket) => {
      if (m.action !== 'acquire') return;
      send(socket, grant(m.request_id));
      send(socket, grant(m.request_id));
    });
    expect(await waiter.wait(request('r1'))).toMatchObject({ fencing_token: 7 });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(released).toEqual([]);
  });

  it('releases a grant it did not expect: it is this client’s, and nobody will use it', async () => {
    const { waiter, released } = await scripted((m, socket) => {
      if (m.action !== 'acquire') return;
      send(socket, grant('someone-else-s', 9));
      send(socket, grant(m.request_id));
    });
    await waiter.wait(request('r1'));
    await until(() => released.length > 0);
    expect(released).toEqual([expect.objectContaining({ fencing_token: 9 })]);
  });

  it('asks again with the same request when an error frame says the outcome is unknown', async () => {
    const { waiter, received } = await scripted((m, socket) => {
      if (m.action !== 'acquire') return;
      const tries = received.filter((r) => r.action === 'acquire').length;
      if (tries === 1)
        send(socket, {
          type: 'error',
          request_id: m.request_id,
          error: { code: 'UNAVAILABLE', message: 'x' },
        });
      else send(socket, grant(m.request_id));
    });
    expect(await waiter.wait(request('r1'))).toMatchObject({ fencing_token: 7 });
    const tries = received.filter((r) => r.action === 'acquire');
    expect(tries.map((t) => t.request_id)).toEqual(['r1', 'r1']);
    expect(tries[1]?.wait_timeout_ms).toBeGreaterThan(0);
  });

  it('cancels a wait past its end with no answer, and takes the grant if that is the cancel’s answer', async () => {
    const { waiter, received } = await scripted((m, socket) => {
      if (m.action === 'acquire') send(socket, { type: 'queued', request_id: m.request_id, position: 1 });
      if (m.action === 'cancel') send(socket, grant(m.request_id, 11));
    });
    const started = Date.now();
    expect(await waiter.wait(request('r1', 100))).toMatchObject({ fencing_token: 11 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(100);
    expect(received.find((m) => m.action === 'cancel')).toMatchObject({ request_id: 'r1', lock: 'L' });
  });

  it('fails with WaitTimeoutError when the cancel answers that it was cancelled', async () => {
    const { waiter } = await scripted((m, socket) => {
      if (m.action === 'cancel')
        send(socket, { type: 'cancelled', lock: 'L', request_id: m.request_id, removed: 1 });
    });
    await expect(waiter.wait(request('r1', 100))).rejects.toMatchObject({ code: 'WAIT_TIMEOUT' });
  });

  it('on abort, cancels and releases a grant that was already on its way', async () => {
    let socketOf: WebSocket | undefined;
    const { waiter, released } = await scripted((m, socket) => {
      socketOf = socket;
      if (m.action === 'cancel') send(socket, grant(m.request_id, 13));
    });
    const abort = new AbortController();
    const waiting = waiter.wait(request('r1', 5_000), abort.signal);
    await until(() => socketOf !== undefined);
    abort.abort(new Error('stop'));
    await expect(waiting).rejects.toThrow('stop');
    await until(() => released.length > 0);
    expect(released).toEqual([expect.objectContaining({ fencing_token: 13 })]);
  });
});
