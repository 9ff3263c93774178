/**
 * Serving a lock's queue: the one place that hands a free lock to the next
 * waiter. Release calls it inline (the fast path), the stream notifier calls
 * it for every change that leaves a lock free with waiters, timers call it
 * when a lease lapses, and the sweeper when a waiter's deadline passed. All
 * may run at once: every grant is a conditional transaction, so exactly one
 * wins and the others find the lock held.
 */
import { LatchkeyError } from '../core/errors';
import type { Item } from '../core/expr';
import {
  clearWakeWrite,
  intentionFor,
  keepQueueWrite,
  markedBehindQueue,
  pruneIntentionsWrite,
  WAKE_POLL_MS,
  wakesDue,
  wakeTimerAt,
  yieldToBelow,
} from '../core/hierarchy';
import { liveEntries } from '../core/holders';
import { freeSlotWrite } from '../core/http-wait';
import { connectionRef, httpWaitRef, lockRef, type Step, waiterRef } from '../core/items';
import {
  KNOWN_WAITERS,
  type KnownQueue,
  knownAfterHandoff,
  knownAfterRead,
  knownHandoffSteps,
  knownHead,
} from '../core/known-queue';
import { type Grant, LockAttr, queuedCount, type ReleaseCommand } from '../core/lock';
import { earliest } from '../core/lock-timer';
import {
  handoffSteps,
  leaveSteps,
  MAX_RUN,
  orphanLeaveSteps,
  planRelease,
  planServe,
  type QueuedWaiter,
  resetCountWrite,
  runHandoffSteps,
  takeBackSteps,
  type Waiter,
  type WaitSlot,
  waiterOf,
} from '../core/queue';
import type { EndReason } from '../core/request';
import { errorFrame, grantedFrame, ringFrame, timeoutFrame } from '../core/ws-wire';
import { audit, describeError, log } from '../shared/log';
import { metric } from '../shared/metrics';
import { auditGrant, auditLapse, auditRelease, ownerOfRequestKey } from './audit';
import type { Clock } from './clock';
import type { LockTimers } from './lock-timers';
import { type Paths, SubtreeConflict } from './paths';
import type { Pusher, PushOutcome } from './push';
import { Recent } from './recent';
import { oldAt, type QueueSnapshot, refusedAt, type Storage, type TransactResult } from './storage';
import type { Timers } from './timers';

/** How long a transaction resent while its first attempt runs is given before its outcome is read. */
const IN_PROGRESS_SETTLE_MS = 250;

/**
 * How far a serve read the queue (`readTo` in ServeResult): the order of the last waiter its read
 * saw, or this when it read the whole queue. It ended every waiter it read past its deadline.
 */
export const WHOLE_QUEUE = '\uffff';
const readToOf = (snapshot: { readonly waiters: readonly Waiter[]; readonly complete: boolean }) =>
  snapshot.complete ? WHOLE_QUEUE : snapshot.waiters.at(-1)?.order;
/** Whether a serve that answered `result` read the waiter at `order` (undefined: it cannot tell). */
export const servedThrough = (result: ServeResult, order: string): boolean =>
  result.readTo !== undefined && order <= result.readTo;

export type ServeResult =
  /**
   * Handed on; `waiting`, `lookAt` and `lock` as for `held`: whether anyone is left, the first end
   * of a lease now holding it (new or not) or the first deadline of the waiters left, and the lock
   * item as read before the grant (a grant leaves its timer as it was).
   */
  (
    | {
        readonly kind: 'granted';
        readonly grant: Grant;
        readonly waiter: Waiter;
        readonly lookAt: number | undefined;
        readonly lock: Item | undefined;
        readonly waiting: boolean;
      }
    /**
     * Held (or under lock-delay, or kept out by its hierarchy); `waiting` says whether anyone is
     * queued behind.
     */
    | {
        readonly kind: 'held';
        /**
         * When a timer must look at it again: the lease in the way ends, or the first waiter's deadline
         * passes. Undefined when only a write can change it (a lock held through a session: its end
         * serves the queue) or a timer of its own is armed already.
         */
        readonly lookAt: number | undefined;
        /** The lock item as read: its timer may cover `lookAt` already (core/lock-timer.ts). */
        readonly lock: Item | undefined;
        readonly waiting: boolean;
      }
    | { readonly kind: 'idle' }
  ) & {
    /** How far its last read of the queue reached (readToOf), if it read one. */
    readonly readTo?: string | undefined;
  };

/** A request left its queue without a grant: one `wait-end` event. */
function auditLeft(w: QueuedWaiter & { readonly requestId?: string }, reason: EndReason): true {
  audit('wait-end', {
    lock: w.lock,
    principal: ownerOfRequestKey(w.requestKey),
    client_id: w.clientId,
    ...(w.requestId ? { request_id: w.requestId } : {}),
    ...(w.connectionId === undefined ? {} : { connection_id: w.connectionId }),
    reason,
  });
  return true;
}

/** An exclusive waiter's handoff, shaped like a run's. */
function oneHandoff(head: Waiter, lock: Item | undefined, now: number, writeId: string) {
  const { steps, grant } = handoffSteps(head, lock, now, writeId);
  return { steps, grants: [grant] };
}

/**
 * The earliest deadline of the live WebSocket waiters read: a timer ends that wait then (an HTTP
 * waiter's own request ends its wait).
 */
function firstDeadline(waiters: readonly Waiter[], now: number): number | undefined {
  return earliest(...waiters.flatMap((w) => (w.connectionId && w.deadline > now ? [w.deadline] : [])));
}

/** Where a handoff transaction checks that session `id` is live (-1: nowhere). */
const sessionCheckAt = (steps: readonly Step[], id: string) =>
  steps.findIndex((step) => step.kind === 'check' && step.ref.kind === 'session' && step.ref.session === id);

/** DynamoDB's limit on the items of one transaction. */
const TRANSACTION_ITEMS = 100;
/** How soon a timer looks again at a queue kept out by an ancestor with no room for another grant below. */
const FULL_RETRY_MS = 1_000;

/** How long this instance keeps the waiters a handoff on release read, and for how many locks. */
const KNOWN_FOR_MS = 60_000;
const KNOWN_LOCKS = 1_000;

/** Enough rounds to skip a few gone or timed-out waiters; the notifier or timer carries on after that. */
const MAX_ROUNDS = 8;
/**
 * The waiters one serve reads: it ends those among them past their deadline. One further back is
 * ended by the sweeper (endOverdue), or by a serve once it comes this close.
 */
export const SERVE_READS = 25;

export class Handoff {
  constructor(
    private readonly storage: Storage,
    private readonly paths: Paths,
    private readonly pusher: Pusher,
    private readonly clock: Clock,
    private readonly ids: () => string,
    /** For a queue its hierarchy holds up with nothing else to wake it: a timer of its own. */
    private readonly timers: Timers,
    private readonly lockTimers: LockTimers,
  ) {
    this.known = new Recent(clock, KNOWN_FOR_MS, KNOWN_LOCKS);
  }

  /** The waiters a handoff on release read behind the one it granted, per lock (core/known-queue.ts). */
  private readonly known: Recent<KnownQueue>;

  /** A queue held up with no mark to wake it: looked at again in a while, whoever called serve. */
  private async pollLater(name: string, at: number, lock: Item | undefined): Promise<ServeResult> {
    await this.timers.schedule(name, at);
    return { kind: 'held', lookAt: undefined, lock, waiting: true };
  }

  /**
   * Serves the queue of `name`: hands a free lock to its next waiters, and ends waits past their
   * deadline. Whoever serves, the lock's timer then looks again when the lease in the way (or the
   * new one) ends or the first wait left does, unless it covers that already (no call then).
   *
   * `look`: 'required' (a timer, the notifier: their retry arms it) throws if that look could not
   * be armed; 'best-effort' (a request that served on its way: its own write is done, so its answer
   * must not become an error) logs it, and the stream notifier arms the new lease's end anyway.
   *
   * `seen`: the lock and its queue as the caller just read them (an HTTP wait's poll): the first
   * round plans on that read instead of reading again, if it read as far as a serve reads (the
   * whole queue, or SERVE_READS waiters: the waits it ends and the deadlines it looks at come from
   * there). Every write is conditional on what it planned on, so a read that is out of date is
   * refused, and the next round reads afresh.
   */
  async serve(
    name: string,
    look: 'required' | 'best-effort' = 'best-effort',
    seen?: QueueSnapshot,
  ): Promise<ServeResult> {
    const served = await this.serveQueue(name, seen);
    try {
      await this.lockTimers.afterServe(name, served);
    } catch (error) {
      if (look === 'required') throw error;
      metric('TimerArmFailures', 1);
      log('warn', 'could not arm the lock timer after serving its queue', {
        lock: name,
        ...describeError(error),
      });
    }
    return served;
  }

  private async serveQueue(name: string, seen?: QueueSnapshot): Promise<ServeResult> {
    if (seen && !seen.complete && seen.waiters.length < SERVE_READS) seen = undefined;
    let served: ServeResult = { kind: 'idle' };
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const snapshot = (round === 0 ? seen : undefined) ?? (await this.storage.queue(name, SERVE_READS));
      const now = this.clock.now();
      const plan = planServe(snapshot.lock, snapshot.waiters, now, snapshot.complete);
      for (const waiter of plan.expired) await this.endWait(waiter, 'timeout', now);
      if (plan.kind === 'held') {
        const waiting = snapshot.waiters.length > plan.expired.length;
        const lookAt = earliest(plan.expiresAt, firstDeadline(snapshot.waiters, now));
        return { kind: 'held', lookAt, lock: snapshot.lock, waiting, readTo: readToOf(snapshot) };
      }
      if (plan.kind === 'idle') {
        if (plan.countDrift > 0)
          await this.storage.write({ kind: 'lock', lock: name }, resetCountWrite(plan.countDrift));
        if (plan.expired.length && !snapshot.complete) continue;
        return { kind: 'idle', readTo: readToOf(snapshot) };
      }
      if (this.paths.isHierarchical(name)) {
        const aside = await this.standAside(name, snapshot.lock, plan.head, snapshot.waiters, now);
        if (aside === 'again') continue;
        if (aside) return aside;
      }
      const writeId = this.ids();
      // In a hierarchy the transaction also writes every ancestor: a run of readers is cut to fit.
      const room = TRANSACTION_ITEMS - this.paths.ancestorCount(name);
      let run = plan.run;
      const build = () =>
        plan.head.mode === 'shared'
          ? runHandoffSteps(run, snapshot.lock, now, writeId)
          : oneHandoff(plan.head, snapshot.lock, now, writeId);
      let built = build();
      while (built.steps.length > room && run.length > 1) {
        run = run.slice(0, -1);
        built = build();
      }
      const { steps, grants } = built;
      let result: TransactResult;
      try {
        // A run of readers goes in with its head, as the head's wake mark says (yieldToBelow).
        result = await this.handoffWrite(name, steps, writeId, snapshot.lock, plan.head.arrivedAt);
      } catch (error) {
        // Kept out by its hierarchy: served again when that changes (a mark above it, a timer at
        // the blocking lease's end, or the stream showing the grants below it gone).
        if (error instanceof SubtreeConflict) {
          const kind = intentionFor(plan.head.mode);
          const mark = await this.paths.markWake(name, error.block, kind, this.ids(), plan.head.arrivedAt);
          if (mark === 'gone') continue;
          // The queue may now wait longer than whatever last set the lock item's TTL: keep it as long.
          await this.storage.write(lockRef(name), keepQueueWrite(snapshot.lock, now));
          // No room for another mark on that ancestor: a timer of its own looks again instead.
          if (mark === 'full')
            return this.pollLater(
              name,
              Math.min(error.block.expiresAt ?? Infinity, now + WAKE_POLL_MS),
              snapshot.lock,
            );
          const lookAt = earliest(error.block.expiresAt, firstDeadline(snapshot.waiters, now));
          return { kind: 'held', lookAt, lock: snapshot.lock, waiting: true, readTo: readToOf(snapshot) };
        }
        // An ancestor with as many grants below it as it may record: look again in a while.
        if (error instanceof LatchkeyError && error.code === 'TOO_MANY_HOLDERS')
          return this.pollLater(name, now + FULL_RETRY_MS, snapshot.lock);
        throw error;
      }
      if (!result.ok) {
        // The session a grant was to be held through ended: that waiter can hold nothing, so it goes.
        for (const waiter of run)
          if (
            waiter.tenure.kind === 'session' &&
            refusedAt(result, sessionCheckAt(steps, waiter.tenure.sessionId))
          )
            await this.endWait(waiter, 'session-ended', now);
        continue; // otherwise the lock or a waiter changed meanwhile: read again
      }
      auditLapse(name, snapshot.lock, now);
      let delivered = 0;
      for (const [i, waiter] of run.entries())
        if (await this.delivered(waiter, grants[i] as Grant, writeId, queuedCount(snapshot.lock), now))
          delivered++;
      // Every grant received: done, unless the run filled a transaction (more readers may fit: serve
      // on). One taken back (its connection was gone): serve on.
      if (delivered === run.length) {
        const left = snapshot.waiters.filter((w) => !run.includes(w) && w.deadline > now);
        const lookAt = earliest(
          ...grants.map((g) => (g.held.kind === 'lease' ? g.held.expiresAt : undefined)),
          // Shared holders beside the run (granted before, or in an earlier round): a slot frees then.
          ...liveEntries(snapshot.lock, now).map((e) => e.expiresAt),
          firstDeadline(left, now),
        );
        served = {
          kind: 'granted',
          grant: grants[0] as Grant,
          waiter: plan.head,
          lookAt,
          lock: snapshot.lock,
          waiting: left.length > 0 || !snapshot.complete,
          readTo: readToOf(snapshot),
        };
        if (plan.head.mode !== 'shared' || (run.length === plan.run.length && run.length < MAX_RUN))
          return served;
      }
    }
    // Rounds ran out on a hierarchical lock (its ancestors kept changing): a timer looks again.
    if (served.kind === 'idle' && this.paths.isHierarchical(name))
      return this.pollLater(name, this.clock.now() + WAKE_POLL_MS, undefined);
    return served;
  }

  /**
   * A hierarchical lock free for its queue's head, with waits below it that it kept out and that
   * arrived before that head: they go first (core/hierarchy.ts yieldToBelow). Answers what this
   * serve comes to then (held: looked at again when the head has stood aside long enough, unless
   * the grants below end first, which serves it), 'again' when the lock changed since the read, or
   * undefined: serve the head.
   */
  private async standAside(
    name: string,
    lock: Item | undefined,
    head: Waiter,
    waiters: readonly Waiter[],
    now: number,
  ): Promise<ServeResult | 'again' | undefined> {
    const decision = yieldToBelow(name, lock, head.arrivedAt, now);
    if (decision.kind === 'serve') return undefined;
    if (decision.kind === 'yield') {
      const written = await this.storage.write(lockRef(name), decision.write);
      if (!written.ok) return 'again';
    }
    return {
      kind: 'held',
      lookAt: earliest(decision.until, firstDeadline(waiters, now)),
      lock,
      waiting: true,
    };
  }

  /**
   * Releases `release`'s grant and hands the lock to the head of its queue in one transaction: a
   * contended release in two calls (a read of the queue, then the transaction), where a release
   * that finds waiters and then serves them takes three. The release of a grant such a handoff
   * made here hands on to the next waiter that read found, without reading again, while nothing
   * can have joined ahead of it (core/known-queue.ts): one call. Answers how many waited when it
   * was released (from a read, or at least 1), or undefined (nothing written) when a handoff on
   * release does not apply (core/queue.ts planRelease) or its transaction is refused because the
   * lock or its queue changed since the read: the caller then releases the plain way.
   */
  async releaseToNext(release: ReleaseCommand): Promise<number | undefined> {
    if (this.paths.isHierarchical(release.name)) return undefined;
    const known = this.known.get(release.name);
    this.known.delete(release.name);
    const now = this.clock.now();
    const head = knownHead(known, release, now);
    if (known && head) {
      const writeId = this.ids();
      const { steps, grant } = knownHandoffSteps(head, known, release, now, writeId);
      // Refused (the queue or the lock changed since it was read): read it, as below.
      if ((await this.handoffWrite(release.name, steps, writeId, undefined)).ok) {
        this.known.set(release.name, knownAfterHandoff(known, grant));
        return this.handedOn(release, head, grant, writeId, undefined, now);
      }
    }
    const snapshot = await this.storage.queue(release.name, 1 + KNOWN_WAITERS);
    const at = this.clock.now();
    const first = planRelease(release, snapshot.lock, snapshot.waiters, at);
    if (!first) return undefined;
    const writeId = this.ids();
    const { steps, grant } = handoffSteps(first, snapshot.lock, at, writeId, release);
    // Not applied (refused, or failed and the lock shows it unchanged): the plain release decides.
    // Unknown (failed, and the lock could not be read): UNAVAILABLE, for the caller to retry.
    if (!(await this.handoffWrite(release.name, steps, writeId, snapshot.lock)).ok) return undefined;
    this.known.set(release.name, knownAfterRead(snapshot.lock, snapshot.waiters.slice(1), grant));
    return this.handedOn(release, first, grant, writeId, queuedCount(snapshot.lock), at);
  }

  /** After a handoff on release: tells the waiter (or serves on), and answers how many waited. */
  private async handedOn(
    release: ReleaseCommand,
    head: Waiter,
    grant: Grant,
    writeId: string,
    queued: number | undefined,
    now: number,
  ): Promise<number> {
    auditRelease(release, 0);
    try {
      // Delivered, or taken back from a connection that is gone: then the queue goes on to the next.
      if (!(await this.delivered(head, grant, writeId, queued, now))) {
        this.known.delete(release.name);
        await this.serve(release.name);
      }
    } catch (error) {
      // Released and granted already: the caller's answer is that. A push or take-back that failed
      // leaves the grant to its lease (the expiry timer serves the queue then).
      log('warn', 'a handoff after a release did not finish', {
        lock: release.name,
        ...describeError(error),
      });
    }
    return queued ?? 1;
  }

  /**
   * Runs a handoff transaction whose lock write carries `writeId`, and says whether it was
   * applied. A refusal may be the answer to a second delivery of a transaction the first one
   * applied (the SDK retries a request whose answer was lost): then the lock, as the refusal
   * returns it, carries this write's id, and it counts as written, so its waiter is told. One
   * that failed without an answer (UNAVAILABLE: a conflict, a throttle, an answer that never
   * came) is judged by reading the lock: applied if it carries the id, else not applied (an
   * empty refusal: read again). If the lock cannot be read either, the error stands.
   */
  private async handoffWrite(
    name: string,
    steps: Step[],
    writeId: string,
    seen: Item | undefined,
    /** When the waiters it serves arrived (their head): ancestors may stand aside for them. */
    arrivedAt?: number,
  ): Promise<TransactResult> {
    const ours = (lock: Item | undefined) => lock?.[LockAttr.lastWrite] === writeId;
    let result: TransactResult;
    try {
      result = await this.paths.transact(name, steps, {
        seen,
        ...(arrivedAt === undefined ? {} : { arrivedAt }),
      });
    } catch (error) {
      if (!(error instanceof LatchkeyError) || error.code !== 'UNAVAILABLE') throw error;
      // Its first attempt still running (a resend after a lost answer): give it time to land, or
      // the read below may find the lock as before and call a handoff that then lands not applied.
      if ((error.cause as { name?: unknown } | undefined)?.name === 'TransactionInProgressException')
        await this.clock.sleep(IN_PROGRESS_SETTLE_MS);
      for (let attempt = 0; ; attempt++) {
        try {
          return ours(await this.storage.read(lockRef(name))) ? { ok: true } : { ok: false, steps: [] };
        } catch (readError) {
          if (attempt >= 2 || !(readError instanceof LatchkeyError) || readError.code !== 'UNAVAILABLE')
            throw error;
        }
      }
    }
    if (!result.ok && refusedAt(result, 0) && ours(oldAt(result, 0))) return { ok: true };
    return result;
  }

  /**
   * After a handoff: counts and audits it and tells the waiter. True when it
   * has the grant; false when nobody received it (its connection is gone) and
   * the grant was taken back, so the queue is to be served on.
   */
  private async delivered(
    head: Waiter,
    grant: Grant,
    writeId: string,
    /** Waiters queued before it, as read (undefined: the queue was not read). */
    queued: number | undefined,
    now: number,
  ): Promise<boolean> {
    metric('WaitTime', now - head.arrivedAt);
    if (queued !== undefined) metric('QueueDepth', Math.max(0, queued - 1));
    auditGrant('handoff', grant, { request_id: head.requestId, reason: 'next-in-queue' });
    if ((await this.announce(head, grant)) !== 'gone') return true;
    // Nobody received it: take it back, unless it was touched since (then someone has it), and serve on.
    const taken = await this.paths.transact(
      grant.lock,
      takeBackSteps(grant, head, writeId, this.clock.now()),
    );
    if (taken.ok)
      auditGrant('take-back', grant, {
        request_id: head.requestId,
        connection_id: head.connectionId,
        reason: 'connection-gone',
      });
    if (head.connectionId) await this.forgetConnection(head.connectionId);
    return !taken.ok;
  }

  /** Whether `name` lies in a hierarchical namespace. */
  isHierarchical(name: string): boolean {
    return this.paths.isHierarchical(name);
  }

  /** Removes a hierarchical lock's lapsed intentions once too many pile up (core/hierarchy.ts); best effort. */
  async pruneBelow(lock: string, item: Item | undefined): Promise<void> {
    const prune = this.paths.isHierarchical(lock) ? pruneIntentionsWrite(item, this.clock.now()) : undefined;
    // Refused: the intentions changed since; that change's own record looks again.
    if (prune) await this.storage.write(lockRef(lock), prune);
  }

  /**
   * Serves the nodes below `ancestor` whose waits it kept out and no longer does, as its item
   * `after` a change shows it (each serve arms the node's timer): each mark is removed (unless
   * written again since). Answers when to look at `ancestor` again, if ever.
   */
  async wakeBelow(ancestor: string, after?: Item | undefined): Promise<number | undefined> {
    if (!this.paths.isHierarchical(ancestor)) return undefined;
    const item = after ?? (await this.storage.read(lockRef(ancestor)));
    const now = this.clock.now();
    for (const mark of wakesDue(ancestor, item, now)) {
      // Served first, then the mark read is removed: a serve that fails leaves it for the retried
      // batch, and a serve that finds the node still kept out writes a new one, which stays.
      await this.serve(mark.node, 'required');
      await this.storage.write(lockRef(ancestor), clearWakeWrite(mark.attr, mark.value));
    }
    await this.asideForOlderBelow(ancestor, item, now);
    return wakeTimerAt(ancestor, item, now);
  }

  /**
   * Stands aside for waits below `ancestor`, held shared, that its queue alone keeps out and that
   * arrived before the queue's head (core/hierarchy.ts yieldToBelow; a free lock does so as its
   * serve hands it on): a wait below that fits beside its holders need not wait for them to end,
   * behind a newer head that cannot be granted yet. The yield's own stream record serves them (wakeBelow). A head stands
   * aside once (YIELD_MS), so waits below cannot hold it up for longer.
   */
  private async asideForOlderBelow(ancestor: string, item: Item | undefined, now: number): Promise<void> {
    if (!markedBehindQueue(ancestor, item, now)) return;
    try {
      const { lock, waiters } = await this.storage.queue(ancestor, 1);
      const head = waiters[0];
      if (!head) return;
      const decision = yieldToBelow(ancestor, lock, head.arrivedAt, this.clock.now());
      // Refused: the lock changed since the read, and that change's own record looks again.
      if (decision.kind === 'yield') await this.storage.write(lockRef(ancestor), decision.write);
    } catch (error) {
      // Best effort: the wait below is served when the ancestor's holders end, as it was before.
      log('warn', 'could not have a held lock stand aside for older waits below it', {
        lock: ancestor,
        ...describeError(error),
      });
    }
  }

  /**
   * Takes a waiter out of its queue, ending its request; false if it was no
   * longer there (served, or ended already).
   */
  async leave(w: QueuedWaiter, reason: EndReason, now: number): Promise<boolean> {
    const result = await this.storage.transact(leaveSteps(w, reason, now));
    if (result.ok) return auditLeft(w, reason);
    if (!refusedAt(result, 0) || refusedAt(result, 1) || refusedAt(result, 2)) return false;
    // The lock's count does not include it (the count drifted): remove it alone.
    if (!(await this.storage.transact(orphanLeaveSteps(w, reason, now))).ok) return false;
    return auditLeft(w, reason);
  }

  /**
   * Ends the wait queued at `order` on `lock` if its deadline has passed by `now`, and tells it:
   * for a waiter further back than a serve reads (SERVE_READS). True when this ended it.
   */
  async endOverdue(lock: string, order: string, now: number): Promise<boolean> {
    const item = await this.storage.read(waiterRef(lock, order));
    const waiter = item && waiterOf(order, item);
    if (!waiter || waiter.deadline > now) return false;
    return this.endWait(waiter, 'timeout', now);
  }

  /** A connection that is gone: its waiters leave their queues and its item goes. */
  async forgetConnection(connectionId: string): Promise<number> {
    let removed = 0;
    for (const ref of await this.storage.waitersOf(connectionId)) {
      if (ref.kind !== 'waiter') continue;
      const item = await this.storage.read(waiterRef(ref.lock, ref.order));
      const waiter = item && waiterOf(ref.order, item);
      // The index lags: a waiter already served, or moved to another connection by a retry, stays.
      if (!waiter || waiter.connectionId !== connectionId) continue;
      if (await this.leave(waiter, 'gone', this.clock.now())) removed++;
    }
    await this.storage.remove(connectionRef(connectionId));
    return removed;
  }

  /**
   * Ends a wait refused as a deadlock's victim by another request's walk, and tells it `error` (a
   * WebSocket waiter; an HTTP waiter reads its record, ended as a deadlock).
   */
  async endAsDeadlock(waiter: Waiter, error: LatchkeyError, now: number): Promise<void> {
    if (!(await this.leave(waiter, 'deadlock', now))) return;
    if (!waiter.connectionId) return this.ring(waiter);
    await this.pusher.push(waiter.connectionId, errorFrame(error, waiter.requestId));
  }

  /**
   * Ends a waiter's wait and tells it (a WebSocket waiter; an HTTP waiter reads its record). True
   * when this ended it (false: it was no longer queued).
   */
  private async endWait(waiter: Waiter, reason: EndReason, now: number): Promise<boolean> {
    if (!(await this.leave(waiter, reason, now))) return false;
    if (!waiter.connectionId) {
      await this.ring(waiter);
      return true;
    }
    await this.tellEnded({ ...waiter, connectionId: waiter.connectionId }, reason);
    return true;
  }

  /** Tells a WebSocket waiter that its wait ended (it left the queue) for `reason`. */
  async tellEnded(
    waiter: { readonly lock: string; readonly requestId: string; readonly connectionId: string },
    reason: EndReason,
  ): Promise<void> {
    const frame =
      reason === 'session-ended'
        ? errorFrame(
            new LatchkeyError(
              'SESSION_EXPIRED',
              `the session of request ${waiter.requestId} ended while it waited`,
            ),
            waiter.requestId,
          )
        : timeoutFrame(waiter.lock, waiter.requestId);
    await this.pusher.push(waiter.connectionId, frame);
  }

  /** Tells the waiter; an HTTP waiter reads its record, so only a WebSocket waiter can be gone. */
  private async announce(waiter: Waiter, grant: Grant): Promise<PushOutcome> {
    if (!waiter.connectionId) {
      await this.ring(waiter, grant);
      return 'sent';
    }
    return this.pusher.push(waiter.connectionId, grantedFrame(grant, waiter.requestId, this.clock.now()));
  }

  /**
   * Rings an HTTP waiter's doorbell, if it has one (service/relay.ts), after the write that granted
   * or ended it. A ring after a grant carries it, and the waiting function answers with it, reading
   * nothing; its HTTP-wait slot is freed here, after the push, rather than by that function before
   * it answers. Whatever becomes of the push, the record says the same, and the waiting function's
   * next poll finds it (and frees its slot itself: a second free is refused, harmless).
   */
  private async ring(waiter: Waiter, grant?: Grant): Promise<void> {
    if (waiter.bell === undefined) return;
    const slot = grant === undefined ? undefined : waiter.slot;
    const granted =
      grant === undefined ? undefined : { requestId: waiter.requestId, grant, slotFreed: slot !== undefined };
    let pushed: PushOutcome = 'unknown';
    try {
      pushed = await this.pusher.push(waiter.bell, ringFrame(waiter.lock, waiter.order, granted));
    } finally {
      // A relay that is gone got no ring: its wait holds its slot until it has its answer, and frees
      // it then. Any other ring may have arrived, saying the slot is freed here.
      if (slot && pushed !== 'gone') await this.freeSlot(waiter, slot);
    }
  }

  /** Frees a granted HTTP waiter's slot. Best effort, as the waiting function's own free is: a slot not freed is free at its lease's end. */
  private async freeSlot(waiter: Waiter, slot: WaitSlot): Promise<void> {
    try {
      await this.storage.write(httpWaitRef(slot.index), freeSlotWrite(slot.holder));
    } catch (error) {
      log('warn', 'could not free a granted HTTP wait’s slot; it is free at its lease’s end', {
        lock: waiter.lock,
        slot: slot.index,
        ...describeError(error),
      });
    }
  }
}
