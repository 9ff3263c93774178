/**
 * lambdas/shared/tracing.ts unbundled (tests, the local stack): the tracer is loaded from the
 * package only when POWERTOOLS_TRACE_ENABLED is 'true'. (Bundled, it loads tracer.mjs beside the
 * handler instead: test/infra/bundle-size.test.ts checks that file.)
 */
import { afterEach, describe, expect, it, vi } from 'vitest';

const load = async (enabled: string | undefined) => {
  vi.resetModules();
  vi.stubEnv('POWERTOOLS_TRACE_ENABLED', enabled);
  return import('../../lambdas/shared/tracing');
};

afterEach(() => {
  vi.unstubAllEnvs();
});

describe('tracing', () => {
  it.each([undefined, 'false'])(
    'is off when POWERTOOLS_TRACE_ENABLED is %s: no tracer, clients as they are',
    async (enabled) => {
      const { tracer, traced } = await load(enabled);
      expect(tracer).toBeUndefined();
      const client = { send: () => undefined };
      expect(traced(client)).toBe(client);
    },
  );

  it("is on when POWERTOOLS_TRACE_ENABLED is 'true': the Powertools tracer, from the package", async () => {
    const { tracer } = await load('true');
    const { Tracer } = await import('@aws-lambda-powertools/tracer');
    expect(tracer).toBeInstanceOf(Tracer);
  });
});
