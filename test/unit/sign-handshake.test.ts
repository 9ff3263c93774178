/**
 * The relay's handshake signature (lambdas/shared/sign-handshake.ts), written out with node:crypto
 * to keep the AWS SDK's signer out of the bundles, against that signer: the same request signed
 * both ways gives the same Authorization header, and the local gateway's verifier accepts it.
 */
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { describe, expect, it } from 'vitest';
import { signHandshake } from '../../lambdas/shared/sign-handshake';
import { localKeys, verifySigV4 } from '../../local/sigv4';

const NOW = new Date('2026-12-03T14:05:09.123Z');

async function sdkSignature(
  url: URL,
  region: string,
  credentials: ConstructorParameters<typeof SignatureV4>[0]['credentials'],
) {
  const signer = new SignatureV4({
    credentials,
    region,
    service: 'execute-api',
    sha256: Sha256,
    applyChecksum: false,
  });
  const signed = await signer.sign(
    new HttpRequest({
      method: 'GET',
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port ? { port: Number(url.port) } : {}),
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: { host: url.host },
    }),
    { signingDate: NOW },
  );
  return String(signed.headers.authorization);
}

describe('the relay handshake signature', () => {
  it.each([
    [
      'an AWS URL with a session token',
      'wss://abc123.execute-api.eu-west-1.amazonaws.com/v1?client_id=latchkey-relay',
      'eu-west-1',
      'FwoGZXIvYXdzEJr//token+with/odd=chars',
    ],
    [
      'a local URL with a port, no token',
      'ws://127.0.0.1:3457/v1?client_id=latchkey-relay',
      'us-east-1',
      undefined,
    ],
    [
      'a query that needs encoding, in any order',
      'ws://localhost:3001/v1?z=1&client_id=a%20b*c&a=%2F',
      'us-east-1',
      undefined,
    ],
  ])('is the AWS SDK signer’s for %s', async (_, href, region, sessionToken) => {
    const url = new URL(href);
    const credentials = {
      accessKeyId: 'AKIDEXAMPLE',
      secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
      sessionToken,
    };
    const headers = signHandshake(url, NOW, region, credentials);
    expect(headers.authorization).toBe(await sdkSignature(url, region, credentials));
    expect(headers['x-amz-date']).toBe('20261203T140509Z');
    expect(headers['x-amz-security-token']).toBe(sessionToken);
    // Host is signed, not sent: the WebSocket client sets it from the URL.
    expect(headers.host).toBeUndefined();
  });

  it('is accepted by the local gateway for its key, and refused for another secret', async () => {
    const url = new URL('ws://127.0.0.1:3457/v1?client_id=latchkey-relay');
    const request = (secretAccessKey: string) => {
      const headers = signHandshake(url, NOW, 'us-east-1', { accessKeyId: 'fn', secretAccessKey });
      return {
        method: 'GET',
        rawPath: url.pathname,
        rawQuery: url.search.slice(1),
        headers: { ...headers, host: url.host },
        body: new Uint8Array(),
      };
    };
    const keys = localKeys('fn:fn-secret');
    expect(await verifySigV4(request('fn-secret'), keys, NOW.getTime())).toEqual({
      ok: true,
      accessKeyId: 'fn',
    });
    expect((await verifySigV4(request('guess'), keys, NOW.getTime())).ok).toBe(false);
  });
});
