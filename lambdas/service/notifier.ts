/**
 * The stream notifier's rules: serves the queue of every lock a batch left
 * free with waiters (a release normally did that already, inline; this is
 * the path for everything else), and has timers look at what will change
 * without a write: the lease of a grant with waiters behind it and the
 * deadline of each waiter (the lock's one timer, core/lock-timer.ts), and
 * the expiry of each new session. Records may arrive twice or late;
 * everything done with them is idempotent. A failure throws, so the batch
 * is retried.
 */
import { intentionTimerAt } from '../core/hierarchy';
import { queuedCount } from '../core/lock';
import { earliest } from '../core/lock-timer';
import { onLockChange } from '../core/queue';
import { countChanges } from './change-metrics';
import type { Clock } from './clock';
import type { Handoff } from './handoff';
import type { LockTimers } from './lock-timers';
import { readChanges, type StreamRecord } from './stream-changes';
import type { Timers } from './timers';

export class Notifier {
  constructor(
    private readonly handoff: Handoff,
    private readonly lockTimers: LockTimers,
    private readonly timers: Timers,
    private readonly clock: Clock,
  ) {}

  async handle(records: readonly StreamRecord[]): Promise<void> {
    countChanges(records);
    const { locks, joined, opened } = readChanges(records);
    // A wait ends at its deadline: the lock's timer looks by then (with the lock's change, if the batch has it).
    const deadlines = new Map<string, number>();
    for (const w of joined) deadlines.set(w.lock, earliest(deadlines.get(w.lock), w.deadline) as number);
    await Promise.all(
      locks.map(async ({ lock, ...images }) => {
        const decision = onLockChange(images, this.clock.now(), this.handoff.isHierarchical(lock));
        // A waiter's record may come in a batch before its lock's (no order between two items):
        // a lock that shows nobody queued leaves the deadline to the look below, which holds only
        // if somebody waits by then.
        const waits = queuedCount(images.after) > 0 ? deadlines.get(lock) : undefined;
        if (waits !== undefined) deadlines.delete(lock);
        const lookBy = earliest(decision.lookBy, waits);
        if (lookBy !== undefined) await this.lockTimers.lookBy(lock, images.after, lookBy);
        if (decision.serve) await this.handoff.serve(lock, 'required');
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
        const lookAgainAt = await this.handoff.wakeBelow(lock, images.after);
        await this.handoff.pruneBelow(lock, images.after);
        if (lookAgainAt !== undefined) await this.timers.schedule(lock, lookAgainAt);
      }),
    );
    await Promise.all([...deadlines].map(([lock, by]) => this.lockTimers.lookBy(lock, undefined, by)));
    // A session ends at its expiry unless heartbeats move it: its timer checks then (and re-arms).
    await Promise.all(opened.map((s) => this.timers.scheduleSession(s.id, s.expiresAt)));
  }
}
