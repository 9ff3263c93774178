/**
 * The stream notifier's rules: serves the queue of every lock a batch left
 * free with waiters (a release normally did that already, inline; this is
 * the path for everything else), and arms timers for what will change
 * without a write: the lease of a grant with waiters behind it, the
 * deadline of each WebSocket waiter, and the expiry of each new session.
 * Records may arrive twice or late; everything done with them is
 * idempotent. A failure throws, so the batch is retried.
 */
import { intentionTimerAt } from '../core/hierarchy';
import { onLockChange } from '../core/queue';
import { countChanges } from './change-metrics';
import type { Clock } from './clock';
import type { Handoff, ServeResult } from './handoff';
import { readChanges, type StreamRecord } from './stream-changes';
import type { Timers } from './timers';

export class Notifier {
  constructor(
    private readonly handoff: Handoff,
    private readonly timers: Timers,
    private readonly clock: Clock,
  ) {}

  /** A queue still held after serving it: look again when the lease in the way ends. */
  private async armFor(lock: string, served: ServeResult): Promise<void> {
    if (served.kind === 'held' && served.waiting && served.expiresAt !== undefined)
      await this.timers.schedule(lock, served.expiresAt, served.fence);
  }

  async handle(records: readonly StreamRecord[]): Promise<void> {
    countChanges(records);
    const { locks, joined, opened } = readChanges(records);
    await Promise.all(
      locks.map(async ({ lock, ...images }) => {
        const decision = onLockChange(images, this.clock.now(), this.handoff.isHierarchical(lock));
        if (decision.timer) await this.timers.schedule(lock, decision.timer.at, decision.timer.fence);
        if (decision.serve) await this.armFor(lock, await this.handoff.serve(lock));
        // Waiters kept out by grants below it (hierarchical locks): look again when the first lapses.
        // (Armed already if the batch began with the same one.)
        if (this.handoff.isHierarchical(lock)) {
          const now = this.clock.now();
          const below = intentionTimerAt(images.after, now);
          if (below !== undefined && below !== intentionTimerAt(images.before, now))
            await this.timers.schedule(lock, below);
        }
        // Waits below it that it kept out (hierarchical locks), now that it changed; a lease that
        // keeps them out still is looked at again when it ends.
        const { woken, lookAgainAt } = await this.handoff.wakeBelow(lock, images.after);
        await this.handoff.pruneBelow(lock, images.after);
        for (const { node, served } of woken) await this.armFor(node, served);
        if (lookAgainAt !== undefined) await this.timers.schedule(lock, lookAgainAt);
      }),
    );
    await Promise.all(joined.map((w) => this.timers.schedule(w.lock, w.deadline)));
    // A session ends at its expiry unless heartbeats move it: its timer checks then (and re-arms).
    await Promise.all(opened.map((s) => this.timers.scheduleSession(s.id, s.expiresAt)));
  }
}
