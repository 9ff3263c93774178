/** The functions' configuration is checked once at cold start; a bad value names its variable. */
import { describe, expect, it } from 'vitest';
import { DEFAULT_LIMITS } from '../../lambdas/core/wire';
import { loadConfig } from '../../lambdas/shared/config';

const base = { TABLE_NAME: 'locks' };

describe('loadConfig', () => {
  it('takes the defaults', () => {
    expect(loadConfig(base)).toMatchObject({
      limits: { minTtlMs: 1_000, maxTtlMs: 3_600_000 },
      store: { tableName: 'locks', retentionSeconds: 86_400 },
    });
    // Every limit of the service, at its default.
    expect(loadConfig(base).limits).toEqual(DEFAULT_LIMITS);
    expect(DEFAULT_LIMITS).toMatchObject({ minPriority: -100, maxPriority: 100 });
  });

  it('reads the limits on priorities, queues, waiters and HTTP waits', () => {
    expect(
      loadConfig({
        ...base,
        LOCK_MIN_PRIORITY: '-10',
        LOCK_MAX_PRIORITY: '10',
        MAX_QUEUE_LENGTH: '50',
        MAX_WAITERS_PER_CONNECTION: '5',
        MAX_WAITERS_PER_PRINCIPAL: '500',
        MAX_HTTP_WAITS: '0',
      }).limits,
    ).toEqual({
      ...DEFAULT_LIMITS,
      minPriority: -10,
      maxPriority: 10,
      maxQueueLength: 50,
      maxWaitersPerConnection: 5,
      maxWaitersPerPrincipal: 500,
      maxHttpWaits: 0, // no HTTP waits at all
    });
  });

  it('names a bad limit', () => {
    expect(() => loadConfig({ ...base, LOCK_MIN_PRIORITY: '5', LOCK_MAX_PRIORITY: '-5' })).toThrow(
      /must include 0/,
    );
    expect(() => loadConfig({ ...base, LOCK_MAX_PRIORITY: '101' })).toThrow(/LOCK_MAX_PRIORITY:/);
    expect(() => loadConfig({ ...base, LOCK_MIN_PRIORITY: '-101' })).toThrow(/LOCK_MIN_PRIORITY:/);
    expect(() => loadConfig({ ...base, MAX_QUEUE_LENGTH: '0' })).toThrow(/MAX_QUEUE_LENGTH:/);
    expect(() => loadConfig({ ...base, MAX_WAITERS_PER_CONNECTION: '1.5' })).toThrow(
      /MAX_WAITERS_PER_CONNECTION:/,
    );
    expect(() => loadConfig({ ...base, MAX_WAITERS_PER_PRINCIPAL: 'many' })).toThrow(
      /MAX_WAITERS_PER_PRINCIPAL:/,
    );
    expect(() => loadConfig({ ...base, MAX_HTTP_WAITS: '-1' })).toThrow(/MAX_HTTP_WAITS:/);
    expect(() => loadConfig({ ...base, HIERARCHICAL_PREFIXES: 'tenants' })).toThrow(
      /HIERARCHICAL_PREFIXES: hierarchical prefix "tenants" must end with '\/'/,
    );
  });

  it('reads the hierarchical namespaces (none by default)', () => {
    expect(loadConfig(base).hierarchicalPrefixes).toEqual([]);
    expect(loadConfig({ ...base, HIERARCHICAL_PREFIXES: 'tenants/, jobs/' }).hierarchicalPrefixes).toEqual([
      'tenants/',
      'jobs/',
    ]);
  });

  it('refuses a retention shorter than a day, or than the longest lease or wait plus an hour', () => {
    expect(() => loadConfig({ ...base, LOCK_RETENTION_SECONDS: '3600' })).toThrow(
      /LOCK_RETENTION_SECONDS: the retention period \(3600 s\) must be at least 86400 s/,
    );
    expect(() => loadConfig({ ...base, LOCK_MAX_TTL_MS: String(3 * 86_400_000) })).toThrow(
      /LOCK_RETENTION_SECONDS/,
    );
    expect(
      loadConfig({
        ...base,
        LOCK_MAX_TTL_MS: String(3 * 86_400_000),
        LOCK_RETENTION_SECONDS: String(4 * 86_400),
      }),
    ).toBeDefined();
  });

  it('names a bad variable', () => {
    expect(() => loadConfig({ TABLE_NAME: 'x' })).toThrow(/TABLE_NAME: must be a DynamoDB table name/);
    expect(() => loadConfig({ ...base, LOCK_MIN_TTL_MS: '9000', LOCK_MAX_TTL_MS: '5000' })).toThrow(
      /LOCK_MIN_TTL_MS must not exceed LOCK_MAX_TTL_MS/,
    );
  });
});
