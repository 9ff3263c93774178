import { defineConfig } from 'vitest/config';

// One DynamoDB Local for the whole run (test/support/global-setup.ts); each
// integration file makes its own table in it.
const env = { LOG_LEVEL: 'silent', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };

export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'], env } },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.ddb.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
          env,
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'infra',
          include: ['test/infra/**/*.test.ts'],
          env,
          testTimeout: 180_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
