/**
 * Keeps a lease alive for withLock: renews at a third of its ttl and aborts
 * `signal` the moment the lease is lost (the service says so) or cannot be
 * confirmed before its local deadline (no answer in time: latchkey or the
 * network is down). After the abort the holder must stop touching what the
 * lock protects.
 */
import { LeaseLostError } from './errors';
import type { Lease } from './lease';
import { lostOnRelease, releaseStateOf, releasesSettled } from './release-state';

export interface LeaseRenewer {
  renew(lease: Lease, options?: { signal?: AbortSignal }): Promise<Lease>;
}

/** Give up this long before the local deadline: the holder needs a moment to stop. */
export const safetyMarginMs = (ttlMs: number) => Math.min(1_000, Math.max(50, Math.floor(ttlMs / 10)));

/** `marginMs`: how long before the local deadline to give up (default `safetyMarginMs`). */
export function keepLease(
  client: LeaseRenewer,
  lease: Lease,
  marginMs = safetyMarginMs(lease.ttlMs),
): { signal: AbortSignal; stop(): void } {
  const controller = new AbortController();
  // Ends a renewal still in flight (and its retries) once the lease is lost or no longer kept.
  const renewing = new AbortController();
  const margin = marginMs;
  let stopped = false;
  let renewTimer: NodeJS.Timeout | undefined;
  let deadlineTimer: NodeJS.Timeout | undefined;

  const end = () => {
    stopped = true;
    clearTimeout(renewTimer);
    clearTimeout(deadlineTimer);
  };
  /** Whether the holder released the lease itself (asked: its answer decides): then nothing is lost. */
  const released = () => {
    if (releaseStateOf(lease) === 'done') end();
    return releaseStateOf(lease) !== 'none';
  };
  const lose = (error: LeaseLostError) => {
    if (stopped) return;
    // A refusal while the holder's own release is on its way may be that release's doing: its
    // answer decides (applied: nothing was lost; failed: this loss stands).
    if (releaseStateOf(lease) === 'asked') {
      void releasesSettled(lease).then(() => lose(error));
      return;
    }
    if (released()) return;
    end();
    renewing.abort(error);
    controller.abort(error);
  };
  const armDeadline = (delay = lease.remainingMs() - margin) => {
    clearTimeout(deadlineTimer);
    deadlineTimer = setTimeout(
      () => {
        // Its answer decides: then the deadline is judged again.
        if (releaseStateOf(lease) === 'asked') return void releasesSettled(lease).then(() => armDeadline());
        lose(
          new LeaseLostError(`lease on ${lease.name} could not be confirmed before its deadline`, undefined, {
            lock: lease.name,
          }),
        );
      },
      Math.max(0, delay),
    );
  };
  const renewSoon = (delay: number) => {
    renewTimer = setTimeout(async () => {
      if (stopped) return;
      if (released()) {
        if (!stopped) renewSoon(Math.min(lease.ttlMs / 10, 1_000)); // asked: look again soon
        return;
      }
      try {
        await client.renew(lease, { signal: renewing.signal });
        if (stopped) return;
        armDeadline();
        renewSoon(lease.ttlMs / 3);
      } catch (error) {
        if (error instanceof LeaseLostError) return lose(error);
        // Transient (the SDK already retried): try again soon, while the deadline timer still runs.
        if (!stopped) renewSoon(Math.min(lease.ttlMs / 10, 1_000));
      }
    }, delay);
  };
  armDeadline();
  renewSoon(lease.ttlMs / 3);
  return {
    signal: controller.signal,
    stop() {
      end();
      renewing.abort(new Error('the lease is no longer kept'));
    },
  };
}

/**
 * Why the held leases cannot vouch for a callback that just settled: the keepers' signal aborted
 * (its reason), a release of a lease by the callback found it ended already, or a lease's local
 * deadline passed without its keeper noticing (its timers could not run: the event loop was
 * blocked). A release still on its way is waited for first: its answer decides. Undefined while
 * every lease still holds (or was released by the callback).
 */
export async function lostWhileHeld(
  leases: readonly Lease[],
  signal: AbortSignal,
): Promise<LeaseLostError | undefined> {
  if (leases.some((l) => releaseStateOf(l) === 'asked')) {
    for (const l of leases) await releasesSettled(l);
    // A keeper that deferred a refused renewal to that answer decides now (promise callbacks all
    // run before an immediate): a failed release leaves that loss standing, and aborts the signal.
    await new Promise((resolve) => setImmediate(resolve));
  }
  const refused = leases.map(lostOnRelease).find((e) => e !== undefined);
  if (refused) return refused;
  if (signal.aborted)
    return signal.reason instanceof LeaseLostError
      ? signal.reason
      : new LeaseLostError(
          `lease lost: ${String((signal.reason as Error | undefined)?.message ?? signal.reason)}`,
          undefined,
          { cause: signal.reason, lock: leases.length === 1 ? leases[0]?.name : undefined },
        );
  const past = leases.find((l) => releaseStateOf(l) !== 'done' && l.remainingMs() <= 0);
  return past
    ? new LeaseLostError(
        `lease on ${past.name} passed its deadline before the callback settled (nothing could renew it: was the event loop blocked?)`,
        undefined,
        { lock: past.name },
      )
    : undefined;
}
