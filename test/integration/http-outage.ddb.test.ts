/** A DynamoDB outage seen through the HTTP API (its own file: one local stack per process). */
import { randomUUID } from 'node:crypto';
import { expect, it } from 'vitest';
import { startLocalStack } from '../../local/stack';
import { dynamoEndpoint } from '../support/dynamo';
import { signedClient } from '../support/signed-fetch';
import { startTcpProxy } from '../support/tcp-proxy';

it('is 503 with Retry-After, never "not acquired"', async () => {
  const proxy = await startTcpProxy(dynamoEndpoint());
  const stack = await startLocalStack({
    port: 0,
    wsPort: 0,
    dynamoEndpoint: proxy.endpoint,
    tableName: `outage-${randomUUID()}`,
  });
  try {
    const client = signedClient(stack.url);
    expect(
      (await client.post('/api/v1/locks/outage/acquire', { client_id: 'a', ttl_ms: 5_000 })).status,
    ).toBe(200);
    proxy.cut();
    for (const [path, body] of [
      ['/api/v1/locks/outage/acquire', { client_id: 'b', ttl_ms: 5_000 }],
      ['/api/v1/locks/outage/release', { client_id: 'a', fencing_token: 1 }],
    ] as const) {
      const response = await client.post(path, body);
      expect(response.status).toBe(503);
      expect(response.headers.get('retry-after')).toMatch(/^[1-9][0-9]*$/);
      expect(response.body).toEqual({
        error: {
          code: 'UNAVAILABLE',
          message: expect.stringMatching(/DynamoDB/),
          retry_after_ms: expect.any(Number),
        },
      });
      // The header says the same, in whole seconds.
      expect(Number(response.headers.get('retry-after'))).toBe(
        Math.max(1, Math.ceil(response.body.error.retry_after_ms / 1000)),
      );
    }
    expect((await client.get('/api/v1/locks/outage')).status).toBe(503);
    proxy.restore();
    expect((await client.get('/api/v1/locks/outage')).body).toMatchObject({
      state: 'held',
      holders: [{ client_id: 'a' }],
    });
  } finally {
    await stack.stop();
    await proxy.close();
  }
});
