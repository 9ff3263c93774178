/**
 * The hierarchy section of `npm run bench`: DynamoDB calls (and write units) of an uncontended
 * acquire, renew and release of a lock in a hierarchical namespace, by its depth, side by side
 * with a name outside every namespace, and the median latency of each over DynamoDB Local in the
 * same run. A name at depth d has d - 1 ancestors: each of its grant-changing writes is one read
 * of the lock and one transaction of d items (a single write when d is 1). Counted by the SDK
 * middleware on the services' DynamoDB client, retries included.
 *
 *   npx tsx test/bench/hierarchy.ts      (a DynamoDB Local of its own)
 */
import { randomUUID } from 'node:crypto';
import { lease } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { servicesOn } from '../support/services';
import { runAlone } from './common';

const OWNER = localPrincipal('bench-hierarchy');
const ROUNDS = 40;

export async function hierarchySection(endpoint: string, tableName: string): Promise<string[]> {
  const calls: string[] = [];
  const { services, acquire } = servicesOn(tableName, {
    endpoint,
    counter: { record: (c) => calls.push(c) },
    hierarchicalPrefixes: ['bench-tree/'],
  });
  const run = randomUUID().slice(0, 8);
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const count = async <T>(fn: () => Promise<T>) => {
    calls.length = 0;
    const started = performance.now();
    const out = await fn();
    const ms = performance.now() - started;
    const byOp = new Map<string, number>();
    for (const c of calls)
      byOp.set(c.replace(/Command$/, ''), (byOp.get(c.replace(/Command$/, '')) ?? 0) + 1);
    return { out, ms, total: calls.length, byOp };
  };

  /** One name at `depth` levels below the namespace (0: outside every namespace), ROUNDS times over. */
  const measure = async (depth: number) => {
    // Depth d: the level right below the namespace, then d - 1 more.
    const below = Array.from({ length: Math.max(0, depth - 1) }, (_, i) => `/l${i + 1}`).join('');
    const name = depth === 0 ? `bench-flat/${run}/l1/l2` : `bench-tree/${run}-${depth}${below}`;
    const times = { acquire: [] as number[], renew: [] as number[], release: [] as number[] };
    let shape = { acquire: '', renew: '', release: '' };
    for (let round = 0; round < ROUNDS; round++) {
      const got = await count(() => acquire({ name, owner: OWNER, clientId: 'c', tenure: lease(60_000) }));
      if (!got.out.acquired) throw new Error(`${name} not acquired`);
      const grant = got.out.grant;
      const cmd = { name, owner: OWNER, clientId: 'c', fencingToken: grant.fencingToken };
      const renewed = await count(() => services.locks.renew({ ...cmd, ttlMs: 60_000 }));
      const released = await count(() => services.locks.release(cmd));
      times.acquire.push(got.ms);
      times.renew.push(renewed.ms);
      times.release.push(released.ms);
      const text = (r: { total: number; byOp: Map<string, number> }) =>
        `${r.total} (${[...r.byOp].map(([op, n]) => `${n} ${op}`).join(', ')})`;
      shape = { acquire: text(got), renew: text(renewed), release: text(released) };
    }
    return { name, depth, times, shape };
  };

  const rows = [await measure(0), await measure(1), await measure(3), await measure(8)];
  const flat = rows[0] as (typeof rows)[number];
  const lines = [
    '\nHierarchical locks: DynamoDB calls of one uncontended operation, and its median latency (ms) over',
    `DynamoDB Local (${ROUNDS} rounds each, this run; ratio to the name outside every namespace):`,
  ];
  for (const r of rows) {
    const label = r.depth === 0 ? 'outside every namespace' : `depth ${r.depth} (${r.depth - 1} ancestors)`;
    lines.push(`  ${label}`);
    for (const op of ['acquire', 'renew', 'release'] as const) {
      const ms = median(r.times[op]);
      const ratio = ms / median(flat.times[op]);
      lines.push(
        `    ${op.padEnd(8)} ${r.shape[op].padEnd(38)} ${ms.toFixed(1).padStart(6)} ms  ${ratio.toFixed(2)}x`,
      );
    }
  }
  lines.push(
    '  A transaction of d items costs 2d write units; the read is 1 read unit (strongly consistent, under 4 KB).',
  );
  return lines;
}

if (import.meta.url === `file://${process.argv[1]}`) await runAlone('hierarchy', hierarchySection);
