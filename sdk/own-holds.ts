/**
 * A wait for a lock this very client holds. The service does not queue a client behind its own
 * hold (it would be a wait for itself: `reentrant: true` enters again instead); it answers at once
 * that the lock is held, by this client. Asking again at once would spin until the hold ends, so
 * the wait pauses until the hold is likely over: a release through this client (two tasks of one
 * process sharing a client: the common case, resumed at once), or the hold's lease end
 * (`retry_after_ms`: a lease this client took elsewhere and forgot), whichever comes first.
 */
import { sleep } from './transport';

/** A wait answered at once that this client holds the lock: WsWaiter's answer, for the client to pause on. */
export class OwnHoldError extends Error {
  override name = 'OwnHoldError';
  constructor(
    readonly lock: string,
    /** Until the hold's lease ends (or, for a session's hold, a while). */
    readonly retryAfterMs: number,
  ) {
    super(`lock ${lock} is held by this client itself`);
  }
}

/** Whether a refusal names this client as the holder. */
export const heldByClient = (answer: { holder?: unknown }, clientId: string) =>
  typeof answer.holder === 'object' &&
  answer.holder !== null &&
  (answer.holder as { client_id?: unknown }).client_id === clientId;

/** The releases made through one client, for waits paused on its own hold. */
export class OwnReleases {
  private readonly paused = new Set<() => void>();
  /** Releases through this client so far: a wait notes it before it asks. */
  private count = 0;

  /** A mark to pass to `pause`: a release after it, even before the pause began, resumes at once. */
  mark(): number {
    return this.count;
  }

  /**
   * A lease was released (or its release tried) through this client: every paused wait asks again.
   * Not only those for the same name: in a hierarchy the hold in the way may be a lock above or
   * below; a wait woken for nothing asks once and pauses again.
   */
  released(): void {
    this.count++;
    for (const wake of [...this.paused]) wake();
  }

  /**
   * Resolves at the next release through this client or after `ms`, at once if this client
   * released anything since `since` (the hold the answer named may be gone already); rejects if
   * `signal` aborts.
   */
  async pause(ms: number, since: number, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    if (this.count !== since) return;
    const stop = new AbortController();
    const wake = () => stop.abort();
    this.paused.add(wake);
    const onAbort = () => stop.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await sleep(ms, stop.signal);
    } catch {
      // Woken by a release: resume. Aborted by the caller: its reason.
      if (signal?.aborted) throw signal.reason;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.paused.delete(wake);
    }
  }
}
