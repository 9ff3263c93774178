/**
 * Durations as people write them: `500ms`, `30s`, `5m`, `1h`, `1.5s`, `1m30s`. A unit is required:
 * a bare `30` could mean 30 ms or 30 s, so it is refused (only `0` is the same in every unit).
 */
const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;

export function parseDuration(text: string): number {
  const trimmed = String(text).trim();
  if (/^0+(\.0+)?$/.test(trimmed)) return 0;
  if (/^\d+(\.\d+)?$/.test(trimmed))
    throw new RangeError(`'${trimmed}' has no unit: give a unit, e.g. 30s or 30000ms (units: ms, s, m, h)`);
  let ms = 0;
  let end = 0;
  PART.lastIndex = 0;
  for (let m = PART.exec(trimmed); m; m = PART.exec(trimmed)) {
    ms += Number(m[1]) * (UNITS[m[2] as string] ?? Number.NaN);
    end = PART.lastIndex;
  }
  if (end === 0 || end !== trimmed.length || !Number.isFinite(ms))
    throw new RangeError(`not a duration: '${text}' (write e.g. 500ms, 30s, 5m, 1h or 1m30s)`);
  return Math.round(ms);
}

/** A duration for people, to a tenth of its unit: 250ms, 1.5s, 5m (never '5.0m'), 2.5h. */
export function formatDuration(ms: number): string {
  if (ms < 999.5) return `${Math.round(ms)}ms`;
  const [size, unit] = ms < 59_950 ? [1_000, 's'] : ms < 3_597_000 ? [60_000, 'm'] : [3_600_000, 'h'];
  return `${(ms / size).toFixed(1).replace(/\.0$/, '')}${unit}`;
}

/**
 * A whole number of milliseconds exactly, in the units parseDuration reads back: 3600000 is `1h`,
 * 7140000 `1h59m`, 59990 `59s990ms`, 0 `0` (for limits, where a rounded figure would mislead).
 */
export function formatExactDuration(ms: number): string {
  let left = Math.round(ms);
  if (left <= 0) return '0';
  const parts: string[] = [];
  for (const [unit, size] of [
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1_000],
    ['ms', 1],
  ] as const) {
    const n = Math.floor(left / size);
    if (n > 0) parts.push(`${n}${unit}`);
    left -= n * size;
  }
  return parts.join('');
}
