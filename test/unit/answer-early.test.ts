/**
 * A request still running close to its function's timeout (DynamoDB answering slowly) is answered
 * 503 UNAVAILABLE before the timeout, not left to API Gateway's bare 500 after it.
 */
import type { Context } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import type { Deps } from '../../lambdas/shared/deps';
import { ANSWER_EARLY_MS, httpRoute, json } from '../../lambdas/shared/http';
import { httpEvent } from '../support/http-event';

process.env.LOG_LEVEL = 'silent';

/** A Lambda context whose time runs out `ms` from now. */
const contextWithin = (ms: number) => {
  const end = Date.now() + ms;
  return { getRemainingTimeInMillis: () => Math.max(0, end - Date.now()) } as Context;
};
const event = httpEvent('GET /api/v1/locks/{proxy+}', '/api/v1/locks/jobs/a', {
  userArn: 'arn:aws:iam::1:user/u',
});
const noDeps = () => ({}) as Deps;

describe('answering before the function times out', () => {
  it('a request still waiting on DynamoDB near the timeout is answered 503 UNAVAILABLE, with Retry-After', async () => {
    const hung = httpRoute(() => new Promise(() => undefined), noDeps);
    const started = Date.now();
    const answer = await hung(event, contextWithin(ANSWER_EARLY_MS + 150));
    const took = Date.now() - started;
    expect(answer.statusCode).toBe(503);
    expect(JSON.parse(String(answer.body)).error).toMatchObject({
      code: 'UNAVAILABLE',
      message: expect.stringMatching(/ran out of time.*same request_id/),
    });
    expect(answer.headers?.['retry-after']).toBeDefined();
    // Answered at the margin, not at the timeout.
    expect(took).toBeLessThan(ANSWER_EARLY_MS + 150);
  });

  it('a request that finishes in time is answered as it finished', async () => {
    const quick = httpRoute(async () => json(200, { ok: true }), noDeps);
    const answer = await quick(event, contextWithin(ANSWER_EARLY_MS + 5_000));
    expect(answer.statusCode).toBe(200);
  });
});
