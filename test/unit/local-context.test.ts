/** The local Lambda context: the time left counts down from the function's own timeout. */
import { describe, expect, it } from 'vitest';
import { ROUTES } from '../../lambdas/http/routes';
import { lambdaContext } from '../../local/handlers';

describe('the local Lambda context', () => {
  it('gives the lock commands their 29 s, so a 25 s HTTP wait is not cut at 10 s', () => {
    const spec = ROUTES.find((r) => r.module === 'http/lock-commands');
    const context = lambdaContext('r1', (spec?.timeoutSeconds ?? 0) * 1000);
    expect(context.getRemainingTimeInMillis()).toBeGreaterThan(25_000);
    expect(context.getRemainingTimeInMillis()).toBeLessThanOrEqual(29_000);
  });

  it('defaults to Lambda’s 10 s', () => {
    expect(lambdaContext('r2').getRemainingTimeInMillis()).toBeLessThanOrEqual(10_000);
  });
});
