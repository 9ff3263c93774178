/**
 * Lock commands with the queue behind them, for every entry point (HTTP,
 * WebSocket): a waiting acquire joins the queue, a release hands the lock
 * straight to the next waiter, and a refusal that finds a free lock with
 * waiters serves them at once instead of waiting for the notifier.
 */
import { createHash, randomUUID } from 'node:crypto';
import { LatchkeyError } from '../core/errors';
import {
  type AcquireCommand,
  type AcquireOutcome,
  grantRequestOf,
  liveHolder,
  queuedCount,
  type ReleaseCommand,
  type RenewCommand,
  requestKey,
} from '../core/lock';
import { duplicateOf, enqueueSteps, PRIORITY, queueOrder, type Waiter } from '../core/queue';
import { withSessionLease } from '../core/session';
import type { LockStore } from '../store/lock-store';
import type { QueueStore } from '../store/queue-store';
import type { Handoff } from './handoff';
import type { Sessions } from './sessions';

export interface WaitOptions {
  /** How long the caller waits for the lock, in ms; 0 means do not queue. */
  readonly waitMs: number;
  readonly priority?: number | undefined;
  /** Push the grant to this WebSocket connection; without it the caller polls (HTTP waits). */
  readonly connectionId?: string | undefined;
}

export type AcquireResult =
  | { readonly kind: 'done'; readonly outcome: AcquireOutcome }
  /** `position`: 1-based place in the queue. */
  | { readonly kind: 'queued'; readonly waiter: Waiter; readonly position: number };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class LockService {
  constructor(
    readonly locks: LockStore,
    readonly queue: QueueStore,
    readonly handoff: Handoff,
    private readonly sessions: Sessions,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Acquires at once, or (with a wait) joins the queue; a free lock with nobody queued costs one write. */
  async acquire(asked: AcquireCommand, wait?: WaitOptions): Promise<AcquireResult> {
    // A lock tied to a session lives as long as the session: its own lease is only a backstop.
    const cmd = withSessionLease(asked);
    if (!wait || wait.waitMs <= 0) return { kind: 'done', outcome: await this.tryAcquire(cmd) };
    // A grant tied to a session is checked again when it lands; refuse a dead session before queuing.
    if (cmd.sessionId !== undefined) await this.sessions.live(cmd.sessionId, cmd.clientId);
    const requestId = cmd.requestId ?? randomUUID();
    const withId = { ...cmd, requestId };
    for (let attempt = 0; attempt < 4; attempt++) {
      const now = this.clock();
      const waiter = newWaiter(withId, wait, now);
      // Queue first: a waiting acquire expects a held lock, and this way contention costs no refused write.
      const queued = await this.queue.transact(cmd.name, enqueueSteps(waiter, now), now);
      // Refused by the waiter item alone: this request already sits at that very place (a retry within
      // the same millisecond), or, vanishingly rarely, another one does and a later millisecond will do.
      if (queued.ok || !queued.lockRefused) {
        const joined = await this.joined(waiter, withId);
        if (joined) return joined;
        // Joined, and already gone from the queue (served, or removed): never queue the request again.
        if (queued.ok) return { kind: 'done', outcome: await this.tryAcquire(withId) };
        await sleep(1); // another request holds that very place: a later millisecond will do
        continue;
      }
      const old = queued.lockOld;
      // Refused because the lock is free with nobody queued, or is ours, or this request was served.
      const outcome = await this.tryAcquire(withId);
      if (outcome.acquired || outcome.holder?.clientId === cmd.clientId) return { kind: 'done', outcome };
      if (old && liveHolder(old, now)?.clientId === cmd.clientId) return { kind: 'done', outcome };
    }
    throw new LatchkeyError(
      'UNAVAILABLE',
      'the lock changed under every attempt to queue; retry',
      undefined,
      50,
    );
  }

  async release(cmd: ReleaseCommand) {
    const outcome = await this.locks.release(cmd);
    if (outcome.remaining === 0 && outcome.queued > 0) await this.handoff.serve(cmd.name);
    return outcome;
  }

  async renew(cmd: RenewCommand) {
    try {
      return await this.locks.renew(cmd);
    } catch (error) {
      // A lapsed lease may have waiters the timer has not served yet.
      if (error instanceof LatchkeyError && error.code === 'LEASE_EXPIRED')
        await this.handoff.serve(cmd.name);
      throw error;
    }
  }

  /**
   * Waits for a queued HTTP waiter's grant by reading the lock item (strongly
   * consistent) with backoff from 20 to 250 ms; at its deadline it leaves the
   * queue. Only HTTP waits poll, at most 25 s; WebSocket waiters get a push.
   */
  async awaitGrant(waiter: Waiter): Promise<AcquireOutcome> {
    let delay = 20;
    for (;;) {
      const left = waiter.deadline - this.clock();
      if (left > 0) await sleep(Math.min(delay, left));
      const granted = await this.grantFor(waiter);
      if (granted) return granted;
      delay = Math.min(delay * 1.5, 250);
      if (this.clock() < waiter.deadline) continue;
      if (await this.handoff.leave(waiter.lock, waiter, this.clock())) break;
      // Gone from the queue at the last moment: served, unless it was removed.
      const late = await this.grantFor(waiter);
      if (late) return late;
      break;
    }
    const item = await this.locks.get(waiter.lock);
    const now = this.clock();
    const holder = liveHolder(item, now);
    return {
      acquired: false,
      lock: waiter.lock,
      holder: holder && { clientId: holder.clientId, expiresAt: holder.expiresAt },
      queued: queuedCount(item),
      retryAfterMs: holder ? holder.expiresAt - now : 50,
    };
  }

  /** Leaves the queue of `lock` for the waiters of one connection (all of them, or one request). */
  async cancel(lock: string, connectionId: string, requestId?: string): Promise<number> {
    const snapshot = await this.queue.read(lock, 1000);
    const mine = snapshot.waiters.filter(
      (w) => w.connectionId === connectionId && (requestId === undefined || w.requestId === requestId),
    );
    let removed = 0;
    for (const w of mine) if (await this.handoff.leave(lock, w, this.clock())) removed++;
    return removed;
  }

  /**
   * Where a waiter that just joined stands. A retry of a waiting acquire
   * (same request_id) that found its first attempt still queued, or already
   * served, leaves again and follows that attempt: one request, one grant.
   */
  private async joined(waiter: Waiter, cmd: AcquireCommand): Promise<AcquireResult | undefined> {
    const head = await this.queue.upTo(waiter.lock, waiter.order);
    if (head.waiters.at(-1)?.requestKey !== waiter.requestKey) return undefined; // not ours at that place
    const original = duplicateOf(waiter, head.lock, head.waiters);
    if (original === undefined) return { kind: 'queued', waiter, position: head.waiters.length };
    await this.handoff.leave(waiter.lock, waiter, this.clock());
    if (original === 'served') return { kind: 'done', outcome: await this.tryAcquire(cmd) };
    const position = head.waiters.findIndex((w) => w.order === original.order) + 1;
    return { kind: 'queued', waiter: { ...waiter, order: original.order }, position };
  }

  private async tryAcquire(cmd: AcquireCommand): Promise<AcquireOutcome> {
    const outcome =
      cmd.sessionId === undefined
        ? await this.locks.acquire(cmd)
        : await this.sessions.acquire({ ...cmd, sessionId: cmd.sessionId });
    if (outcome.acquired || outcome.holder || outcome.queued === 0) return outcome;
    // Free but promised to waiters that nobody has served yet (a lease just lapsed): serve them now.
    await this.handoff.serve(cmd.name);
    return outcome;
  }

  private async grantFor(waiter: Waiter): Promise<AcquireOutcome | undefined> {
    const item = await this.locks.get(waiter.lock);
    const now = this.clock();
    const holder = liveHolder(item, now);
    if (!holder || grantRequestOf(item) !== waiter.requestKey || holder.clientId !== waiter.clientId)
      return undefined;
    return { acquired: true, grant: holder, replayed: false, remainingMs: holder.expiresAt - now };
  }
}

export function newWaiter(
  cmd: AcquireCommand & { requestId: string },
  wait: WaitOptions,
  now: number,
): Waiter {
  const priority = wait.priority ?? PRIORITY.default;
  const key = requestKey(cmd.clientId, cmd.requestId);
  return {
    lock: cmd.name,
    // The tie-breaker comes from the request, so a retry in the same millisecond lands on the same
    // place and DynamoDB refuses the second waiter item outright.
    order: queueOrder(priority, now, tieBreaker(key)),
    clientId: cmd.clientId,
    ttlMs: cmd.ttlMs,
    requestId: cmd.requestId,
    requestKey: key,
    deadline: now + wait.waitMs,
    priority,
    arrivedAt: now,
    connectionId: wait.connectionId,
    ...(cmd.sessionId === undefined ? {} : { sessionId: cmd.sessionId }),
  };
}

const tieBreaker = (key: string) => createHash('sha256').update(key).digest('hex').slice(0, 12);
