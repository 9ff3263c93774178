/**
 * The deadlock section of `npm run bench`: DynamoDB calls of one waiter join with deadlock
 * detection on, by how far the walk must go, side by side with the same join with detection off
 * and with a join that names no held lock (which is not walked from). A chain of length d: the
 * joiner waits for a lock held by P1, P1 waits (keeping it) for a lock held by P2, ..., Pd works.
 * Counted by the SDK middleware on the services' DynamoDB client, retries included.
 *
 *   npx tsx test/bench/deadlock.ts      (a DynamoDB Local of its own)
 */
import { randomUUID } from 'node:crypto';
import { lease } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { servicesOn } from '../support/services';
import { runAlone } from './common';

const OWNER = localPrincipal('bench-deadlock');
const WAIT = { waitMs: 60_000 };

export async function deadlockSection(endpoint: string, tableName: string): Promise<string[]> {
  const calls: string[] = [];
  const on = servicesOn(tableName, { endpoint, counter: { record: (c) => calls.push(c) } });
  const off = servicesOn(tableName, {
    endpoint,
    counter: { record: (c) => calls.push(c) },
    deadlockSearch: null,
  });
  const run = randomUUID().slice(0, 8);
  let built = 0;

  /** Builds a chain of `depth` holders (the first d-1 waiting on the next), then counts the joiner's calls. */
  const join = async (depth: number, services: typeof on, names: boolean) => {
    const locks = Array.from({ length: depth + 1 }, (_, i) => `bench/deadlock/${run}/${++built}/${i}`);
    const party = (i: number) => `p${i}`;
    for (const [i, name] of locks.entries()) {
      const out = await on.acquire({ name, owner: OWNER, clientId: party(i), tenure: lease(60_000) });
      if (!out.acquired) throw new Error(`setup: ${name} not acquired`);
    }
    // Holder i (1..d-1) waits for lock i+1, keeping lock i.
    for (let i = 1; i < depth; i++) {
      const queued = await on.services.locks.acquire(
        {
          name: locks[i + 1] as string,
          owner: OWNER,
          clientId: party(i),
          tenure: lease(60_000),
          requestId: randomUUID(),
          holding: [locks[i] as string],
        },
        WAIT,
      );
      if (queued.kind !== 'queued') throw new Error('setup: a chain wait was not queued');
    }
    calls.length = 0;
    const joined = await services.services.locks.acquire(
      {
        name: locks[1] as string,
        owner: OWNER,
        clientId: party(0),
        tenure: lease(60_000),
        requestId: randomUUID(),
        ...(names ? { holding: [locks[0] as string] } : {}),
      },
      WAIT,
      // As on a lock this instance has seen contended: no grant is tried first (counted apart, above).
      false,
    );
    if (joined.kind !== 'queued') throw new Error('the join was not queued');
    const byOp = new Map<string, number>();
    for (const c of calls) byOp.set(c, (byOp.get(c) ?? 0) + 1);
    return { total: calls.length, byOp };
  };

  const rows: [string, Awaited<ReturnType<typeof join>>][] = [
    ['names no held lock (not walked)', await join(1, on, false)],
    ['detection off, names its lock', await join(1, off, true)],
    ['chain of 1: the holder works', await join(1, on, true)],
    ['chain of 3', await join(3, on, true)],
    ['chain of 8 (the bound)', await join(8, on, true)],
  ];
  const lines = [
    '\nDynamoDB calls of one waiter join (deadlock detection; the join itself is one TransactWriteItems):',
  ];
  for (const [label, r] of rows)
    lines.push(
      `  ${label.padEnd(34)} ${String(r.total).padStart(3)}  (${[...r.byOp].map(([op, n]) => `${n} ${op.replace(/Command$/, '')}`).join(', ')})`,
    );
  return lines;
}

if (import.meta.url === `file://${process.argv[1]}`) await runAlone('deadlock', deadlockSection);
