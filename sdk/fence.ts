/**
 * The resource side of fencing: remember the highest fencing token seen per
 * lock and refuse any lower one, so a holder that paused past its lease (and
 * lost the lock to a newer holder) cannot write. In memory, for one process;
 * for a shared resource, keep the token in the resource itself (README:
 * "Fenced writes" shows a DynamoDB conditional write doing this).
 */
export class StaleTokenError extends Error {
  override name = 'StaleTokenError';
  constructor(
    readonly lock: string,
    readonly token: number,
    readonly highest: number,
  ) {
    super(`fencing token ${token} for ${lock} is stale: ${highest} was already seen`);
  }
}

export class FenceGuard {
  private readonly highest = new Map<string, number>();

  /** Accepts `token` for `lock` if it is at least the highest seen, and remembers it; else throws. */
  check(lock: string, token: number): void {
    if (!Number.isSafeInteger(token) || token < 1)
      throw new RangeError(
        `not a fencing token: ${String(token)} (FenceGuard.check(lock, token) takes a lease's fencingToken, a positive integer)`,
      );
    const seen = this.highest.get(lock) ?? 0;
    if (token < seen) throw new StaleTokenError(lock, token, seen);
    this.highest.set(lock, token);
  }

  /** Whether `token` would be accepted, without remembering it. */
  accepts(lock: string, token: number): boolean {
    return token >= (this.highest.get(lock) ?? 0);
  }

  highestSeen(lock: string): number | undefined {
    return this.highest.get(lock);
  }
}
