/**
 * Which locks this function instance has lately seen contended: a waiter joined through it, or a
 * release found waiters. A release of such a lock reads its queue first and releases and grants
 * the next waiter in one transaction (two calls), where a release that finds waiters only after
 * writing serves them with two more (three calls); a lock not seen contended is released in its
 * one write. Only a hint for choosing between two correct paths: a wrong guess costs one read.
 * Per instance (Lambda keeps an instance warm between requests), bounded, and forgetful.
 */
import type { Clock } from './clock';

/** How long a lock seen contended is still taken to be. */
const REMEMBER_MS = 60_000;
/** The most locks remembered (the oldest go first). */
const CAPACITY = 10_000;

export class ContentionMemory {
  private readonly seen = new Map<string, number>();

  constructor(private readonly clock: Pick<Clock, 'now'>) {}

  saw(lock: string): void {
    this.seen.delete(lock);
    this.seen.set(lock, this.clock.now());
    if (this.seen.size > CAPACITY) {
      const oldest = this.seen.keys().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
  }

  forget(lock: string): void {
    this.seen.delete(lock);
  }

  likely(lock: string): boolean {
    const at = this.seen.get(lock);
    if (at === undefined) return false;
    if (this.clock.now() - at <= REMEMBER_MS) return true;
    this.seen.delete(lock);
    return false;
  }
}
