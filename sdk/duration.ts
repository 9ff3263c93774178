/** Durations as people write them: `1500` (ms), `250ms`, `30s`, `5m`, `2h`, `1.5s`. */
const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

export function parseDuration(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!match) throw new RangeError(`not a duration: '${text}' (write e.g. 500ms, 30s, 5m, 2h)`);
  const ms = Number(match[1]) * (UNITS[match[2] ?? 'ms'] ?? 1);
  if (!Number.isFinite(ms)) throw new RangeError(`not a duration: '${text}'`);
  return Math.round(ms);
}

export function formatDuration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(ms % 1_000 ? 1 : 0)}s`;
  if (ms < 3_600_000) return `${(ms / 60_000).toFixed(ms % 60_000 ? 1 : 0)}m`;
  return `${(ms / 3_600_000).toFixed(1)}h`;
}
