/**
 * The few of the service's metrics `latchkey top` reads, as the service names them
 * (lambdas/shared/metric-catalog.ts, which the client cannot import: it is published from sdk/
 * alone). test/unit/top.test.ts checks these against the catalog.
 */

/**
 * The CloudWatch namespace of a stack deployed before each stack had its own; since, a stack's is
 * `Latchkey/<stack name>` (its MetricNamespace output).
 */
export const NAMESPACE = 'Latchkey';

/** The metrics, with their unit and dimensions as the catalog has them. */
export const TOP_METRICS = {
  Requests: { unit: 'Count', dimensions: ['Operation', 'Outcome'] },
  Latency: { unit: 'Milliseconds', dimensions: ['Operation'] },
  Contention: { unit: 'Count', dimensions: ['Outcome'] },
  SessionsOpened: { unit: 'Count', dimensions: [] },
  SessionsClosed: { unit: 'Count', dimensions: [] },
  SessionsExpired: { unit: 'Count', dimensions: [] },
} as const;
export type TopMetric = keyof typeof TOP_METRICS;

const snake = (name: string) => name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase();

/**
 * The local stack's Prometheus name of a metric (local/prometheus.ts): `latchkey_<snake>_total`
 * for a count, `latchkey_<snake>_seconds` (a histogram) for milliseconds.
 */
export const prometheusName = (metric: TopMetric) =>
  `latchkey_${snake(metric)}_${TOP_METRICS[metric].unit === 'Count' ? 'total' : 'seconds'}`;
