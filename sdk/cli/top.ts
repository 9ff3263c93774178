/**
 * `latchkey top`: a live view of a latchkey service, local or deployed.
 *
 * - Requests per second by operation and outcome, latency p50/p99 per operation, contention and
 *   session rates come from the service's metrics: locally from the local stack's `GET /metrics`
 *   (scraped twice: rates are the counters' increase over the interval, percentiles the
 *   histograms' over the same interval), deployed from CloudWatch (GetMetricData, SEARCH
 *   expressions over the stack's namespace, `Latchkey/<stack name>`, over a window of whole minutes).
 * - The most contended locks and the queues come from the lock listing (`list` and `inspect`, as
 *   `latchkey watch` shows them): the metrics have no lock dimension, by design.
 * - Live sessions come from the admin listing (`listSessions`) when the caller may use it.
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import type { LockClient } from '../client';
import { formatDuration, parseDuration } from '../duration';
import { LatchkeyClientError } from '../errors';
import { isLocalEndpoint, regionOf } from '../transport';
import { type EndpointFlags, type Endpoints, resolveEndpoints } from './endpoints';
import { showFrame } from './frames';
import { NAMESPACE, prometheusName } from './metric-names';
import {
  counterIncreases,
  histogramIncreases,
  histogramQuantile,
  parsePrometheusText,
  type Scrape,
} from './prometheus-text';

// ---------------------------------------------------------------------------------------------
// What top shows

export interface RequestRate {
  readonly operation: string;
  readonly outcome: string;
  readonly per_second: number;
  /** Requests in the window. */
  readonly count: number;
}
export interface OperationRate {
  readonly operation: string;
  readonly per_second: number;
  readonly count: number;
}
export interface LatencyRow {
  readonly operation: string;
  /** null: no request of this operation in the window. */
  readonly p50_ms: number | null;
  readonly p99_ms: number | null;
  readonly count: number;
}
export interface OutcomeRate {
  readonly outcome: string;
  readonly per_second: number;
  readonly count: number;
}
export interface SessionRates {
  readonly opened_per_second: number;
  readonly closed_per_second: number;
  readonly expired_per_second: number;
}

/** What the metrics say over one window. */
export interface MetricsView {
  readonly source: 'prometheus' | 'cloudwatch';
  /** What the rates are over (ms). */
  readonly window_ms: number;
  /** CloudWatch: when the window ends (a whole minute). */
  readonly window_end?: string;
  /** CloudWatch: the stack's namespace read. */
  readonly namespace?: string;
  readonly requests: RequestRate[];
  readonly operations: OperationRate[];
  readonly latency: LatencyRow[];
  readonly contention: OutcomeRate[];
  readonly sessions: SessionRates;
}

export interface ContendedLock {
  readonly lock: string;
  readonly state: string;
  readonly holder: string | null;
  readonly queued: number;
}
export interface QueueView {
  readonly lock: string;
  readonly queued: number;
  readonly waiters: {
    readonly position: number;
    readonly client_id: string;
    readonly priority: number;
    readonly via: string;
    readonly queued_at: string;
    readonly wait_until: string;
  }[];
}
export interface LocksView {
  readonly prefix: string;
  /** Locks listed (at most LIST_LIMIT), held, and waiters queued on them. */
  readonly total: number;
  readonly held: number;
  readonly queued: number;
  readonly truncated: boolean;
  readonly contended: ContendedLock[];
  readonly queues: QueueView[];
}
export type LiveSessions =
  | { readonly count: number; readonly by_state: Record<string, number> }
  | { readonly unavailable: string };

/** One sample: the metrics' view, where it came from, and what the lock listing and sessions add. */
export interface TopSnapshot extends Omit<MetricsView, 'sessions'> {
  readonly at: string;
  readonly endpoint: string;
  readonly region?: string;
  readonly locks: { prefix: string; total: number; held: number; queued: number; truncated: boolean };
  readonly contended: ContendedLock[];
  readonly queues: QueueView[];
  readonly sessions: SessionRates & {
    readonly live: number | null;
    readonly by_state?: Record<string, number>;
    readonly live_unavailable?: string;
  };
}

/** How many locks are listed, contended locks shown, queues inspected, and waiters shown per queue. */
export const LIST_LIMIT = 1_000;
export const CONTENDED_SHOWN = 10;
export const QUEUES_INSPECTED = 3;
export const WAITERS_SHOWN = 5;

const round = (n: number, digits = 3) => Number(n.toFixed(digits));
const perSecond = (count: number, windowMs: number) => (windowMs > 0 ? round(count / (windowMs / 1_000)) : 0);

/** Per-operation totals and a stable order (busiest first) from the rates by operation and outcome. */
function summarise(requests: RequestRate[], windowMs: number): OperationRate[] {
  const totals = new Map<string, number>();
  for (const r of requests) totals.set(r.operation, (totals.get(r.operation) ?? 0) + r.count);
  return [...totals]
    .map(([operation, count]) => ({ operation, count, per_second: perSecond(count, windowMs) }))
    .sort((a, b) => b.count - a.count || a.operation.localeCompare(b.operation));
}

const byRate = <T extends { count: number }>(rows: T[], key: (r: T) => string) =>
  rows.sort((a, b) => b.count - a.count || key(a).localeCompare(key(b)));

// ---------------------------------------------------------------------------------------------
// Locally: the Prometheus endpoint

/** The local stack's scrape URL beside its HTTP API. */
export const metricsUrl = (endpoint: string) => new URL('/metrics', endpoint).href;

export async function scrape(url: string, fetchImpl: typeof fetch = fetch): Promise<Scrape> {
  let answer: Response;
  try {
    answer = await fetchImpl(url, { signal: AbortSignal.timeout(10_000) });
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (error as Error).message;
    throw new Error(`cannot scrape ${url} (${why}): is the local stack running (npm start)?`);
  }
  if (!answer.ok)
    throw new Error(
      `${url} answered ${answer.status}: the local stack (npm start) serves its metrics there; a deployed stack's are in CloudWatch`,
    );
  return { samples: parsePrometheusText(await answer.text()), at: performance.now() };
}

/** What happened between two scrapes of the local stack. */
export function metricsFromScrapes(before: Scrape, after: Scrape): MetricsView {
  const windowMs = Math.max(0, after.at - before.at);
  const counters = (metric: Parameters<typeof prometheusName>[0]) =>
    counterIncreases(before.samples, after.samples, prometheusName(metric));
  const requests = byRate(
    counters('Requests')
      .filter((c) => c.increase > 0)
      .map((c) => ({
        operation: c.labels.operation ?? '',
        outcome: c.labels.outcome ?? '',
        count: c.increase,
        per_second: perSecond(c.increase, windowMs),
      })),
    (r) => `${r.operation} ${r.outcome}`,
  );
  const latency = histogramIncreases(before.samples, after.samples, prometheusName('Latency'))
    .filter((h) => h.count > 0)
    .map((h) => ({
      operation: h.labels.operation ?? '',
      p50_ms: ms(histogramQuantile(0.5, h.buckets)),
      p99_ms: ms(histogramQuantile(0.99, h.buckets)),
      count: h.count,
    }))
    .sort((a, b) => b.count - a.count || a.operation.localeCompare(b.operation));
  const contention = byRate(
    counters('Contention')
      .filter((c) => c.increase > 0)
      .map((c) => ({
        outcome: c.labels.outcome ?? '',
        count: c.increase,
        per_second: perSecond(c.increase, windowMs),
      })),
    (r) => r.outcome,
  );
  const total = (metric: 'SessionsOpened' | 'SessionsClosed' | 'SessionsExpired') =>
    counters(metric).reduce((sum, c) => sum + c.increase, 0);
  return {
    source: 'prometheus',
    window_ms: Math.round(windowMs),
    requests,
    operations: summarise(requests, windowMs),
    latency,
    contention,
    sessions: {
      opened_per_second: perSecond(total('SessionsOpened'), windowMs),
      closed_per_second: perSecond(total('SessionsClosed'), windowMs),
      expired_per_second: perSecond(total('SessionsExpired'), windowMs),
    },
  };
}

/** Seconds (the histograms' unit) as milliseconds, or null for no value. */
const ms = (seconds: number) => (Number.isFinite(seconds) ? round(seconds * 1_000) : null);

// ---------------------------------------------------------------------------------------------
// Deployed: CloudWatch

/** The parts of CloudWatch's GetMetricData that top uses (what @aws-sdk/client-cloudwatch takes and answers). */
export interface MetricDataQuery {
  readonly Id: string;
  readonly Expression?: string;
  readonly MetricStat?: {
    readonly Metric: {
      readonly Namespace: string;
      readonly MetricName: string;
      readonly Dimensions?: { Name: string; Value: string }[];
    };
    readonly Period: number;
    readonly Stat: string;
  };
  readonly Label?: string;
  readonly ReturnData?: boolean;
}
export interface GetMetricDataInput {
  readonly MetricDataQueries: MetricDataQuery[];
  readonly StartTime: Date;
  readonly EndTime: Date;
  readonly NextToken?: string;
  readonly MaxDatapoints?: number;
}
export interface MetricDataResult {
  readonly Id?: string | undefined;
  readonly Label?: string | undefined;
  readonly Timestamps?: Date[] | undefined;
  readonly Values?: number[] | undefined;
  readonly StatusCode?: string | undefined;
  readonly Messages?: { Code?: string | undefined; Value?: string | undefined }[] | undefined;
}
export interface GetMetricDataOutput {
  readonly MetricDataResults?: MetricDataResult[] | undefined;
  readonly NextToken?: string | undefined;
  readonly Messages?: { Code?: string | undefined; Value?: string | undefined }[] | undefined;
}
/** Reads CloudWatch; tests give one of their own. */
export interface CloudWatchReader {
  getMetricData(input: GetMetricDataInput): Promise<GetMetricDataOutput>;
  close?(): void;
}

/** A CloudWatch client of the AWS SDK for `region` (the default credential chain). */
export async function awsCloudWatch(region: string): Promise<CloudWatchReader> {
  const { CloudWatchClient, GetMetricDataCommand } = await import('@aws-sdk/client-cloudwatch');
  const client = new CloudWatchClient({ region });
  return {
    getMetricData: (input) => client.send(new GetMetricDataCommand(input)),
    close: () => client.destroy(),
  };
}

const MINUTE = 60_000;
/** The default CloudWatch window: the last 5 whole minutes. */
export const DEFAULT_WINDOW_MS = 5 * MINUTE;
/** A label part CloudWatch fills in per series of a SEARCH (a dynamic label). */
const dim = (name: string) => `\${PROP('Dim.${name}')}`;
const SEP = '|';

/** The queries of one CloudWatch sample of the stack's `namespace`, over one period of `periodS` seconds. */
export function cloudWatchQueries(periodS: number, namespace: string): MetricDataQuery[] {
  const search = (schema: string, metric: string, stat: string, periodS: number) =>
    `SEARCH('{"${namespace}",${schema}} MetricName="${metric}"', '${stat}', ${periodS})`;
  const plain = (Id: string, MetricName: string): MetricDataQuery => ({
    Id,
    MetricStat: { Metric: { Namespace: namespace, MetricName }, Period: periodS, Stat: 'Sum' },
    ReturnData: true,
  });
  return [
    {
      Id: 'requests',
      Expression: search('Operation,Outcome', 'Requests', 'Sum', periodS),
      Label: `${dim('Operation')}${SEP}${dim('Outcome')}`,
      ReturnData: true,
    },
    {
      Id: 'p50',
      Expression: search('Operation', 'Latency', 'p50', periodS),
      Label: dim('Operation'),
      ReturnData: true,
    },
    {
      Id: 'p99',
      Expression: search('Operation', 'Latency', 'p99', periodS),
      Label: dim('Operation'),
      ReturnData: true,
    },
    {
      Id: 'contention',
      Expression: search('Outcome', 'Contention', 'Sum', periodS),
      Label: dim('Outcome'),
      ReturnData: true,
    },
    plain('opened', 'SessionsOpened'),
    plain('closed', 'SessionsClosed'),
    plain('expired', 'SessionsExpired'),
  ];
}

/** The window that ends at the last whole minute before `now`, `windowMs` long (whole minutes, at least one). */
export function cloudWatchWindow(now: Date, windowMs: number): { start: Date; end: Date; periodS: number } {
  const minutes = Math.max(1, Math.round(windowMs / MINUTE));
  const end = Math.floor(now.getTime() / MINUTE) * MINUTE;
  return { start: new Date(end - minutes * MINUTE), end: new Date(end), periodS: minutes * 60 };
}

/** Every page of a GetMetricData call, each query's series (by Id and label) with their values joined. */
interface Series {
  readonly Id: string;
  readonly Label: string;
  readonly Values: number[];
}
async function getAll(reader: CloudWatchReader, input: GetMetricDataInput): Promise<Series[]> {
  const series = new Map<string, Series>();
  const problems: string[] = [];
  let token: string | undefined;
  do {
    const page = await reader.getMetricData({ ...input, ...(token ? { NextToken: token } : {}) });
    for (const r of page.MetricDataResults ?? []) {
      if (r.StatusCode === 'Forbidden' || r.StatusCode === 'InternalError')
        problems.push(`${r.Id}: ${r.StatusCode}${r.Messages?.length ? ` (${messages(r.Messages)})` : ''}`);
      const key = `${r.Id}\n${r.Label ?? ''}`;
      const s = series.get(key) ?? { Id: r.Id ?? '', Label: r.Label ?? '', Values: [] };
      s.Values.push(...(r.Values ?? []));
      series.set(key, s);
    }
    token = page.NextToken;
  } while (token);
  if (problems.length) throw new Error(`CloudWatch refused part of the query: ${problems.join('; ')}`);
  return [...series.values()];
}
const messages = (list: { Code?: string | undefined; Value?: string | undefined }[]) =>
  list.map((m) => [m.Code, m.Value].filter(Boolean).join(': ')).join('; ');

/** A SEARCH result's dimension values from its label (`a|b`; a label CloudWatch made itself: its last words). */
function labelParts(label: string, parts: number): string[] {
  if (label.includes(SEP)) return label.split(SEP).map((p) => p.trim());
  const words = label.trim().split(/\s+/);
  return words.slice(Math.max(0, words.length - parts));
}

const sum = (values: readonly number[]) => values.reduce((a, b) => a + b, 0);

/** The metrics of one CloudWatch window, in the stack's `namespace`. */
export async function cloudWatchMetrics(
  reader: CloudWatchReader,
  namespace: string,
  now: Date,
  windowMs = DEFAULT_WINDOW_MS,
): Promise<MetricsView> {
  const { start, end, periodS } = cloudWatchWindow(now, windowMs);
  const window = periodS * 1_000;
  const results = await getAll(reader, {
    MetricDataQueries: cloudWatchQueries(periodS, namespace),
    StartTime: start,
    EndTime: end,
  });
  const of = (id: string) => results.filter((r) => r.Id === id);
  const requests = byRate(
    of('requests')
      .map((r) => {
        const [operation = '', outcome = ''] = labelParts(r.Label, 2);
        const count = sum(r.Values);
        return { operation, outcome, count, per_second: perSecond(count, window) };
      })
      .filter((r) => r.count > 0),
    (r) => `${r.operation} ${r.outcome}`,
  );
  const operations = summarise(requests, window);
  const countOf = new Map(operations.map((o) => [o.operation, o.count]));
  const percentile = (id: string) =>
    new Map(
      of(id)
        .filter((r) => r.Values.length > 0)
        .map((r) => [labelParts(r.Label, 1)[0] ?? '', round(r.Values[0] as number)]),
    );
  const p50 = percentile('p50');
  const p99 = percentile('p99');
  const latency = [...new Set([...p50.keys(), ...p99.keys()])]
    .map((operation) => ({
      operation,
      p50_ms: p50.get(operation) ?? null,
      p99_ms: p99.get(operation) ?? null,
      count: countOf.get(operation) ?? 0,
    }))
    .sort((a, b) => b.count - a.count || a.operation.localeCompare(b.operation));
  const contention = byRate(
    of('contention')
      .map((r) => {
        const count = sum(r.Values);
        return { outcome: labelParts(r.Label, 1)[0] ?? '', count, per_second: perSecond(count, window) };
      })
      .filter((r) => r.count > 0),
    (r) => r.outcome,
  );
  const rate = (id: string) => perSecond(sum(of(id).flatMap((r) => r.Values)), window);
  return {
    source: 'cloudwatch',
    window_ms: window,
    window_end: end.toISOString(),
    namespace,
    requests,
    operations,
    latency,
    contention,
    sessions: {
      opened_per_second: rate('opened'),
      closed_per_second: rate('closed'),
      expired_per_second: rate('expired'),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Locks and sessions, from the API

/** The lock listing under `prefix`: the most contended locks (longest queues) and their first waiters. */
export async function gatherLocks(
  client: Pick<LockClient, 'list' | 'inspect'>,
  prefix: string,
): Promise<LocksView> {
  const locks = await client.list(prefix, LIST_LIMIT);
  const contended: ContendedLock[] = locks
    .filter((v) => (v.queued ?? 0) > 0)
    .map((v) => ({
      lock: v.lock as string,
      state: v.state as string,
      holder: (v.holders?.[0]?.client_id as string | undefined) ?? null,
      queued: v.queued as number,
    }))
    .sort((a, b) => b.queued - a.queued || a.lock.localeCompare(b.lock));
  const queues = await Promise.all(
    contended.slice(0, QUEUES_INSPECTED).map(async (c): Promise<QueueView> => {
      const v = await client.inspect(c.lock);
      return {
        lock: c.lock,
        queued: v.queued ?? c.queued,
        // biome-ignore lint/suspicious/noExplicitAny: the wire view of a waiter
        waiters: (v.waiters ?? []).slice(0, WAITERS_SHOWN).map((w: any) => ({
          position: w.position,
          client_id: w.client_id,
          priority: w.priority,
          via: w.via,
          queued_at: w.queued_at,
          wait_until: w.wait_until,
        })),
      };
    }),
  );
  return {
    prefix,
    total: locks.length,
    held: locks.filter((v) => v.state === 'held').length,
    queued: sum(locks.map((v) => v.queued ?? 0)),
    truncated: locks.length >= LIST_LIMIT,
    contended: contended.slice(0, CONTENDED_SHOWN),
    queues,
  };
}

/** Live sessions from the admin listing, or why there are none to show. */
export async function gatherSessions(client: Pick<LockClient, 'listSessions'>): Promise<LiveSessions> {
  try {
    const sessions = await client.listSessions({ limit: LIST_LIMIT });
    const byState: Record<string, number> = {};
    for (const s of sessions) byState[s.state] = (byState[s.state] ?? 0) + 1;
    return { count: (byState.alive ?? 0) + (byState.grace ?? 0), by_state: byState };
  } catch (error) {
    if (error instanceof LatchkeyClientError && (error.status === 401 || error.status === 403))
      return { unavailable: 'not allowed: the admin route GET /api/v1/admin/sessions (IAM) is not granted' };
    return { unavailable: (error as Error).message };
  }
}

/** How often the live session count is read again: the admin listing reads every session, page by page. */
export const SESSIONS_EVERY_MS = 15_000;

/**
 * A value loaded in the background: `get` answers the last one loaded (waiting only for the first),
 * and starts loading again once `everyMs` has passed since the last load began.
 */
export class Refreshing<T> {
  private latest: { value: T } | undefined;
  private running: Promise<T> | undefined;
  private startedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly load: () => Promise<T>,
    private readonly everyMs: number,
  ) {}

  /** Starts a load unless one runs or the last began less than `everyMs` ago. */
  kick(): void {
    if (this.running || performance.now() - this.startedAt < this.everyMs) return;
    this.startedAt = performance.now();
    const running = this.load().then((value) => {
      this.latest = { value };
      return value;
    });
    this.running = running;
    void running
      .finally(() => {
        if (this.running === running) this.running = undefined;
      })
      .catch(() => undefined);
  }

  async get(): Promise<T> {
    this.kick();
    if (this.latest) return this.latest.value;
    return this.running as Promise<T>;
  }
}

export function snapshot(
  endpoint: string,
  metrics: MetricsView,
  locks: LocksView,
  live: LiveSessions,
  region?: string,
  at = new Date(),
): TopSnapshot {
  return {
    at: at.toISOString(),
    endpoint,
    source: metrics.source,
    ...(region ? { region } : {}),
    window_ms: metrics.window_ms,
    ...(metrics.window_end ? { window_end: metrics.window_end } : {}),
    ...(metrics.namespace ? { namespace: metrics.namespace } : {}),
    requests: metrics.requests,
    operations: metrics.operations,
    latency: metrics.latency,
    contention: metrics.contention,
    locks: {
      prefix: locks.prefix,
      total: locks.total,
      held: locks.held,
      queued: locks.queued,
      truncated: locks.truncated,
    },
    contended: locks.contended,
    queues: locks.queues,
    sessions: {
      ...metrics.sessions,
      ...('count' in live
        ? { live: live.count, by_state: live.by_state }
        : { live: null, live_unavailable: live.unavailable }),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// For people

function table(header: string[], rows: string[][], right: number[] = []): string {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [header, ...rows]
    .map((r) =>
      r
        .map((c, i) => (right.includes(i) ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
const rateText = (n: number) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));
const msText = (n: number | null) => (n === null ? '-' : n >= 1_000 ? formatDuration(n) : `${round(n, 1)}ms`);

export function render(s: TopSnapshot): string {
  const over =
    s.source === 'prometheus'
      ? `local /metrics, rates over ${formatDuration(s.window_ms)}`
      : `CloudWatch ${s.namespace ?? ''} in ${s.region ?? ''}, the ${formatDuration(s.window_ms)} to ${(s.window_end ?? s.at).slice(11, 16)} UTC`;
  const out = [`latchkey top  ${s.endpoint}  (${over})  ${s.at}`, ''];
  out.push(
    s.requests.length
      ? table(
          ['OPERATION', 'OUTCOME', 'REQ/S', 'COUNT'],
          s.requests.map((r) => [r.operation, r.outcome, rateText(r.per_second), String(r.count)]),
          [2, 3],
        )
      : '(no requests in the window)',
    '',
  );
  if (s.latency.length)
    out.push(
      table(
        ['LATENCY', 'P50', 'P99', 'COUNT'],
        s.latency.map((l) => [l.operation, msText(l.p50_ms), msText(l.p99_ms), String(l.count)]),
        [1, 2, 3],
      ),
      '',
    );
  if (s.contention.length)
    out.push(
      `contention  ${s.contention.map((c) => `${c.outcome} ${rateText(c.per_second)}/s`).join('  ')}`,
      '',
    );
  const under = s.locks.prefix ? ` under '${s.locks.prefix}'` : '';
  out.push(
    `locks${under}: ${s.locks.total}${s.locks.truncated ? '+' : ''} listed, ${s.locks.held} held, ${s.locks.queued} waiters queued`,
  );
  if (s.contended.length) {
    out.push(
      '',
      'MOST CONTENDED (longest queues, from the lock listing)',
      table(
        ['LOCK', 'STATE', 'HOLDER', 'QUEUED'],
        s.contended.map((c) => [c.lock, c.state, c.holder ?? '-', String(c.queued)]),
        [3],
      ),
    );
    for (const q of s.queues) {
      out.push('', `${q.lock}: ${q.queued} queued`);
      for (const w of q.waiters)
        out.push(
          `  ${String(w.position).padStart(3)}. ${w.client_id}  priority ${w.priority}  via ${w.via}  until ${w.wait_until}`,
        );
      if (q.queued > q.waiters.length) out.push(`       … and ${q.queued - q.waiters.length} more`);
    }
  } else out.push('(no lock has waiters)');
  const live =
    s.sessions.live === null
      ? `live: unavailable (${s.sessions.live_unavailable})`
      : `live ${s.sessions.live}${
          s.sessions.by_state && Object.keys(s.sessions.by_state).length
            ? ` (${Object.entries(s.sessions.by_state)
                .map(([k, v]) => `${k} ${v}`)
                .join(', ')})`
            : ''
        }`;
  out.push(
    '',
    `sessions  opened ${rateText(s.sessions.opened_per_second)}/s  closed ${rateText(s.sessions.closed_per_second)}/s  expired ${rateText(s.sessions.expired_per_second)}/s  ${live}`,
  );
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// The command

export interface TopGlobals extends EndpointFlags {
  readonly region?: string;
  readonly json?: boolean;
}

/**
 * The deployed stack's CloudWatch namespace: --namespace, else the outputs file's when the endpoint
 * came from one (the namespace of the same stack), else LATCHKEY_METRIC_NAMESPACE. An endpoint
 * given any other way does not say which stack it is, and top does not guess.
 */
export function topNamespace(
  flag: string | undefined,
  endpoints: Endpoints,
  env: NodeJS.ProcessEnv = process.env,
): string {
  const namespace = flag ?? endpoints.metricNamespace ?? (env.LATCHKEY_METRIC_NAMESPACE || undefined);
  if (namespace !== undefined) return namespace;
  if (endpoints.httpFrom.kind === 'outputs')
    throw new Error(
      `${endpoints.httpFrom.file}'s stack ${endpoints.httpFrom.stack} has no MetricNamespace output: write the file again with cdk deploy --outputs-file (a stack deployed since has one; an embedded Latchkey construct needs a CfnOutput of its metricNamespace), or give --namespace Latchkey/STACK (${NAMESPACE} for a stack deployed before stacks had their own)`,
    );
  throw new Error(
    `top needs the stack's metric namespace to read CloudWatch: give --namespace Latchkey/STACK or set LATCHKEY_METRIC_NAMESPACE (the stack's MetricNamespace output, e.g. Latchkey/Latchkey-prod; ${NAMESPACE} for a stack deployed before stacks had their own), or use the outputs file cdk deploy --outputs-file wrote`,
  );
}

export interface TopContext {
  readonly globals: () => TopGlobals;
  /** The CLI's client for these globals (it remembers the endpoints for error messages). */
  readonly client: (g: TopGlobals) => LockClient;
  /** Tests: a CloudWatch of their own, instead of the AWS SDK's. */
  readonly cloudWatch?: (region: string) => Promise<CloudWatchReader>;
  readonly write?: (text: string) => void;
  /** An error as --json prints it (`{error: {code, message, retryable}}`); else its message. */
  readonly errorJson?: (error: unknown) => object;
  /** An error in words, with what to do about it (as every other command says it); else its message. */
  readonly explain?: (error: unknown) => string;
}

export interface TopRun {
  readonly everyMs: number;
  readonly once: boolean;
  readonly json: boolean;
  readonly prefix: string;
  readonly windowMs: number;
  /** --namespace: the deployed stack's CloudWatch namespace. */
  readonly namespace?: string;
}

const duration = (value: string) => {
  try {
    return parseDuration(value);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
};
const positiveDuration = (value: string) => {
  const ms = duration(value);
  if (ms <= 0) throw new InvalidArgumentError(`must be more than 0: ${value}`);
  return ms;
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs top: one sample (`once`), or a view refreshed every `everyMs` until the process is stopped. */
export async function runTop(context: TopContext, run: TopRun): Promise<void> {
  const g = context.globals();
  const endpoints = resolveEndpoints(g);
  const local = isLocalEndpoint(endpoints.http);
  const region = local ? undefined : (g.region ?? regionOf(endpoints.http));
  const namespace = local ? undefined : topNamespace(run.namespace, endpoints);
  const client = context.client(g);
  const write = context.write ?? ((t: string) => console.log(t));
  const show = (s: TopSnapshot) => {
    if (run.json) write(JSON.stringify(s));
    else if (run.once || context.write) write(render(s));
    else showFrame(render(s));
  };
  const problem = (error: unknown) => {
    const at = new Date().toISOString();
    // Under --json, as watch does: a line of its own on stdout, the sample's place.
    if (run.json)
      write(
        JSON.stringify({
          at,
          ...(context.errorJson?.(error) ?? { error: { message: (error as Error).message } }),
        }),
      );
    else showFrame(`${at}  ${context.explain?.(error) ?? (error as Error).message} (retrying)`);
  };
  const sessions = new Refreshing(() => gatherSessions(client), SESSIONS_EVERY_MS);
  sessions.kick(); // meanwhile the first sample is taken
  const others = () => Promise.all([gatherLocks(client, run.prefix), sessions.get()] as const);

  try {
    if (local) {
      const url = metricsUrl(endpoints.http);
      let before = await scrape(url);
      for (;;) {
        await sleep(run.everyMs);
        try {
          const after = await scrape(url);
          const [locks, live] = await others();
          show(snapshot(endpoints.http, metricsFromScrapes(before, after), locks, live));
          before = after;
        } catch (error) {
          if (run.once) throw error;
          problem(error);
          before = await scrape(url).catch(() => before);
        }
        if (run.once) return;
      }
    }
    const reader = await (context.cloudWatch ?? awsCloudWatch)(region as string);
    try {
      // CloudWatch has whole minutes: a window is read again only once a new minute has ended.
      let cached: { end: number; metrics: MetricsView } | undefined;
      for (;;) {
        try {
          const now = new Date();
          const { end } = cloudWatchWindow(now, run.windowMs);
          if (cached?.end !== end.getTime())
            cached = {
              end: end.getTime(),
              metrics: await cloudWatchMetrics(reader, namespace as string, now, run.windowMs).catch(
                (error: Error) => {
                  throw new Error(
                    `cannot read latchkey's metrics (${namespace}) from CloudWatch in ${region} (${error.name}: ${error.message}): top needs AWS credentials allowed cloudwatch:GetMetricData (give --region if the stack's metrics are in another region)`,
                  );
                },
              ),
            };
          const [locks, live] = await others();
          show(snapshot(endpoints.http, cached.metrics, locks, live, region));
        } catch (error) {
          if (run.once) throw error;
          problem(error);
        }
        if (run.once) return;
        await sleep(run.everyMs);
      }
    } finally {
      reader.close?.();
    }
  } finally {
    client.close();
  }
}

/** Adds `latchkey top` to the CLI. */
export function addTopCommand(cli: Command, context: TopContext): Command {
  return cli
    .command('top')
    .description(
      'live view of the service: requests/s, latency, contended locks, queues, sessions (Ctrl-C to stop)',
    )
    .addOption(
      new Option('--every <duration>', 'refresh interval (locally: the interval the rates are over)')
        .argParser(positiveDuration)
        .default(2_000, '2s'),
    )
    .option('--once', 'one sample, then exit (locally: scrape, wait --every, scrape again)')
    .option('--prefix <prefix>', 'only locks whose names start with this, for contended locks and queues', '')
    .addOption(
      new Option('--window <duration>', 'deployed: the CloudWatch window the rates and percentiles are over')
        .argParser(positiveDuration)
        .default(DEFAULT_WINDOW_MS, '5m'),
    )
    .option(
      '--namespace <namespace>',
      "deployed: the stack's CloudWatch namespace, its MetricNamespace output (default: the outputs file's, else LATCHKEY_METRIC_NAMESPACE)",
    )
    .addHelpText(
      'after',
      `
Where the numbers come from:
  local stack (a loopback endpoint): its GET /metrics, scraped every --every; rates are the
    counters' increase over the interval, p50/p99 the latency histograms' over the same interval
    (interpolated within buckets, as Prometheus' histogram_quantile).
  deployed stack: CloudWatch (the stack's namespace, Latchkey/STACK, GetMetricData with SEARCH expressions) in the
    region of the endpoint (or --region), over the last --window of whole minutes (metrics reach
    CloudWatch a minute or two late); needs AWS credentials allowed cloudwatch:GetMetricData.
  most contended locks and queues: the metrics have no lock dimension (by design), so these come
    from the lock listing (GET /api/v1/list under --prefix, the first ${LIST_LIMIT} locks): locks with
    waiters, longest queue first, and the first waiters of the ${QUEUES_INSPECTED} longest queues.
  live sessions: the admin listing (GET /api/v1/admin/sessions) when your principal may call it,
    else shown as unavailable; read again every ${formatDuration(SESSIONS_EVERY_MS)} at most (it reads the session
    listing in the by_owner index page by page). Session open/close/expiry rates come from the metrics.

--json prints one JSON object per sample (with --once, exactly one).`,
    )
    .action(
      async (o: { every: number; once?: boolean; prefix: string; window: number; namespace?: string }) => {
        const g = context.globals();
        await runTop(context, {
          everyMs: o.every,
          once: o.once === true,
          json: g.json === true,
          prefix: o.prefix,
          windowMs: o.window,
          ...(o.namespace === undefined ? {} : { namespace: o.namespace }),
        });
      },
    );
}
