/**
 * What a timer does when it fires: for a lock, serve its queue (a lease
 * ended, a wait's deadline passed) and make sure of the next look (the
 * lock's one timer, core/lock-timer.ts); for a session, end it unless
 * heartbeats moved it. On AWS a timer is an SQS message delayed by whole
 * seconds (at most 15 minutes), so one arrives up to a second early and
 * sleeps the rest; one due later than that goes back with a new delay. A
 * timer that is late or doubled is harmless: acting on it is a conditional
 * handoff, and the next look is armed only where none covers it.
 */
import { metric } from '../shared/metrics';
import type { Clock } from './clock';
import type { Handoff } from './handoff';
import type { Sessions } from './sessions';
import type { TimerMessage, Timers } from './timers';

/** Within this of its due time a timer waits in the function instead of going back to the queue. */
const SLEEP_WITHIN_MS = 1_000;

export class Timekeeper {
  constructor(
    private readonly handoff: Handoff,
    private readonly sessions: Sessions,
    private readonly timers: Timers,
    private readonly clock: Clock,
  ) {}

  async fire(message: TimerMessage): Promise<void> {
    if ('session' in message) return this.fireSession(message.session);
    const wait = message.due_at - this.clock.now();
    if (wait > SLEEP_WITHIN_MS) return this.timers.schedule(message.lock, message.due_at);
    if (wait > 0) await this.clock.sleep(wait);
    metric('TimerLateness', Math.max(0, -wait));
    await this.handoff.serve(message.lock, 'required');
    // Waits below it that it kept out (hierarchical locks): a lease above them may have lapsed.
    const lookAgainAt = await this.handoff.wakeBelow(message.lock);
    if (lookAgainAt !== undefined && lookAgainAt > message.due_at)
      await this.timers.schedule(message.lock, lookAgainAt);
  }

  /** A session's expiry: end it unless a heartbeat moved it, in which case check again then. */
  private async fireSession(id: string): Promise<void> {
    for (let round = 0; round < 2; round++) {
      const due = await this.sessions.dueAt(id);
      if (due === undefined) return; // ended and swept already
      const wait = due - this.clock.now();
      if (wait > SLEEP_WITHIN_MS) return this.timers.scheduleSession(id, due);
      if (wait > 0) await this.clock.sleep(wait);
      if (round === 0) metric('TimerLateness', Math.max(0, -wait));
      if ((await this.sessions.expire(id)) !== undefined) return;
      // A heartbeat landed in the last instant: look again.
    }
    const due = await this.sessions.dueAt(id);
    if (due !== undefined) await this.timers.scheduleSession(id, due);
  }
}
