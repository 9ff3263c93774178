/**
 * The functions' metrics: CloudWatch embedded metric format (EMF) lines written by Powertools for
 * AWS Lambda (Metrics), with the names, units and dimensions of shared/metric-catalog.ts.
 *
 * - `metric(name, value, {Outcome})` records one value; the `Operation` dimension, when the
 *   catalog gives the metric one, comes from the current request context
 *   (shared/request-context.ts), so a service never names it.
 * - `measured(run, outcomeOf)` wraps an entry point's work: it counts `Requests` by operation and
 *   outcome and records `Latency`. `flushMetrics()` writes what was recorded, once per invocation
 *   (the entry points call it last: `instrumented` does both).
 * - The EMF lines go to stdout (CloudWatch Logs turns them into metrics) or, with `setEmfSink`,
 *   wherever the caller wants them: the local stack parses them into its Prometheus endpoint, and
 *   tests check them against the EMF specification.
 *
 * Powertools puts one dimension set in a line, so there is one Powertools instance per set of
 * dimension values (e.g. Operation=acquire,Outcome=granted), each flushed at the end of the
 * invocation. Its default `service` dimension is dropped: the catalog's dimensions are the
 * contract the dashboard and alarms are written against.
 */
import { Console } from 'node:console';
import { Writable } from 'node:stream';
import { Metrics, type MetricUnit } from '@aws-lambda-powertools/metrics';

import { LatchkeyError } from '../core/errors';
import { log } from './log';
import {
  isMetricNamespace,
  METRIC_NAMESPACE,
  METRIC_NAMESPACE_VARIABLE,
  METRICS,
  type MetricName,
  OPERATIONS,
  type Operation,
} from './metric-catalog';
import { currentContext } from './request-context';

type Unit = (typeof MetricUnit)[keyof typeof MetricUnit];

/** Receives each EMF line (one JSON document and a newline). */
export type EmfSink = (line: string) => void;

const toStdout: EmfSink = (line) => {
  process.stdout.write(line);
};
let sink: EmfSink = toStdout;

/** Sends the EMF lines to `to` instead of stdout (undefined: back to stdout). */
export function setEmfSink(to: EmfSink | undefined): void {
  sink = to ?? toStdout;
}

/** Powertools prints each EMF document with `console.log`: this console hands it to the sink. */
const emfConsole = new Console({
  stdout: new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      try {
        sink(chunk.toString());
      } finally {
        done();
      }
    },
  }),
  stderr: process.stderr,
});

/** Powertools' own warnings, as one JSON line like the rest of the functions' logs. */
const warnings = {
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: (...args: unknown[]) =>
    process.stderr.write(`${JSON.stringify({ level: 'warn', metrics: args.map(String).join(' ') })}\n`),
  error: (...args: unknown[]) =>
    process.stderr.write(`${JSON.stringify({ level: 'error', metrics: args.map(String).join(' ') })}\n`),
};

/**
 * The namespace the functions emit into: the stack's (set by the construct); METRIC_NAMESPACE
 * without one (the local stack) or with an invalid one (said once on stderr: a metric in no
 * namespace is lost). Read as each set of dimension values is first recorded, and kept for the
 * life of the process (a function's environment does not change).
 */
export function emittedNamespace(env: Record<string, string | undefined> = process.env): string {
  const configured = env[METRIC_NAMESPACE_VARIABLE];
  if (configured === undefined || configured === '') return METRIC_NAMESPACE;
  if (isMetricNamespace(configured)) return configured;
  if (!warnedNamespace) {
    warnedNamespace = true;
    warnings.warn(
      `${METRIC_NAMESPACE_VARIABLE} ${JSON.stringify(configured)} is not a namespace; using ${METRIC_NAMESPACE}`,
    );
  }
  return METRIC_NAMESPACE;
}
let warnedNamespace = false;

class EmfMetrics extends Metrics {
  constructor(dimensions: Readonly<Record<string, string>>) {
    super({ namespace: emittedNamespace(), logger: warnings });
    // Powertools writes through a console of its own making (stdout); ours goes to the sink.
    (this as unknown as { console: Console }).console = emfConsole;
    this.clearDefaultDimensions();
    // As default dimensions they survive Powertools' early flush at 100 values of one metric.
    if (Object.keys(dimensions).length > 0) this.setDefaultDimensions({ ...dimensions });
  }

  /** A line without dimensions says so with one empty dimension set (`[[]]`), as EMF defines. */
  override serializeMetrics(): ReturnType<Metrics['serializeMetrics']> {
    const emf = super.serializeMetrics();
    for (const directive of emf._aws.CloudWatchMetrics) {
      const sets = directive.Dimensions as string[][];
      if (sets.length === 0) sets.push([]);
    }
    return emf;
  }
}

/** One Powertools instance per set of dimension values; each keeps what was recorded until a flush. */
const byDimensions = new Map<string, EmfMetrics>();

const KNOWN = new Set<string>(OPERATIONS);

/** The catalog's operation for the current request context, if it has one (a health check has none). */
export function currentOperation(): Operation | undefined {
  const operation = currentContext()?.operation;
  if (operation === undefined) return undefined;
  return KNOWN.has(operation) ? (operation as Operation) : undefined;
}

/**
 * Records one value of a catalog metric, inside a request context (an entry point's invocation;
 * elsewhere nothing is recorded). A metric counted by operation needs a context whose operation
 * the catalog knows; one counted by outcome needs `Outcome`.
 */
export function metric(
  name: MetricName,
  value: number,
  dimensions: { readonly Outcome?: string } = {},
): void {
  // Only inside an invocation, which flushes (tests and the simulation drive services without one).
  if (!currentContext()) return;
  const spec = METRICS[name];
  const values: Record<string, string> = {};
  for (const dimension of spec.dimensions) {
    const v = dimension === 'Operation' ? currentOperation() : dimensions.Outcome;
    if (!v) return;
    values[dimension] = v;
  }
  if (!Number.isFinite(value)) return;
  const key = JSON.stringify(values);
  let metrics = byDimensions.get(key);
  if (!metrics) {
    metrics = new EmfMetrics(values);
    byDimensions.set(key, metrics);
  }
  metrics.addMetric(name, spec.unit as Unit, Math.max(0, value));
}

/** Writes every value recorded since the last flush: one EMF line per set of dimension values. */
export function flushMetrics(): void {
  for (const metrics of byDimensions.values()) {
    if (metrics.hasStoredMetrics()) metrics.publishStoredMetrics();
  }
}

/** The outcome of a failed request: its error code (anything unexpected is INTERNAL). */
export const errorOutcome = (error: unknown): string =>
  error instanceof LatchkeyError ? error.code : 'INTERNAL';

/**
 * Runs an entry point's work in the current request context and counts it: `Requests` by operation
 * and `outcomeOf` its answer (or the error code it throws), and its `Latency`; and logs one
 * `request` line with the outcome.
 */
export async function measured<T>(run: () => Promise<T>, outcomeOf: (result: T) => string): Promise<T> {
  const started = performance.now();
  let outcome = 'INTERNAL';
  try {
    const result = await run();
    outcome = outcomeOf(result);
    return result;
  } catch (error) {
    outcome = errorOutcome(error);
    throw error;
  } finally {
    const latency = performance.now() - started;
    metric('Requests', 1, { Outcome: outcome });
    metric('Latency', latency);
    // One summary line per request (with its context: operation, request_id, principal), for the
    // Contributor Insights rules that rank callers by outcome.
    log('info', 'request', { outcome, latency_ms: Math.round(latency) });
  }
}

/** `measured`, then the invocation's flush (an entry point handling one request). */
export async function instrumented<T>(run: () => Promise<T>, outcomeOf: (result: T) => string): Promise<T> {
  try {
    return await measured(run, outcomeOf);
  } finally {
    flushMetrics();
  }
}

/** For outcome functions: any answer is `ok`. */
export const okOutcome = (): string => 'ok';
