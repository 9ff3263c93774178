/**
 * What the waiting bench's contention runs (WebSocket waiters, HTTP waiters, the polling peer)
 * measure alike, from the grants each worker saw and the DynamoDB calls the proxy counted, so
 * their rows compare side by side.
 */
import { percentile } from './common';
import { type StoreRates, storeCeiling } from './store-rate';
import type { Counts } from './waiting';

export interface ContendedGrant {
  readonly worker: number;
  /** The grant's place in the lock's order (its fencing token, or a counter for a peer without). */
  readonly order: number;
  /** performance.now() when the worker had the grant. */
  readonly at: number;
  /** From sending the acquire to having the grant. */
  readonly waitMs: number;
}

export interface ContentionStats {
  readonly grants: number;
  readonly seconds: number;
  readonly grantsPerSecond: number;
  /** Release sent -> the next worker's grant, ascending (a grant back to the releaser is not a handoff). */
  readonly handoffs: readonly number[];
  readonly handoffP50: number;
  readonly backToReleaser: number;
  readonly followers: number;
  readonly perWorker: readonly number[];
  /** Acquire sent -> granted, ascending. */
  readonly waits: readonly number[];
  /** DynamoDB calls per grant, stream polling excluded. */
  readonly callsPerGrant: number;
  readonly failedWritesPerGrant: number;
  /** p50 of every write through the proxy in the same window: the unit the handoff goals count in. */
  readonly writeP50: number;
  /** The call mix per grant (stream polling excluded), for the store's ceiling (store-rate.ts). */
  readonly singleWritesPerGrant: number;
  readonly readsPerGrant: number;
  readonly transactionsPerGrant: number;
  /** Items per transaction, on average (0 without transactions). */
  readonly itemsPerTransaction: number;
  /** Transactions per grant by their number of items: each size is costed at its own rate. */
  readonly transactionsBySize: ReadonlyMap<number, number>;
}

const WRITE = /UpdateItem|TransactWriteItems|PutItem|DeleteItem/;
const SINGLE_WRITE = /\.(UpdateItem|PutItem|DeleteItem)$/;
const READ = /\.(GetItem|BatchGetItem|Query|Scan)$/;
export const isStreamCall = (target: string) => target.startsWith('DynamoDBStreams_');
const total = (map: Map<string, number>, keep: (key: string) => boolean = () => true) =>
  [...map].reduce((n, [k, v]) => (keep(k) ? n + v : n), 0);

/** How many transactions of each size per grant. */
function bySize(items: readonly number[], grants: number): Map<number, number> {
  const sizes = new Map<number, number>();
  for (const size of items) sizes.set(size, (sizes.get(size) ?? 0) + 1);
  for (const [size, count] of sizes) sizes.set(size, grants ? count / grants : Number.NaN);
  return new Map([...sizes].sort(([a], [b]) => a - b));
}

export function contentionStats(input: {
  readonly grants: readonly ContendedGrant[];
  /** performance.now() when the holder of each order sent its release. */
  readonly releaseSent: ReadonlyMap<number, number>;
  readonly window: { seconds(): number; contains(at: number): boolean };
  readonly counts: Counts;
  readonly workers: number;
}): ContentionStats {
  const { window, counts } = input;
  const ordered = [...input.grants].sort((a, b) => a.order - b.order);
  const counted = ordered.filter((g) => window.contains(g.at));
  const handoffs: number[] = [];
  let backToReleaser = 0;
  let followers = 0;
  for (let i = 1; i < ordered.length; i++) {
    const prev = ordered[i - 1] as ContendedGrant;
    const next = ordered[i] as ContendedGrant;
    if (!window.contains(next.at)) continue;
    followers++;
    if (next.worker === prev.worker) backToReleaser++;
    else {
      const sent = input.releaseSent.get(prev.order);
      if (sent !== undefined) handoffs.push(next.at - sent);
    }
  }
  handoffs.sort((a, b) => a - b);
  const seconds = window.seconds();
  const n = counted.length;
  const writes = [...counts.latencies]
    .filter(([op]) => WRITE.test(op))
    .flatMap(([, took]) => took)
    .sort((a, b) => a - b);
  return {
    grants: n,
    seconds,
    grantsPerSecond: n / seconds,
    handoffs,
    handoffP50: percentile(handoffs, 0.5),
    backToReleaser,
    followers,
    perWorker: Array.from({ length: input.workers }, (_, w) => counted.filter((g) => g.worker === w).length),
    waits: counted.map((g) => g.waitMs).sort((a, b) => a - b),
    callsPerGrant: n ? total(counts.calls, (k) => !isStreamCall(k)) / n : Number.NaN,
    failedWritesPerGrant: n ? total(counts.failedWrites) / n : Number.NaN,
    writeP50: percentile(writes, 0.5),
    singleWritesPerGrant: n ? total(counts.calls, (k) => SINGLE_WRITE.test(k)) / n : Number.NaN,
    readsPerGrant: n ? total(counts.calls, (k) => !isStreamCall(k) && READ.test(k)) / n : Number.NaN,
    transactionsPerGrant: n ? total(counts.calls, (k) => k.endsWith('.TransactWriteItems')) / n : Number.NaN,
    itemsPerTransaction: counts.transactionItems.length
      ? counts.transactionItems.reduce((a, b) => a + b, 0) / counts.transactionItems.length
      : 0,
    transactionsBySize: bySize(counts.transactionItems, n),
  };
}

/** A number for a table: `digits` decimals, or n/a. */
export const fmt = (x: number, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');

/**
 * A contention run's own table: its name and setting, then grants/s, the handoff, calls per grant
 * and grants per worker, then the run's `more` rows.
 */
export function runTable(
  name: string,
  run: { readonly workers: number; readonly holdMs: number; readonly warmUpMs: number },
  stats: ContentionStats,
  more: readonly (readonly [string, string])[] = [],
): string[] {
  const setting = `${run.workers} workers, one lock (hold ${run.holdMs} ms), ${fmt(stats.seconds)} s after ${run.warmUpMs / 1000} s warm-up`;
  return [
    `\n### Waiting: ${name}, ${setting}\n`,
    '| metric | value |',
    '| --- | --- |',
    `| grants/s | ${fmt(stats.grantsPerSecond)} |`,
    `| handoff to another worker p50 ms (release sent -> granted) | ${fmt(stats.handoffP50)} (n=${stats.handoffs.length}) |`,
    `| DynamoDB calls per grant | ${fmt(stats.callsPerGrant, 2)} |`,
    `| grants per worker | ${stats.perWorker.join(', ')} |`,
    ...more.map(([metric, value]) => `| ${metric} | ${value} |`),
  ];
}

/**
 * The side-by-side table of the contention runs, with each one's ratios to the first, and, given
 * DynamoDB Local's own rates in the same run, the ceiling each run's call mix puts on it.
 */
export function sideBySide(
  rows: readonly { readonly name: string; readonly stats: ContentionStats }[],
  rates?: StoreRates,
) {
  const first = rows[0]?.stats;
  const spread = (s: ContentionStats) => {
    const mean = s.grants / s.perWorker.length;
    const worst = Math.max(...s.perWorker.map((g) => Math.abs(g - mean)));
    return mean
      ? `${Math.min(...s.perWorker)}-${Math.max(...s.perWorker)} (±${fmt((100 * worst) / mean, 0)} %)`
      : 'n/a';
  };
  const out = [
    '\n### Waiting: the contention runs side by side (same machine, same DynamoDB Local, same proxy, one run)\n',
    `| | ${rows.map((r) => r.name).join(' | ')} |`,
    `| --- |${rows.map(() => ' --- |').join('')}`,
    `| grants/s | ${rows.map((r) => fmt(r.stats.grantsPerSecond)).join(' | ')} |`,
    `| grants/s ÷ the first column's | ${rows.map((r) => (first ? fmt(r.stats.grantsPerSecond / first.grantsPerSecond, 2) : 'n/a')).join(' | ')} |`,
    `| handoff p50 ms | ${rows.map((r) => fmt(r.stats.handoffP50)).join(' | ')} |`,
    `| write p50 ms in the same window | ${rows.map((r) => fmt(r.stats.writeP50)).join(' | ')} |`,
    `| handoff p50 ÷ write p50 | ${rows.map((r) => fmt(r.stats.handoffP50 / r.stats.writeP50, 2)).join(' | ')} |`,
    `| DynamoDB calls per grant | ${rows.map((r) => fmt(r.stats.callsPerGrant, 2)).join(' | ')} |`,
    `| failed conditional writes per grant | ${rows.map((r) => fmt(r.stats.failedWritesPerGrant, 2)).join(' | ')} |`,
    `| grants per worker min-max (worst from the mean) | ${rows.map((r) => spread(r.stats)).join(' | ')} |`,
    `| grants straight back to the releaser | ${rows.map((r) => `${r.stats.backToReleaser} of ${r.stats.followers}`).join(' | ')} |`,
  ];
  if (rates) {
    const ceilings = rows.map((r) => storeCeiling(r.stats, rates));
    const sizes = (s: ContentionStats) =>
      [...s.transactionsBySize].map(([size, n]) => `${fmt(n, 2)} of ${size}`).join(' + ') || '0';
    const mix = (s: ContentionStats) =>
      `${sizes(s)}; ${fmt(s.singleWritesPerGrant, 2)}; ${fmt(s.readsPerGrant, 2)}`;
    out.push(
      `| calls per grant: transactions (of n items); single writes; reads | ${rows.map((r) => mix(r.stats)).join(' | ')} |`,
      `| ceiling: grants/s that call mix allows at DynamoDB Local's own rates (same run) | ${ceilings.map((c) => fmt(c)).join(' | ')} |`,
      `| grants/s ÷ that ceiling | ${rows.map((r, i) => fmt(r.stats.grantsPerSecond / (ceilings[i] as number), 2)).join(' | ')} |`,
    );
  }
  return out;
}
