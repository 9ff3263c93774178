/** The local API Gateway emulation: routing, events, and refusals (no DynamoDB involved). */
import type { AddressInfo } from 'node:net';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpGateway } from '../../local/http-gateway';

const seen: APIGatewayProxyEventV2[] = [];
const echo = async (event: APIGatewayProxyEventV2) => {
  seen.push(event);
  return {
    statusCode: 200,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ok: true }),
  };
};
const server = createHttpGateway({
  auth: 'none',
  routes: [
    { key: 'POST /api/v1/locks/{proxy+}', handler: echo },
    { key: 'GET /api/v1/locks', handler: echo },
  ],
});
let base = '';
beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

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
    await fetch(`${base}/api/v1/locks?prefix=a&prefix=b&limit=2`);
    expect(seen.at(-1)?.queryStringParameters).toEqual({ prefix: 'a,b', limit: '2' });
  });

  it("answers unknown routes with API Gateway's 404 body plus an error code", async () => {
    const response = await fetch(`${base}/api/v1/nothing`);
    expect(response.status).toBe(404);
    expect(await response.json()).toEqual({
      message: 'Not Found',
      error: { code: 'NOT_FOUND', message: 'Not Found' },
    });
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
  });
});
