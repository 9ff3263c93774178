import { Sha256 } from '@aws-crypto/sha256-js';
import { ScanCommand } from '@aws-sdk/lib-dynamodb';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localPrincipal } from '../../lambdas/core/principal';
import { createDocumentClient } from '../../lambdas/store/document-client';
import type { LocalStack } from '../../local/stack';
import { LockClient } from '../../sdk/client';
import { InvalidArgumentError } from '../../sdk/errors';
import { dynamoEndpoint } from '../support/dynamo';
import { type SignedResponse, signedClient } from '../support/signed-fetch';
import { startTestStack } from '../support/stack';

let stack: LocalStack;
/** The local principal (local:local). */
let api: ReturnType<typeof signedClient>;
/** Another principal of the same stack. */
let mallory: ReturnType<typeof signedClient>;
const db = () => createDocumentClient({ endpoint: dynamoEndpoint() });

beforeAll(async () => {
  // No sweeper: its cursor item would change the table under the tests that check nothing changed.
  stack = await startTestStack('http', { credentials: 'mallory:mallory-secret', sweepIntervalMs: 0 });
  api = signedClient(stack.url);
  mallory = signedClient(stack.url, { accessKeyId: 'mallory', secretAccessKey: 'mallory-secret' });
});
afterAll(async () => stack.stop());

const tableSnapshot = async () =>
  ((await db().send(new ScanCommand({ TableName: stack.tableName, ConsistentRead: true }))).Items ?? []).sort(
    (a, b) => String(a.pk).localeCompare(String(b.pk)),
  );

describe('authentication', () => {
  it('accepts SigV4-signed requests', async () => {
    expect(await api.get('/api/v1/health')).toMatchObject({ status: 200, body: { ok: true } });
  });

  it('answers 403 to unsigned requests and to wrong credentials, before any handler runs', async () => {
    const unsigned = await api.post(
      '/api/v1/locks/x/acquire',
      { client_id: 'a', ttl_ms: 5_000 },
      { sign: false },
    );
    expect(unsigned.status).toBe(403);
    expect(unsigned.body).toMatchObject({ message: expect.any(String), error: { code: 'UNAUTHORIZED' } });
    const forged = signedClient(stack.url, { accessKeyId: 'local', secretAccessKey: 'wrong' });
    expect((await forged.post('/api/v1/locks/x/acquire', { client_id: 'a', ttl_ms: 5_000 })).status).toBe(
      403,
    );
    expect(await tableSnapshot()).toEqual([]);
  });

  it('rejects a signed request whose body was altered', async () => {
    // Sign one body, send another: the payload hash no longer matches.
    const url = new URL('/api/v1/locks/x/acquire', stack.url);
    const { SignatureV4 } = await import('@smithy/signature-v4');
    const { Sha256 } = await import('@aws-crypto/sha256-js');
    const signer = new SignatureV4({
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
      region: 'us-east-1',
      service: 'execute-api',
      sha256: Sha256,
    });
    const signed = await signer.sign({
      method: 'POST',
      protocol: 'http:',
      hostname: url.hostname,
      port: Number(url.port),
      path: url.pathname,
      headers: { host: url.host },
      body: '{"client_id":"a","ttl_ms":5000}',
    });
    const response = await fetch(url, {
      method: 'POST',
      headers: signed.headers,
      body: '{"client_id":"evil","ttl_ms":5000}',
    });
    expect(response.status).toBe(403);
  });
});

describe('lock routes', () => {
  it('acquire, inspect, renew, release a hierarchical lock', async () => {
    const acquired = await api.post('/api/v1/locks/jobs/billing/nightly/acquire', {
      client_id: 'w1',
      ttl_ms: 30_000,
    });
    expect(acquired.status).toBe(200);
    expect(acquired.body).toMatchObject({
      acquired: true,
      lock: 'jobs/billing/nightly',
      client_id: 'w1',
      mode: 'exclusive',
      ttl_ms: 30_000,
    });
    const token = acquired.body.fencing_token;
    expect(Number.isSafeInteger(token)).toBe(true);
    expect(acquired.body.expires_at).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);

    const refused = await api.post('/api/v1/locks/jobs/billing/nightly/acquire', {
      client_id: 'w2',
      ttl_ms: 30_000,
    });
    expect(refused.body).toMatchObject({
      acquired: false,
      holder: { client_id: 'w1', expires_at: acquired.body.expires_at },
    });
    expect(refused.body.retry_after_ms).toBeGreaterThan(0);

    // A percent-encoded path is refused (so the path IAM authorized is the lock acted on), and
    // changes nothing; the name as it is works.
    const encoded = await api.get(`/api/v1/locks/${encodeURIComponent('jobs/billing/nightly')}`);
    expect(encoded.status).toBe(400);
    expect(encoded.body.error.code).toBe('INVALID_NAME');
    const sneaky = await api.post('/api/v1/locks/jobs/billing/nightly/%72elease', {
      client_id: 'w1',
      fencing_token: token,
    });
    expect(sneaky.status).toBe(400);
    const shown = await api.get('/api/v1/locks/jobs/billing/nightly');
    expect(shown.body).toMatchObject({
      lock: 'jobs/billing/nightly',
      state: 'held',
      holders: [{ client_id: 'w1', mine: true, fencing_token: token }],
      waiters: [],
      fencing_token: token,
    });

    const renewed = await api.post('/api/v1/locks/jobs/billing/nightly/renew', {
      client_id: 'w1',
      fencing_token: token,
      ttl_ms: 60_000,
    });
    expect(renewed.body).toMatchObject({ renewed: true, fencing_token: token, ttl_ms: 60_000 });
    expect(Date.parse(renewed.body.expires_at)).toBeGreaterThan(Date.parse(acquired.body.expires_at));

    const stale = await api.post('/api/v1/locks/jobs/billing/nightly/release', {
      client_id: 'w2',
      fencing_token: token,
    });
    expect(stale.status).toBe(409);
    expect(stale.body).toMatchObject({ released: false, error: { code: 'NOT_HOLDER' } });

    const released = await api.post('/api/v1/locks/jobs/billing/nightly/release', {
      client_id: 'w1',
      fencing_token: token,
    });
    expect(released.body).toMatchObject({ released: true, remaining_reentries: 0 });
    expect((await api.get('/api/v1/locks/jobs/billing/nightly')).body).toMatchObject({
      state: 'free',
      holders: [],
      fencing_token: token,
    });

    const lapsed = await api.post('/api/v1/locks/jobs/billing/nightly/renew', {
      client_id: 'w1',
      fencing_token: token,
      ttl_ms: 5_000,
    });
    expect(lapsed.status).toBe(409);
    expect(lapsed.body).toMatchObject({ renewed: false, error: { code: 'NOT_HOLDER' } });
  });

  it('an unused name is simply free', async () => {
    expect((await api.get('/api/v1/locks/never/used')).body).toEqual({
      lock: 'never/used',
      state: 'free',
      mode: null,
      max_holders: null,
      holders: [],
      queued: 0,
      waiters: [],
      fencing_token: null,
    });
  });

  it('a retried acquire with the same request_id gets the same grant', async () => {
    const body = { client_id: 'w1', ttl_ms: 30_000, request_id: 'retry-1' };
    const first = await api.post('/api/v1/locks/idempotent/acquire', body);
    const again = await api.post('/api/v1/locks/idempotent/acquire', body);
    const { remaining_ms: firstRemaining, ...grant } = first.body;
    const { remaining_ms: againRemaining, ...replayed } = again.body;
    expect(replayed).toEqual(grant);
    // The lease end is the same; what is left of it can only have shrunk.
    expect(againRemaining).toBeLessThanOrEqual(firstRemaining);
  });

  it('lists locks by prefix (in the path), paginated, in name order', async () => {
    for (const name of ['ls/a', 'ls/b', 'ls/c', 'ls-other'])
      await api.post(`/api/v1/locks/${name}/acquire`, { client_id: 'w', ttl_ms: 30_000 });
    const first = await api.get('/api/v1/list/ls/?limit=2');
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ prefix: 'ls/' });
    expect(first.body.locks.map((l: { lock: string }) => l.lock)).toEqual(['ls/a', 'ls/b']);
    expect(first.body.locks[0]).toMatchObject({ state: 'held', holders: [{ client_id: 'w', mine: true }] });
    const second = await api.get(`/api/v1/list/ls/?limit=2&cursor=${first.body.next_cursor}`);
    expect(second.body).toMatchObject({ locks: [{ lock: 'ls/c' }], next_cursor: null });
    // A percent-encoded prefix is refused: IAM scopes the listing by the path as it is.
    const encoded = await api.get(`/api/v1/list/${encodeURIComponent('ls/')}?limit=2`);
    expect(encoded.status).toBe(400);
    // Every lock: GET /api/v1/list, page by page, in name order, each once.
    const all: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { body: { prefix: string; locks: { lock: string }[]; next_cursor: string | null } } =
        await api.get(`/api/v1/list?limit=3${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.body.prefix).toBe('');
      all.push(...page.body.locks.map((l) => l.lock));
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(all).toEqual([...all].sort());
    expect(new Set(all).size).toBe(all.length);
    expect(all).toEqual(expect.arrayContaining(['ls/a', 'ls/b', 'ls/c', 'ls-other', 'jobs/billing/nightly']));
    // The listing moved: GET /api/v1/locks is no route any more.
    expect((await api.get('/api/v1/locks?prefix=ls%2F')).status).toBe(404);
  });

  it("a cursor is good only for the listing that issued it: forged or another prefix's is a 400", async () => {
    const issued = (await api.get('/api/v1/list/ls/?limit=1')).body.next_cursor as string;
    expect(issued).toEqual(expect.any(String));
    const forge = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    for (const [path, cursor] of [
      ['/api/v1/list/ls/', 'garbage'],
      ['/api/v1/list/ls/', forge({ after: 'other/a' })],
      ['/api/v1/list/ls/', forge({ after: 'ls//a' })],
      ['/api/v1/list/ls/', forge({ after: 7 })],
      ['/api/v1/list/jobs/', issued],
    ]) {
      const response = await api.get(`${path}?cursor=${encodeURIComponent(cursor as string)}`);
      expect({ cursor, status: response.status, code: response.body.error?.code }).toEqual({
        cursor,
        status: 400,
        code: 'INVALID_REQUEST',
      });
    }
    expect((await api.get(`/api/v1/list/ls/?cursor=${issued}`)).status).toBe(200);
  });
});

describe('another principal', () => {
  it('sees that a lock is held and by which label, never its fencing token; its release and renew are 403', async () => {
    const held = await api.post('/api/v1/locks/owned/by-local/acquire', { client_id: 'w1', ttl_ms: 30_000 });
    const token = held.body.fencing_token as number;
    const seen = await mallory.get('/api/v1/locks/owned/by-local');
    expect(seen.body).toMatchObject({
      state: 'held',
      holders: [{ client_id: 'w1', mine: false }],
      fencing_token: null,
    });
    expect(seen.body.holders[0]).not.toHaveProperty('fencing_token');
    const listed = await mallory.get('/api/v1/list/owned/');
    expect(listed.body.locks).toEqual([seen.body].map(({ waiters: _, ...view }) => view));
    // Refused a grant it did not take, even naming its label and token; the lock is unchanged.
    const before = await tableSnapshot();
    const release = await mallory.post('/api/v1/locks/owned/by-local/release', {
      client_id: 'w1',
      fencing_token: token,
    });
    expect(release).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN' } } });
    const renew = await mallory.post('/api/v1/locks/owned/by-local/renew', {
      client_id: 'w1',
      fencing_token: token,
      ttl_ms: 60_000,
    });
    expect(renew).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN' } } });
    expect(await tableSnapshot()).toEqual(before);
    // Its own acquire is refused like anyone's while the lock is held.
    expect(
      (await mallory.post('/api/v1/locks/owned/by-local/acquire', { client_id: 'w1', ttl_ms: 5_000 })).body,
    ).toMatchObject({
      acquired: false,
      holder: { client_id: 'w1' },
    });
    await api.post('/api/v1/locks/owned/by-local/release', { client_id: 'w1', fencing_token: token });
    // Once free, the last token is no secret.
    expect((await mallory.get('/api/v1/locks/owned/by-local')).body).toMatchObject({
      state: 'free',
      fencing_token: token,
    });
  });
});

describe('force-release (administrators)', () => {
  it('ends whoever holds the lock, fences past it, and says who did it and why', async () => {
    const held = await api.post('/api/v1/locks/stuck/job/acquire', { client_id: 'w1', ttl_ms: 60_000 });
    const token = held.body.fencing_token as number;
    const forced = await mallory.post('/api/v1/admin/locks/stuck/job/force-release', { reason: 'wedged' });
    expect(forced).toMatchObject({
      status: 200,
      body: {
        released: true,
        lock: 'stuck/job',
        holder: { owner: localPrincipal('local'), client_id: 'w1', fencing_token: token },
        fenced_to: token + 1,
        by: localPrincipal('mallory'),
        at: expect.stringMatching(/Z$/),
      },
    });
    // The old holder holds nothing; the next grant is fenced past the old one and past fenced_to.
    const late = await api.post('/api/v1/locks/stuck/job/release', { client_id: 'w1', fencing_token: token });
    expect(late).toMatchObject({ status: 409, body: { released: false, error: { code: 'NOT_HOLDER' } } });
    const next = await api.post('/api/v1/locks/stuck/job/acquire', { client_id: 'w2', ttl_ms: 5_000 });
    expect(next.body).toMatchObject({ acquired: true });
    expect(next.body.fencing_token).toBeGreaterThan(token + 1);
    await api.post('/api/v1/locks/stuck/job/release', {
      client_id: 'w2',
      fencing_token: next.body.fencing_token,
    });
    // A free lock: nothing to do. Bad bodies and actions change nothing.
    expect(
      (await api.post('/api/v1/admin/locks/stuck/job/force-release', { reason: 'again' })).body,
    ).toMatchObject({
      released: false,
    });
    const before = await tableSnapshot();
    expect((await api.post('/api/v1/admin/locks/stuck/job/force-release', {})).status).toBe(400);
    expect((await api.post('/api/v1/admin/locks/stuck/job/force-release', { reason: '' })).status).toBe(400);
    expect((await api.post('/api/v1/admin/locks/stuck/job/steal', { reason: 'x' })).status).toBe(404);
    expect(await tableSnapshot()).toEqual(before);
  });
});

describe('bad input: 400 with a code and a message, and nothing changes', () => {
  const ok = { client_id: 'w1', ttl_ms: 5_000 };
  const cases: [string, string, unknown, string?][] = [
    ['malformed JSON', '/api/v1/locks/bad/acquire', undefined, '{"client_id": '],
    ['a JSON array', '/api/v1/locks/bad/acquire', [ok]],
    ['an empty body', '/api/v1/locks/bad/acquire', undefined, ''],
    ['a missing field', '/api/v1/locks/bad/acquire', { client_id: 'w1' }],
    ['an extra field', '/api/v1/locks/bad/acquire', { ...ok, admin: true }],
    ['a string ttl', '/api/v1/locks/bad/acquire', { ...ok, ttl_ms: '5000' }],
    ['a fractional ttl', '/api/v1/locks/bad/acquire', { ...ok, ttl_ms: 5000.5 }],
    ['ttl below the minimum', '/api/v1/locks/bad/acquire', { ...ok, ttl_ms: 999 }],
    ['ttl above the maximum', '/api/v1/locks/bad/acquire', { ...ok, ttl_ms: 3_600_001 }],
    ['an empty client_id', '/api/v1/locks/bad/acquire', { ...ok, client_id: '' }],
    ['a client_id with spaces', '/api/v1/locks/bad/acquire', { ...ok, client_id: 'a b' }],
    ['an unknown mode', '/api/v1/locks/bad/acquire', { ...ok, mode: 'read' }],
    ['max_holders without shared mode', '/api/v1/locks/bad/acquire', { ...ok, max_holders: 2 }],
    ['max_holders out of range', '/api/v1/locks/bad/acquire', { ...ok, mode: 'shared', max_holders: 1_001 }],
    ['a negative token', '/api/v1/locks/bad/release', { client_id: 'w1', fencing_token: -1 }],
    ['a fractional token', '/api/v1/locks/bad/release', { client_id: 'w1', fencing_token: 1.5 }],
    [
      'a bad release_id',
      '/api/v1/locks/bad/release',
      { client_id: 'w1', fencing_token: 1, release_id: 'a b' },
    ],
    [
      'holding that is not a list',
      '/api/v1/locks/bad/acquire',
      { ...ok, wait_timeout_ms: 100, holding: 'a' },
    ],
    [
      'holding a bad name',
      '/api/v1/locks/bad/acquire',
      { ...ok, wait_timeout_ms: 100, holding: ['x/acquire'] },
    ],
    ['a string token', '/api/v1/locks/bad/renew', { client_id: 'w1', fencing_token: '7', ttl_ms: 5_000 }],
    [
      'a token beyond 2^53',
      '/api/v1/locks/bad/release',
      undefined,
      '{"client_id":"w1","fencing_token":9007199254740993}',
    ],
    ['a body over 24 KiB', '/api/v1/locks/bad/acquire', { ...ok, request_id: 'r'.repeat(25_000) }],
  ];

  it.each(cases)('%s', async (_, path, body, raw) => {
    const before = await tableSnapshot();
    const response = await api.post(path, body, raw === undefined ? {} : { raw });
    expect(response.status).toBe(400);
    expect(response.body.error.code).toBe('INVALID_REQUEST');
    expect(response.body.error.message).toEqual(expect.any(String));
    expect(await tableSnapshot()).toEqual(before);
  });

  const badNames: [string, string, RegExp][] = [
    ['a bad character', '/api/v1/locks/bad%20name/acquire', /"bad name" may contain only A-Z a-z 0-9/],
    ['an empty level', '/api/v1/locks/a%2F%2Fb/acquire', /"a\/\/b" has an empty level/],
    ['a trailing slash', `/api/v1/locks/${encodeURIComponent('a/')}/acquire`, /"a\/" has an empty level/],
    [
      'over 256 characters',
      `/api/v1/locks/${'n'.repeat(257)}/acquire`,
      /is 257 characters long; the limit is 256/,
    ],
    ['an action word as its last level', '/api/v1/locks/a/release/acquire', /"a\/release" ends in "release"/],
  ];
  it.each(badNames)('a name with %s: 400 INVALID_NAME saying what is wrong', async (_, path, message) => {
    const before = await tableSnapshot();
    const response = await api.post(path, ok);
    expect(response.status).toBe(400);
    expect(response.body.error).toMatchObject({
      code: 'INVALID_NAME',
      message: expect.stringMatching(message),
    });
    expect(await tableSnapshot()).toEqual(before);
  });

  it('bad query parameters or prefixes for the listing', async () => {
    for (const path of [
      '/api/v1/list?limit=0',
      '/api/v1/list?limit=101',
      '/api/v1/list?limit=ten',
      '/api/v1/list?cursor=garbage',
      // The prefix is in the path now: as a query parameter it is unknown.
      '/api/v1/list?prefix=ls%2F',
      '/api/v1/list?unknown=1',
      '/api/v1/list/ls/?limit=0',
    ]) {
      const response = await api.get(path);
      expect({ path, status: response.status, code: response.body.error?.code }).toEqual({
        path,
        status: 400,
        code: 'INVALID_REQUEST',
      });
    }
    for (const path of ['/api/v1/list/a%20b', `/api/v1/list/${'p'.repeat(257)}`]) {
      const response = await api.get(path);
      expect({ path, status: response.status, code: response.body.error?.code }).toEqual({
        path,
        status: 400,
        code: 'INVALID_NAME',
      });
    }
  });

  it('an unknown action is 404 and an unknown route is 404', async () => {
    expect((await api.post('/api/v1/locks/x/steal', { client_id: 'w1' })).body.error.code).toBe('NOT_FOUND');
    expect((await api.get('/api/v2/nothing')).status).toBe(404);
  });
});

/**
 * A signer that signs the path as sent, without SigV4's normalization and double encoding of the
 * path (as curl's --aws-sigv4 does): for "a%20b" or "a//b" its canonical path is not the AWS
 * SDK's, so a gateway that checked the signature first would answer "signature does not match".
 */
function asSentClient(baseUrl: string) {
  const signer = new SignatureV4({
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    region: 'us-east-1',
    service: 'execute-api',
    sha256: Sha256,
    uriEscapePath: false,
  });
  return async (method: string, path: string, body?: unknown) => {
    const url = new URL(path, baseUrl);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const request = new HttpRequest({
      method,
      protocol: url.protocol,
      hostname: url.hostname,
      port: Number(url.port),
      path: url.pathname,
      headers: { host: url.host, ...(payload ? { 'content-type': 'application/json' } : {}) },
      ...(payload ? { body: payload } : {}),
    });
    const signed = await signer.sign(request);
    const response = await fetch(url, {
      method,
      headers: signed.headers,
      ...(payload ? { body: payload } : {}),
    });
    return { status: response.status, body: await response.json() } as Pick<
      SignedResponse,
      'status' | 'body'
    >;
  };
}

describe('a bad lock name is a 400 naming the rule, whoever signed the request and however', () => {
  const sdk = () =>
    new LockClient({ endpoint: stack.url, credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
  const sdkError = async (call: Promise<unknown>) => {
    const error = await call.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(InvalidArgumentError);
    return error as InvalidArgumentError;
  };

  it.each([
    // [in the path, the name it decodes to, what is wrong with it]
    ['a%20b', 'a b', /^lock name "a b" may contain only A-Z a-z 0-9 \. _ - : \/ \(it contains " "\)$/],
    ['caf%C3%A9', 'café', /^lock name "café" may contain only A-Z a-z 0-9 \. _ - : \/ \(it contains "é"\)$/],
    ['a//b', 'a//b', /^lock name "a\/\/b" has an empty level/],
  ])(
    '%s: the same 400 INVALID_NAME signed as the AWS SDK signs, as sent, or not at all; the SDK says it first',
    async (inPath, name, problem) => {
      const before = await tableSnapshot();
      const asSent = asSentClient(stack.url);
      const body = { client_id: 'w', ttl_ms: 5_000 };
      for (const [method, path, sdkCall] of [
        ['POST', `/api/v1/locks/${inPath}/acquire`, 'tryAcquire'],
        ['GET', `/api/v1/locks/${inPath}`, 'inspect'],
      ] as const) {
        const answers = [
          method === 'POST' ? await api.post(path, body) : await api.get(path),
          await asSent(method, path, method === 'POST' ? body : undefined),
          method === 'POST'
            ? await api.post(path, body, { sign: false })
            : await api.get(path, { sign: false }),
        ].map((a) => ({ status: a.status, body: a.body }));
        const [first] = answers;
        expect(first?.status, `${method} ${path}`).toBe(400);
        expect(first?.body.error.code).toBe('INVALID_NAME');
        expect(first?.body.error.message).toMatch(problem);
        expect(answers).toEqual([first, first, first]);
        // The SDK refuses the name before sending it, with the service's own words.
        const refused = await sdkError(
          sdkCall === 'tryAcquire' ? sdk().tryAcquire(name) : sdk().inspect(name),
        );
        expect(refused.message).toBe(`${sdkCall}: ${first?.body.error.message}`);
      }
      // A name given to the SDK percent-encoded is refused for its '%'.
      expect((await sdkError(sdk().tryAcquire(inPath))).message).toMatch(
        inPath.includes('%')
          ? /it contains "%": write the name as it is, not percent-encoded/
          : /empty level/,
      );
      expect(await tableSnapshot()).toEqual(before);
    },
  );

  it('a percent-encoded path with a good name in it: 400 INVALID_NAME, before or after the signature', async () => {
    const asSent = asSentClient(stack.url);
    for (const path of ['/api/v1/locks/jobs%2Fnightly/acquire', '/api/v1/locks/jobs/nightly/%61cquire']) {
      const answer = await asSent('POST', path, { client_id: 'w', ttl_ms: 5_000 });
      expect(answer).toMatchObject({ status: 400, body: { error: { code: 'INVALID_NAME' } } });
      expect(answer.body.error.message).toMatch(/may not be percent-encoded .*write the lock name as it is/);
      expect(await api.post(path, { client_id: 'w', ttl_ms: 5_000 })).toMatchObject({
        status: 400,
        body: answer.body,
      });
    }
  });

  it('the last level of a path is always the action: a name may not end in an action word', async () => {
    const reserved = /a name's last level may not be acquire, release, renew, cancel, force-release or waits/;
    const inspected = await api.get('/api/v1/locks/names/a/acquire');
    expect(inspected.status).toBe(400);
    expect(inspected.body.error).toMatchObject({
      code: 'INVALID_NAME',
      message: expect.stringMatching(reserved),
    });
    expect(inspected.body.error.message).toMatch(/GET \/api\/v1\/locks\/names\/a inspects it/);
    expect((await sdkError(sdk().inspect('names/a/acquire'))).message).toBe(
      `inspect: ${inspected.body.error.message}`,
    );
    // POST of the same path acquires names/a, and GET of names/a inspects it.
    const acquired = await api.post('/api/v1/locks/names/a/acquire', { client_id: 'w', ttl_ms: 5_000 });
    expect(acquired.body).toMatchObject({ acquired: true, lock: 'names/a' });
    expect((await api.get('/api/v1/locks/names/a')).body).toMatchObject({ lock: 'names/a', state: 'held' });
    for (const word of ['acquire', 'release', 'renew', 'cancel', 'force-release', 'waits']) {
      const taken = await api.post(`/api/v1/locks/names/${word}/acquire`, { client_id: 'w', ttl_ms: 5_000 });
      expect(taken, word).toMatchObject({ status: 400, body: { error: { code: 'INVALID_NAME' } } });
      expect((await sdkError(sdk().tryAcquire(`names/${word}`))).message).toBe(
        `tryAcquire: ${taken.body.error.message}`,
      );
      const forced = await api.post(`/api/v1/admin/locks/names/${word}/force-release`, { reason: 'test' });
      expect(forced, word).toMatchObject({ status: 400, body: { error: { code: 'INVALID_NAME' } } });
    }
    // GET of .../names/a/waits is the waits view of names/a, never a lock of that name.
    const waits = await api.get('/api/v1/locks/names/a/waits');
    expect(waits.body).toMatchObject({ lock: 'names/a', edges: [], cycles: [], complete: true });
    // Anywhere but last, or with more to it, an action word is a level like any other.
    for (const name of ['names/acquire/x', 'names/acquired']) {
      const ok = await api.post(`/api/v1/locks/${name}/acquire`, { client_id: 'w', ttl_ms: 5_000 });
      expect(ok.body, name).toMatchObject({ acquired: true, lock: name });
    }
  });
});
