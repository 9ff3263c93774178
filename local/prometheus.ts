/**
 * The local stack's `GET /metrics`: the functions' own metric records (the EMF lines Powertools
 * writes, shared/metrics.ts), parsed back and kept as Prometheus series, so what a scrape shows is
 * exactly what CloudWatch would get on AWS.
 *
 * - A `Count` metric is a counter, `latchkey_<name>_total`, with the EMF dimensions as labels
 *   (`operation`, `outcome`); each EMF value adds to it.
 * - A `Milliseconds` metric is a histogram in seconds, `latchkey_<name>_seconds` (Prometheus' base
 *   unit), and QueueDepth (a count that is a distribution, not a total) a histogram of waiters.
 *
 * Written by hand rather than with prom-client: the series are created from EMF documents at run
 * time, the output must not mix in a process-wide default registry, and the text format
 * (version 0.0.4) for counters and histograms is a few lines.
 */
import { METRICS, type MetricName } from '../lambdas/shared/metric-catalog';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Histogram buckets: seconds for durations, waiters for queue depth. */
const SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const DEPTH_BUCKETS = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];
/** Count metrics that are distributions (each value a size), not amounts to add up. */
const DISTRIBUTIONS = new Set<string>(['QueueDepth']);

interface Counter {
  value: number;
}
interface Histogram {
  readonly counts: number[];
  sum: number;
  count: number;
}
interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'histogram';
  readonly buckets: readonly number[];
  readonly series: Map<string, { labels: Record<string, string>; data: Counter | Histogram }>;
}

const snake = (name: string) => name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase();
const escapeLabel = (value: string) =>
  value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
const escapeHelp = (value: string) => value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const labelText = (labels: Record<string, string>) => {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return pairs.length ? `{${pairs.join(',')}}` : '';
};
const number = (n: number) => (Number.isInteger(n) ? String(n) : String(Number(n.toPrecision(12))));

interface EmfDocument {
  readonly _aws?: {
    readonly CloudWatchMetrics?: readonly {
      readonly Dimensions?: readonly (readonly string[])[];
      readonly Metrics?: readonly { readonly Name?: string; readonly Unit?: string }[];
    }[];
  };
  readonly [key: string]: unknown;
}

export class PrometheusRegistry {
  private readonly families = new Map<string, Family>();
  /** EMF lines that could not be read (should stay 0). */
  rejected = 0;

  /** Adds what one EMF line records. */
  ingest(line: string): void {
    let doc: EmfDocument;
    try {
      doc = JSON.parse(line) as EmfDocument;
    } catch {
      this.rejected++;
      return;
    }
    for (const directive of doc._aws?.CloudWatchMetrics ?? []) {
      const keys = [...new Set((directive.Dimensions ?? []).flat())];
      const labels: Record<string, string> = {};
      for (const key of keys) {
        const value = doc[key];
        if (typeof value === 'string') labels[snake(key)] = value;
      }
      for (const { Name, Unit } of directive.Metrics ?? []) {
        if (!Name) continue;
        const raw = doc[Name];
        const values = (Array.isArray(raw) ? raw : [raw]).filter((v): v is number => typeof v === 'number');
        for (const value of values) this.observe(Name, Unit ?? 'None', labels, value);
      }
    }
  }

  private observe(name: string, unit: string, labels: Record<string, string>, value: number): void {
    const family = this.family(name, unit);
    const key = JSON.stringify(labels);
    let series = family.series.get(key);
    if (!series) {
      const data: Counter | Histogram =
        family.type === 'counter' ? { value: 0 } : { counts: family.buckets.map(() => 0), sum: 0, count: 0 };
      series = { labels, data };
      family.series.set(key, series);
    }
    if (family.type === 'counter') {
      (series.data as Counter).value += value;
      return;
    }
    const h = series.data as Histogram;
    const v = unit === 'Milliseconds' ? value / 1000 : value;
    family.buckets.forEach((bound, i) => {
      if (v <= bound) h.counts[i] = (h.counts[i] ?? 0) + 1;
    });
    h.sum += v;
    h.count++;
  }

  private family(name: string, unit: string): Family {
    const existing = this.families.get(name);
    if (existing) return existing;
    const spec = (METRICS as Record<string, { help: string } | undefined>)[name as MetricName];
    const help = spec?.help ?? name;
    const base = `latchkey_${snake(name)}`;
    const family: Family =
      unit === 'Milliseconds'
        ? { name: `${base}_seconds`, help, type: 'histogram', buckets: SECONDS_BUCKETS, series: new Map() }
        : DISTRIBUTIONS.has(name)
          ? { name: base, help, type: 'histogram', buckets: DEPTH_BUCKETS, series: new Map() }
          : { name: `${base}_total`, help, type: 'counter', buckets: [], series: new Map() };
    this.families.set(name, family);
    return family;
  }

  /** The Prometheus text exposition format (0.0.4) of everything recorded so far. */
  render(): string {
    const lines: string[] = [];
    const families = [...this.families.values()].sort((a, b) => a.name.localeCompare(b.name));
    for (const family of families) {
      lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`, `# TYPE ${family.name} ${family.type}`);
      const series = [...family.series.values()].sort((a, b) =>
        labelText(a.labels).localeCompare(labelText(b.labels)),
      );
      for (const { labels, data } of series) {
        if (family.type === 'counter') {
          lines.push(`${family.name}${labelText(labels)} ${number((data as Counter).value)}`);
          continue;
        }
        const h = data as Histogram;
        family.buckets.forEach((bound, i) => {
          lines.push(
            `${family.name}_bucket${labelText({ ...labels, le: number(bound) })} ${h.counts[i] ?? 0}`,
          );
        });
        lines.push(`${family.name}_bucket${labelText({ ...labels, le: '+Inf' })} ${h.count}`);
        lines.push(`${family.name}_sum${labelText(labels)} ${number(h.sum)}`);
        lines.push(`${family.name}_count${labelText(labels)} ${h.count}`);
      }
    }
    return lines.length ? `${lines.join('\n')}\n` : '';
  }
}
