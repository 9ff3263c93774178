/** What every benchmark section shares: a quiet, local environment and percentiles. */
process.env.LOG_LEVEL = 'silent';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
process.env.AWS_REGION ??= 'us-east-1';
process.env.AWS_ACCESS_KEY_ID ??= 'local';
process.env.AWS_SECRET_ACCESS_KEY ??= 'local';

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The `p` quantile (0..1) of ascending `sorted`. */
export const percentile = (sorted: readonly number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? Number.NaN;

/**
 * A measurement window: it opens `warmUpMs` from now (calling `onOpen`, to drop what the warm-up
 * counted) and closes `seconds` later (calling `onClose`, to take what the window counted).
 * `deadline` is when the workload should stop; `seconds()` and `contains(at)` describe the window
 * as it actually ran (timers fire late on a busy machine). `stop()` cancels what has not fired.
 */
export function measurementWindow(
  warmUpMs: number,
  seconds: number,
  onOpen: () => void,
  onClose: () => void,
) {
  const start = performance.now();
  let opened = start + warmUpMs;
  let closed = opened + seconds * 1000;
  const openTimer = setTimeout(() => {
    opened = performance.now();
    onOpen();
  }, warmUpMs);
  const closeTimer = setTimeout(
    () => {
      closed = performance.now();
      onClose();
    },
    warmUpMs + seconds * 1000,
  );
  return {
    deadline: start + warmUpMs + seconds * 1000,
    seconds: () => (closed - opened) / 1000,
    contains: (at: number) => at >= opened && at < closed,
    stop() {
      clearTimeout(openTimer);
      clearTimeout(closeTimer);
    },
  };
}
