/**
 * Time as the services see it: the server's clock and a way to wait. The
 * functions use the system's; the simulation injects a virtual clock so
 * that every wait, lease and deadline runs on simulated time.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms))),
};
