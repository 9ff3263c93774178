import { describe, expect, it } from 'vitest';
import { LatchkeyError } from '../../lambdas/core/errors';
import { acquireBody, DEFAULT_LIMITS, releaseBody } from '../../lambdas/core/wire';
import { validate } from '../../lambdas/shared/http';

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
