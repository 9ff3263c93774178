/** The functions' configuration is checked once at cold start; a bad value names its variable. */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../lambdas/shared/config';

const base = { TABLE_NAME: 'locks' };

describe('loadConfig', () => {
  it('takes the defaults', () => {
    expect(loadConfig(base)).toMatchObject({
      limits: { minTtlMs: 1_000, maxTtlMs: 3_600_000 },
      store: { tableName: 'locks', retentionSeconds: 86_400 },
    });
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
