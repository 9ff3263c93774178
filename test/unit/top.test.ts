/**
 * `latchkey top` (sdk/cli/top.ts) without a stack: the Prometheus text parser and the rates and
 * percentiles it computes from two scrapes (sdk/cli/prometheus-text.ts), against what the local
 * stack's registry (local/prometheus.ts) writes; the CloudWatch path with a CloudWatch of the
 * test's own; the lock and session views with a client of the test's own.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { METRIC_NAMESPACE, METRICS, metricNamespaceFor } from '../../lambdas/shared/metric-catalog';
import { PrometheusRegistry } from '../../local/prometheus';
import { resolveEndpoints } from '../../sdk/cli/endpoints';
import { NAMESPACE, prometheusName, TOP_METRICS, type TopMetric } from '../../sdk/cli/metric-names';
import {
  counterIncrease,
  histogramIncreases,
  histogramQuantile,
  parsePrometheusText,
} from '../../sdk/cli/prometheus-text';
import {
  type CloudWatchReader,
  cloudWatchMetrics,
  cloudWatchWindow,
  type GetMetricDataInput,
  type GetMetricDataOutput,
  gatherLocks,
  gatherSessions,
  metricsFromScrapes,
  Refreshing,
  render,
  runTop,
  type TopSnapshot,
  topNamespace,
} from '../../sdk/cli/top';
import { type LockClient, UnauthorizedError, UnavailableError } from '../../sdk/index';

/** One EMF line as the functions write it (shared/metrics.ts). */
function emf(
  name: string,
  unit: string,
  value: number | number[],
  dims: Record<string, string> = {},
): string {
  return JSON.stringify({
    _aws: {
      Timestamp: 0,
      CloudWatchMetrics: [
        { Namespace: 'Latchkey', Dimensions: [Object.keys(dims)], Metrics: [{ Name: name, Unit: unit }] },
      ],
    },
    ...dims,
    [name]: value,
  });
}
const request = (operation: string, outcome: string, latencyMs: number) => [
  emf('Requests', 'Count', 1, { Operation: operation, Outcome: outcome }),
  emf('Latency', 'Milliseconds', latencyMs, { Operation: operation }),
];

describe('the Prometheus text parser', () => {
  it('reads what the local stack writes: counters, histograms, labels', () => {
    const registry = new PrometheusRegistry();
    for (const line of [...request('acquire', 'granted', 3), ...request('acquire', 'refused', 40)])
      registry.ingest(line);
    registry.ingest(emf('SessionsOpened', 'Count', 2));
    const samples = parsePrometheusText(registry.render());
    expect(samples).toContainEqual({
      name: 'latchkey_requests_total',
      labels: { operation: 'acquire', outcome: 'granted' },
      value: 1,
    });
    expect(samples).toContainEqual({ name: 'latchkey_sessions_opened_total', labels: {}, value: 2 });
    expect(samples).toContainEqual({
      name: 'latchkey_latency_seconds_bucket',
      labels: { operation: 'acquire', le: '0.005' },
      value: 1,
    });
    expect(samples).toContainEqual({
      name: 'latchkey_latency_seconds_bucket',
      labels: { operation: 'acquire', le: '+Inf' },
      value: 2,
    });
    expect(samples).toContainEqual({
      name: 'latchkey_latency_seconds_count',
      labels: { operation: 'acquire' },
      value: 2,
    });
    expect(samples.find((s) => s.name === 'latchkey_latency_seconds_sum')?.value).toBeCloseTo(0.043);
  });

  it('unescapes label values, skips comments and blank lines, takes timestamps and special values', () => {
    const text = [
      '# HELP x_total a "help" line',
      '# TYPE x_total counter',
      '',
      'x_total{a="q\\"uote",b="back\\\\slash",c="new\\nline",} 3 1700000000000',
      'y NaN',
      'z{le="+Inf"} +Inf',
      'w -Inf',
      'v 1.5e3',
    ].join('\n');
    expect(parsePrometheusText(text)).toEqual([
      { name: 'x_total', labels: { a: 'q"uote', b: 'back\\slash', c: 'new\nline' }, value: 3 },
      { name: 'y', labels: {}, value: Number.NaN },
      { name: 'z', labels: { le: '+Inf' }, value: Number.POSITIVE_INFINITY },
      { name: 'w', labels: {}, value: Number.NEGATIVE_INFINITY },
      { name: 'v', labels: {}, value: 1500 },
    ]);
  });

  it('refuses lines that are not samples', () => {
    expect(() => parsePrometheusText('not a sample line at all')).toThrow(/not a metrics line/);
    expect(() => parsePrometheusText('x{a=unquoted} 1')).toThrow(/labels/);
    expect(() => parsePrometheusText('x abc')).toThrow(/not a sample value/);
  });
});

describe('histogramQuantile (as PromQL histogram_quantile)', () => {
  const inf = Number.POSITIVE_INFINITY;
  const buckets = [
    { le: 0.001, count: 0 },
    { le: 0.0025, count: 0 },
    { le: 0.005, count: 2 },
    { le: 0.01, count: 4 },
    { le: inf, count: 4 },
  ];

  it('interpolates linearly within the bucket the rank falls in', () => {
    expect(histogramQuantile(0.5, buckets)).toBeCloseTo(0.005); // rank 2: the top of (0.0025, 0.005]
    expect(histogramQuantile(0.25, buckets)).toBeCloseTo(0.00375); // rank 1: half-way through it
    expect(histogramQuantile(0.99, buckets)).toBeCloseTo(0.0099); // rank 3.96: 98 % into (0.005, 0.01]
    expect(histogramQuantile(0.75, [...buckets].reverse())).toBeCloseTo(0.0075); // order does not matter
  });

  it('the first bucket starts at 0; a rank in +Inf gives the highest finite bound', () => {
    expect(
      histogramQuantile(0.5, [
        { le: 1, count: 4 },
        { le: inf, count: 4 },
      ]),
    ).toBeCloseTo(0.5);
    expect(
      histogramQuantile(0.5, [
        { le: 1, count: 0 },
        { le: 2, count: 0 },
        { le: inf, count: 5 },
      ]),
    ).toBe(2);
    expect(
      histogramQuantile(0.5, [
        { le: -1, count: 3 },
        { le: inf, count: 3 },
      ]),
    ).toBe(-1);
  });

  it('NaN without observations, without +Inf or with one bucket; ±Inf out of 0..1', () => {
    expect(
      histogramQuantile(0.5, [
        { le: 1, count: 0 },
        { le: inf, count: 0 },
      ]),
    ).toBeNaN();
    expect(
      histogramQuantile(0.5, [
        { le: 1, count: 3 },
        { le: 2, count: 3 },
      ]),
    ).toBeNaN();
    expect(histogramQuantile(0.5, [{ le: inf, count: 3 }])).toBeNaN();
    expect(histogramQuantile(-0.1, buckets)).toBe(Number.NEGATIVE_INFINITY);
    expect(histogramQuantile(1.1, buckets)).toBe(inf);
  });

  it('counts that go down between buckets are made monotonic', () => {
    expect(
      histogramQuantile(0.5, [
        { le: 1, count: 4 },
        { le: 2, count: 3 },
        { le: inf, count: 4 },
      ]),
    ).toBeCloseTo(0.5);
  });
});

describe('rates and percentiles from two scrapes', () => {
  it('counter increases, with a reset counted whole', () => {
    expect(counterIncrease(3, 10)).toBe(7);
    expect(counterIncrease(undefined, 10)).toBe(10);
    expect(counterIncrease(10, 4)).toBe(4);
  });

  it('what happened between the scrapes, per second of the interval, and only that', () => {
    const registry = new PrometheusRegistry();
    // Before the first scrape: slow acquires that must not count in the interval's percentiles.
    for (let i = 0; i < 10; i++) for (const l of request('acquire', 'granted', 20_000)) registry.ingest(l);
    registry.ingest(emf('SessionsOpened', 'Count', 5));
    const before = { samples: parsePrometheusText(registry.render()), at: 1_000 };
    for (let i = 0; i < 8; i++) for (const l of request('acquire', 'granted', 4)) registry.ingest(l);
    for (let i = 0; i < 2; i++) for (const l of request('acquire', 'queued', 400)) registry.ingest(l);
    for (let i = 0; i < 4; i++) for (const l of request('release', 'ok', 2)) registry.ingest(l);
    registry.ingest(emf('Contention', 'Count', 8, { Outcome: 'granted' }));
    registry.ingest(emf('Contention', 'Count', 2, { Outcome: 'queued' }));
    registry.ingest(emf('SessionsOpened', 'Count', 4));
    registry.ingest(emf('SessionsClosed', 'Count', 1));
    const after = { samples: parsePrometheusText(registry.render()), at: 3_000 };

    const m = metricsFromScrapes(before, after);
    expect(m.source).toBe('prometheus');
    expect(m.window_ms).toBe(2_000);
    expect(m.requests).toEqual([
      { operation: 'acquire', outcome: 'granted', count: 8, per_second: 4 },
      { operation: 'release', outcome: 'ok', count: 4, per_second: 2 },
      { operation: 'acquire', outcome: 'queued', count: 2, per_second: 1 },
    ]);
    expect(m.operations).toEqual([
      { operation: 'acquire', count: 10, per_second: 5 },
      { operation: 'release', count: 4, per_second: 2 },
    ]);
    const acquire = m.latency.find((l) => l.operation === 'acquire');
    // 8 in (2.5, 5] ms, 2 in (250, 500] ms: rank 5 is 5/8 of the way through (2.5, 5].
    expect(acquire?.count).toBe(10);
    expect(acquire?.p50_ms).toBeCloseTo(2.5 + 2.5 * (5 / 8));
    // rank 9.9: 1.9 of the 2 in (250, 500] ms.
    expect(acquire?.p99_ms).toBeCloseTo(250 + 250 * (1.9 / 2));
    expect(m.latency.find((l) => l.operation === 'release')?.p50_ms).toBeCloseTo(1.75);
    expect(m.contention).toEqual([
      { outcome: 'granted', count: 8, per_second: 4 },
      { outcome: 'queued', count: 2, per_second: 1 },
    ]);
    expect(m.sessions).toEqual({ opened_per_second: 2, closed_per_second: 0.5, expired_per_second: 0 });
  });

  it('an interval without traffic has no rates and no percentiles', () => {
    const registry = new PrometheusRegistry();
    for (const l of request('acquire', 'granted', 4)) registry.ingest(l);
    const samples = parsePrometheusText(registry.render());
    const m = metricsFromScrapes({ samples, at: 0 }, { samples, at: 2_000 });
    expect(m.requests).toEqual([]);
    expect(m.latency).toEqual([]);
    expect(histogramIncreases(samples, samples, 'latchkey_latency_seconds')[0]?.count).toBe(0);
  });
});

describe('the metrics top reads are the catalog’s', () => {
  it.each(Object.keys(TOP_METRICS) as TopMetric[])('%s: unit, dimensions and local name', (name) => {
    expect(NAMESPACE).toBe(METRIC_NAMESPACE);
    const spec = METRICS[name];
    expect(TOP_METRICS[name].unit).toBe(spec.unit);
    expect([...TOP_METRICS[name].dimensions]).toEqual([...spec.dimensions]);
    const registry = new PrometheusRegistry();
    const dims = Object.fromEntries(spec.dimensions.map((d) => [d, 'x']));
    registry.ingest(emf(name, spec.unit, 1, dims));
    const names = parsePrometheusText(registry.render()).map((s) => s.name);
    expect(names.some((n) => n === prometheusName(name) || n === `${prometheusName(name)}_count`)).toBe(true);
  });
});

/** A CloudWatch that answers from a table of results by query id, in pages of `pageSize` results. */
function fakeCloudWatch(
  results: NonNullable<GetMetricDataOutput['MetricDataResults']>,
  pageSize = 3,
): CloudWatchReader & { inputs: GetMetricDataInput[]; closed: boolean } {
  const reader = {
    inputs: [] as GetMetricDataInput[],
    closed: false,
    async getMetricData(input: GetMetricDataInput): Promise<GetMetricDataOutput> {
      reader.inputs.push(input);
      const from = Number(input.NextToken ?? 0);
      const page = results.slice(from, from + pageSize);
      return {
        MetricDataResults: page,
        ...(from + pageSize < results.length ? { NextToken: String(from + pageSize) } : {}),
      };
    },
    close() {
      reader.closed = true;
    },
  };
  return reader;
}

const CW_RESULTS = [
  { Id: 'requests', Label: 'acquire|granted', Values: [600], StatusCode: 'Complete' },
  { Id: 'requests', Label: 'acquire|queued', Values: [60], StatusCode: 'Complete' },
  { Id: 'requests', Label: 'release|ok', Values: [300], StatusCode: 'Complete' },
  { Id: 'requests', Label: 'renew|ok', Values: [], StatusCode: 'Complete' },
  { Id: 'p50', Label: 'acquire', Values: [12.5], StatusCode: 'Complete' },
  { Id: 'p50', Label: 'release', Values: [4], StatusCode: 'Complete' },
  { Id: 'p99', Label: 'acquire', Values: [250], StatusCode: 'Complete' },
  { Id: 'contention', Label: 'queued', Values: [60], StatusCode: 'Complete' },
  { Id: 'contention', Label: 'granted', Values: [600], StatusCode: 'Complete' },
  { Id: 'opened', Label: 'SessionsOpened', Values: [30], StatusCode: 'Complete' },
  { Id: 'closed', Label: 'SessionsClosed', Values: [15], StatusCode: 'Complete' },
  { Id: 'expired', Label: 'SessionsExpired', Values: [], StatusCode: 'Complete' },
];

/** A stack's namespace (metricNamespaceFor('Latchkey-prod')). */
const PROD = 'Latchkey/Latchkey-prod';

describe('the CloudWatch path', () => {
  const now = new Date('2026-12-01T19:07:42.123Z');

  it('a window of whole minutes, ending at the last whole minute', () => {
    expect(cloudWatchWindow(now, 300_000)).toEqual({
      start: new Date('2026-12-01T19:02:00Z'),
      end: new Date('2026-12-01T19:07:00Z'),
      periodS: 300,
    });
    expect(cloudWatchWindow(now, 10_000).periodS).toBe(60);
  });

  it('SEARCH expressions over the stack’s namespace, one period the whole window; rates per second of it', async () => {
    const cw = fakeCloudWatch(CW_RESULTS);
    const m = await cloudWatchMetrics(cw, PROD, now, 300_000);
    // Every page was read, with the same queries.
    expect(cw.inputs).toHaveLength(4);
    expect(cw.inputs.map((i) => i.NextToken)).toEqual([undefined, '3', '6', '9']);
    const [input] = cw.inputs;
    expect(input?.StartTime).toEqual(new Date('2026-12-01T19:02:00Z'));
    expect(input?.EndTime).toEqual(new Date('2026-12-01T19:07:00Z'));
    const queries = Object.fromEntries((input?.MetricDataQueries ?? []).map((q) => [q.Id, q]));
    expect(queries.requests?.Expression).toBe(
      `SEARCH('{"Latchkey/Latchkey-prod",Operation,Outcome} MetricName="Requests"', 'Sum', 300)`,
    );
    expect(queries.requests?.Label).toBe(`\${PROP('Dim.Operation')}|\${PROP('Dim.Outcome')}`);
    expect(queries.p50?.Expression).toBe(
      `SEARCH('{"Latchkey/Latchkey-prod",Operation} MetricName="Latency"', 'p50', 300)`,
    );
    expect(queries.p99?.Expression).toBe(
      `SEARCH('{"Latchkey/Latchkey-prod",Operation} MetricName="Latency"', 'p99', 300)`,
    );
    expect(queries.contention?.Expression).toBe(
      `SEARCH('{"Latchkey/Latchkey-prod",Outcome} MetricName="Contention"', 'Sum', 300)`,
    );
    expect(queries.opened?.MetricStat).toEqual({
      Metric: { Namespace: PROD, MetricName: 'SessionsOpened' },
      Period: 300,
      Stat: 'Sum',
    });

    expect(m).toEqual({
      source: 'cloudwatch',
      window_ms: 300_000,
      window_end: '2026-12-01T19:07:00.000Z',
      namespace: PROD,
      requests: [
        { operation: 'acquire', outcome: 'granted', count: 600, per_second: 2 },
        { operation: 'release', outcome: 'ok', count: 300, per_second: 1 },
        { operation: 'acquire', outcome: 'queued', count: 60, per_second: 0.2 },
      ],
      operations: [
        { operation: 'acquire', count: 660, per_second: 2.2 },
        { operation: 'release', count: 300, per_second: 1 },
      ],
      latency: [
        { operation: 'acquire', p50_ms: 12.5, p99_ms: 250, count: 660 },
        { operation: 'release', p50_ms: 4, p99_ms: null, count: 300 },
      ],
      contention: [
        { outcome: 'granted', count: 600, per_second: 2 },
        { outcome: 'queued', count: 60, per_second: 0.2 },
      ],
      sessions: { opened_per_second: 0.1, closed_per_second: 0.05, expired_per_second: 0 },
    });
  });

  it('labels CloudWatch made itself (no dynamic labels) are read by their last words', async () => {
    const cw = fakeCloudWatch([{ Id: 'requests', Label: 'Requests acquire granted', Values: [60] }]);
    const m = await cloudWatchMetrics(cw, PROD, now, 60_000);
    expect(m.requests).toEqual([{ operation: 'acquire', outcome: 'granted', count: 60, per_second: 1 }]);
  });

  it('a query CloudWatch refuses is an error that says so', async () => {
    const cw = fakeCloudWatch([
      { Id: 'requests', StatusCode: 'Forbidden', Messages: [{ Code: 'AccessDenied', Value: 'no' }] },
    ]);
    await expect(cloudWatchMetrics(cw, PROD, now)).rejects.toThrow(
      /refused.*requests: Forbidden \(AccessDenied: no\)/,
    );
  });
});

/** A client of the test's own: a listing, a queue per lock, and a session listing (or its refusal). */
function fakeClient(sessions: unknown[] | Error) {
  const locks = [
    { lock: 'jobs/a', state: 'held', holders: [{ client_id: 'w-1' }], queued: 2 },
    { lock: 'jobs/b', state: 'free', holders: [], queued: 0 },
    { lock: 'jobs/c', state: 'held', holders: [{ client_id: 'w-9' }], queued: 7 },
    { lock: 'jobs/d', state: 'held', holders: [{ client_id: 'w-5' }], queued: 0 },
  ];
  const waiter = (position: number) => ({
    position,
    client_id: `waiter-${position}`,
    priority: 0,
    via: 'websocket',
    queued_at: '2026-12-01T19:00:00.000Z',
    wait_until: '2026-12-01T20:00:00.000Z',
  });
  const client = {
    listed: [] as string[],
    closed: false,
    async list(prefix: string) {
      client.listed.push(prefix);
      return locks.filter((l) => l.lock.startsWith(prefix));
    },
    async inspect(name: string) {
      const l = locks.find((x) => x.lock === name);
      return {
        ...l,
        waiters: Array.from({ length: Math.min(l?.queued ?? 0, 100) }, (_, i) => waiter(i + 1)),
      };
    },
    async listSessions() {
      if (sessions instanceof Error) throw sessions;
      return sessions;
    },
    close() {
      client.closed = true;
    },
  };
  return client;
}

describe('locks and sessions', () => {
  it('the most contended locks are the listing’s longest queues; the longest are inspected', async () => {
    const v = await gatherLocks(fakeClient([]) as unknown as LockClient, 'jobs/');
    expect(v.contended).toEqual([
      { lock: 'jobs/c', state: 'held', holder: 'w-9', queued: 7 },
      { lock: 'jobs/a', state: 'held', holder: 'w-1', queued: 2 },
    ]);
    expect({ total: v.total, held: v.held, queued: v.queued, truncated: v.truncated }).toEqual({
      total: 4,
      held: 3,
      queued: 9,
      truncated: false,
    });
    expect(v.queues.map((q) => [q.lock, q.queued, q.waiters.length])).toEqual([
      ['jobs/c', 7, 5],
      ['jobs/a', 2, 2],
    ]);
  });

  it('live sessions by state, or unavailable when the admin route is refused', async () => {
    const sessions = [{ state: 'alive' }, { state: 'alive' }, { state: 'grace' }, { state: 'expired' }];
    expect(await gatherSessions(fakeClient(sessions) as unknown as LockClient)).toEqual({
      count: 3,
      by_state: { alive: 2, grace: 1, expired: 1 },
    });
    expect(
      await gatherSessions(fakeClient(new UnauthorizedError('Forbidden')) as unknown as LockClient),
    ).toEqual({
      unavailable: expect.stringMatching(/not allowed/),
    });
    expect(
      await gatherSessions(fakeClient(new UnavailableError('latchkey is down')) as unknown as LockClient),
    ).toEqual({ unavailable: 'latchkey is down' });
  });
});

describe('latchkey top against a deployed endpoint (CloudWatch and the client stubbed)', () => {
  it('--once --json: one object, the region from the endpoint, sessions unavailable without the admin route', async () => {
    const client = fakeClient(new UnauthorizedError('User is not authorized'));
    const cw = fakeCloudWatch(CW_RESULTS, 100);
    const regions: string[] = [];
    const written: string[] = [];
    await runTop(
      {
        globals: () => ({ endpoint: 'https://abc123.execute-api.eu-west-1.amazonaws.com', json: true }),
        client: () => client as unknown as LockClient,
        cloudWatch: async (region) => {
          regions.push(region);
          return cw;
        },
        write: (text) => written.push(text),
      },
      { everyMs: 2_000, once: true, json: true, prefix: 'jobs/', windowMs: 300_000, namespace: PROD },
    );
    expect(regions).toEqual(['eu-west-1']);
    expect(cw.inputs).toHaveLength(1);
    expect(cw.closed).toBe(true);
    expect(client.closed).toBe(true);
    expect(client.listed).toEqual(['jobs/']);
    expect(written).toHaveLength(1);
    const out = JSON.parse(written[0] as string) as TopSnapshot;
    expect(out).toMatchObject({
      endpoint: 'https://abc123.execute-api.eu-west-1.amazonaws.com',
      source: 'cloudwatch',
      region: 'eu-west-1',
      window_ms: 300_000,
      operations: [
        { operation: 'acquire', per_second: 2.2 },
        { operation: 'release', per_second: 1 },
      ],
      contended: [{ lock: 'jobs/c', queued: 7 }, { lock: 'jobs/a' }],
      sessions: {
        opened_per_second: 0.1,
        live: null,
        live_unavailable: expect.stringMatching(/not allowed/),
      },
    });
  });

  it('--json, refreshed: a failed refresh is a line of its own on stdout, as errorJson writes it', async () => {
    const client = fakeClient([]);
    client.list = async () => {
      throw new UnavailableError('DynamoDB is unavailable (TimeoutError); retry shortly', 503);
    };
    const written: string[] = [];
    const ran = runTop(
      {
        globals: () => ({ endpoint: 'https://abc123.execute-api.eu-west-1.amazonaws.com', json: true }),
        client: () => client as unknown as LockClient,
        cloudWatch: async () => fakeCloudWatch(CW_RESULTS, 100),
        write: (text) => {
          written.push(text);
          if (written.length === 2) throw new Error('enough'); // ends the view
        },
        errorJson: (error) => ({ error: { code: 'X', message: (error as Error).message } }),
      },
      { everyMs: 10, once: false, json: true, prefix: '', windowMs: 300_000, namespace: PROD },
    );
    await expect(ran).rejects.toThrow('enough');
    for (const line of written)
      expect(JSON.parse(line)).toEqual({
        at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
        error: { code: 'X', message: 'DynamoDB is unavailable (TimeoutError); retry shortly' },
      });
  });

  it('--region wins over the endpoint’s; the human view names every part', async () => {
    const written: string[] = [];
    const regions: string[] = [];
    await runTop(
      {
        globals: () => ({
          endpoint: 'https://abc123.execute-api.eu-west-1.amazonaws.com',
          region: 'us-east-2',
        }),
        client: () => fakeClient([{ state: 'alive' }]) as unknown as LockClient,
        cloudWatch: async (region) => {
          regions.push(region);
          return fakeCloudWatch(CW_RESULTS, 100);
        },
        write: (text) => written.push(text),
      },
      { everyMs: 2_000, once: true, json: false, prefix: '', windowMs: 300_000, namespace: PROD },
    );
    expect(regions).toEqual(['us-east-2']);
    const text = written.join('\n');
    expect(text).toMatch(/CloudWatch Latchkey\/Latchkey-prod in us-east-2, the 5m to \d\d:\d\d UTC/);
    expect(text).toMatch(/^acquire +granted +2\.00 +600$/m);
    expect(text).toMatch(/^acquire +12\.5ms +250ms +660$/m);
    expect(text).toMatch(/contention {2}granted 2\.00\/s {2}queued 0\.20\/s/);
    expect(text).toMatch(/^jobs\/c +held +w-9 +7$/m);
    expect(text).toMatch(/jobs\/c: 7 queued\n +1\. waiter-1/);
    expect(text).toMatch(/… and 2 more/);
    expect(text).toMatch(
      /sessions {2}opened 0\.10\/s {2}closed 0\.05\/s {2}expired 0\.00\/s {2}live 1 \(alive 1\)/,
    );
  });

  it('reads the stack’s own namespace: --namespace, the outputs file, LATCHKEY_METRIC_NAMESPACE; none is an error', async () => {
    expect(PROD).toBe(metricNamespaceFor('Latchkey-prod'));
    const byUrl = resolveEndpoints({ endpoint: 'https://abc123.execute-api.eu-west-1.amazonaws.com' }, {});
    expect(topNamespace(PROD, byUrl, { LATCHKEY_METRIC_NAMESPACE: 'Latchkey/other' })).toBe(PROD);
    expect(topNamespace(undefined, byUrl, { LATCHKEY_METRIC_NAMESPACE: PROD })).toBe(PROD);
    // An endpoint alone does not say which stack it is: no guess, a message naming every way.
    expect(() => topNamespace(undefined, byUrl, { LATCHKEY_METRIC_NAMESPACE: '' })).toThrow(
      /--namespace Latchkey\/STACK.*LATCHKEY_METRIC_NAMESPACE.*MetricNamespace output.*--outputs-file/,
    );
    const dir = mkdtempSync(join(tmpdir(), 'latchkey-top-'));
    const outputs = (values: Record<string, string>) => {
      const file = join(dir, `${Object.keys(values).length}.json`);
      writeFileSync(
        file,
        JSON.stringify({
          'Latchkey-prod': { ApiUrl: 'https://abc123.execute-api.eu-west-1.amazonaws.com/', ...values },
        }),
      );
      return resolveEndpoints({ outputsFile: file }, {});
    };
    const fromFile = outputs({ MetricNamespace: PROD });
    expect(topNamespace(undefined, fromFile, {})).toBe(PROD);
    // The file names the endpoint's own stack: a variable left set for another stage does not win.
    expect(topNamespace(undefined, fromFile, { LATCHKEY_METRIC_NAMESPACE: 'Latchkey/Latchkey-dev' })).toBe(
      PROD,
    );
    // A file written before stacks had their own namespace (or by a stack of one's own without the
    // output) says so, rather than reading the shared one, where nothing new arrives.
    expect(() => topNamespace(undefined, outputs({}), {})).toThrow(
      /stack Latchkey-prod has no MetricNamespace output: write the file again.*--namespace/,
    );

    // runTop without one fails before reading CloudWatch (or making a client).
    const cw = fakeCloudWatch(CW_RESULTS, 100);
    const saved = process.env.LATCHKEY_METRIC_NAMESPACE;
    delete process.env.LATCHKEY_METRIC_NAMESPACE;
    try {
      await expect(
        runTop(
          {
            globals: () => ({ endpoint: 'https://abc123.execute-api.eu-west-1.amazonaws.com' }),
            client: () => {
              throw new Error('no client before the namespace is known');
            },
            cloudWatch: async () => cw,
            write: () => undefined,
          },
          { everyMs: 2_000, once: true, json: true, prefix: '', windowMs: 300_000 },
        ),
      ).rejects.toThrow(/metric namespace/);
    } finally {
      if (saved !== undefined) process.env.LATCHKEY_METRIC_NAMESPACE = saved;
    }
    expect(cw.inputs).toHaveLength(0);
  });

  it('render says when no lock has waiters and why live sessions are unavailable', () => {
    const s: TopSnapshot = {
      at: '2026-12-01T19:00:00.000Z',
      endpoint: 'http://127.0.0.1:3000',
      source: 'prometheus',
      window_ms: 2_000,
      requests: [],
      operations: [],
      latency: [],
      contention: [],
      locks: { prefix: 'x/', total: 0, held: 0, queued: 0, truncated: false },
      contended: [],
      queues: [],
      sessions: {
        opened_per_second: 0,
        closed_per_second: 0,
        expired_per_second: 0,
        live: null,
        live_unavailable: 'not allowed',
      },
    };
    const text = render(s);
    expect(text).toMatch(/local \/metrics, rates over 2\.0s|local \/metrics, rates over 2s/);
    expect(text).toContain('(no requests in the window)');
    expect(text).toContain("locks under 'x/': 0 listed");
    expect(text).toContain('(no lock has waiters)');
    expect(text).toContain('live: unavailable (not allowed)');
  });
});

describe('Refreshing (the live session count, read in the background)', () => {
  it('waits for the first load only, then answers the last one and loads again after its interval', async () => {
    let loads = 0;
    let release: (() => void) | undefined;
    const r = new Refreshing(async () => {
      loads++;
      if (loads === 2) await new Promise<void>((resolve) => (release = resolve));
      return loads;
    }, 0);
    expect(await r.get()).toBe(1);
    // A second load starts and hangs: the first value is answered meanwhile, and no third starts.
    expect(await r.get()).toBe(1);
    expect(await r.get()).toBe(1);
    expect(loads).toBe(2);
    release?.();
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(await r.get()).toBe(2);
  });

  it('no new load within its interval', async () => {
    let loads = 0;
    const r = new Refreshing(async () => ++loads, 60_000);
    r.kick();
    expect(await r.get()).toBe(1);
    expect(await r.get()).toBe(1);
    expect(loads).toBe(1);
  });
});
