import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { describe, expect, it } from 'vitest';
import { localKeys, verifySigV4 } from '../../local/sigv4';

const NOW = Date.parse('2026-11-23T12:00:00Z');

async function signed(
  options: {
    region?: string;
    accessKeyId?: string;
    secret?: string;
    path?: string;
    query?: Record<string, string>;
    body?: string;
    hashHeader?: boolean;
  } = {},
) {
  const signer = new SignatureV4({
    credentials: { accessKeyId: options.accessKeyId ?? 'local', secretAccessKey: options.secret ?? 'local' },
    region: options.region ?? 'us-east-1',
    service: 'execute-api',
    sha256: Sha256,
    applyChecksum: options.hashHeader ?? true,
  });
  const body = options.body ?? '{"client_id":"a","ttl_ms":5000}';
  const request = await signer.sign(
    new HttpRequest({
      method: 'POST',
      protocol: 'http:',
      hostname: '127.0.0.1',
      port: 3000,
      path: options.path ?? '/api/v1/locks/jobs/a/acquire',
      query: options.query ?? {},
      headers: { host: '127.0.0.1:3000', 'content-type': 'application/json' },
      body,
    }),
    { signingDate: new Date(NOW) },
  );
  const rawQuery = new URLSearchParams(options.query ?? {}).toString();
  return {
    method: 'POST',
    rawPath: request.path,
    rawQuery,
    headers: request.headers as Record<string, string>,
    body: Buffer.from(body),
  };
}

describe('SigV4 verification', () => {
  it('accepts what the AWS SDK signer signs, including encoded paths and queries', async () => {
    expect(await verifySigV4(await signed(), undefined, NOW)).toEqual({ ok: true, accessKeyId: 'local' });
    const encoded = await signed({ path: '/api/v1/locks/a%2Fb/acquire', query: { prefix: 'jobs/x y' } });
    expect((await verifySigV4(encoded, undefined, NOW)).ok).toBe(true);
  });

  it.each([
    ['a wrong secret', { secret: 'nope' }, /does not match/],
    ['another region', { region: 'eu-west-1' }, /region/],
  ])('refuses %s', async (_, options, reason) => {
    const result = await verifySigV4(await signed(options), undefined, NOW);
    expect(result.ok).toBe(false);
    expect(!result.ok && result.reason).toMatch(reason);
  });

  it('refuses a tampered body, path or query, and a stale date', async () => {
    const request = await signed({ query: { limit: '1' } });
    const cases = [
      { ...request, body: Buffer.from('{"client_id":"b","ttl_ms":5000}') },
      { ...request, rawPath: '/api/v1/locks/jobs/b/acquire' },
      { ...request, rawQuery: 'limit=2' },
    ];
    for (const tampered of cases) expect((await verifySigV4(tampered, undefined, NOW)).ok).toBe(false);
    // Without the payload-hash header, the signature itself covers the body.
    const bare = await signed({ hashHeader: false });
    expect(bare.headers['x-amz-content-sha256']).toBeUndefined();
    expect((await verifySigV4(bare, undefined, NOW)).ok).toBe(true);
    expect(
      await verifySigV4({ ...bare, body: Buffer.from('{"client_id":"b","ttl_ms":5000}') }, undefined, NOW),
    ).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/signature does not match/),
    });
    expect(await verifySigV4(request, undefined, NOW + 16 * 60_000)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/expired/),
    });
  });

  it('refuses unsigned requests and foreign schemes with a reason', async () => {
    const base = await signed();
    const { authorization: _, ...unsigned } = base.headers;
    expect(await verifySigV4({ ...base, headers: unsigned }, undefined, NOW)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/missing Authorization/),
    });
    expect(
      (
        await verifySigV4(
          { ...base, headers: { ...base.headers, authorization: 'Bearer x' } },
          undefined,
          NOW,
        )
      ).ok,
    ).toBe(false);
  });

  it('accepts each configured key pair with its own secret, and local:local by default', async () => {
    const keys = localKeys('alice:alice-secret, bob:bob-secret');
    expect([...keys.keys()].sort()).toEqual(['alice', 'bob', 'local']);
    expect(
      await verifySigV4(await signed({ accessKeyId: 'alice', secret: 'alice-secret' }), keys, NOW),
    ).toEqual({ ok: true, accessKeyId: 'alice' });
    expect(await verifySigV4(await signed({ accessKeyId: 'bob', secret: 'bob-secret' }), keys, NOW)).toEqual({
      ok: true,
      accessKeyId: 'bob',
    });
    expect(await verifySigV4(await signed(), keys, NOW)).toEqual({ ok: true, accessKeyId: 'local' });
    // One key's secret does not sign for another key.
    expect(
      await verifySigV4(await signed({ accessKeyId: 'bob', secret: 'alice-secret' }), keys, NOW),
    ).toMatchObject({ ok: false, reason: expect.stringMatching(/does not match/) });
    // Without a map (undefined): only local:local.
    expect(
      await verifySigV4(await signed({ accessKeyId: 'alice', secret: 'alice-secret' }), undefined, NOW),
    ).toMatchObject({ ok: false, reason: expect.stringMatching(/unknown access key alice/) });
    expect(await verifySigV4(await signed({ accessKeyId: 'carol', secret: 'x' }), keys, NOW)).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/unknown access key carol/),
    });
  });

  it('refuses a malformed key pair, naming it without its secret', () => {
    expect(localKeys('')).toEqual(new Map([['local', 'local']]));
    expect(localKeys('local:other').get('local')).toBe('other');
    for (const bad of ['alice', 'alice:', ':secret', 'al ice:secret', 'alice:sec ret'])
      expect(() => localKeys(bad), bad).toThrow(/invalid credentials/);
    expect(() => localKeys('alice-key:top-secret,broken')).toThrow(/'broken'/);
    let message = '';
    try {
      localKeys('bad key:top-secret');
    } catch (error) {
      message = String(error);
    }
    expect(message).toMatch(/invalid credentials 'bad key:…'/);
    expect(message).not.toMatch(/top-secret/);
  });
});
