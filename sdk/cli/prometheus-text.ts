/**
 * The Prometheus text exposition format (0.0.4), read back: what `latchkey top` needs of the local
 * stack's `GET /metrics` (local/prometheus.ts writes it): samples by name and labels, counter
 * increases between two scrapes, and histogram quantiles the way PromQL's `histogram_quantile`
 * computes them (linear interpolation within the bucket the rank falls in).
 */

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** One scrape: its samples, and when it was taken (ms, a monotonic clock). */
export interface Scrape {
  readonly samples: readonly Sample[];
  readonly at: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?/gy;

const unescapeLabel = (value: string) =>
  value.replace(/\\(.)/g, (_, c: string) =>
    c === 'n' ? '\n' : c === '\\' ? '\\' : c === '"' ? '"' : `\\${c}`,
  );

function parseValue(text: string): number {
  if (text === '+Inf' || text === 'Inf') return Number.POSITIVE_INFINITY;
  if (text === '-Inf') return Number.NEGATIVE_INFINITY;
  if (text === 'NaN') return Number.NaN;
  const n = Number(text);
  if (text === '' || Number.isNaN(n)) throw new SyntaxError(`not a sample value: '${text}'`);
  return n;
}

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  LABEL.lastIndex = 0;
  let end = 0;
  for (let m = LABEL.exec(text); m; m = LABEL.exec(text)) {
    labels[m[1] as string] = unescapeLabel(m[2] as string);
    end = LABEL.lastIndex;
  }
  if (end !== text.length && text.slice(end).trim() !== '')
    throw new SyntaxError(`cannot read the labels of the metrics line '${line}'`);
  return labels;
}

/** Every sample of a text-format exposition (comments and blank lines skipped); a malformed line throws. */
export function parsePrometheusText(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new SyntaxError(`not a metrics line: '${line}'`);
    samples.push({
      name: m[1] as string,
      labels: parseLabels(m[2] ?? '', line),
      value: parseValue(m[3] as string),
    });
  }
  return samples;
}

/** The labels of a series as one key, e.g. for grouping: `operation=acquire,outcome=granted`. */
export const seriesKey = (labels: Readonly<Record<string, string>>, leave: readonly string[] = []) =>
  Object.keys(labels)
    .filter((k) => !leave.includes(k))
    .sort()
    .map((k) => `${k}=${labels[k]}`)
    .join(',');

/**
 * How much a counter grew from `before` to `after`. A counter that went down was reset (the stack
 * restarted): its whole value counts, as PromQL's `increase` does.
 */
export function counterIncrease(before: number | undefined, after: number): number {
  if (before === undefined) return after;
  return after >= before ? after - before : after;
}

/** The samples of `name`, by series key. */
export function seriesOf(samples: readonly Sample[], name: string): Map<string, Sample> {
  const found = new Map<string, Sample>();
  for (const s of samples) if (s.name === name) found.set(seriesKey(s.labels), s);
  return found;
}

/** Per series of the counter `name`: its increase between the two scrapes. */
export function counterIncreases(
  before: readonly Sample[],
  after: readonly Sample[],
  name: string,
): { labels: Readonly<Record<string, string>>; increase: number }[] {
  const old = seriesOf(before, name);
  return [...seriesOf(after, name)].map(([key, s]) => ({
    labels: s.labels,
    increase: counterIncrease(old.get(key)?.value, s.value),
  }));
}

export interface Bucket {
  /** The bucket's upper bound (`le`); the last is +Inf. */
  readonly le: number;
  /** Observations at most `le` (cumulative). */
  readonly count: number;
}

/**
 * The q-quantile (0..1) of a histogram's cumulative buckets, as PromQL's `histogram_quantile`:
 * NaN without observations, without a +Inf bucket or with fewer than two buckets; the rank found
 * in the +Inf bucket gives the highest finite bound; otherwise linear interpolation between the
 * bucket's lower bound (the previous bound, or 0 for the first bucket) and its upper bound.
 */
export function histogramQuantile(q: number, buckets: readonly Bucket[]): number {
  if (Number.isNaN(q)) return Number.NaN;
  if (q < 0) return Number.NEGATIVE_INFINITY;
  if (q > 1) return Number.POSITIVE_INFINITY;
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  const last = sorted[sorted.length - 1];
  if (!last || last.le !== Number.POSITIVE_INFINITY || sorted.length < 2) return Number.NaN;
  // Counts that go down (a scrape between two bucket updates) are made monotonic, as Prometheus does.
  let max = 0;
  const counts = sorted.map((b) => {
    max = Math.max(max, b.count);
    return max;
  });
  const observations = counts[counts.length - 1] as number;
  if (observations === 0) return Number.NaN;
  let rank = q * observations;
  // The first bucket whose count reaches the rank (searching all but the +Inf bucket).
  let b = counts.findIndex((c, i) => i < counts.length - 1 && c >= rank);
  if (b === -1) b = counts.length - 1;
  if (b === counts.length - 1) return (sorted[counts.length - 2] as Bucket).le;
  const end = (sorted[b] as Bucket).le;
  if (b === 0 && end <= 0) return end;
  let start = 0;
  let count = counts[b] as number;
  if (b > 0) {
    start = (sorted[b - 1] as Bucket).le;
    count -= counts[b - 1] as number;
    rank -= counts[b - 1] as number;
  }
  return start + (end - start) * (rank / count);
}

/**
 * Per series of the histogram `name` (its `_bucket` samples, grouped by their labels but `le`):
 * the buckets' increase between the two scrapes (or, without `before`, their totals).
 */
export function histogramIncreases(
  before: readonly Sample[] | undefined,
  after: readonly Sample[],
  name: string,
): { labels: Readonly<Record<string, string>>; buckets: Bucket[]; count: number; sum: number }[] {
  const old = new Map<string, number>();
  for (const s of before ?? [])
    if (s.name.startsWith(name)) old.set(`${s.name}|${seriesKey(s.labels)}`, s.value);
  const grow = (s: Sample) =>
    before === undefined
      ? s.value
      : counterIncrease(old.get(`${s.name}|${seriesKey(s.labels)}`) ?? 0, s.value);
  const groups = new Map<
    string,
    { labels: Record<string, string>; buckets: Bucket[]; count: number; sum: number }
  >();
  const group = (s: Sample) => {
    const key = seriesKey(s.labels, ['le']);
    let g = groups.get(key);
    if (!g) {
      const { le: _, ...labels } = s.labels;
      g = { labels, buckets: [], count: 0, sum: 0 };
      groups.set(key, g);
    }
    return g;
  };
  for (const s of after) {
    if (s.name === `${name}_bucket` && s.labels.le !== undefined)
      group(s).buckets.push({ le: parseValue(s.labels.le), count: grow(s) });
    else if (s.name === `${name}_count`) group(s).count = grow(s);
    else if (s.name === `${name}_sum`) group(s).sum = grow(s);
  }
  return [...groups.values()];
}
