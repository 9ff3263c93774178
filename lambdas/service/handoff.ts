/**
 * Serving a lock's queue: the one place that hands a free lock to the next
 * waiter. Release calls it inline (the fast path), the stream notifier calls
 * it for every change that leaves a lock free with waiters, and the timer
 * calls it when a lease lapses. All three may run at once: every grant is a
 * conditional transaction, so exactly one wins and the others find the lock
 * held.
 */

import { LatchkeyError } from '../core/errors';
import type { Grant } from '../core/lock';
import {
  handoffSteps,
  orphanRemovalSteps,
  planServe,
  removalSteps,
  resetCountWrite,
  stillWatched,
  undoGrantWrite,
  type Waiter,
} from '../core/queue';
import { errorFrame, grantedFrame, timeoutFrame } from '../core/ws-wire';
import type { LockStore } from '../store/lock-store';
import type { QueueStore } from '../store/queue-store';
import type { Pusher } from './push';

export type ServeResult =
  | { readonly kind: 'granted'; readonly grant: Grant; readonly waiter: Waiter }
  /** Held by someone; `waiting` says whether anyone is queued behind (then a timer is due at `expiresAt`). */
  | { readonly kind: 'held'; readonly expiresAt: number; readonly fence: number; readonly waiting: boolean }
  | { readonly kind: 'idle' }
  /** A timer's grant is over and another took its place (see `serve`). */
  | { readonly kind: 'moved' };

/** Enough rounds to skip a few gone or timed-out waiters; the notifier or timer carries on after that. */
const MAX_ROUNDS = 8;

export class Handoff {
  constructor(
    private readonly locks: LockStore,
    private readonly queue: QueueStore,
    private readonly pusher: Pusher,
    private readonly clock: () => number = Date.now,
  ) {}

  /**
   * Serves the queue of `name`. With `watching` (a timer set for that
   * grant's lease), only while the lock still carries that grant's token:
   * once it moved on, whoever moved it served the queue (a release serves
   * inline) and the new grant has a timer of its own.
   */
  async serve(name: string, watching?: number): Promise<ServeResult> {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const snapshot = await this.queue.read(name);
      const now = this.clock();
      if (round === 0 && watching !== undefined && !stillWatched(snapshot.lock, watching))
        return { kind: 'moved' };
      const plan = planServe(snapshot.lock, snapshot.waiters, now, snapshot.complete);
      for (const waiter of plan.duplicates) await this.leave(name, waiter, now);
      for (const waiter of plan.expired) await this.expire(name, waiter, now);
      if (plan.kind === 'held') {
        const waiting = snapshot.waiters.length > plan.expired.length + plan.duplicates.length;
        return { kind: 'held', expiresAt: plan.expiresAt, fence: plan.fence, waiting };
      }
      if (plan.kind === 'idle') {
        if (plan.countDrift > 0) await this.locks.write(name, resetCountWrite(plan.countDrift));
        if (plan.expired.length + plan.duplicates.length && !snapshot.complete) continue;
        return { kind: 'idle' };
      }
      const { steps, grant } = handoffSteps(plan.head, snapshot.lock, now);
      const result = await this.queue.transact(name, steps, now);
      if (!result.ok) {
        // The session the grant was to be tied to ended: that waiter can hold nothing, so it goes.
        if (result.sessionRefused) await this.dropSessionEnded(name, plan.head, now);
        continue; // otherwise the lock or the waiter changed meanwhile: read again
      }
      if (await this.announce(plan.head, grant)) return { kind: 'granted', grant, waiter: plan.head };
      // Nobody received it: take the grant back and serve the next waiter.
      await this.locks.write(name, undoGrantWrite(grant, plan.head.requestKey, this.clock()));
      if (plan.head.connectionId) await this.forgetConnection(plan.head.connectionId);
    }
    return { kind: 'idle' };
  }

  /** Takes a waiter out of its queue; false if it was no longer there (served or removed already). */
  async leave(name: string, waiter: Pick<Waiter, 'order'>, now: number): Promise<boolean> {
    const result = await this.queue.transact(name, removalSteps(waiter), now);
    if (result.ok) return true;
    if (!result.lockRefused) return false;
    // The lock's count does not include it (the count drifted): remove the item alone.
    return (await this.queue.transact(name, orphanRemovalSteps(waiter), now)).ok;
  }

  /** A connection that is gone: its waiters leave their queues and its item goes. */
  async forgetConnection(connectionId: string): Promise<number> {
    const waiters = await this.queue.waitersOf(connectionId);
    let removed = 0;
    for (const w of waiters) if (await this.leave(w.lock, w, this.clock())) removed++;
    await this.queue.deleteConnection(connectionId);
    return removed;
  }

  private async dropSessionEnded(name: string, waiter: Waiter, now: number): Promise<void> {
    if (!(await this.leave(name, waiter, now)) || !waiter.connectionId) return;
    const ended = new LatchkeyError('SESSION_EXPIRED', `session ${waiter.sessionId} ended while waiting`);
    await this.pusher.push(waiter.connectionId, errorFrame(ended, waiter.requestId));
  }

  private async expire(name: string, waiter: Waiter, now: number): Promise<void> {
    if (!(await this.leave(name, waiter, now))) return;
    if (waiter.connectionId)
      await this.pusher.push(waiter.connectionId, timeoutFrame(name, waiter.requestId));
  }

  /** Tells the waiter; an HTTP waiter polls for its grant, so only a WebSocket waiter can be gone. */
  private async announce(waiter: Waiter, grant: Grant): Promise<boolean> {
    if (!waiter.connectionId) return true;
    const frame = grantedFrame(grant, waiter.requestId, this.clock());
    return (await this.pusher.push(waiter.connectionId, frame)) === 'sent';
  }
}
