/**
 * The "tree" section of `npm run bench` (BENCH_SECTIONS=tree alone): waiting across the levels of
 * a hierarchy, on the local stack with `bench-tree/` as a hierarchical namespace. BENCH_TREE_PARENTS
 * clients (default 4) take turns on a parent exclusively, holding 30 ms, again and again, so its
 * queue hardly ever empties; BENCH_TREE_CHILDREN clients (default 8) take turns on three of its
 * children, holding 10 ms. Every client waits over a WebSocket connection of its own, through the
 * SDK. Reported per level, over BENCH_TREE_SECONDS (default 15): grants per client, grants/s, and
 * how long each wait took (p50 / p99 / longest). Waits across levels are ordered by arrival
 * (core/hierarchy.ts yieldToBelow): no level may starve the other. A grant that overlaps a
 * conflicting one on another level fails the run.
 *
 * In a process of its own (handlers configure themselves once per process), with a DynamoDB
 * Local of its own. Standalone:
 *
 *   BENCH_TREE_SECONDS=15 npx tsx test/bench/tree-fairness.ts
 */
import { randomUUID } from 'node:crypto';
import { setEmfSink } from '../../lambdas/shared/metrics';
import { startDynamoDbLocal } from '../../local/dynamodb-local';
import { type LocalStack, startLocalStack } from '../../local/stack';
import { LockClient } from '../../sdk/index';
import { measurementWindow, percentile, sleep } from './common';

const SECONDS = Number(process.env.BENCH_TREE_SECONDS ?? 15);
const PARENTS = Number(process.env.BENCH_TREE_PARENTS ?? 4);
const CHILDREN = Number(process.env.BENCH_TREE_CHILDREN ?? 8);
const WARM_UP_MS = 2_000;
const HOLD_MS = { parent: 30, child: 10 };

type Level = 'parent' | 'child';

async function race(stack: LocalStack): Promise<string[]> {
  const parent = `bench-tree/${randomUUID().slice(0, 8)}`;
  const children = [1, 2, 3].map((i) => `${parent}/records/${i}`);
  const grants = new Map<string, number>();
  const waits: Record<Level, number[]> = { parent: [], child: [] };
  const inside = { parent: 0, child: 0 };
  const overlaps: string[] = [];
  let counting = false;
  const window = measurementWindow(
    WARM_UP_MS,
    SECONDS,
    () => {
      counting = true;
    },
    () => {
      counting = false;
    },
  );
  const roles: Level[] = [
    ...Array.from({ length: PARENTS }, () => 'parent' as const),
    ...Array.from({ length: CHILDREN }, () => 'child' as const),
  ];
  const clients = roles.map(
    (level, i) => new LockClient({ endpoint: stack.url, wsEndpoint: stack.wsUrl, clientId: `${level}-${i}` }),
  );
  try {
    await Promise.all(
      roles.map(async (level, i) => {
        const client = clients[i] as LockClient;
        let n = 0;
        while (performance.now() < window.deadline) {
          const name = level === 'parent' ? parent : (children[(i + n++) % children.length] as string);
          const asked = performance.now();
          await client.withLock(name, { ttlMs: 10_000, waitTimeoutMs: 60_000 }, async () => {
            const other = level === 'parent' ? inside.child : inside.parent;
            if (other > 0 || (level === 'parent' && inside.parent > 0))
              overlaps.push(`${level} ${client.clientId} granted beside a conflicting holder`);
            inside[level]++;
            if (counting) {
              waits[level].push(performance.now() - asked);
              grants.set(client.clientId, (grants.get(client.clientId) ?? 0) + 1);
            }
            await sleep(HOLD_MS[level]);
            inside[level]--;
          });
        }
      }),
    );
  } finally {
    window.stop();
    for (const c of clients) c.close();
  }
  if (overlaps.length > 0) throw new Error(`conflicting holders across levels: ${overlaps[0]}`);
  const seconds = window.seconds();
  const row = (level: Level) => {
    const ids = clients.filter((c) => c.clientId.startsWith(level)).map((c) => grants.get(c.clientId) ?? 0);
    const sorted = [...waits[level]].sort((a, b) => a - b);
    const total = ids.reduce((a, b) => a + b, 0);
    return `  ${`${level === 'parent' ? PARENTS : CHILDREN} ${level === 'parent' ? 'on the parent' : 'on its children'}`.padEnd(20)} ${String(Math.min(...ids)).padStart(4)}–${String(Math.max(...ids)).padEnd(5)} ${(total / seconds).toFixed(1).padStart(8)}  ${percentile(sorted, 0.5).toFixed(0).padStart(6)} / ${percentile(sorted, 0.99).toFixed(0).padStart(6)} / ${(sorted.at(-1) ?? Number.NaN).toFixed(0).padStart(6)}`;
  };
  return [
    `\nWaiting across the levels of a hierarchy (local stack, WebSocket waits through the SDK, ${seconds.toFixed(1)} s):`,
    `  a parent held ${HOLD_MS.parent} ms at a time back to back, three children of it held ${HOLD_MS.child} ms`,
    '  clients               grants each  grants/s  wait p50 / p99 / longest ms',
    row('parent'),
    row('child'),
    '  no grant overlapped a conflicting one across levels',
  ];
}

async function main() {
  setEmfSink(() => {}); // the functions' metrics lines are not this report
  const dynamo = await startDynamoDbLocal({ maxHeap: '768m', inMemory: true });
  const stack = await startLocalStack({
    port: 0,
    wsPort: 0,
    dynamoEndpoint: dynamo.endpoint,
    tableName: `bench-tree-${randomUUID()}`,
    sweepIntervalMs: 0, // the sweeper is a backstop, not part of a handoff
    hierarchicalPrefixes: ['bench-tree/'],
  });
  try {
    console.log('\ntree bench: local stack, warming up...');
    console.log((await race(stack)).join('\n'));
  } finally {
    await stack.stop();
    await dynamo.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
