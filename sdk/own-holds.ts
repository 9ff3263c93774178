/**
 * A wait for a lock this very client holds. The service does not queue a client behind its own
 * hold (it would be a wait for itself: `reentrant: true` enters again instead); it answers at once
 * that the lock is held, by this client. Asking again at once would spin until the hold ends, so
 * the wait pauses until the hold is likely over: a release of that lock through this client (two
 * tasks of one process sharing a client: the common case, resumed at once), or the hold's lease
 * end (`retry_after_ms`: a lease this client took elsewhere and forgot), whichever comes first.
 * (A wait kept out by a lock above or below in a hierarchy is queued, never answered so.)
 */
import type { HeldWhenRefused } from './errors';
import { sleep } from './transport';

/** A wait answered at once that this client holds the lock: WsWaiter's answer, for the client to pause on. */
export class OwnHoldError extends Error {
  override name = 'OwnHoldError';
  constructor(
    readonly lock: string,
    /** Until the hold's lease ends (or, for a session's hold, a while). */
    readonly retryAfterMs: number,
    /** The hold, as the refusal named it. */
    readonly held: HeldWhenRefused = {},
  ) {
    super(`lock ${lock} is held by this client itself`);
  }
}

/**
 * Whether a refusal is of the caller's own hold: the service marks it (`holder.mine`), since a
 * client id alone cannot tell (another principal may use the same one, and its wait is queued).
 */
export const isOwnHold = (answer: { holder?: unknown }) =>
  typeof answer.holder === 'object' &&
  answer.holder !== null &&
  (answer.holder as { mine?: unknown }).mine === true;

/** How long an own-hold refusal says the hold lasts (`retry_after_ms`; a second if it does not say). */
export const ownHoldRetryAfterMs = (answer: { retry_after_ms?: unknown }) =>
  typeof answer.retry_after_ms === 'number' ? answer.retry_after_ms : 1_000;

/** One wait's watch on the releases of its lock through its client, from before it asks. */
export interface ReleaseWatch {
  /**
   * Waits until a release of the lock through the client (at once if one came since the watch
   * began: the hold the answer named may be gone already), or `ms`; rejects if `signal` aborts or
   * the client closes.
   */
  pause(ms: number, signal?: AbortSignal): Promise<void>;
  /** Stops watching (after the wait's answer, however it went). */
  end(): void;
}

interface Watch {
  released: boolean;
  wake: (() => void) | undefined;
}

/**
 * The releases made through one client, for its waits paused on its own hold. Kept by lock name
 * only while a wait watches that name: a client releasing other locks all the time (a worker pool)
 * does not wake them.
 */
export class OwnReleases {
  private readonly watching = new Map<string, Set<Watch>>();
  private closed: Error | undefined;

  watch(name: string): ReleaseWatch {
    const watch: Watch = { released: false, wake: undefined };
    const set = this.watching.get(name) ?? new Set<Watch>();
    set.add(watch);
    this.watching.set(name, set);
    return {
      pause: (ms, signal) => this.pause(watch, ms, signal),
      end: () => {
        set.delete(watch);
        if (!set.size && this.watching.get(name) === set) this.watching.delete(name);
      },
    };
  }

  /** A lease of `name` was released (or its release tried) through this client: its watches resume. */
  released(name: string): void {
    for (const watch of this.watching.get(name) ?? []) {
      watch.released = true;
      watch.wake?.();
    }
  }

  /** The client closed: every pause ends with `reason`, now and later. */
  close(reason: Error): void {
    this.closed = reason;
    for (const set of this.watching.values()) for (const watch of set) watch.wake?.();
  }

  private async pause(watch: Watch, ms: number, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    if (this.closed) throw this.closed;
    if (watch.released) return;
    const stop = new AbortController();
    watch.wake = () => stop.abort();
    const onAbort = () => stop.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await sleep(ms, stop.signal);
    } catch {
      // Woken: by the caller's abort (its reason), the client's close, or a release (resume).
      if (signal?.aborted) throw signal.reason;
      if (this.closed) throw this.closed;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      watch.wake = undefined;
    }
  }
}
