/**
 * Makes sure a timer looks at a lock by a given time, with one timer per
 * contended lock rather than one per grant (core/lock-timer.ts): the
 * notifier asks for a look at a lease's end or a waiter's deadline, and
 * whoever served the queue (a timer that fired among them) for the next one.
 */

import type { Item } from '../core/expr';
import { lockRef } from '../core/items';
import { armTimerWrite, timerCovers } from '../core/lock-timer';
import type { Clock } from './clock';
import type { ServeResult } from './handoff';
import type { Storage } from './storage';
import type { Timers } from './timers';

export class LockTimers {
  constructor(
    private readonly storage: Storage,
    private readonly timers: Timers,
    private readonly clock: Clock,
  ) {}

  /**
   * A timer looks at `lock` by `by`: the lock's timer, as `seen` shows it,
   * does already (no call at all), or one is sent for `by` and recorded on
   * the lock item. The message goes first, so a recorded time always has a
   * message behind it; if the record is refused (another timer covers it
   * now, or nobody waits any more), the message fires, serves the queue, and
   * finds itself covered.
   */
  async lookBy(lock: string, seen: Item | undefined, by: number): Promise<void> {
    const now = this.clock.now();
    if (timerCovers(seen, by, now)) return;
    await this.timers.schedule(lock, by);
    await this.storage.write(lockRef(lock), armTimerWrite(by, now));
  }

  /**
   * After serving a queue: its timer looks again when the lease in the way ends or a wait does
   * (for a lock just handed on: the new lease's end, or the first deadline of the waiters left).
   */
  async afterServe(lock: string, served: ServeResult): Promise<void> {
    if (served.kind !== 'idle' && served.waiting && served.lookAt !== undefined)
      await this.lookBy(lock, served.lock, served.lookAt);
  }
}
