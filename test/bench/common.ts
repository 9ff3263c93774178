/** What every benchmark section shares: a quiet, local environment, percentiles, a DynamoDB Local of its own. */
import { randomUUID } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { startDynamoDbLocal } from '../../local/dynamodb-local';
import { ensureTable } from '../../local/table-setup';

process.env.LOG_LEVEL = 'silent';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
process.env.AWS_REGION ??= 'us-east-1';
process.env.AWS_ACCESS_KEY_ID ??= 'local';
process.env.AWS_SECRET_ACCESS_KEY ??= 'local';

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The `p` quantile (0..1) of ascending `sorted`. */
export const percentile = (sorted: readonly number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? Number.NaN;

/**
 * A measurement window: it opens `warmUpMs` from now (calling `onOpen`, to drop what the warm-up
 * counted) and closes `seconds` later (calling `onClose`, to take what the window counted).
 * `deadline` is when the workload should stop; `seconds()` and `contains(at)` describe the window
 * as it actually ran (timers fire late on a busy machine). `stop()` cancels what has not fired.
 */
export function measurementWindow(
  warmUpMs: number,
  seconds: number,
  onOpen: () => void,
  onClose: () => void,
) {
  const start = performance.now();
  let opened = start + warmUpMs;
  let closed = opened + seconds * 1000;
  const openTimer = setTimeout(() => {
    opened = performance.now();
    onOpen();
  }, warmUpMs);
  const closeTimer = setTimeout(
    () => {
      closed = performance.now();
      onClose();
    },
    warmUpMs + seconds * 1000,
  );
  return {
    deadline: start + warmUpMs + seconds * 1000,
    seconds: () => (closed - opened) / 1000,
    contains: (at: number) => at >= opened && at < closed,
    stop() {
      clearTimeout(openTimer);
      clearTimeout(closeTimer);
    },
  };
}

/**
 * Runs one section that needs a table, on a DynamoDB Local of its own, and prints it: what
 * `npx tsx test/bench/<section>.ts` does (`npm run bench` runs them all on one).
 */
export async function runAlone(
  name: string,
  section: (endpoint: string, tableName: string) => Promise<string[]>,
): Promise<void> {
  const dynamo = await startDynamoDbLocal({ maxHeap: '512m', inMemory: true });
  try {
    const tableName = `bench-${name}-${randomUUID()}`;
    await ensureTable(
      new DynamoDBClient({
        endpoint: dynamo.endpoint,
        region: 'us-east-1',
        credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
      }),
      tableName,
    );
    for (const line of await section(dynamo.endpoint, tableName)) console.log(line);
  } finally {
    await dynamo.stop();
  }
}
