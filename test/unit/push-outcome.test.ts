/**
 * A push whose outcome is unknown is treated as delivered: only a connection
 * API Gateway reports gone on the very attempt that carried the frame is gone.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiGatewayPusher } from '../../lambdas/service/push';

let server: Server | undefined;
afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

/** A fake @connections endpoint answering each POST with the next of `answers`. */
async function endpoint(answers: number[]): Promise<{ url: string; received: string[] }> {
  const received: string[] = [];
  server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    received.push(Buffer.concat(chunks).toString());
    const status = answers.shift() ?? 200;
    res.writeHead(status, status === 410 ? { 'x-amzn-errortype': 'GoneException' } : {});
    res.end(status === 200 ? '' : JSON.stringify({ message: `status ${status}` }));
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, received };
}

process.env.AWS_REGION ??= 'us-east-1';
process.env.AWS_ACCESS_KEY_ID ??= 'local';
process.env.AWS_SECRET_ACCESS_KEY ??= 'local';

describe('ApiGatewayPusher', () => {
  it('is sent when API Gateway takes the frame, gone on a 410', async () => {
    const ok = await endpoint([200]);
    expect(await new ApiGatewayPusher(ok.url).push('c1', { type: 'pong' })).toBe('sent');
    server?.close();
    const gone = await endpoint([410]);
    expect(await new ApiGatewayPusher(gone.url).push('c1', { type: 'pong' })).toBe('gone');
  });

  it('never reports gone after an attempt whose outcome is unknown (it may have delivered)', async () => {
    // The first attempt reaches the endpoint and fails with a 500; a retry would find the connection gone.
    const flaky = await endpoint([500, 410]);
    const outcome = await new ApiGatewayPusher(flaky.url).push('c1', { type: 'pong' });
    expect(outcome).not.toBe('gone');
    expect(flaky.received.length).toBeGreaterThanOrEqual(1);
  });

  it('sends a ring once: a hint is not worth a retry that delays the release that rang', async () => {
    const flaky = await endpoint([500, 200, 200]);
    const ring = { type: 'ring' as const, lock: 'L', order: 'o' };
    expect(await new ApiGatewayPusher(flaky.url).push('relay', ring)).toBe('unknown');
    expect(flaky.received).toHaveLength(1);
    server?.close();
    const grant = await endpoint([500, 200]);
    expect(await new ApiGatewayPusher(grant.url).push('c1', { type: 'pong' })).toBe('sent');
    expect(grant.received).toHaveLength(2);
  });
});
