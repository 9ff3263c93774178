/** The local API Gateway emulation: routing, events, identities and refusals (no DynamoDB involved). */
import { request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HttpRequest } from '@smithy/protocol-http';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANONYMOUS, localPrincipal } from '../../lambdas/core/principal';
import { createHttpGateway } from '../../local/http-gateway';
import { HostCheck } from '../../local/origin';
import { localKeys } from '../../local/sigv4';
import { localSigner } from '../support/signed-fetch';

const seen: APIGatewayProxyEventV2[] = [];
const echo = async (event: APIGatewayProxyEventV2) => {
  seen.push(event);
  return {
    statusCode: 200,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ok: true }),
  };
};
const routes = [
  { key: 'POST /api/v1/locks/{proxy+}', handler: echo },
  { key: 'GET /api/v1/list', handler: echo },
];
/** Auth off (`npm start -- --no-auth`). */
const open = createHttpGateway({ auth: 'none', routes, hosts: new HostCheck('127.0.0.1') });
/** SigV4, with alice's key besides local:local. */
const signed = createHttpGateway({
  auth: 'sigv4',
  routes,
  keys: localKeys('alice:alice-secret'),
  hosts: new HostCheck('127.0.0.1'),
});
let base = '';
let signedBase = '';
const listen = async (server: Server) => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
};
beforeAll(async () => {
  base = await listen(open);
  signedBase = await listen(signed);
});
afterAll(async () => {
  for (const server of [open, signed]) await new Promise((resolve) => server.close(resolve));
});

/** A raw HTTP request (fetch would not send a Host or a path of our choosing). */
function raw(
  url: string,
  options: { method?: string; path?: string; headers?: Record<string, string>; body?: string },
): Promise<{ status: number; body: string }> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: target.hostname,
        port: target.port,
        method: options.method ?? 'GET',
        path: options.path ?? target.pathname,
        headers: options.headers,
      },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Signs `POST path` with `body` for the signed gateway, as an AWS SDK would. */
async function signedPost(
  path: string,
  body: string,
  credentials = { accessKeyId: 'alice', secretAccessKey: 'alice-secret' },
) {
  const url = new URL(path, signedBase);
  const request = await localSigner(credentials).sign(
    new HttpRequest({
      method: 'POST',
      protocol: 'http:',
      hostname: url.hostname,
      port: Number(url.port),
      path: url.pathname,
      headers: { host: url.host, 'content-type': 'application/json' },
      body,
    }),
  );
  return request.headers as Record<string, string>;
}

describe('local HTTP gateway', () => {
  it('routes a greedy path and passes it decoded, as API Gateway does', async () => {
    const response = await fetch(`${base}/api/v1/locks/jobs%2Fnightly/acquire`, {
      method: 'POST',
      body: '{}',
    });
    expect(response.status).toBe(200);
    const event = seen.at(-1);
    expect(event).toMatchObject({
      version: '2.0',
      routeKey: 'POST /api/v1/locks/{proxy+}',
      rawPath: '/api/v1/locks/jobs%2Fnightly/acquire',
      pathParameters: { proxy: 'jobs/nightly/acquire' },
      body: '{}',
      isBase64Encoded: false,
      requestContext: { http: { method: 'POST' }, stage: '$default' },
    });
    expect(response.headers.get('apigw-requestid')).toBe(event?.requestContext.requestId);
  });

  it('joins repeated query parameters with commas', async () => {
    await fetch(`${base}/api/v1/list?cursor=a&cursor=b&limit=2`);
    expect(seen.at(-1)?.queryStringParameters).toEqual({ cursor: 'a,b', limit: '2' });
  });

  it("answers unknown routes with API Gateway's 404 body plus an error code", async () => {
    const response = await fetch(`${base}/api/v1/nothing`);
    expect(response.status).toBe(404);
    expect(await response.json()).toEqual({
      message: 'Not Found',
      error: { code: 'NOT_FOUND', message: 'Not Found' },
    });
  });

  it('answers a path with a bad percent-escape 400, calling no function', async () => {
    const before = seen.length;
    const response = await raw(base, { method: 'POST', path: '/api/v1/locks/a%E0%A4%A/acquire', body: '{}' });
    expect(response.status).toBe(400);
    expect(JSON.parse(response.body)).toMatchObject({ error: { code: 'INVALID_REQUEST' } });
    expect(seen.length).toBe(before);
  });

  it('with auth off, refuses requests from browsers (they carry Origin)', async () => {
    const before = seen.length;
    const response = await fetch(`${base}/api/v1/locks/x/acquire`, {
      method: 'POST',
      headers: { origin: 'https://evil.example', 'content-type': 'text/plain' },
      body: '{"client_id":"a","ttl_ms":5000}',
    });
    expect(response.status).toBe(403);
    expect(seen.length).toBe(before);
    // Not even from a local page.
    const local = await fetch(`${base}/api/v1/locks/x/acquire`, {
      method: 'POST',
      headers: { origin: 'http://localhost:3000' },
      body: '{}',
    });
    expect(local.status).toBe(403);
    expect(seen.length).toBe(before);
  });

  it('with auth off, every caller is the anonymous principal', async () => {
    await fetch(`${base}/api/v1/locks/x/acquire`, { method: 'POST', body: '{}' });
    expect(seen.at(-1)?.requestContext).toMatchObject({ authorizer: { iam: { userArn: ANONYMOUS } } });
  });
});

describe('DNS rebinding and cross-site requests', () => {
  it('refuses a Host that is not this machine: 403, calling no function', async () => {
    const before = seen.length;
    for (const server of [base, signedBase]) {
      const port = new URL(server).port;
      const response = await raw(server, {
        method: 'POST',
        path: '/api/v1/locks/x/acquire',
        headers: { host: `evil.example:${port}`, 'content-type': 'application/json' },
        body: '{}',
      });
      expect(response.status).toBe(403);
      expect(JSON.parse(response.body)).toMatchObject({ error: { code: 'FORBIDDEN' } });
    }
    expect(seen.length).toBe(before);
  });

  it('serves the loopback names as Host', async () => {
    const port = new URL(base).port;
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, 'LOCALHOST']) {
      const response = await raw(base, {
        method: 'POST',
        path: '/api/v1/locks/x/acquire',
        headers: { host },
        body: '{}',
      });
      expect(response.status, host).toBe(200);
    }
  });

  it('with SigV4, refuses an Origin of another site even on a well-signed request', async () => {
    const before = seen.length;
    const body = '{"client_id":"a","ttl_ms":5000}';
    const headers = await signedPost('/api/v1/locks/x/acquire', body);
    const response = await fetch(`${signedBase}/api/v1/locks/x/acquire`, {
      method: 'POST',
      headers: { ...headers, origin: 'https://evil.example' },
      body,
    });
    expect(response.status).toBe(403);
    expect(await response.json()).toMatchObject({ error: { code: 'FORBIDDEN' } });
    expect(seen.length).toBe(before);
  });

  it('with SigV4, serves a signed request from a local page (Origin http://localhost:3000)', async () => {
    const body = '{"client_id":"a","ttl_ms":5000}';
    const headers = await signedPost('/api/v1/locks/x/acquire', body);
    const response = await fetch(`${signedBase}/api/v1/locks/x/acquire`, {
      method: 'POST',
      headers: { ...headers, origin: 'http://localhost:3000' },
      body,
    });
    expect(response.status).toBe(200);
  });
});

describe('the caller’s identity', () => {
  it('the event carries the signing key’s principal in requestContext.authorizer.iam', async () => {
    const body = '{}';
    for (const [credentials, principal] of [
      [{ accessKeyId: 'alice', secretAccessKey: 'alice-secret' }, localPrincipal('alice')],
      [{ accessKeyId: 'local', secretAccessKey: 'local' }, localPrincipal('local')],
    ] as const) {
      const headers = await signedPost('/api/v1/locks/x/acquire', body, { ...credentials });
      const response = await fetch(`${signedBase}/api/v1/locks/x/acquire`, { method: 'POST', headers, body });
      expect(response.status).toBe(200);
      expect(seen.at(-1)?.requestContext).toMatchObject({
        authorizer: { iam: { userArn: principal, accessKey: credentials.accessKeyId } },
      });
    }
    expect(localPrincipal('alice')).toBe('arn:aws:iam::000000000000:user/alice');
  });

  it('refuses an unknown key or a wrong secret before any function runs', async () => {
    const before = seen.length;
    const body = '{}';
    for (const credentials of [
      { accessKeyId: 'mallory', secretAccessKey: 'x' },
      { accessKeyId: 'alice', secretAccessKey: 'not-alice-secret' },
    ]) {
      const headers = await signedPost('/api/v1/locks/x/acquire', body, credentials);
      const response = await fetch(`${signedBase}/api/v1/locks/x/acquire`, { method: 'POST', headers, body });
      expect(response.status).toBe(403);
      expect(await response.json()).toMatchObject({ error: { code: 'UNAUTHORIZED' } });
    }
    expect(seen.length).toBe(before);
  });
});
