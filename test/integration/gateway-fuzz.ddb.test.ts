/**
 * The local gateways under random input: 4,000 HTTP requests (FUZZ_REQUESTS: routes, names, escapes,
 * bodies, headers, signatures, all mangled at random from one seed, a new one every run), random WebSocket handshakes and
 * frames, and the slow and oversized clients a gateway must shed. What must hold:
 * - no crash (this process serves on after all of it) and no hang (every request is answered);
 * - no 5xx but 503: a 500 is a bug;
 * - a refused request changes nothing: DynamoDB writes that succeeded are attributed to the request
 *   that made them (the local stack's invocation context), and a 4xx request may have made none
 *   (a 409 may have served a queue: a transaction, never a write of its own);
 * - the other principal's locks and session are exactly as they were.
 * A failure prints the seed and the request: FUZZ_SEED=<seed> replays the run.
 */
import { randomUUID } from 'node:crypto';
import { Agent, request as httpRequest } from 'node:http';
import { connect as netConnect } from 'node:net';
import { HttpRequest } from '@smithy/protocol-http';
import type { SignatureV4 } from '@smithy/signature-v4';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { observeDynamoSuccesses } from '../../lambdas/shared/calls';
import { invocation } from '../../local/handlers';
import type { LocalStack } from '../../local/stack';
import { localSigner, signedClient } from '../support/signed-fetch';
import { startTestStack } from '../support/stack';
import { signedHeaders } from '../support/ws-client';

const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 4_000);
const CONCURRENCY = 16;
const ALICE = { accessKeyId: 'alice', secretAccessKey: 'alice-secret' };
const BOB = { accessKeyId: 'bob', secretAccessKey: 'bob-secret' };

/** mulberry32: a small seeded generator, so a failing run can be replayed. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[int(0, xs.length - 1)] as T;
  return { next, int, pick, chance: (p: number) => next() < p };
}
type Rng = ReturnType<typeof rng>;

interface Known {
  readonly bobLocks: { name: string; token: number }[];
  readonly bobSession: string;
}

const WRITES = new Set([
  'UpdateItemCommand',
  'PutItemCommand',
  'DeleteItemCommand',
  'TransactWriteItemsCommand',
  'BatchWriteItemCommand',
]);

function names(r: Rng, known: Known): string {
  return r.pick([
    () => `fuzz/${r.int(0, 20)}`,
    () => r.pick(known.bobLocks).name,
    () => 'jobs/nightly',
    () => 'a//b',
    () => '..',
    () => 'a/./b',
    () => '%2e%2e/x',
    () => 'a%2Fb',
    () => 'x%zz',
    () => 'x%',
    () => '%C0%AF',
    () => '%00',
    () => 'ä/ö',
    () => 'a b',
    () => 'x'.repeat(r.int(250, 5_000)),
    () => Array.from({ length: r.int(1, 40) }, () => String.fromCharCode(r.int(33, 126))).join(''),
  ])();
}

function path(r: Rng, known: Known): string {
  const name = names(r, known);
  return r.pick([
    () =>
      `/api/v1/locks/${name}/${r.pick(['acquire', 'release', 'renew', 'cancel', 'steal', '', 'acquire/'])}`,
    () => `/api/v1/locks/${name}`,
    () => `/api/v1/list/${name}`,
    () => '/api/v1/list',
    () => '/api/v1/locks',
    () => '/api/v1/sessions',
    () => `/api/v1/sessions/${r.pick([known.bobSession, randomUUID(), 'not-a-uuid', '..'])}/heartbeat`,
    () => `/api/v1/sessions/${r.pick([known.bobSession, randomUUID(), '%zz'])}`,
    // Locally every principal may call the admin route (IAM is AWS's), so never on Bob's locks here.
    () =>
      `/api/v1/admin/locks/${known.bobLocks.some((l) => l.name === name) ? 'fuzz/0' : name}/force-release`,
    () => '/api/v1/health',
    () => `/${name}`,
    () => '/api/v1/../v1/health',
    () => '//api//v1//health',
    () => `/api/v1/locks/${name}?${'x=1&'.repeat(r.int(0, 300))}`,
  ])();
}

/** A body: valid for some route, mangled, or not JSON at all. */
function body(r: Rng, known: Known): string | Buffer | undefined {
  const bob = r.pick(known.bobLocks);
  const valid = r.pick<() => Record<string, unknown>>([
    () => ({
      client_id: 'a1',
      ttl_ms: r.int(1_000, 30_000),
      ...(r.chance(0.3) ? { wait_timeout_ms: r.int(1, 300) } : {}),
    }),
    () => ({ client_id: 'bob-1', fencing_token: bob.token }), // another principal's token: must be refused
    () => ({ client_id: 'bob-1', fencing_token: bob.token, ttl_ms: 60_000 }),
    () => ({ client_id: 'a1', session_id: known.bobSession }),
    () => ({ client_id: 'bob-1', request_id: randomUUID() }),
    () => ({ client_id: 'bob-1' }),
    () => ({ client_id: 'a1', ttl_ms: 5_000, grace_ms: r.int(0, 600_000) }),
    () => ({ reason: 'fuzz' }),
    () => ({ client_id: 'a1', ttl_ms: 5_000, wait_timeout_ms: 200, connection_id: 'nope=' }),
  ])();
  const mangled = (): Record<string, unknown> => {
    const b: Record<string, unknown> = { ...valid };
    const key = r.pick([...Object.keys(b), 'extra', 'priority', 'reentrant', 'ephemeral', 'mode']);
    b[key] = r.pick<unknown>([
      null,
      -1,
      0,
      1.5,
      2 ** 53 + 1,
      1e308,
      'x'.repeat(r.int(1, 3_000)),
      [],
      {},
      true,
      '🔒',
      r.int(-200, 200),
    ]);
    if (r.chance(0.3)) delete b[r.pick(Object.keys(b))];
    return b;
  };
  return r.pick<() => string | Buffer | undefined>([
    () => JSON.stringify(valid),
    () => JSON.stringify(valid),
    () => JSON.stringify(mangled()),
    () => JSON.stringify(mangled()),
    () => undefined,
    () => '',
    () => '{',
    () => '[]',
    () => 'null',
    () => '"x"',
    () => `${'['.repeat(r.int(100, 5_000))}${']'.repeat(r.int(0, 5_000))}`,
    () => Buffer.from(Array.from({ length: r.int(1, 500) }, () => r.int(0, 255))),
    () => JSON.stringify({ ...valid, pad: 'x'.repeat(r.int(16_000, 200_000)) }),
  ])();
}

/** A well-formed call of a real route, on Alice's names or Bob's, sometimes with one field mangled. */
function coherent(r: Rng, known: Known): { method: string; path: string; body: string | undefined } {
  const name = r.chance(0.7) ? `fuzz/${r.int(0, 20)}` : r.pick(known.bobLocks).name;
  const bob = r.pick(known.bobLocks);
  const token = r.chance(0.5) ? bob.token : r.int(1, 2 ** 40);
  const client = r.pick(['a1', 'a2', 'bob-1']);
  const calls: { method: string; path: string; body?: Record<string, unknown> }[] = [
    {
      method: 'POST',
      path: `/api/v1/locks/${name}/acquire`,
      body: { client_id: client, ttl_ms: r.int(1_000, 5_000) },
    },
    {
      method: 'POST',
      path: `/api/v1/locks/${name}/acquire`,
      body: {
        client_id: client,
        ttl_ms: 2_000,
        wait_timeout_ms: r.int(1, 300),
        request_id: `q${r.int(0, 50)}`,
      },
    },
    {
      method: 'POST',
      path: `/api/v1/locks/${name}/release`,
      body: { client_id: client, fencing_token: token },
    },
    {
      method: 'POST',
      path: `/api/v1/locks/${name}/renew`,
      body: { client_id: client, fencing_token: token, ttl_ms: 5_000 },
    },
    {
      method: 'POST',
      path: `/api/v1/locks/${name}/cancel`,
      body: { client_id: client, request_id: `q${r.int(0, 50)}` },
    },
    {
      method: 'POST',
      path: `/api/v1/locks/${name}/acquire`,
      body: { client_id: client, session_id: known.bobSession },
    },
    { method: 'GET', path: `/api/v1/locks/${name}` },
    { method: 'GET', path: `/api/v1/list/fuzz/?limit=${r.int(1, 100)}` },
    { method: 'POST', path: '/api/v1/sessions', body: { client_id: client, ttl_ms: r.int(1_000, 60_000) } },
    { method: 'POST', path: `/api/v1/sessions/${known.bobSession}/heartbeat`, body: { client_id: 'bob-1' } },
    { method: 'DELETE', path: `/api/v1/sessions/${known.bobSession}?client_id=bob-1` },
  ];
  const call = r.pick(calls);
  let body = call.body;
  if (body && r.chance(0.3)) {
    body = { ...body };
    const key = r.pick([...Object.keys(body), 'extra']);
    body[key] = r.pick<unknown>([null, -1, 1.5, 'x'.repeat(200), [], {}, 2 ** 53 + 1]);
  }
  return {
    method: call.method,
    path: call.path,
    body: body === undefined ? undefined : JSON.stringify(body),
  };
}

interface Sent {
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly requestId: string | undefined;
  readonly ms: number;
}

describe('the local gateways under random input', () => {
  let stack: LocalStack;
  let known: Known;
  const writes = new Map<string, string[]>();
  let stopObserving = () => {};
  let agent: Agent;
  let port: number;

  beforeAll(async () => {
    stack = await startTestStack('fuzz', {
      credentials: 'alice:alice-secret,bob:bob-secret',
      requestTimeouts: { headersMs: 2_000, requestMs: 4_000 },
    });
    port = Number(new URL(stack.url).port);
    agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const bob = signedClient(stack.url, BOB);
    const bobLocks: { name: string; token: number }[] = [];
    for (let i = 0; i < 3; i++) {
      const name = `fuzz/bob/${i}`;
      const got = await bob.post(`/api/v1/locks/${name}/acquire`, {
        client_id: 'bob-1',
        ttl_ms: 600_000,
      });
      expect(got.status).toBe(200);
      bobLocks.push({ name, token: got.body.fencing_token });
    }
    const session = await bob.post('/api/v1/sessions', { client_id: 'bob-1', ttl_ms: 600_000 });
    expect(session.status).toBe(201);
    const held = await bob.post('/api/v1/locks/fuzz/bob/session/acquire', {
      client_id: 'bob-1',
      session_id: session.body.session_id,
    });
    expect(held.status).toBe(200);
    known = { bobLocks, bobSession: session.body.session_id };
    stopObserving = observeDynamoSuccesses((command, input) => {
      const request = invocation.getStore()?.requestId;
      if (!request || !WRITES.has(command)) return;
      const list = writes.get(request) ?? [];
      list.push(`${command} ${JSON.stringify(input).slice(0, 300)}`);
      writes.set(request, list);
    });
  });

  afterAll(async () => {
    stopObserving();
    agent?.destroy();
    await stack?.stop();
  });

  /** Bob's items as they are now (what Alice's requests must never change). */
  async function bobState() {
    const bob = signedClient(stack.url, BOB);
    const views = [];
    for (const lock of [...known.bobLocks.map((l) => l.name), 'fuzz/bob/session']) {
      const view = await bob.get(`/api/v1/locks/${lock}`);
      const h = view.body.holders?.[0];
      views.push({
        lock,
        holder: h?.client_id,
        token: h?.fencing_token,
        expires: h?.expires_at,
        session: h?.session_id,
      });
    }
    return views;
  }

  function send(r: Rng, signer: SignatureV4 | undefined, tamper: boolean): Promise<Sent> {
    // Half the requests are well-formed calls of a real route (mutated now and then), so that the
    // deeper paths (grants, waits, sessions, cancels) run too; the other half is noise.
    const call = r.chance(0.5) ? coherent(r, known) : undefined;
    const method =
      call?.method ??
      (r.chance(0.85)
        ? r.pick(['POST', 'GET', 'DELETE'])
        : r.pick(['PUT', 'PATCH', 'OPTIONS', 'HEAD', 'TRACE', 'FOO']));
    // Node's client sends bytes 0x21-0xFF as they are; anything else goes percent-encoded.
    const target = [...(call?.path ?? path(r, known))]
      .map((c) => (c.charCodeAt(0) < 0x21 || c.charCodeAt(0) > 0xff ? encodeURIComponent(c) : c))
      .join('');
    const noise = () =>
      method === 'GET' || method === 'HEAD' ? (r.chance(0.05) ? '{}' : undefined) : body(r, known);
    const payload = call ? call.body : noise();
    const [rawPath, rawQuery = ''] = target.split('?') as [string, string?];
    const extra: Record<string, string> = {};
    if (r.chance(0.2))
      extra['content-type'] = r.pick(['text/plain', 'application/json; charset=latin1', '', 'x/y']);
    else if (payload !== undefined) extra['content-type'] = 'application/json';
    if (r.chance(0.03)) extra['x-flood'] = 'y'.repeat(r.int(1_000, 8_000));
    if (r.chance(0.03)) extra.origin = r.pick(['https://evil.example', 'http://localhost:3000', 'null']);
    return (async () => {
      let headers: Record<string, string> = { host: `127.0.0.1:${port}`, ...extra };
      if (signer) {
        const query: Record<string, string> = {};
        for (const [k, v] of new URLSearchParams(rawQuery)) query[k] = v;
        const signed = await signer.sign(
          new HttpRequest({
            method,
            protocol: 'http:',
            hostname: '127.0.0.1',
            port,
            path: rawPath,
            query,
            headers,
            ...(payload !== undefined ? { body: payload } : {}),
          }),
        );
        headers = signed.headers as Record<string, string>;
        if (tamper && headers.authorization)
          headers.authorization = headers.authorization.replace(/.$/, (c) => (c === '0' ? '1' : '0'));
      }
      const started = performance.now();
      return new Promise<Sent>((resolve, reject) => {
        const req = httpRequest(
          { host: '127.0.0.1', port, method, path: target, headers, agent, timeout: 40_000 },
          (res) => {
            res.resume();
            res.on('end', () =>
              resolve({
                method,
                path: target.slice(0, 200),
                status: res.statusCode ?? 0,
                requestId: res.headers['apigw-requestid'] as string | undefined,
                ms: performance.now() - started,
              }),
            );
            res.on('error', reject);
          },
        );
        req.on('timeout', () =>
          req.destroy(new Error(`no answer in 40 s: ${method} ${target.slice(0, 200)}`)),
        );
        req.on('error', (error) => {
          // The gateway may refuse a request by closing the connection after its answer (413): that is an answer.
          resolve({
            method,
            path: target.slice(0, 200),
            status: -1,
            requestId: undefined,
            ms: performance.now() - started,
          });
          void error;
        });
        if (payload !== undefined) req.write(payload);
        req.end();
      });
    })();
  }

  it(`answers ${REQUESTS} random requests without a crash, a hang, a 500 or a change from a refusal (seed ${SEED})`, async () => {
    const before = await bobState();
    const r = rng(SEED);
    const alice = localSigner(ALICE);
    const wrong = localSigner({ ...BOB, secretAccessKey: 'guess' });
    const results: Sent[] = [];
    let next = 0;
    const worker = async () => {
      while (next < REQUESTS) {
        next++;
        const roll = r.next();
        const signer = roll < 0.85 ? alice : roll < 0.9 ? wrong : roll < 0.95 ? undefined : alice;
        results.push(await send(r, signer, roll >= 0.95));
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));

    const problems: string[] = [];
    for (const s of results) {
      if (s.status >= 500 && s.status !== 503) problems.push(`${s.status} for ${s.method} ${s.path}`);
      if (s.status >= 400 && s.status < 500 && s.requestId) {
        const made = writes.get(s.requestId) ?? [];
        // A refused HTTP wait may have taken and given back a wait slot (bookkeeping, not state).
        const own = made.filter((w) => !w.includes('HTTPWAIT#'));
        const allowed = s.status === 409 ? own.filter((w) => !w.startsWith('TransactWriteItems')) : own;
        if (allowed.length)
          problems.push(`${s.status} for ${s.method} ${s.path} changed state: ${allowed.join(' | ')}`);
      }
    }
    const byStatus: Record<number, number> = {};
    for (const s of results) byStatus[s.status] = (byStatus[s.status] ?? 0) + 1;
    expect(problems, `seed ${SEED}; statuses ${JSON.stringify(byStatus)}`).toEqual([]);
    expect(results).toHaveLength(REQUESTS);
    // A real mix: successes, and refusals of each kind.
    for (const status of [200, 400, 403, 404])
      expect(byStatus[status], `status ${status}`).toBeGreaterThan(0);
    // The observer sees writes (successful requests made some), so "none" above means none.
    const observed = results.filter((r) => r.status < 300 && r.requestId && writes.get(r.requestId)?.length);
    expect(observed.length).toBeGreaterThan(0);
    expect(await bobState(), `seed ${SEED}`).toEqual(before);
    const health = await signedClient(stack.url, ALICE).get('/api/v1/health');
    expect(health.status).toBe(200);
  }, 300_000);

  it('sheds slow and oversized clients, and serves on', async () => {
    const raw = (data: string | Buffer, keepOpenMs = 0) =>
      new Promise<string>((resolve) => {
        const socket = netConnect(port, '127.0.0.1');
        let answer = '';
        socket.on('data', (d) => {
          answer += d.toString('latin1');
        });
        socket.on('close', () => resolve(answer));
        socket.on('error', () => resolve(answer));
        socket.write(data);
        if (keepOpenMs) setTimeout(() => socket.destroy(), keepOpenMs);
      });
    const host = `Host: 127.0.0.1:${port}\r\n`;
    const [slowHeaders, slowBody, hugeHeader, badLine, huge] = await Promise.all([
      // Headers that never end: cut off after headersMs (2 s here).
      raw(`GET /api/v1/health HTTP/1.1\r\n${host}X-A: 1\r\n`),
      // A body that never comes: cut off after requestMs (4 s here).
      raw(
        `POST /api/v1/sessions HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{`,
      ),
      raw(`GET /api/v1/health HTTP/1.1\r\n${host}X-Big: ${'x'.repeat(20_000)}\r\n\r\n`),
      raw('BLAH\r\n\r\n'),
      raw(
        `POST /api/v1/sessions HTTP/1.1\r\n${host}Content-Length: ${11 * 1024 * 1024}\r\n\r\n${'x'.repeat(11 * 1024 * 1024)}`,
      ),
    ]);
    expect(slowHeaders).toMatch(/^HTTP\/1\.1 408/);
    expect(slowBody).toMatch(/^HTTP\/1\.1 (408|400)/);
    expect(hugeHeader).toMatch(/^HTTP\/1\.1 431/);
    expect(badLine).toMatch(/^HTTP\/1\.1 400/);
    expect(huge).toMatch(/^HTTP\/1\.1 (413|403)/);
    // Addressed to another name (DNS rebinding) or from another site's page: refused before any function.
    const rebound = await raw(
      `GET /api/v1/health HTTP/1.1\r\nHost: evil.example:${port}\r\nConnection: close\r\n\r\n`,
    );
    expect(rebound).toMatch(/^HTTP\/1\.1 403/);
    expect((await signedClient(stack.url, ALICE).get('/api/v1/health')).status).toBe(200);
  }, 60_000);

  it('survives random WebSocket handshakes and frames, and answers every latchkey message', async () => {
    const r = rng(SEED + 1);
    const wsUrl = new URL(stack.wsUrl);
    const open = (url: URL, headers: Record<string, string>) =>
      new Promise<WebSocket | number>((resolve) => {
        const ws = new WebSocket(url, { headers });
        ws.once('open', () => resolve(ws));
        ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.once('error', () => resolve(-1));
      });
    // Handshakes: bad paths, queries, signatures.
    for (let i = 0; i < 100; i++) {
      const url = new URL(wsUrl);
      url.pathname = r.pick(['/v1', '/v2', '/', '/v1/x', '/%zz']);
      if (r.chance(0.7)) url.searchParams.set('client_id', r.pick(['me', '', 'x'.repeat(300), 'a b', '🔒']));
      const headers = r.chance(0.7) ? await signedHeaders(url, ALICE) : {};
      const got = await open(url, headers);
      if (typeof got === 'number')
        expect(got === -1 || (got >= 400 && got < 500) || got === 503, `handshake ${url}`).toBe(true);
      else got.close();
    }
    // Frames on a good connection: every text frame gets exactly one answer, and the connection lives on.
    const url = new URL(wsUrl);
    url.searchParams.set('client_id', 'fuzzer');
    const ws = (await open(url, await signedHeaders(url, ALICE))) as WebSocket;
    expect(ws).toBeInstanceOf(WebSocket);
    const answers: unknown[] = [];
    ws.on('message', (d) => answers.push(JSON.parse(String(d))));
    const frames = 300;
    const waitFor = async (count: number) => {
      const deadline = Date.now() + 20_000;
      while (answers.length < count && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 10));
    };
    for (let i = 0; i < frames; i++) {
      const frame = r.pick<() => string>([
        () => JSON.stringify({ action: 'hello' }),
        () => JSON.stringify({ action: 'ping', request_id: `p${i}` }),
        () => JSON.stringify({ action: 'acquire', lock: 'jobs/x', ttl_ms: 1000 }),
        () => JSON.stringify({ action: 'cancel', lock: 'jobs/x' }),
        () => JSON.stringify({ action: r.pick(['', 'x', null, 1]) }),
        () => '{',
        () => 'x'.repeat(r.int(1, 20_000)),
        () => JSON.stringify([1, 2]),
      ])();
      ws.send(frame);
      if (i % 10 === 9) await waitFor(i + 1);
    }
    await waitFor(frames);
    expect(answers).toHaveLength(frames);
    expect(ws.readyState).toBe(WebSocket.OPEN);
    for (const a of answers as { type: string; error?: { code: string } }[]) {
      expect(['welcome', 'pong', 'error']).toContain(a.type);
      if (a.type === 'error') expect(['INVALID_REQUEST', 'THROTTLED']).toContain(a.error?.code);
    }
    ws.close();
  }, 120_000);
});
