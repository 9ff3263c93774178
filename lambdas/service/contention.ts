/**
 * Which locks this function instance has lately seen contended: a waiter joined through it, or a
 * release found waiters. A release of such a lock reads its queue first and releases and grants
 * the next waiter in one transaction (two calls), where a release that finds waiters only after
 * writing serves them with two more (three calls); a lock not seen contended is released in its
 * one write; and a waiting acquire of a lock not seen contended tries a grant before joining its
 * queue (LockService.grantFirst). Only a hint for choosing between correct paths: a wrong guess
 * costs one read, or one refused transaction.
 * Per instance, bounded, and forgetful (recent.ts).
 */
import type { Clock } from './clock';
import { Recent } from './recent';

/** How long a lock seen contended is still taken to be. */
const REMEMBER_MS = 60_000;
/** The most locks remembered (the oldest go first). */
const CAPACITY = 10_000;

export class ContentionMemory {
  private readonly seen: Recent<true>;

  constructor(clock: Pick<Clock, 'now'>) {
    this.seen = new Recent(clock, REMEMBER_MS, CAPACITY);
  }

  saw(lock: string): void {
    this.seen.set(lock, true);
  }

  forget(lock: string): void {
    this.seen.delete(lock);
  }

  likely(lock: string): boolean {
    return this.seen.get(lock) === true;
  }
}
