/**
 * What a new user runs into, each answered with an error that names the fix: a missing optional
 * argument takes its documented default (never a raw TypeError); a wrong one is an
 * InvalidArgumentError naming it and saying what it takes; every duration is rounded to whole ms
 * and NaN, Infinity, negative or text refused before anything is sent; a WebSocket URL without
 * its stage, an unreachable endpoint and a refused handshake say what to fix.
 */
import { randomUUID } from 'node:crypto';
import { getEventListeners } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { WebSocketServer } from 'ws';
import { type Endpoints, resolveEndpoints } from '../../sdk/cli/endpoints';
import { CLIENT_VERSION, explain, main, program } from '../../sdk/cli/main';
import {
  DeadlockError,
  EndpointError,
  errorFromResponse,
  InvalidArgumentError,
  LatchkeyClientError,
  LeaseLostError,
  WaitTimeoutError,
} from '../../sdk/errors';
import {
  InvalidRequestError,
  Lease,
  LockClient,
  type LockClientOptions,
  parseDuration,
  RetryWarning,
  UnauthorizedError,
  UnavailableError,
} from '../../sdk/index';
import { SignedTransport } from '../../sdk/transport';
import { handshakeRefusal } from '../../sdk/ws-waiter';

// biome-ignore lint/suspicious/noExplicitAny: wire bodies
type Body = Record<string, any>;

interface Sent {
  readonly method: string;
  readonly path: string;
  readonly body: Body | undefined;
}

const grant = (lock: string, ttl = 30_000) => ({
  acquired: true,
  lock,
  client_id: 'me',
  fencing_token: 7,
  expires_at: new Date(Date.now() + ttl).toISOString(),
  remaining_ms: ttl,
  ttl_ms: ttl,
});

/** A client whose transport answers like latchkey without a network, recording what it was sent. */
function stubbed(options: Partial<LockClientOptions> = {}) {
  const client = new LockClient({ endpoint: 'http://127.0.0.1:9', clientId: 'me', ...options });
  const sent: Sent[] = [];
  vi.spyOn(client.transport, 'send').mockImplementation(async (method, path, body) => {
    sent.push({ method, path, body: body as Body | undefined });
    const lock = /\/locks\/(.+)\/(acquire|renew|release)$/.exec(path);
    if (path === '/api/v1/sessions')
      return {
        status: 200,
        body: {
          session_id: randomUUID(),
          ttl_ms: (body as Body).ttl_ms,
          heartbeat_interval_ms: (body as Body).ttl_ms / 3,
        },
      };
    if (lock?.[2] === 'acquire') {
      const b = body as Body;
      return {
        status: 200,
        body:
          b.session_id === undefined
            ? grant(lock[1] as string, b.ttl_ms)
            : { ...grant(lock[1] as string), expires_at: null, remaining_ms: null, ttl_ms: null },
      };
    }
    if (lock?.[2] === 'renew')
      return {
        status: 200,
        body: {
          expires_at: new Date().toISOString(),
          remaining_ms: (body as Body).ttl_ms,
          ttl_ms: (body as Body).ttl_ms,
        },
      };
    return { status: 200, body: {} };
  });
  return { client, sent };
}

const lease = (ttl = 30_000) =>
  new Lease(
    {
      lock: 'jobs/x',
      client_id: 'me',
      fencing_token: 7,
      expires_at: new Date().toISOString(),
      remaining_ms: ttl,
      ttl_ms: ttl,
    },
    performance.now(),
  );

/** The error a call fails with (sync throw or rejection), asserted to be no raw TypeError. */
async function failure(call: () => unknown): Promise<LatchkeyClientError> {
  let error: unknown;
  try {
    await call();
  } catch (e) {
    error = e;
  }
  expect(error, 'the call should have failed').toBeDefined();
  expect(error).not.toBeInstanceOf(TypeError);
  return error as LatchkeyClientError;
}

async function refused(call: () => unknown, argument: string, says: RegExp): Promise<void> {
  const error = await failure(call);
  expect(error).toBeInstanceOf(InvalidArgumentError);
  expect(error).toBeInstanceOf(InvalidRequestError); // what callers already catch
  expect((error as InvalidArgumentError).argument).toBe(argument);
  expect(error.message).toMatch(says);
}

describe('a missing optional argument takes its documented default', () => {
  it('tryAcquire(name) and acquire(name): a 30 s lease; acquire waits until granted', async () => {
    const { client, sent } = stubbed();
    expect(await client.tryAcquire('jobs/a')).toMatchObject({ name: 'jobs/a', ttlMs: 30_000 });
    expect(sent.at(-1)?.body).toMatchObject({ ttl_ms: 30_000 });
    expect(sent.at(-1)?.body).not.toHaveProperty('wait_timeout_ms');
    await client.acquire('jobs/b');
    // No WebSocket API: HTTP waits of 25 s each, for as long as it takes.
    expect(sent.at(-1)?.body).toMatchObject({ ttl_ms: 30_000, wait_timeout_ms: 25_000 });
    await client.acquire('jobs/c', { ttlMs: 10_000 });
    expect(sent.at(-1)?.body).toMatchObject({ ttl_ms: 10_000, wait_timeout_ms: 25_000 });
  });

  it('withLock(name, fn) and withLock(name, undefined, fn): a 30 s lease, no wait', async () => {
    const { client, sent } = stubbed();
    expect(await client.withLock('jobs/a', async (l) => l.fencingToken)).toBe(7);
    expect(sent[0]?.body).toMatchObject({ ttl_ms: 30_000 });
    expect(sent[0]?.body).not.toHaveProperty('wait_timeout_ms');
    expect(sent.at(-1)?.path).toMatch(/release$/);
    expect(await client.withLock('jobs/a', undefined, () => 'sync values too')).toBe('sync values too');
  });

  it('renew(lease): its own ttl; session(): 30 s; session.acquire(name): waits, tied to the session', async () => {
    const { client, sent } = stubbed();
    await client.renew(lease(12_000));
    expect(sent.at(-1)?.body).toMatchObject({ ttl_ms: 12_000 });
    await client.renew(lease(12_000), {});
    expect(sent.at(-1)?.body).toMatchObject({ ttl_ms: 12_000 });
    await client.renew(lease(12_000), { ttlMs: 7_000 });
    expect(sent.at(-1)?.body).toMatchObject({ ttl_ms: 7_000 });
    const session = await client.session();
    expect(sent.at(-1)?.body).toMatchObject({ ttl_ms: 30_000 });
    expect(sent.at(-1)?.body).not.toHaveProperty('grace_ms');
    await session.acquire('jobs/s');
    expect(sent.at(-1)?.body).toMatchObject({ session_id: session.id, wait_timeout_ms: 25_000 });
    expect(sent.at(-1)?.body).not.toHaveProperty('ttl_ms');
    await session.tryAcquire('jobs/t');
    expect(sent.at(-1)?.body).toMatchObject({ session_id: session.id });
    await session.close();
    // Its end names the session (no lock: every lock it held went with it).
    expect(session.signal.reason).toMatchObject({ sessionId: session.id, lock: undefined });
  });
});

describe('every duration option', () => {
  const { client, sent } = stubbed();
  const cases: [string, string, (ms: number) => Promise<unknown>, string][] = [
    ['tryAcquire', 'ttlMs', (ms) => client.tryAcquire('d/a', { ttlMs: ms }), 'ttl_ms'],
    ['acquire', 'ttlMs', (ms) => client.acquire('d/a', { ttlMs: ms, waitTimeoutMs: 1_000 }), 'ttl_ms'],
    ['acquire', 'waitTimeoutMs', (ms) => client.acquire('d/a', { waitTimeoutMs: ms }), 'wait_timeout_ms'],
    ['withLock', 'ttlMs', (ms) => client.withLock('d/a', { ttlMs: ms }, async () => {}), 'ttl_ms'],
    [
      'withLock',
      'waitTimeoutMs',
      (ms) => client.withLock('d/a', { waitTimeoutMs: ms }, async () => {}),
      'wait_timeout_ms',
    ],
    ['renew', 'ttlMs', (ms) => client.renew(lease(), ms), 'ttl_ms'],
    ['renew', 'ttlMs', (ms) => client.renew(lease(), { ttlMs: ms }), 'ttl_ms'],
    ['session', 'ttlMs', (ms) => client.session({ ttlMs: ms }).then((s) => s.close()), 'ttl_ms'],
    ['session', 'graceMs', (ms) => client.session({ graceMs: ms }).then((s) => s.close()), 'grace_ms'],
    [
      'session',
      'lockDelayMs',
      (ms) => client.session({ lockDelayMs: ms }).then((s) => s.close()),
      'lock_delay_ms',
    ],
  ];

  it.each(cases)('%s %s: any finite duration is rounded to whole ms', async (_call, _option, call, field) => {
    sent.length = 0;
    await call(2_499.7);
    // The request that carries it (a session's is its opening, before the close).
    const carrying = sent.find((s) => s.body && field in s.body)?.body?.[field];
    expect(Number.isInteger(carrying)).toBe(true);
    // A wait is sent as what is left of it: a moment less.
    expect(carrying).toBeGreaterThanOrEqual(field === 'wait_timeout_ms' ? 2_450 : 2_500);
    expect(carrying).toBeLessThanOrEqual(2_500);
  });

  it.each(cases)(
    '%s %s: NaN, -Infinity, a negative number or text is refused, naming the option',
    async (_call, option, call) => {
      sent.length = 0;
      await refused(
        () => call(Number.NaN),
        option,
        new RegExp(`^${option} must be a number of milliseconds, not NaN`),
      );
      await refused(() => call(Number.NEGATIVE_INFINITY), option, new RegExp(`^${option} must be a finite`));
      await refused(() => call(-1), option, new RegExp(`^${option} must not be negative \\(got -1 ms\\)`));
      await refused(
        () => call('30s' as unknown as number),
        option,
        new RegExp(`^${option} must be a number of milliseconds \\(got '30s'\\).*parseDuration\\('30s'\\)`),
      );
      expect(sent).toEqual([]); // refused before anything was sent
    },
  );

  it('Infinity is no limit for a wait, and refused for every other duration', async () => {
    for (const [, option, call] of cases) {
      if (option === 'waitTimeoutMs') continue;
      await refused(
        () => call(Number.POSITIVE_INFINITY),
        option,
        /must be a finite number of milliseconds \(got Infinity\)/,
      );
    }
    const { client: c, sent: s } = stubbed();
    await c.acquire('d/forever', { waitTimeoutMs: Number.POSITIVE_INFINITY });
    expect(s.at(-1)?.body).toMatchObject({ wait_timeout_ms: 25_000 });
  });
});

describe('a wrong argument is an InvalidArgumentError saying what was expected', () => {
  const { client, sent } = stubbed();

  it('names, options, leases, functions, priorities, signals, reasons, limits', async () => {
    await refused(
      () => client.tryAcquire(42 as unknown as string),
      'name',
      /tryAcquire: name must be the lock's name, a string/,
    );
    await refused(() => client.acquire(undefined as unknown as string), 'name', /acquire: name must be/);
    await refused(
      () => client.tryAcquire('x', 30_000 as unknown as object),
      'options',
      /tryAcquire: options must be an object, e\.g\. \{ ttlMs: 30_000 \} \(got 30000\)/,
    );
    await refused(
      () => client.release(undefined as unknown as Lease),
      'lease',
      /release takes the Lease that tryAcquire or acquire answered \(got undefined\)/,
    );
    await refused(() => client.renew('x' as unknown as Lease), 'lease', /renew takes the Lease/);
    await refused(
      () => client.withLock('x', { ttlMs: 1_000 }, undefined as never),
      'fn',
      /fn must be a function \(lease, signal\)/,
    );
    await refused(() => client.acquire('x', { priority: 1.5 }), 'priority', /integer from -100 to 100/);
    await refused(() => client.acquire('x', { priority: 500 }), 'priority', /integer from -100 to 100/);
    await refused(() => client.withLock('x', { priority: 1.5 }, async () => {}), 'priority', /integer/);
    await refused(
      () => client.acquire('x', { signal: 'stop' as unknown as AbortSignal }),
      'signal',
      /AbortSignal/,
    );
    await refused(
      () => client.tryAcquire('x', { reentrant: 'yes' as unknown as boolean }),
      'reentrant',
      /true or false/,
    );
    await refused(
      () => client.tryAcquire('x', { mode: 'read' as 'shared' }),
      'mode',
      /mode must be 'exclusive' \(one holder, the default\) or 'shared'/,
    );
    await refused(() => client.tryAcquire('x', { maxHolders: 2 }), 'maxHolders', /takes mode: 'shared'/);
    // An option a call does not take is refused, not ignored (its default would be in force unseen).
    const loose = (options: object) => options as never;
    await refused(
      () => client.tryAcquire('x', loose({ ttl: 5_000 })),
      'ttl',
      /^tryAcquire: no option ttl \(did you mean ttlMs\?\); it takes ttlMs, reentrant, mode, maxHolders, sessionId$/,
    );
    await refused(
      () => client.acquire('x', loose({ wait_timeout_ms: 1 })),
      'wait_timeout_ms',
      /mean waitTimeoutMs/,
    );
    await refused(
      () => client.withLock('x', loose({ timeout: 1 }), async () => {}),
      'timeout',
      /no option timeout;/,
    );
    await refused(
      () => client.withLock('x', loose({ reentrant: true }), async () => {}),
      'reentrant',
      /it takes ttlMs/,
    );
    await refused(() => client.renew(lease(5_000), loose({ ttl: 1 })), 'ttl', /renew: no option ttl/);
    await refused(() => client.session(loose({ grace: 1 })), 'grace', /mean graceMs/);
    await refused(
      () => client.withLocks(['a'], loose({ ttl: 1 }), async () => {}),
      'ttl',
      /withLocks: no option ttl/,
    );
    await refused(() => client.forceRelease('x', undefined as unknown as string), 'reason', /needs a reason/);
    await refused(() => client.list('', 0), 'limit', /positive integer/);
    await refused(() => client.list(7 as unknown as string), 'prefix', /prefix must be a string/);
    await refused(
      () => client.session(15_000 as unknown as object),
      'options',
      /session: options must be an object/,
    );
    expect(sent).toEqual([]);
  });

  it('a lease held through a session has nothing to renew: the message says why', async () => {
    const held = new Lease(
      {
        lock: 'l',
        client_id: 'me',
        fencing_token: 1,
        expires_at: null,
        remaining_ms: null,
        ttl_ms: null,
        session_id: 's',
      },
      0,
    );
    await refused(
      () => client.renew(held),
      'lease',
      /held through session s: it has no lease of its own to renew/,
    );
  });

  it('the client’s own options: endpoint, wsEndpoint, clientId, region', async () => {
    await refused(
      () => new LockClient(undefined as unknown as LockClientOptions),
      'options',
      /needs at least the endpoint: the HTTP API's URL/,
    );
    await refused(
      () => new LockClient({} as LockClientOptions),
      'endpoint',
      /endpoint must be the HTTP API's URL.*got undefined/,
    );
    await refused(
      () => new LockClient({ endpoint: 'not a url' }),
      'endpoint',
      /ApiUrl output.*got 'not a url'/,
    );
    await refused(
      () => new LockClient({ endpoint: 'ws://127.0.0.1:3001/v1' }),
      'endpoint',
      /http:\/\/ or https:\/\/.*http:\/\/127\.0\.0\.1:3000 for the local stack/,
    );
    await refused(
      () => new LockClient({ endpoint: 'http://127.0.0.1:3000', wsEndpoint: 'http://127.0.0.1:3001/v1' }),
      'wsEndpoint',
      /WebSocket API's URL with its stage, ws:\/\/ or wss:\/\/.*ws:\/\/127\.0\.0\.1:3001\/v1/,
    );
    await refused(
      () => new LockClient({ endpoint: 'http://127.0.0.1:3000', clientId: 'has space' }),
      'clientId',
      /1 to 128 characters/,
    );
    for (const enclosing of [{}, { clientId: 'outer', holding: [] }, { clientId: 'outer' }, 'outer'])
      await refused(
        () => new LockClient({ endpoint: 'http://127.0.0.1:3000', enclosing: enclosing as never }),
        'enclosing',
        /enclosing must be \{ clientId, holding \}/,
      );
    const client = (clientId: string, n: number) => ({
      clientId,
      holding: Array.from({ length: n }, (_, i) => `${clientId}/${i}`),
    });
    for (const enclosing of [
      Array.from({ length: 9 }, (_, i) => client(`c${i}`, 1)),
      [client('a', 20), client('b', 13)],
    ])
      await refused(
        () => new LockClient({ endpoint: 'http://127.0.0.1:3000', enclosing }),
        'enclosing',
        /enclosing names at most 8 clients and 32 locks in all .*the service takes no more/,
      );
    for (const clientId of ['a b', undefined])
      await refused(
        () =>
          new LockClient({
            endpoint: 'http://127.0.0.1:3000',
            enclosing: { clientId, holding: ['x'] } as never,
          }),
        'enclosing',
        /enclosing\.clientId must be the id of the client that holds the locks: 1 to 128 characters/,
      );
    await refused(
      () =>
        new LockClient({ endpoint: 'http://127.0.0.1:3000', enclosing: { clientId: 'a', holding: ['/x'] } }),
      'name',
      /enclosing:/,
    );
    await refused(
      () => new LockClient({ endpoint: 'http://127.0.0.1:3000', region: 5 as unknown as string }),
      'region',
      /eu-west-1/,
    );
  });
});

describe('endpoints that are wrong or unreachable say what to fix', () => {
  let server: Server | undefined;
  afterEach(async () => {
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve) ?? resolve(undefined));
    server = undefined;
  });

  /** An HTTP server that grants every acquire and refuses every WebSocket handshake with `status`. */
  async function refusing(status: number, body: string): Promise<number> {
    server = createServer((req, res) => {
      const name = /\/locks\/(.+)\/acquire$/.exec(req.url ?? '')?.[1] ?? 'l';
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(grant(name)));
    });
    server.on('upgrade', (_req, socket) =>
      socket.end(
        `HTTP/1.1 ${status} Refused\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      ),
    );
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    return (server.address() as AddressInfo).port;
  }

  it('a WebSocket URL without its stage: 404 says it should include the stage, and gives examples', async () => {
    const port = await refusing(404, JSON.stringify({ message: 'no WebSocket API at /: use /v1' }));
    const client = new LockClient({
      endpoint: `http://127.0.0.1:${port}`,
      wsEndpoint: `ws://127.0.0.1:${port}`,
    });
    const error = await failure(() => client.acquire('jobs/a', { waitTimeoutMs: 5_000 }));
    client.close();
    expect(error).toBeInstanceOf(EndpointError);
    expect(error).toMatchObject({ api: 'websocket', status: 404, retryable: false });
    expect(error.message).toBe(
      `the WebSocket endpoint ws://127.0.0.1:${port}/ answered 404 (no WebSocket API at /: use /v1): it should be the API's WebSocket URL including its stage (the stack's WebSocketUrl output), e.g. wss://abc.execute-api.eu-west-1.amazonaws.com/v1 (locally ws://127.0.0.1:3001/v1)`,
    );
  });

  it('a handshake refused with 400 passes on the server’s message', async () => {
    const port = await refusing(
      400,
      JSON.stringify({ error: { code: 'INVALID_REQUEST', message: 'client_id is required' } }),
    );
    const client = new LockClient({
      endpoint: `http://127.0.0.1:${port}`,
      wsEndpoint: `ws://127.0.0.1:${port}/v1`,
    });
    const error = await failure(() => client.acquire('jobs/a', { waitTimeoutMs: 5_000 }));
    client.close();
    expect(error).toBeInstanceOf(InvalidRequestError);
    expect(error.message).toMatch(
      /refused the handshake with 400 \(client_id is required\): it takes \?client_id=/,
    );
  });

  it('403: the stage when the URL has none, else the credentials', () => {
    const noStage = handshakeRefusal(
      new URL('wss://abc.execute-api.eu-west-1.amazonaws.com/?client_id=me'),
      403,
      'Forbidden',
      'me',
    );
    expect(noStage).toBeInstanceOf(EndpointError);
    expect(noStage.message).toMatch(
      /answered 403 \(Forbidden\): it should be the API's WebSocket URL including its stage/,
    );
    const staged = handshakeRefusal(
      new URL('wss://abc.execute-api.eu-west-1.amazonaws.com/v1'),
      403,
      '',
      'me',
    );
    expect(staged).toBeInstanceOf(UnauthorizedError);
    expect(staged.message).toMatch(
      /sign with credentials allowed to connect \(IAM execute-api:Invoke on the WebSocket API's \$connect route\)/,
    );
    expect(handshakeRefusal(new URL('ws://h/v1'), 503, '', 'me')).toBeInstanceOf(UnavailableError);
  });

  it('an unreachable WebSocket API: waits go over HTTP, and onWarning is told why', async () => {
    const port = await refusing(404, '');
    const closed = await new Promise<number>((resolve) => {
      const probe = createServer();
      probe.listen(0, '127.0.0.1', () => {
        const p = (probe.address() as AddressInfo).port;
        probe.close(() => resolve(p));
      });
    });
    const warnings: LatchkeyClientError[] = [];
    const client = new LockClient({
      endpoint: `http://127.0.0.1:${port}`,
      wsEndpoint: `ws://127.0.0.1:${closed}/v1`,
      onWarning: (w) => warnings.push(w),
    });
    expect(await client.acquire('jobs/a', { waitTimeoutMs: 5_000 })).toMatchObject({ fencingToken: 7 });
    client.close();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.message).toMatch(
      new RegExp(`the WebSocket API at ws://127.0.0.1:${closed}/v1 is unreachable \\(.*ECONNREFUSED`),
    );
    expect(warnings[0]?.endpoint).toBe(`ws://127.0.0.1:${closed}/v1`);
  });

  it('an unreachable HTTP API: the SDK says which URL and why, and what it must be', async () => {
    const closed = await new Promise<number>((resolve) => {
      const probe = createServer();
      probe.listen(0, '127.0.0.1', () => {
        const p = (probe.address() as AddressInfo).port;
        probe.close(() => resolve(p));
      });
    });
    const client = new LockClient({ endpoint: `http://127.0.0.1:${closed}` });
    const error = await failure(() => client.tryAcquire('jobs/a'));
    expect(error).toBeInstanceOf(UnavailableError);
    expect(error.message).toMatch(
      new RegExp(
        `^latchkey at http://127.0.0.1:${closed} is unreachable \\(connect ECONNREFUSED 127.0.0.1:${closed}\\): check the client's endpoint`,
      ),
    );
    expect((error as UnavailableError).reason).toBe(`connect ECONNREFUSED 127.0.0.1:${closed}`);
    // Nothing was ever sent: the acquire cannot have been applied.
    expect((error as UnavailableError).mayHaveApplied).toBe(false);
  });

  it('an HTTP API that never answers: each attempt ends at its timeout, and the error says so', async () => {
    const seen: string[] = [];
    server = createServer((req) => seen.push(String(req.url))); // reads the request, never answers
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const transport = new SignedTransport({ endpoint: `http://127.0.0.1:${port}` });
    const error = await failure(() =>
      transport.send(
        'POST',
        '/api/v1/locks/jobs/a/acquire',
        { client_id: 'c' },
        { timeoutMs: 150, attempts: 2 },
      ),
    );
    expect(error).toBeInstanceOf(UnavailableError);
    expect((error as UnavailableError).reason).toBe('no answer in time');
    expect(seen).toEqual(['/api/v1/locks/jobs/a/acquire', '/api/v1/locks/jobs/a/acquire']);
    // Sent, never answered: it may have been applied.
    expect((error as UnavailableError).mayHaveApplied).toBe(true);
  });

  it("the caller's abort ends a request at once, with the caller's reason and no retry", async () => {
    let requests = 0;
    server = createServer(() => requests++);
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const transport = new SignedTransport({ endpoint: `http://127.0.0.1:${port}` });
    const controller = new AbortController();
    const sent = transport.send('GET', '/api/v1/locks/jobs/a', undefined, { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 50));
    controller.abort(new Error('shutting down'));
    await expect(sent).rejects.toThrow('shutting down');
    expect(requests).toBe(1);
  });

  it('a redirect is refused as a wrong endpoint, not followed, retried or taken for an answer', async () => {
    let requests = 0;
    server = createServer((_req, res) => {
      requests++;
      res.writeHead(301, { location: 'https://elsewhere.example/api/v1/locks/jobs/a/release' }).end();
    });
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const transport = new SignedTransport({ endpoint: `http://127.0.0.1:${port}` });
    const error = await failure(() =>
      transport.send('POST', '/api/v1/locks/jobs/a/release', { client_id: 'c' }),
    );
    expect(error).toBeInstanceOf(EndpointError);
    expect(error.message).toBe(
      `http://127.0.0.1:${port} answered 301 to POST /api/v1/locks/jobs/a/release, redirecting to https://elsewhere.example/api/v1/locks/jobs/a/release: the endpoint must be the HTTP API's URL itself (the stack's ApiUrl output; http://127.0.0.1:3000 for the local stack)`,
    );
    expect(requests).toBe(1);
  });

  it('an abort during the backoff between attempts ends the call at once; a long-lived signal keeps no listener', async () => {
    let unavailable = false;
    let requests = 0;
    server = createServer((_req, res) => {
      requests++;
      if (unavailable)
        res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":{"code":"UNAVAILABLE"}}');
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const transport = new SignedTransport({ endpoint: `http://127.0.0.1:${port}`, maxAttempts: 50 });
    const lifelong = new AbortController();
    // Many calls under one signal: each takes its listener back when it ends.
    for (let i = 0; i < 20; i++)
      await transport.send('GET', '/api/v1/health', undefined, { signal: lifelong.signal });
    expect(getEventListeners(lifelong.signal, 'abort')).toHaveLength(0);
    unavailable = true;
    const sent = transport.send('GET', '/api/v1/health', undefined, { signal: lifelong.signal });
    await new Promise((resolve) => setTimeout(resolve, 1_000)); // several attempts and backoffs in
    const aborted = performance.now();
    lifelong.abort(new Error('shutting down'));
    await expect(sent).rejects.toThrow('shutting down');
    // Not at the end of the backoff it was in (up to 2 s by then).
    expect(performance.now() - aborted).toBeLessThan(250);
    const seen = requests;
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(requests).toBe(seen); // nothing sent after the abort
    expect(getEventListeners(lifelong.signal, 'abort')).toHaveLength(0);
  });

  it('each retry of a transient failure is told to onWarning first (a RetryWarning), then the failure is thrown', async () => {
    let requests = 0;
    server = createServer((_req, res) => {
      requests++;
      res
        .writeHead(503, { 'content-type': 'application/json' })
        .end(
          '{"error":{"code":"UNAVAILABLE","message":"DynamoDB is unavailable (TimeoutError); retry shortly"}}',
        );
    });
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const warnings: unknown[] = [];
    const client = new LockClient({
      endpoint: `http://127.0.0.1:${port}`,
      onWarning: (warning) => warnings.push(warning),
    });
    const error = await failure(() => client.inspect('jobs/a'));
    expect(error).toBeInstanceOf(UnavailableError);
    expect(error).not.toBeInstanceOf(RetryWarning);
    // A 5xx may follow a write that was made: the outcome of a write is unknown.
    expect((error as UnavailableError).mayHaveApplied).toBe(true);
    expect(requests).toBe(5);
    expect(warnings).toHaveLength(4);
    expect(warnings.map((w) => [(w as RetryWarning).attempt, (w as RetryWarning).attempts])).toEqual([
      [2, 5],
      [3, 5],
      [4, 5],
      [5, 5],
    ]);
    const first = warnings[0] as RetryWarning;
    expect(first).toBeInstanceOf(RetryWarning);
    expect(first.retryable).toBe(true);
    expect(first.call).toBe('inspect jobs/a');
    expect(first.message).toBe(
      'inspect jobs/a: DynamoDB is unavailable (TimeoutError): trying again (attempt 2 of 5)',
    );
    // The SDK's own clean-ups retry without a word (nobody asked for them).
    warnings.length = 0;
    requests = 0;
    expect(await client.releaseQuietly(lease())).toBe(false);
    expect(requests).toBe(3);
    expect(warnings).toEqual([]);
    // A listener that throws does not fail the call (it still fails as the service said).
    const throwing = new LockClient({
      endpoint: `http://127.0.0.1:${port}`,
      onWarning: () => {
        throw new Error('listener bug');
      },
    });
    await expect(throwing.inspect('jobs/a')).rejects.toBeInstanceOf(UnavailableError);
    // A call that succeeds at once warns of nothing; an answer that is a refusal is not retried.
    server.removeAllListeners('request');
    server.on('request', (_req, res) =>
      res
        .writeHead(400, { 'content-type': 'application/json' })
        .end('{"error":{"code":"INVALID_REQUEST","message":"no"}}'),
    );
    warnings.length = 0;
    await expect(client.inspect('jobs/a')).rejects.toThrow('no');
    expect(warnings).toEqual([]);
  });

  it('a WebSocket-only port given as the HTTP endpoint (426 Upgrade Required) is an EndpointError, not retried', async () => {
    let requests = 0;
    server = createServer((_req, res) => {
      requests++;
      res
        .writeHead(426, { 'content-type': 'application/json', upgrade: 'websocket' })
        .end('{"error":{"code":"INVALID_REQUEST","message":"this port serves WebSockets only"}}');
    });
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const error = await failure(() => new LockClient({ endpoint: `http://127.0.0.1:${port}` }).list('jobs/'));
    expect(error).toBeInstanceOf(EndpointError);
    expect((error as EndpointError).api).toBe('http');
    expect(error.message).toMatch(
      /answered 426 \(Upgrade Required\) to GET \/api\/v1\/list\/jobs\/: it serves WebSockets only/,
    );
    expect(requests).toBe(1);
  });

  it('mayHaveApplied is judged over every attempt: a 5xx then refused connections may have; throttles only, not', async () => {
    let requests = 0;
    server = createServer((_req, res) => {
      requests++;
      if (requests === 1) {
        res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":{"code":"UNAVAILABLE"}}');
        // Nothing listens from now on: the later attempts are refused unsent.
        server?.close();
        server?.closeAllConnections();
      }
    });
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const transport = new SignedTransport({ endpoint: `http://127.0.0.1:${port}` });
    const first = await failure(() =>
      transport.send('POST', '/api/v1/locks/jobs/a/acquire', {}, { attempts: 3 }),
    );
    expect((first as UnavailableError).reason).toMatch(/ECONNREFUSED/);
    expect((first as UnavailableError).mayHaveApplied).toBe(true);
    server = createServer((_req, res) =>
      res.writeHead(429, { 'content-type': 'application/json' }).end('{"error":{"code":"THROTTLED"}}'),
    );
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const throttled = new SignedTransport({
      endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    });
    const second = await failure(() =>
      throttled.send('POST', '/api/v1/locks/jobs/a/acquire', {}, { attempts: 3 }),
    );
    expect((second as UnavailableError).mayHaveApplied).toBe(false);
  });

  it('a 404 from API Gateway itself (no latchkey error code) says the endpoint is not latchkey', async () => {
    server = createServer((_req, res) =>
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"Not Found"}'),
    );
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const error = await failure(() =>
      new LockClient({ endpoint: `http://127.0.0.1:${port}` }).inspect('jobs/a'),
    );
    expect(error).toBeInstanceOf(EndpointError);
    expect(error.message).toMatch(
      /answered 404 to GET \/api\/v1\/locks\/jobs\/a: is it latchkey\? The endpoint must be the HTTP API's URL/,
    );
  });
});

describe('latchkey --version', () => {
  it("prints the client package's version, asked alone; after a command it is that command's argument", async () => {
    const { version } = JSON.parse(readFileSync(join(import.meta.dirname, '../../sdk/package.json'), 'utf8'));
    expect(CLIENT_VERSION).toBe(version);
    const printed = vi.spyOn(console, 'log').mockImplementation(() => {});
    const said = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      for (const flag of ['--version', '-V']) {
        process.exitCode = undefined;
        await main(['node', 'latchkey', flag]);
        expect(printed).toHaveBeenLastCalledWith(version);
        expect(process.exitCode ?? 0).toBe(0);
      }
      // Not a global option: a run's `--version` before `--` is refused as before, never taken for this.
      printed.mockClear();
      await main(['node', 'latchkey', 'release', 'jobs/a', '--token', '1', '--version']);
      expect(printed).not.toHaveBeenCalledWith(version);
      expect(process.exitCode).toBe(1);
    } finally {
      process.exitCode = undefined;
      printed.mockRestore();
      said.mockRestore();
    }
  });
});

describe('the CLI says where an endpoint came from and how to set it', () => {
  it('a bad argument reads without the SDK method it was given to', () => {
    const bad = new InvalidArgumentError(
      'name',
      'acquireNow: lock name "a b" may contain only …',
      'INVALID_NAME',
    );
    expect(explain(bad)).toBe('lock name "a b" may contain only …');
    const inList = new InvalidArgumentError('name', 'withLocks: locks[1]: lock name "a b" may …');
    expect(explain(inList)).toBe('lock name "a b" may …');
    // An argument the CLI takes as a flag is named by the flag.
    const dotted = new InvalidArgumentError('ttlMs', 'session.acquire: ttlMs must be …');
    expect(explain(dotted)).toBe('--ttl must be …');
  });

  const unreachable = (endpoint: string) =>
    new UnavailableError('latchkey at … is unreachable', undefined, {
      endpoint,
      reason: 'connect ECONNREFUSED 127.0.0.1:4000',
    });

  it('the default, LATCHKEY_ENDPOINT, --endpoint, the outputs file', () => {
    const local = resolveEndpoints({}, {});
    expect(explain(unreachable(local.http), local)).toBe(
      'latchkey at http://127.0.0.1:3000 is unreachable (connect ECONNREFUSED 127.0.0.1:4000); the HTTP API endpoint is the default, the local stack (start it with npm start); to use another, give --endpoint URL or set LATCHKEY_ENDPOINT=URL',
    );
    const env = resolveEndpoints({}, { LATCHKEY_ENDPOINT: 'http://127.0.0.1:4000' });
    expect(explain(unreachable(env.http), env)).toBe(
      'latchkey at http://127.0.0.1:4000 is unreachable (connect ECONNREFUSED 127.0.0.1:4000); the HTTP API endpoint came from LATCHKEY_ENDPOINT: check that it is where latchkey runs, or give --endpoint URL',
    );
    // latchkey answered there, unavailable for now (a 5xx, a throttle): the URL is right, no hint.
    const down = new UnavailableError('DynamoDB is unavailable', 503, { endpoint: env.http });
    expect(explain(down, env)).toBe('DynamoDB is unavailable');
    const wsDown = handshakeRefusal(new URL('ws://127.0.0.1:3001/v1'), 500, 'Internal Server Error', 'me');
    expect(explain(wsDown, env)).toMatch(/answered 500 \(Internal Server Error\): try again later$/);
    const flag = resolveEndpoints({ endpoint: 'http://127.0.0.1:4000' }, {});
    expect(explain(unreachable(flag.http), flag)).toMatch(
      /the HTTP API endpoint was given with --endpoint: check that URL$/,
    );
    const outputs: Endpoints = {
      ...local,
      httpFrom: { kind: 'outputs', file: 'cdk-outputs.json', stack: 'Latchkey' },
    };
    expect(explain(unreachable(local.http), outputs)).toMatch(
      /came from cdk-outputs\.json \(stack Latchkey\); to use another, give --endpoint URL or set LATCHKEY_ENDPOINT=URL$/,
    );
  });

  it('the WebSocket endpoint: --ws-endpoint, LATCHKEY_WS_ENDPOINT, or the local default', () => {
    const wrongUrl = (url: string) => handshakeRefusal(new URL(url), 404, '', 'me') as EndpointError;
    const env = resolveEndpoints(
      {},
      { LATCHKEY_ENDPOINT: 'https://a.example', LATCHKEY_WS_ENDPOINT: 'wss://w.example' },
    );
    expect(explain(wrongUrl('wss://w.example'), env)).toMatch(
      /answered 404: it should be .*; the WebSocket endpoint came from LATCHKEY_WS_ENDPOINT: fix LATCHKEY_WS_ENDPOINT=URL, or give --ws-endpoint URL$/,
    );
    const flag = resolveEndpoints({ wsEndpoint: 'ws://127.0.0.1:3001' }, {});
    expect(explain(wrongUrl('ws://127.0.0.1:3001'), flag)).toMatch(
      /the WebSocket endpoint was given with --ws-endpoint: check that URL$/,
    );
    const local = resolveEndpoints({}, {});
    expect(explain(new InvalidArgumentError('wsEndpoint', 'wsEndpoint must be …'), local)).toMatch(
      /the WebSocket endpoint is the default, the local stack \(start it with npm start\); to use another, give --ws-endpoint URL or set LATCHKEY_WS_ENDPOINT=URL$/,
    );
    // An error about no endpoint gets no endpoint hint.
    expect(explain(new InvalidArgumentError('name', 'lock name must …'), local)).toBe('lock name must …');
  });

  it('LATCHKEY_WS_ENDPOINT counts wherever the HTTP endpoint came from; an outputs file with several stacks is refused', () => {
    const ws = 'wss://w.example/v1';
    expect(resolveEndpoints({ endpoint: 'https://a.example' }, { LATCHKEY_WS_ENDPOINT: ws }).ws).toBe(ws);
    expect(resolveEndpoints({}, { LATCHKEY_WS_ENDPOINT: ws }).ws).toBe(ws);
    const file = join(mkdtempSync(join(tmpdir(), 'latchkey-outputs-')), 'cdk-outputs.json');
    const stage = (name: string) => ({
      ApiUrl: `https://${name}.example`,
      WebSocketUrl: `wss://${name}.example/v1`,
    });
    writeFileSync(file, JSON.stringify({ 'Latchkey-dev': stage('dev'), 'Latchkey-prod': stage('prod') }));
    expect(() => resolveEndpoints({ outputsFile: file }, {})).toThrow(
      /has several latchkey stacks \(Latchkey-dev, Latchkey-prod\): write one outputs file per stage/,
    );
    writeFileSync(file, JSON.stringify({ 'Latchkey-prod': stage('prod'), Other: { Bucket: 'b' } }));
    expect(resolveEndpoints({ outputsFile: file }, { LATCHKEY_WS_ENDPOINT: ws })).toMatchObject({
      http: 'https://prod.example',
      ws,
    });
  });

  it('duration flags take a unit; run waits unless told not to', async () => {
    const parse = async (args: string[]) => {
      const cli = program().exitOverride();
      const run = cli.commands.find((c) => c.name() === 'run');
      run?.exitOverride().action(() => {});
      for (const c of [cli, ...cli.commands]) c.configureOutput({ writeErr: () => {}, writeOut: () => {} });
      await cli.parseAsync(['run', ...args, 'lock', '--', 'true'], { from: 'user' });
      return run?.opts();
    };
    expect(await parse([])).toMatchObject({ ttl: 30_000, killGrace: 5_000 });
    expect((await parse([]))?.wait).toBeUndefined(); // waits until granted
    expect(await parse(['--wait', '1m30s', '--ttl', '10s', '--kill-grace', '500ms'])).toMatchObject({
      wait: 90_000,
      ttl: 10_000,
      killGrace: 500,
    });
    expect(await parse(['-n'])).toMatchObject({ wait: false });
    expect(await parse(['--no-wait'])).toMatchObject({ wait: false });
    for (const flag of ['--ttl', '--wait', '--kill-grace'])
      await expect(parse([flag, '30'])).rejects.toThrow(
        new RegExp(
          `option '${flag} <duration>' argument '30' is invalid\\. '30' has no unit: give a unit, e\\.g\\. 30s or 30000ms`,
        ),
      );
  });
});

it('parseDuration is what turns text into the numbers the SDK takes', () => {
  expect(parseDuration('30s')).toBe(30_000);
});

describe('a wait refused as a deadlock (409 DEADLOCK) reaches the caller as a DeadlockError', () => {
  const wireCycle = [
    {
      waiter: { client_id: 'c1', party: 'pa1', mine: true },
      lock: 'jobs/a',
      blocker: { client_id: 'c2', party: 'pb2', mine: false },
      blocker_is: 'holder',
    },
    {
      waiter: { client_id: 'c2', party: 'pb2', mine: false },
      lock: 'jobs/b',
      blocker: { client_id: 'c1', party: 'pa1', mine: true },
      blocker_is: 'ahead',
    },
  ];
  const refusal = (cycle?: unknown) => ({
    error: {
      code: 'DEADLOCK',
      message: 'waiting for jobs/a would close a cycle of waits: …',
      ...(cycle === undefined ? {} : { cycle }),
    },
  });

  it('maps the code, with its cycle typed (camelCase), or an empty one when the body has none', () => {
    const error = errorFromResponse(409, refusal(wireCycle));
    expect(error).toBeInstanceOf(DeadlockError);
    expect(error).toBeInstanceOf(LatchkeyClientError);
    expect(error).not.toBeInstanceOf(LeaseLostError);
    expect(error).toMatchObject({
      name: 'DeadlockError',
      code: 'DEADLOCK',
      status: 409,
      retryable: false,
      lock: 'jobs/a',
      message: 'waiting for jobs/a would close a cycle of waits: …',
    });
    expect((error as DeadlockError).cycle).toEqual([
      {
        waiter: { clientId: 'c1', party: 'pa1', mine: true },
        lock: 'jobs/a',
        blocker: { clientId: 'c2', party: 'pb2', mine: false },
        blockerIs: 'holder',
      },
      {
        waiter: { clientId: 'c2', party: 'pb2', mine: false },
        lock: 'jobs/b',
        blocker: { clientId: 'c1', party: 'pa1', mine: true },
        blockerIs: 'ahead',
      },
    ]);
    // A retry of a request refused before: the same error, no cycle.
    const retried = errorFromResponse(409, refusal());
    expect(retried).toBeInstanceOf(DeadlockError);
    expect(retried).toMatchObject({ cycle: [], lock: undefined, retryable: false });
    // Whatever is not a cycle is none; an edge missing a field is left out.
    expect(errorFromResponse(409, refusal('x'))).toMatchObject({ cycle: [] });
    expect(
      (errorFromResponse(409, refusal([{ lock: 'jobs/a' }, wireCycle[1]])) as DeadlockError).cycle,
    ).toHaveLength(1);
    // A party without its opaque id leaves its edge out; `mine` is true only when the service says so.
    const noId = { ...wireCycle[0], waiter: { client_id: 'c1', mine: true } };
    expect((errorFromResponse(409, refusal([noId, wireCycle[1]])) as DeadlockError).cycle).toEqual([
      expect.objectContaining({ lock: 'jobs/b' }),
    ]);
    // Through a hierarchy: the lock the blocker holds (or waits for first); only a string counts.
    const through = { ...wireCycle[0], lock: 't/a/b', through: 't/a' };
    expect((errorFromResponse(409, refusal([through])) as DeadlockError).cycle[0]).toMatchObject({
      lock: 't/a/b',
      through: 't/a',
    });
    expect(
      (errorFromResponse(409, refusal([{ ...through, through: 7 }])) as DeadlockError).cycle[0],
    ).not.toHaveProperty('through');
    const noMine = { ...wireCycle[1], blocker: { client_id: 'c1', party: 'pa1', mine: 'yes' } };
    expect((errorFromResponse(409, refusal([noMine])) as DeadlockError).cycle[0]?.blocker).toEqual({
      clientId: 'c1',
      party: 'pa1',
      mine: false,
    });
  });

  /** A client whose acquires of `refused` are answered 409 DEADLOCK; every other lock is granted. */
  function refusing(refused: string) {
    const client = new LockClient({ endpoint: 'http://127.0.0.1:9', clientId: 'c1' });
    const sent: Sent[] = [];
    vi.spyOn(client.transport, 'send').mockImplementation(async (method, path, body) => {
      sent.push({ method, path, body: body as Body | undefined });
      const lock = /\/locks\/(.+)\/(acquire|renew|release)$/.exec(path);
      if (path === '/api/v1/sessions')
        return {
          status: 200,
          body: { session_id: randomUUID(), ttl_ms: 30_000, heartbeat_interval_ms: 10_000 },
        };
      if (lock?.[2] === 'acquire')
        return lock[1] === refused
          ? { status: 409, body: refusal(wireCycle) }
          : { status: 200, body: grant(lock[1] as string) };
      return { status: 200, body: { released: true } };
    });
    const acquires = () => sent.filter((s) => s.path.endsWith('/acquire'));
    const releases = () => sent.filter((s) => s.path.endsWith('/release')).map((s) => s.path);
    return { client, sent, acquires, releases };
  }

  it('acquire, withLock and session.acquire: thrown as is, asked once (not retried, not a timeout)', async () => {
    const { client, acquires } = refusing('jobs/a');
    const fromAcquire = await failure(() => client.acquire('jobs/a', { waitTimeoutMs: 60_000 }));
    expect(fromAcquire).toBeInstanceOf(DeadlockError);
    expect((fromAcquire as DeadlockError).cycle).toHaveLength(2);
    expect(acquires()).toHaveLength(1);
    const fn = vi.fn();
    expect(await failure(() => client.withLock('jobs/a', { waitTimeoutMs: 60_000 }, fn))).toBeInstanceOf(
      DeadlockError,
    );
    expect(fn).not.toHaveBeenCalled();
    const session = await client.session();
    expect(await failure(() => session.acquire('jobs/a'))).toBeInstanceOf(DeadlockError);
    expect(acquires()).toHaveLength(3);
    await session.close();
  });

  it('withLocks releases the locks it already holds, then throws the DeadlockError', async () => {
    const { client, acquires, releases } = refusing('jobs/b');
    const fn = vi.fn();
    const error = await failure(() =>
      client.withLocks(['jobs/c', 'jobs/b', 'jobs/a'], { waitTimeoutMs: 60_000 }, fn),
    );
    expect(error).toBeInstanceOf(DeadlockError);
    expect(fn).not.toHaveBeenCalled();
    expect(acquires().map((s) => s.path)).toEqual([
      '/api/v1/locks/jobs/a/acquire',
      '/api/v1/locks/jobs/b/acquire',
    ]);
    expect(releases()).toEqual(['/api/v1/locks/jobs/a/release']);
  });

  it('a WebSocket wait: the refusal comes on the HTTP acquire that names the connection', async () => {
    const calls: Body[] = [];
    const server = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      calls.push({ path: req.url, ...JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') });
      res.writeHead(409, { 'content-type': 'application/json' }).end(JSON.stringify(refusal(wireCycle)));
    });
    const wss = new WebSocketServer({ server });
    wss.on('connection', (socket) =>
      socket.on('message', () =>
        socket.send(JSON.stringify({ type: 'welcome', connection_id: 'conn-1=', client_id: 'c1' })),
      ),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const client = new LockClient({
      endpoint: `http://127.0.0.1:${port}`,
      wsEndpoint: `ws://127.0.0.1:${port}/v1`,
      clientId: 'c1',
    });
    try {
      const error = await failure(() => client.acquire('jobs/a', { waitTimeoutMs: 60_000 }));
      expect(error).toBeInstanceOf(DeadlockError);
      expect((error as DeadlockError).cycle[0]).toMatchObject({ lock: 'jobs/a', blockerIs: 'holder' });
      expect(calls).toHaveLength(1);
      expect(calls[0]).toMatchObject({ path: '/api/v1/locks/jobs/a/acquire', connection_id: 'conn-1=' });
    } finally {
      client.close();
      for (const socket of wss.clients) socket.terminate();
      await new Promise((resolve) => wss.close(resolve));
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('client.waits(name): GET …/{name}/waits, typed; a name the service refuses is refused first', async () => {
    const client = new LockClient({ endpoint: 'http://127.0.0.1:9', clientId: 'c1' });
    const send = vi.spyOn(client.transport, 'send').mockResolvedValue({
      status: 200,
      body: { lock: 'jobs/a', edges: wireCycle, cycles: [wireCycle], complete: false },
    });
    const graph = await client.waits('jobs/a');
    expect(send).toHaveBeenCalledWith('GET', '/api/v1/locks/jobs/a/waits', undefined, undefined);
    expect(graph.lock).toBe('jobs/a');
    expect(graph.complete).toBe(false);
    expect(graph.edges).toHaveLength(2);
    expect(graph.edges[1]).toMatchObject({ waiter: { clientId: 'c2' }, blockerIs: 'ahead' });
    expect(graph.cycles).toEqual([graph.edges]);
    await refused(() => client.waits('jobs//a'), 'name', /waits/);
    await refused(() => client.waits('jobs/waits'), 'name', /waits/);
    expect(send).toHaveBeenCalledTimes(1);
  });
});

describe('an HTTP wait refused TOO_MANY_WAITS (every slot busy) is asked again while the wait lasts', () => {
  const tooManyWaits = (code = 'TOO_MANY_WAITS') => ({
    status: 429,
    body: { error: { code, message: 'too many HTTP waits are in progress', retry_after_ms: 40 } },
  });
  /** An HTTP-only client (no WebSocket endpoint) refused `refusals` times, then granted. */
  function refusedThenGranted(refusals: number, code?: string) {
    const client = new LockClient({ endpoint: 'http://127.0.0.1:9', clientId: 'me' });
    const sent: Body[] = [];
    vi.spyOn(client.transport, 'send').mockImplementation(async (_method, path, body) => {
      sent.push(body as Body);
      const lock = /\/locks\/(.+)\/acquire$/.exec(path)?.[1] as string;
      return sent.length <= refusals ? tooManyWaits(code) : { status: 200, body: grant(lock) };
    });
    return { client, sent };
  }

  it('waits retry_after_ms (and some jitter), then asks again: granted within the wait', async () => {
    const { client, sent } = refusedThenGranted(2);
    const started = performance.now();
    const lease = await client.acquire('jobs/busy', { waitTimeoutMs: 5_000 });
    expect(lease.fencingToken).toBe(7);
    expect(sent).toHaveLength(3);
    expect(performance.now() - started).toBeGreaterThanOrEqual(2 * 40 - 5);
    // Each ask has the same request_id (a refused retry may leave the request queued from its first
    // delivery: the same id follows it), and asks for what is left of the wait, in whole ms.
    expect(new Set(sent.map((b) => b.request_id)).size).toBe(1);
    for (const b of sent)
      expect(Number.isInteger(b.wait_timeout_ms) && b.wait_timeout_ms <= 5_000).toBe(true);
    const waits = sent.map((b) => b.wait_timeout_ms as number);
    expect(waits[2]).toBeLessThanOrEqual((waits[0] as number) - 2 * 40 + 5);
  });

  it('a wait too short to ask again gets the refusal; another limit is never asked again', async () => {
    const short = refusedThenGranted(5);
    await expect(short.client.acquire('jobs/busy', { waitTimeoutMs: 30 })).rejects.toMatchObject({
      name: 'LimitExceededError',
      code: 'TOO_MANY_WAITS',
    });
    expect(short.sent).toHaveLength(1);
    const full = refusedThenGranted(5, 'QUEUE_FULL');
    await expect(full.client.acquire('jobs/busy', { waitTimeoutMs: 5_000 })).rejects.toMatchObject({
      code: 'QUEUE_FULL',
    });
    expect(full.sent).toHaveLength(1);
  });

  it('an abort while it waits to ask again ends the acquire at once', async () => {
    const { client, sent } = refusedThenGranted(100);
    const abort = new AbortController();
    const asked = client.acquire('jobs/busy', { waitTimeoutMs: 60_000, signal: abort.signal });
    await vi.waitFor(() => expect(sent.length).toBeGreaterThanOrEqual(1));
    abort.abort(new Error('stopped'));
    await expect(asked).rejects.toThrow('stopped');
    const asks = sent.length;
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(sent).toHaveLength(asks);
  });
});

/** A client as `me` whose every call is answered "not acquired", held by `holder`. */
function refusedBy(lock: string, holder: Body, more: Body = {}) {
  const client = new LockClient({ endpoint: 'http://127.0.0.1:9', clientId: 'me' });
  vi.spyOn(client.transport, 'send').mockResolvedValue({
    status: 200,
    body: { acquired: false, lock, holder, queued: 0, retry_after_ms: 5_000, ...more },
  });
  return client;
}

describe('an HTTP wait that runs out', () => {
  it('throws WaitTimeoutError naming whom it waited for, from the last answer (a full semaphore here)', async () => {
    const client = refusedBy(
      'pool/gpu',
      { client_id: 'w1', expires_at: '2030-01-01T00:00:05.000Z', held_by: 'lease' },
      { shared_holders: 2, max_holders: 2, queued: 1 },
    );
    const error = await client
      .acquire('pool/gpu', { waitTimeoutMs: 1, mode: 'shared', maxHolders: 2 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WaitTimeoutError);
    expect(error).toMatchObject({
      lock: 'pool/gpu',
      holderSummary: {
        clientId: 'w1',
        expiresAt: new Date('2030-01-01T00:00:05.000Z'),
        heldBy: 'lease',
        mine: false,
      },
      shared: { holders: 2, maxHolders: 2 },
      message: 'lock pool/gpu was not granted within 1 ms: it is full: 2 of 2 holders (w1 among them)',
    });
  });
});

describe("an HTTP wait that runs out behind this client's own hold", () => {
  it('names that hold (mine) as well as the client id', async () => {
    const client = refusedBy('jobs/a', {
      client_id: 'me',
      expires_at: '2030-01-01T00:00:05.000Z',
      held_by: 'lease',
      mine: true,
    });
    const error = await client.acquire('jobs/a', { waitTimeoutMs: 1 }).catch((e: unknown) => e);
    expect(error).toMatchObject({
      heldByClient: 'me',
      holderSummary: { clientId: 'me', expiresAt: new Date('2030-01-01T00:00:05.000Z'), mine: true },
    });
  });
});

describe('an acquire granted late whose confirming renewal fails', () => {
  /** A grant with little of its lease left (as after a long wait), then every other call refused unsent. */
  function lateGrant(releaseAnswers: boolean) {
    const client = new LockClient({ endpoint: 'http://127.0.0.1:9', clientId: 'me' });
    const paths: string[] = [];
    vi.spyOn(client.transport, 'send').mockImplementation(async (_method, path) => {
      paths.push(path);
      if (path.endsWith('/acquire'))
        return { status: 200, body: { ...grant('jobs/a'), remaining_ms: 5_000 } }; // 5 s of 30 left
      if (path.endsWith('/release') && releaseAnswers)
        return { status: 200, body: { released: true, lock: 'jobs/a', remaining_reentries: 0 } };
      const unsent = new UnavailableError('latchkey is unreachable (connect ECONNREFUSED)');
      unsent.mayHaveApplied = false; // as the transport says of attempts refused before they were sent
      throw unsent;
    });
    return { client, paths };
  }

  it('releases the grant nobody saw and throws the renewal failure as it was', async () => {
    const { client, paths } = lateGrant(true);
    const error = await client
      .acquire('jobs/a', { ttlMs: 30_000, waitTimeoutMs: 5_000 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnavailableError);
    expect((error as UnavailableError).mayHaveApplied).toBe(false);
    expect(paths.map((p) => p.split('/').at(-1))).toEqual(['acquire', 'renew', 'release']);
  });

  it('says mayHaveApplied when that release fails too: the lock is held until its ttl', async () => {
    const { client, paths } = lateGrant(false);
    const error = await client
      .acquire('jobs/a', { ttlMs: 30_000, waitTimeoutMs: 5_000 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnavailableError);
    expect((error as UnavailableError).mayHaveApplied).toBe(true);
    expect(paths.at(-1)).toMatch(/\/release$/);
  });
});
