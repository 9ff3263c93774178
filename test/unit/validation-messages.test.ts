import { describe, expect, it } from 'vitest';
import { LatchkeyError } from '../../lambdas/core/errors';
import { acquireBody, DEFAULT_LIMITS, MAX_BODY_BYTES, releaseBody } from '../../lambdas/core/wire';
import { parseJsonObject, validate } from '../../lambdas/shared/http';

/** The details a refused body is answered with. */
function refusal(schema: Parameters<typeof validate>[0], body: unknown) {
  try {
    validate(schema, body, 'request body');
  } catch (error) {
    expect(error).toBeInstanceOf(LatchkeyError);
    return (error as LatchkeyError).details;
  }
  throw new Error('accepted');
}

describe('the body limit', () => {
  it('has room for the largest valid acquire: 32 holding and 32 enclosing names of 256 characters, 8 clients', () => {
    const name = (i: number, tag: string) => `${tag}/${String(i).padStart(2, '0')}/${'n'.repeat(251)}`;
    const id = (i: number) => `${i}`.padEnd(128, 'c');
    const body = {
      client_id: id(99),
      ttl_ms: 30_000,
      wait_timeout_ms: 600_000,
      priority: -100,
      mode: 'shared',
      max_holders: 1_000,
      request_id: id(98),
      reentrant: true,
      connection_id: 'c'.repeat(64),
      with_position: true,
      holding: Array.from({ length: 32 }, (_, i) => name(i, 'h')),
      enclosing: Array.from({ length: 8 }, (_, c) => ({
        client_id: id(c),
        holding: Array.from({ length: 4 }, (_, i) => name(c * 4 + i, 'e')),
      })),
    };
    expect(body.holding[0]).toHaveLength(256);
    const raw = Buffer.from(JSON.stringify(body));
    expect(raw.byteLength).toBeLessThan(MAX_BODY_BYTES);
    expect(() =>
      parseJsonObject(raw, acquireBody(DEFAULT_LIMITS), 'request body', MAX_BODY_BYTES),
    ).not.toThrow();
  });
});

describe('a refused body names each problem in words a caller can act on', () => {
  it("keeps the schema's own words for a number of the wrong kind", () => {
    expect(refusal(acquireBody(DEFAULT_LIMITS), { client_id: 'c', ttl_ms: 1500.5 })).toEqual([
      { path: 'ttl_ms', message: 'ttl_ms must be an integer number of milliseconds' },
    ]);
    expect(refusal(acquireBody(DEFAULT_LIMITS), { client_id: 'c', ttl_ms: 'soon' })).toEqual([
      { path: 'ttl_ms', message: 'ttl_ms must be an integer number of milliseconds' },
    ]);
  });

  it("names zod's type where the schema has no words of its own, and says 'required' for what is missing", () => {
    expect(refusal(releaseBody, { client_id: 'c', fencing_token: 7.5 })).toEqual([
      { path: 'fencing_token', message: 'fencing_token must be an integer' },
    ]);
    expect(refusal(releaseBody, { client_id: 'c' })).toEqual([
      { path: 'fencing_token', message: 'fencing_token is required' },
    ]);
  });
});
