/**
 * Lock commands with the queue behind them, for every entry point (HTTP,
 * WebSocket): a waiting acquire joins the queue, a release hands the lock
 * straight to the next waiter, and a refusal that finds a free lock with
 * waiters serves them at once instead of waiting for the notifier.
 *
 * One request, one outcome. A waiting request has a record (core/request.ts)
 * written in the same transaction as its place in the queue; every attempt
 * of it (a retry with the same request_id, from any entry point) follows
 * that record: still queued, it waits on the original place; granted, it is
 * answered with that grant; ended, it is answered "not acquired" again. A
 * wait that ends leaves the queue in one transaction with its record, so
 * nothing of it can be granted afterwards, and a grant that slipped in
 * first is the answer.
 */
import { createHash } from 'node:crypto';
import { openAndOwnedBy } from '../core/connection';
import { cycleFrom, deadlockError, keeperSteps, MAX_HOLDING, type Search, victimOf } from '../core/deadlock';
import { LatchkeyError } from '../core/errors';
import type { Item } from '../core/expr';
import type { SubtreeBlock } from '../core/hierarchy';
import { liveEntries, MAX_DROP } from '../core/holders';
import { nextPoll, POLL_QUEUE_LIMIT, type PollMemory, pollCap, sightOf, track } from '../core/http-poll';
import { connectionRef, lockRef, requestRef, type Step, updateStep } from '../core/items';
import {
  type AcquireCommand,
  type AcquireOutcome,
  clockFencedGrant,
  forceReleaseWrite,
  type Grant,
  gcFromHeld,
  granted,
  grantedAgain,
  granteeOf,
  holdsAs,
  type LockMode,
  leaseEnd,
  liveGrants,
  liveHolder,
  notAlreadyServed,
  type Protocol,
  pinnedGrant,
  queuedCount,
  queueIsEmpty,
  type Refusal,
  type ReleaseCommand,
  type ReleaseOutcome,
  type RenewCommand,
  refusal,
  requestKey,
  requestKeyOf,
  type Tenure,
  throughSession,
  withOptional,
} from '../core/lock';
import {
  acquireProtocolIn,
  decideAcquireIn,
  reenterProtocolIn,
  releaseProtocolIn,
  renewProtocolIn,
} from '../core/modes';
import {
  ENQUEUE_STEP,
  enqueueSteps,
  identityOf,
  moveDeliverySteps,
  PRIORITY,
  type QueueLimits,
  queueIsFull,
  queueOrder,
  type Waiter,
  type WaitSlot,
} from '../core/queue';
import {
  claimStep,
  type EndReason,
  endedStep,
  grantedAtOnceStep,
  type RequestIdentity,
  type RequestRecord,
  requestOf,
} from '../core/request';
import { sessionGrantSteps } from '../core/session';
import { forceReleaseSharedWrite, pinnedSharedGrants, pruneLapsedWrite } from '../core/shared-lock';
import { audit, describeError, log } from '../shared/log';
import { countAcquire } from './acquire-metrics';
import { auditGrant, auditLapse, auditRelease } from './audit';
import type { Clock } from './clock';
import type { Connections } from './connections';
import { ContentionMemory } from './contention';
import type { Deadlocks } from './deadlocks';
import type { Handoff } from './handoff';
import type { HeldSlot } from './http-waits';
import { type Paths, SubtreeConflict } from './paths';
import type { Doorbell, Listener } from './relay';
import type { Sessions } from './sessions';
import { connectionOfSession } from './sessions';
import { oldAt, refusedAt, type Storage } from './storage';

export interface WaitOptions {
  /** How long the caller waits for the lock, in ms; 0 means do not queue. */
  readonly waitMs: number;
  readonly priority?: number | undefined;
  /** Push the grant to this WebSocket connection; without it the caller polls (HTTP waits). */
  readonly connectionId?: string | undefined;
  /** An HTTP wait's doorbell (service/relay.ts): rung when it is granted or ended. */
  readonly bell?: string | undefined;
  /** The HTTP-wait slot a wait with a doorbell holds: its granter frees it (core/queue.ts WaitAttr.slot). */
  readonly slot?: WaitSlot | undefined;
}

/** A request waiting in a queue: where, until when, and who it is. */
export interface PendingWait extends RequestIdentity {
  readonly order: string;
  readonly deadline: number;
  readonly requestId: string;
  /** Where its grant is pushed (its record says); undefined for an HTTP wait. */
  readonly connectionId: string | undefined;
  /** The doorbell this HTTP wait joined with, if any: its function listens there. */
  readonly bell?: string | undefined;
  /** How the attempt asks to hold the lock; unknown for a cancel (then only the connection tells). */
  readonly tenure?: Tenure;
  /** The mode it asks for, which a refusal is explained for (a cancel's: unknown, exclusive). */
  readonly mode?: LockMode;
}

/** How many times conclude follows a request that retries keep moving to other connections. */
const MAX_MOVES_FOLLOWED = 3;

/** A request still queued under another attempt (a retry moved it): this one's outcome is unknown. */
const stillQueuedElsewhere = (wait: PendingWait) =>
  new LatchkeyError(
    'UNAVAILABLE',
    `request ${wait.requestId} is still waiting for ${wait.lock} through another attempt of it (a retry moved it to another connection): send it again for its outcome`,
    undefined,
    100,
  );

/** The check, inside a wait's transaction, that the connection it names is open and its caller's. */
const connectionCheck = (w: Waiter): Step[] =>
  w.connectionId === undefined
    ? []
    : [{ kind: 'check', ref: connectionRef(w.connectionId), condition: openAndOwnedBy(w.owner) }];

/** Not acquired because the request's wait ended (rather than refused at once): `reason` says how. */
export type Ended = Refusal & { readonly ended?: EndReason };

export type AcquireResult =
  | { readonly kind: 'done'; readonly outcome: AcquireOutcome | Ended }
  /** Joined the queue (or was found there by a retry): `position` tells its place, for one read. */
  | { readonly kind: 'queued'; readonly wait: PendingWait };

const ATTEMPTS = 4;

/** What a force-release did: ended that grant, found none, or found the lock moved on (nothing forced). */
export type ForceReleaseOutcome =
  | { readonly kind: 'released'; readonly released: Grant; readonly fencedTo: number }
  | { readonly kind: 'not-held' }
  | { readonly kind: 'moved-on' };

export class LockService {
  constructor(
    private readonly storage: Storage,
    private readonly paths: Paths,
    readonly handoff: Handoff,
    private readonly sessions: Sessions,
    private readonly connections: Connections,
    private readonly clock: Clock,
    private readonly ids: () => string,
    private readonly limits: QueueLimits,
    private readonly deadlocks: Deadlocks,
    /** This instance's relay (service/relay.ts); without one, HTTP waits only poll. */
    private readonly doorbell?: Doorbell,
  ) {
    this.contended = new ContentionMemory(clock);
  }

  /** Locks this instance lately saw contended: their releases hand over in one transaction. */
  private readonly contended: ContentionMemory;

  /**
   * An acquire whose grant is pushed over a WebSocket connection, which must
   * be the caller's own (its principal opened it); with `ephemeral`, the lock
   * is held through that connection and released when it closes. The request
   * is answered at once (granted, queued, or busy) whatever its wait. A wait
   * checks the connection inside the transaction that queues (or grants) it,
   * so joining a queue costs that one write; an ephemeral lock, or a try, reads it.
   */
  async acquireByPush(
    cmd: AcquireCommand,
    wait: WaitOptions & { readonly connectionId: string },
    ephemeral: boolean,
  ): Promise<AcquireResult> {
    if (!ephemeral && wait.waitMs > 0) return this.acquire(cmd, wait);
    const connection = await this.connections.owned(wait.connectionId, cmd.owner);
    const tenure = ephemeral ? throughSession(await this.sessions.ofConnection(connection)) : cmd.tenure;
    return this.acquire({ ...cmd, tenure }, wait);
  }

  /** A queued request's 1-based place in its queue (one strongly consistent count of the waiters ahead). */
  position(w: Pick<Waiter, 'lock' | 'order'>): Promise<number> {
    return this.storage.position(w.lock, w.order);
  }

  /**
   * Ends the grant of `name`, whoever holds it (an administrator's route),
   * moving the fencing counter one past it, and hands the lock to the next
   * waiter. Only the grant it read (or, with `onlyToken`, only that one): if
   * the lock moves on meanwhile (released, re-granted), nothing is forced and
   * the answer says so, so an innocent later holder is never ended.
   */
  async forceRelease(
    name: string,
    by: string,
    reason: string,
    onlyToken?: number,
  ): Promise<ForceReleaseOutcome> {
    const now = this.clock.now();
    const seen = await this.storage.read(lockRef(name));
    const holder = liveHolder(seen, now);
    if (!holder) return this.forceReleaseShared(name, seen, by, reason, onlyToken);
    if (onlyToken !== undefined && holder.fencingToken !== onlyToken) return { kind: 'moved-on' };
    // One write (stamped, so a second delivery of it, refused, counts as applied); refused: moved on.
    const forced = await this.paths.run(
      name,
      {
        first: forceReleaseWrite(holder, by, reason, now),
        onRefused: () => ({ outcome: false }),
        onWritten: () => true,
      },
      this.ids,
      { seen },
    );
    if (!forced) return { kind: 'moved-on' };
    auditGrant(
      'force-release',
      { ...holder, lock: name },
      { reason, by, fenced_to: holder.fencingToken + 1 },
    );
    await this.handoff.serve(name);
    return { kind: 'released', released: holder, fencedTo: holder.fencingToken + 1 };
  }

  /** Force-release of a lock held in shared mode: every live holder, or only the one with `onlyToken`. */
  private async forceReleaseShared(
    name: string,
    seen: Item | undefined,
    by: string,
    reason: string,
    onlyToken: number | undefined,
  ): Promise<ForceReleaseOutcome> {
    const first = liveGrants(seen, this.clock.now()).find(
      (g) => onlyToken === undefined || g.fencingToken === onlyToken,
    );
    if (liveEntries(seen, this.clock.now()).length === 0) {
      // Free, yet promised to waiters nobody may have served (a force-release sent again after its
      // answer was lost finds its own release): serve them.
      if (queuedCount(seen) > 0) await this.handoff.serve(name);
      return { kind: 'not-held' };
    }
    if (!first) return { kind: 'moved-on' };
    let fencedTo = 0;
    // Every live holder (or the one asked for), MAX_DROP per write, each write pinned on what it read.
    let item = seen;
    for (let round = 0; round < 100; round++) {
      const now = this.clock.now();
      const live = liveEntries(item, now);
      const ending = (
        onlyToken === undefined ? live : live.filter((e) => e.fencingToken === onlyToken)
      ).slice(0, MAX_DROP);
      if (ending.length === 0) break;
      const result = await this.paths.write(name, forceReleaseSharedWrite(ending, item, by, reason, now), {
        seen: item,
      });
      if (!result.ok) {
        if (round === 0) return { kind: 'moved-on' };
        item = result.old;
        continue;
      }
      fencedTo = typeof result.item.fence === 'number' ? result.item.fence : 0;
      const ended = liveGrants(item, now).filter((g) =>
        ending.some((e) => e.fencingToken === g.fencingToken),
      );
      for (const grant of ended)
        auditGrant('force-release', { ...grant, lock: name }, { reason, by, fenced_to: fencedTo });
      item = result.item;
    }
    await this.handoff.serve(name);
    return { kind: 'released', released: { ...first, lock: name }, fencedTo };
  }

  /**
   * Acquires at once, or (with a wait) joins the queue; a free lock with nobody queued costs one write.
   * A fresh grant or re-entry (not a replay of an earlier one) is audited here, once.
   */
  async acquire(cmd: AcquireCommand, wait?: WaitOptions, grantFirst = true): Promise<AcquireResult> {
    this.paths.checkDepth(cmd.name);
    if (!wait || wait.waitMs <= 0)
      return this.counted(cmd, { kind: 'done', outcome: await this.tryAcquire(cmd) });
    const withId = { ...cmd, requestId: cmd.requestId ?? this.ids() };
    const first = grantFirst ? await this.grantFirst(withId, wait) : undefined;
    if (first?.kind === 'done') return this.counted(cmd, first);
    const result =
      first?.kind === 'record'
        ? await this.follow(withId, wait, first.record)
        : await this.queueOrGrant(withId, wait);
    return this.counted(cmd, result);
  }

  /**
   * A waiting acquire answered at once, without a wait's cost: granted a free lock, or a retry
   * answered by its request's record (granted or ended). Undefined if it must wait: the lock is
   * not free now (nothing changed; the caller queues) or the request is still queued. An HTTP
   * wait asks this before it takes a slot, which an answer at once never needs.
   */
  async acquireAtOnce(cmd: AcquireCommand, wait: WaitOptions): Promise<AcquireResult | undefined> {
    this.paths.checkDepth(cmd.name);
    const withId = { ...cmd, requestId: cmd.requestId ?? this.ids() };
    const first = await this.grantFirst(withId, wait);
    if (first?.kind === 'done') return this.counted(cmd, first);
    if (first?.kind === 'record' && requestOf(first.record)?.state !== 'queued')
      return this.counted(cmd, await this.follow(withId, wait, first.record));
    return undefined;
  }

  /**
   * Counts an acquire's result, and audits a fresh grant or re-entry (not a wait's grant, which its
   * handoff audited). A retry of a request already granted by its own write is audited again,
   * marked `replayed`: its first attempt's answer was lost after the write, maybe before its line
   * was written (a function that timed out or crashed between the two), and a trail may repeat a
   * grant but must not miss one.
   */
  private counted(cmd: AcquireCommand, result: AcquireResult): AcquireResult {
    countAcquire(result);
    const outcome = result.kind === 'done' ? result.outcome : undefined;
    if (outcome?.acquired && (!outcome.replayed || outcome.retried)) {
      const { grant } = outcome;
      // A grant re-entered since its (fresh) first answer is still logged as the grant it was.
      const reentered = grant.reentry > 1 && !outcome.fresh;
      auditGrant(reentered ? 'reenter' : 'grant', grant, {
        reason: reentered ? 'reentrant' : 'acquired',
        ...(grant.reentry > 1 ? { reentry: grant.reentry } : {}),
        ...(cmd.requestId === undefined ? {} : { request_id: cmd.requestId }),
        ...(outcome.retried ? { replayed: true } : {}),
      });
    }
    return result;
  }

  /**
   * A waiting request's first step on a lock likely free (not lately seen contended here; exclusive,
   * outside a hierarchy): its grant and its record in one transaction, with no read first
   * (core/lock.ts clockFencedGrant). Refused by the lock, the refusal's image decides: re-entry,
   * a grant pinned to it (free after all), or undefined: it may not try, or must wait (nothing
   * changed), and it queues as usual.
   */
  private async grantFirst(
    cmd: AcquireCommand & { requestId: string },
    wait: WaitOptions,
  ): Promise<
    { kind: 'done'; outcome: AcquireOutcome } | { kind: 'record'; record: Item | undefined } | undefined
  > {
    const likelyFree =
      wait.waitMs > 0 &&
      cmd.mode !== 'shared' &&
      !this.paths.isHierarchical(cmd.name) &&
      !this.contended.likely(cmd.name);
    if (!likelyFree) return undefined;
    const waiter = newWaiter(cmd, wait, this.clock.now());
    const [record, connection] = [identityOf(waiter), connectionCheck(waiter)];
    const unread = await this.grantInTransaction(cmd, UNREAD, record, connection);
    if (unread.kind !== 'lock') return this.grantedFirst(unread, waiter);
    const decision = decideAcquireIn(cmd, unread.seen, this.clock.now());
    // Held by the caller, re-entrant: re-enter now (a join would be refused too).
    if (decision.kind === 'reenter')
      return { kind: 'done', outcome: await this.reenterChecked(cmd, unread.seen) };
    // Free after all (a lapsed reader's entry, or a counter at the clock's floor): pinned to what the
    // refusal showed. A join would stand beside the lapsed entry and wait for the notifier's serve.
    if (decision.kind !== 'grant') return undefined;
    const pinned = await this.grantInTransaction(cmd, unread.seen, record, connection);
    return pinned.kind === 'lock' ? undefined : this.grantedFirst(pinned, waiter);
  }

  /** grantFirst's answer from a transaction that was not refused by the lock. */
  private async grantedFirst(
    result:
      | { kind: 'granted'; outcome: AcquireOutcome }
      | { kind: 'record'; record: Item | undefined }
      | { kind: 'connection' },
    waiter: Waiter,
  ): Promise<{ kind: 'done'; outcome: AcquireOutcome } | { kind: 'record'; record: Item | undefined }> {
    if (result.kind === 'connection') throw await this.connectionRefused(waiter);
    return result.kind === 'granted' ? { kind: 'done', outcome: result.outcome } : result;
  }

  /** A waiting request queues, unless its lock turns out free (then it is granted at once). */
  private async queueOrGrant(
    cmd: AcquireCommand & { requestId: string },
    wait: WaitOptions,
  ): Promise<AcquireResult> {
    // A grant held through a session is checked again when it lands; refuse a dead session before queuing.
    if (cmd.tenure.kind === 'session')
      await this.sessions.live(cmd.tenure.sessionId, cmd.owner, cmd.clientId);
    /**
     * It queues all the same: the lock is free but kept out by its hierarchy (a holder above it, a
     * grant below it), or the lock changed between the read and the grant (`raced`).
     */
    let keptOut: { seen: Item | undefined } | undefined;
    let raced = false;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      const now = this.clock.now();
      const waiter = newWaiter(cmd, wait, now);
      const connection = connectionCheck(waiter);
      // Queue first: a waiting acquire expects a held lock, and this way contention costs no refused write.
      // A wait that names locks it keeps records that beside each of them (deadlock detection).
      const steps = [
        ...enqueueSteps(waiter, now, this.limits, keptOut),
        ...keeperSteps(waiter),
        ...connection,
      ];
      const queued = await this.storage.transact(steps);
      if (queued.ok) {
        auditWait(waiter);
        this.contended.saw(cmd.name);
        const deadlock = await this.deadlocks.closedBy(waiter);
        const result: AcquireResult = deadlock?.cycle
          ? await this.refuseAsDeadlock(waiter, deadlock)
          : { kind: 'queued', wait: pendingOf(waiter) };
        // Queued beside a lock that may be free: the queue decides, in order, who gets it now.
        if (raced && result.kind === 'queued') await this.serveJoined(cmd.name);
        return result;
      }
      if (connection.length && refusedAt(queued, steps.length - 1))
        throw await this.connectionRefused(waiter);
      // The request already has a record: this is a retry, and the record decides.
      if (refusedAt(queued, ENQUEUE_STEP.record)) return this.follow(cmd, wait, oldAt(queued, 2));
      const overQuota =
        refusedAt(queued, ENQUEUE_STEP.principalQuota) || refusedAt(queued, ENQUEUE_STEP.connectionQuota);
      const tooMany = () => this.tooManyWaiters(waiter, refusedAt(queued, ENQUEUE_STEP.connectionQuota));
      if (!refusedAt(queued, ENQUEUE_STEP.lock)) {
        if (overQuota) throw tooMany();
        // Another request sits at that very place (same millisecond, same tie-breaker): a later ms will do.
        await this.clock.sleep(1);
        continue;
      }
      // The lock may be granted at once, or is the caller's, or already served this request.
      const seen = oldAt(queued, ENQUEUE_STEP.lock);
      const decision = decideAcquireIn(cmd, seen, now);
      // Answered without a write that checked the connection: check it by reading.
      if (connection.length && decision.kind !== 'grant') await this.checkConnection(waiter);
      if (decision.kind === 'answer') {
        // Not grantable and not queued: the queue has no room (else the enqueue would have stood).
        if (!decision.outcome.acquired && queueIsFull(seen, this.limits))
          throw this.queueFull(cmd.name, decision.outcome.retryAfterMs);
        // It would wait, but its principal (or connection) has no room for another waiter.
        if (!decision.outcome.acquired && overQuota) throw tooMany();
        // Lapsed shared holders (of another semaphore N, say) kept it out of the queue: remove them, try again.
        const prune = decision.outcome.acquired ? undefined : pruneLapsedWrite(seen, now);
        if (prune) {
          await this.paths.write(cmd.name, prune, { seen });
          continue;
        }
        // Queuing all the same was refused for the lock's TTL state (a holder through a session came
        // or went): it is held now, so a plain enqueue will stand. A wait is never answered at once.
        if (!decision.outcome.acquired && keptOut) {
          keptOut = undefined;
          raced = false;
          continue;
        }
        return { kind: 'done', outcome: decision.outcome };
      }
      if (decision.kind === 'reenter') return { kind: 'done', outcome: await this.reenterChecked(cmd, seen) };
      const grant = await this.grantInTransaction(cmd, seen, identityOf(waiter), connection).catch(
        (error: unknown) => {
          if (!(error instanceof SubtreeConflict)) throw error;
          return { kind: 'kept-out' as const };
        },
      );
      if (grant.kind === 'kept-out') {
        // Queued already as kept out, yet refused: not for being free (its queue has no room).
        if (keptOut && queueIsFull(seen, this.limits)) throw this.queueFull(cmd.name);
        keptOut = { seen };
        continue;
      }
      if (grant.kind === 'connection') throw await this.connectionRefused(waiter);
      if (grant.kind === 'granted') return { kind: 'done', outcome: grant.outcome };
      if (grant.kind === 'record') return this.follow(cmd, wait, grant.record);
      // The lock changed between the read and the grant (a busy semaphore frees and fills a slot
      // every few ms). Racing again may lose again, every time: queue instead, then serve the queue.
      keptOut = { seen: grant.seen };
      raced = true;
    }
    throw new LatchkeyError(
      'UNAVAILABLE',
      'the lock changed under every attempt to queue; retry',
      undefined,
      50,
    );
  }

  /**
   * Serves the queue a waiter just joined beside a lock that may be free. Best effort: the join's
   * own stream record has the notifier serve it too, so a failure here leaves the wait queued.
   */
  private async serveJoined(name: string): Promise<void> {
    try {
      await this.handoff.serve(name);
    } catch (error) {
      log('warn', 'could not serve the queue just joined; the stream notifier will', {
        lock: name,
        ...describeError(error),
      });
    }
  }

  /**
   * An acquire over HTTP: joins the queue if it must wait, then polls for the outcome (HTTP has no
   * push) for at most this attempt's own wait; when that runs out, the request ends (not acquired,
   * unless a grant slipped in first). A retry of a request queued for a push (a WebSocket wait) is
   * answered at once that it is still queued: its grant goes to its connection, and an HTTP
   * attempt never holds a function for a wait it did not ask for itself.
   */
  async acquireOverHttp(
    cmd: AcquireCommand,
    wait: WaitOptions,
    slot?: HeldSlot,
    /** False once acquireAtOnce found the lock not free: this attempt queues without trying again. */
    grantFirst = true,
  ): Promise<AcquireResult> {
    const until = this.clock.now() + wait.waitMs;
    const polls = wait.connectionId === undefined && wait.waitMs > 0;
    const bell = polls ? this.doorbell?.bell() : undefined;
    const withBell =
      bell === undefined
        ? wait
        : { ...wait, bell, ...(slot ? { slot: { index: slot.index, holder: slot.holder } } : {}) };
    const result = await this.acquire(cmd, withBell, grantFirst);
    if (result.kind === 'done' || result.wait.connectionId !== undefined) return result;
    return { kind: 'done', outcome: await this.awaitGrant(result.wait, until, slot) };
  }

  /**
   * Releases the caller's grant. A lock lately seen contended here is released and handed to its
   * next waiter in one transaction (Handoff.releaseToNext); otherwise one write releases it, and if
   * that finds waiters, the queue is served before answering.
   */
  async release(cmd: ReleaseCommand): Promise<ReleaseOutcome> {
    // A shared grant is released the plain way: the queue is then served (a run of readers, or a writer).
    // So is a grant in a hierarchical namespace: the next waiter's grant may be kept out from above.
    const handed =
      cmd.mode !== 'shared' && !this.paths.isHierarchical(cmd.name) && this.contended.likely(cmd.name)
        ? await this.handoff.releaseToNext(cmd)
        : undefined;
    if (handed !== undefined) {
      this.contended.saw(cmd.name); // still contended: its next release hands on too
      return { lock: cmd.name, remaining: 0, queued: handed };
    }
    const outcome = await this.run(cmd.name, releaseProtocolIn(cmd, this.clock.now()));
    auditRelease(cmd, outcome.remaining, outcome.again);
    // Served again after a release sent again: the first may have failed to serve (its 503).
    if (outcome.remaining === 0 && outcome.queued > 0) {
      this.contended.saw(cmd.name);
      await this.handoff.serve(cmd.name);
    } else if (outcome.remaining === 0) this.contended.forget(cmd.name);
    return outcome;
  }

  async renew(cmd: RenewCommand) {
    try {
      const renewed = await this.run(cmd.name, renewProtocolIn(cmd, this.clock.now()));
      auditGrant('renew', renewed.grant, { reason: 'renewed', ttl_ms: cmd.ttlMs });
      return renewed;
    } catch (error) {
      // A lapsed lease may have waiters the timer has not served yet.
      if (error instanceof LatchkeyError && error.code === 'LEASE_EXPIRED')
        await this.handoff.serve(cmd.name);
      throw error;
    }
  }

  /**
   * Waits for a queued HTTP waiter's outcome. Each poll is one strongly consistent Query of the
   * lock's partition (the lock item and the first waiters): while the waiter's item is there, its
   * record is still queued (both change in one transaction), and the poll tells when to look again
   * (core/http-poll.ts: fast while the lock moves, slowly while a long lease is held, right after
   * the lease ends; the head of a free lock nobody served serves it). Once the item is gone, the
   * record is the answer. At the deadline (or `until`, the end of the attempt's own wait, if
   * sooner) it leaves the queue, unless a grant slipped in first (then that is the answer). Only
   * HTTP waits poll, at most 25 s; WebSocket waiters get a push. A wait that joined with a doorbell
   * (service/relay.ts) is rung when its waiter is granted or ended: the ring cuts its sleep short,
   * and between rings it polls slowly (a ring is a hint; the record is the answer).
   */
  async awaitGrant(
    wait: PendingWait,
    until = wait.deadline,
    slot?: HeldSlot,
  ): Promise<AcquireOutcome | Ended> {
    const listener = wait.bell === undefined ? undefined : this.doorbell?.listen(wait.lock, wait.order);
    try {
      return await this.poll(wait, Math.min(wait.deadline, until), listener, slot);
    } finally {
      listener?.stop();
    }
  }

  private async poll(wait: PendingWait, end: number, listener: Listener | undefined, slot?: HeldSlot) {
    let memory: PollMemory | undefined;
    // One that just joined with a doorbell knows it is queued, so it sleeps before it first looks
    // (as long as the head's longest poll: the head still learns the lease end in time to serve).
    let rung = listener
      ? await listener.wait(this.clock.sleep(Math.min(pollCap(1), end - this.clock.now())))
      : false;
    const recordRef = requestRef(wait.lock, wait.requestKey);
    const stillQueued = (r: RequestRecord | undefined) => r?.state === 'queued' && r.order === wait.order;
    for (;;) {
      // A ring after its grant carries it, as the granter's write made it: that is the answer.
      const pushed = rung ? this.pushedGrant(wait, listener) : undefined;
      if (pushed) {
        // Its granter frees the slot after the ring (unless it did not say so: then this wait does).
        if (pushed.slotFreed) slot?.freedByGranter();
        else await slot?.free();
        return pushed.outcome;
      }
      if (rung) {
        // Any other ring follows its waiter's end (or a grant it did not carry): its record and the
        // lock, read in one call, are the answer, and the HTTP-wait slot is freed beside that read
        // rather than after it. (Should the record still show it queued, a ring not meant for it,
        // it polls on outside the slots: the bound is loose by that one wait.)
        const [[item, lock]] = await Promise.all([
          this.storage.readMany([recordRef, lockRef(wait.lock)]),
          slot?.free(),
        ]);
        const record = requestOf(item);
        if (!stillQueued(record)) return this.answer(wait, record, undefined, lock);
        rung = false;
      }
      const snapshot = await this.storage.queue(wait.lock, POLL_QUEUE_LIMIT);
      const now = this.clock.now();
      const sight = sightOf(snapshot.lock, snapshot.waiters, snapshot.complete, wait.order, now);
      if (sight.present !== true) {
        // Gone from the queue (granted or ended), or further back than one poll reads: the record says.
        const record = requestOf(await this.storage.read(recordRef));
        if (!stillQueued(record)) return this.answer(wait, record, undefined, snapshot.lock);
      }
      if (now >= end) return this.conclude(wait, 'timeout');
      memory = track(memory, sight, now);
      const step = nextPoll(sight, memory, now, end, listener !== undefined);
      if (step.serve) {
        // Free, nobody served it, and this waiter is next: serve it (a conditional handoff), then look.
        memory = { ...memory, servedFence: sight.fence };
        const served = await this.handoff
          .serve(wait.lock, 'best-effort', snapshot)
          .catch((error: unknown) => {
            // Best effort: the expiry timer serves it too, and the next poll looks again.
            if (!(error instanceof LatchkeyError) || error.code !== 'UNAVAILABLE') throw error;
            return undefined;
          });
        // Granted to this very wait by its own handoff: that grant is the answer, no poll needed.
        if (served?.kind === 'granted' && served.waiter.requestKey === wait.requestKey)
          return this.grantedAs(wait, served.grant.fencingToken, served.grant, undefined);
        rung = false;
        continue;
      }
      // A ring cuts the sleep short.
      const sleep = this.clock.sleep(step.delayMs);
      if (listener) rung = await listener.wait(sleep);
      else await sleep;
    }
  }

  /**
   * The answer a ring carried to `wait`: the grant its handoff wrote, for this very request, while
   * it is in force. Answered as of that write, as a read of the record and the lock just after it
   * would answer (a renewal or release since is as much a race as after a read). Undefined when the
   * ring carried none, or one not for this request, or a lease already over: the record decides.
   */
  private pushedGrant(
    wait: PendingWait,
    listener: Listener | undefined,
  ): { outcome: AcquireOutcome; slotFreed: boolean } | undefined {
    const pushed = listener?.takeGranted();
    if (pushed?.requestId !== wait.requestId || pushed.grant.lock !== wait.lock) return undefined;
    const end = leaseEnd(pushed.grant);
    if (end !== undefined && end <= this.clock.now()) return undefined;
    const outcome = this.grantedAs(wait, pushed.grant.fencingToken, pushed.grant, undefined);
    return { outcome, slotFreed: pushed.slotFreed };
  }

  /**
   * A wait that just joined closes a cycle. Its youngest wait is the victim (core/deadlock.ts
   * victimOf): this one leaves the queue and the caller gets 409 DEADLOCK, unless it was granted
   * first; another is ended as a deadlock and told, and this one waits on.
   */
  private async refuseAsDeadlock(w: Waiter, search: Search): Promise<AcquireResult> {
    const at = victimOf(search.cycleWaits);
    const victim = search.cycleWaits[at] as Waiter;
    const error = deadlockError(cycleFrom(search.cycle ?? [], at));
    const wait = pendingOf(w);
    if (victim.lock !== w.lock || victim.order !== w.order) {
      // A younger wait of the cycle is the victim (its own walk may have run before the cycle was whole).
      // This wait is queued either way: a failure to end the other is logged, never this caller's error.
      await this.handoff.endAsDeadlock(victim, error, this.clock.now()).catch((failure: unknown) => {
        if (!(failure instanceof LatchkeyError) || failure.code !== 'UNAVAILABLE') throw failure;
        log('warn', 'could not end a deadlock victim; lease ends and deadlines will', {
          lock: victim.lock,
          ...describeError(failure),
        });
      });
      return { kind: 'queued', wait };
    }
    if (await this.handoff.leave(wait, 'deadlock', this.clock.now())) throw error;
    // Gone already: refused by another walk that found the same cycle (this one names it), or served.
    const record = requestOf(await this.storage.read(requestRef(w.lock, w.requestKey)));
    if (record?.state === 'ended' && record.reason === 'deadlock') throw error;
    return { kind: 'done', outcome: await this.answer(wait, record, w.connectionId) };
  }

  /**
   * Ends a waiting request now (a cancel, or a wait the caller gave up): it
   * leaves the queue, or, if it was granted first, that grant is the answer.
   */
  async conclude(
    wait: PendingWait,
    reason: EndReason,
    /** The attempt that ends it: its connection (undefined: over HTTP); by default, where it waits. */
    askedFrom: { readonly connectionId: string | undefined } = wait,
  ): Promise<AcquireOutcome | Ended> {
    let place = wait;
    for (let moves = 0; moves < MAX_MOVES_FOLLOWED; moves++) {
      if (await this.handoff.leave(place, reason, this.clock.now())) {
        // Ended from elsewhere (an HTTP attempt, a cancel or a try from another connection, or
        // where a retry had moved it): the connection it waited on is told too.
        const { connectionId } = place;
        if (connectionId !== undefined && connectionId !== askedFrom.connectionId)
          await this.handoff.tellEnded({ ...place, connectionId }, reason).catch((error: unknown) =>
            // Ended either way: that attempt reads its record when it asks again.
            log('warn', 'could not tell a moved wait that it ended', {
              lock: wait.lock,
              ...describeError(error),
            }),
          );
        return this.notAcquired(wait, reason);
      }
      // Gone from that place at the last moment: served, ended by someone else, or moved by a retry
      // on another connection (moveDeliverySteps): then it is ended where it is now.
      const record = requestOf(await this.storage.read(requestRef(wait.lock, wait.requestKey)));
      if (record?.state !== 'queued') return this.answer(wait, record);
      place = { ...wait, order: record.order, deadline: record.deadline, connectionId: record.connectionId };
    }
    throw stillQueuedElsewhere(wait);
  }

  /**
   * Cancels a waiting request of the caller (one, by request id), or every
   * wait the caller's client has for `lock`. A request that was granted
   * meanwhile is answered with its grant, which the caller then owns (asked
   * from `connectionId`, if it was held through a connection).
   */
  async cancel(cancel: {
    readonly lock: string;
    readonly owner: string;
    readonly clientId: string;
    readonly requestId?: string | undefined;
    readonly connectionId?: string | undefined;
  }): Promise<{ removed: number; granted?: AcquireOutcome }> {
    const { lock, owner, clientId, requestId, connectionId } = cancel;
    if (requestId !== undefined) {
      if (connectionId !== undefined) await this.connections.owned(connectionId, owner);
      const key = requestKey(owner, clientId, requestId);
      const wait = { lock, requestKey: key, clientId, requestId, order: '', deadline: 0, connectionId };
      let record = requestOf(await this.storage.read(requestRef(lock, key)));
      if (!record) {
        // Nothing recorded yet, yet its acquire may be on its way: end the request first, so it never queues.
        const tombstone = await this.storage.transact([endedStep(wait, '', 'cancelled', this.clock.now())]);
        if (tombstone.ok) return { removed: 0 };
        record = requestOf(oldAt(tombstone, 0));
      }
      // The request's key names its principal and client: from wherever they ask, the record answers.
      if (!record || record.state === 'ended') return { removed: 0 };
      const outcome =
        record.state === 'queued'
          ? await this.conclude(
              { ...wait, order: record.order, deadline: record.deadline, connectionId: record.connectionId },
              'cancelled',
              { connectionId },
            )
          : await this.answer(wait, record, connectionId);
      return outcome.acquired ? { removed: 0, granted: outcome } : { removed: 1 };
    }
    const snapshot = await this.storage.queue(lock, 1000);
    let removed = 0;
    for (const w of snapshot.waiters.filter((w) => w.owner === owner && w.clientId === clientId))
      if (await this.handoff.leave(w, 'cancelled', this.clock.now())) removed++;
    return { removed };
  }

  /**
   * An acquire without waiting. A refusal of a request that waited before (it has a record) is
   * answered from that record instead: the request's one outcome, and if it is still queued, the
   * wait ends now. So a refused attempt with a request_id costs one read more.
   */
  private async tryAcquire(cmd: AcquireCommand): Promise<AcquireOutcome | Ended> {
    let outcome: AcquireOutcome;
    try {
      outcome =
        cmd.tenure.kind === 'session'
          ? await this.acquireInSession(cmd)
          : await this.run(cmd.name, acquireProtocolIn(cmd, this.clock.now()));
    } catch (error) {
      // Kept out by a holder above it or a grant below it (a hierarchical namespace): "not
      // acquired", unless this is a retry of a request that waited (then its record answers, below).
      if (error instanceof SubtreeConflict) outcome = subtreeRefusal(cmd.name, error.block);
      else {
        // A semaphore's other N refuses a fresh request; a retry of one that waited is answered by its record.
        if (!(error instanceof LatchkeyError) || error.code !== 'MAX_HOLDERS_MISMATCH') throw error;
        const recorded = await this.fromRecord(cmd);
        if (recorded) return recorded;
        throw error;
      }
    }
    if (outcome.acquired) return outcome;
    const recorded = await this.fromRecord(cmd);
    if (recorded) return recorded;
    // Free but promised to waiters that nobody has served yet (a lease just lapsed): serve them now.
    if (!outcome.holder && outcome.queued > 0) await this.handoff.serve(cmd.name);
    return outcome;
  }

  /**
   * The answer of a request that waited before (it has a record): its one outcome, and if it is
   * still queued, the wait ends now. Undefined for a request that never waited.
   */
  private async fromRecord(cmd: AcquireCommand): Promise<AcquireOutcome | Ended | undefined> {
    if (cmd.requestId === undefined) return undefined;
    const wait = requestIdentity(cmd, cmd.requestId);
    const record = requestOf(await this.storage.read(requestRef(cmd.name, wait.requestKey)));
    if (!record) return undefined;
    if (record.state !== 'queued')
      return this.answer({ ...wait, order: '', deadline: 0, connectionId: undefined }, record);
    const { order, deadline, connectionId } = record;
    // A try: its answer goes to whoever asked, and the connection the request waited on is told.
    return this.conclude({ ...wait, order, deadline, connectionId }, 'cancelled', {
      connectionId: undefined,
    });
  }

  /** A grant held through a session: a transaction with a check that the session is live and the caller's. */
  private async acquireInSession(cmd: AcquireCommand): Promise<AcquireOutcome> {
    let seen = await this.storage.read(lockRef(cmd.name));
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      const decision = decideAcquireIn(cmd, seen, this.clock.now());
      if (decision.kind === 'answer') return decision.outcome;
      if (decision.kind === 'reenter') return this.reenterChecked(cmd, seen);
      const grant = await this.grantInTransaction(cmd, seen, undefined);
      if (grant.kind === 'granted') return grant.outcome;
      if (grant.kind === 'lock') seen = grant.seen;
    }
    throw new LatchkeyError('UNAVAILABLE', 'the lock changed under every attempt; retry', undefined, 50);
  }

  /**
   * Grants a free lock nobody waits for inside a transaction: with the
   * session check for a grant held through a session, and with the
   * request's record for a request that asked to wait (so its retries find
   * the grant). Refused by the lock: here is the lock as it is; by the
   * record: the request already has one. `UNREAD`: an exclusive grant
   * fenced from the clock, with no item seen (clockFencedGrant).
   */
  private async grantInTransaction(
    cmd: AcquireCommand,
    seen: Item | undefined | typeof UNREAD,
    record: RequestIdentity | undefined,
    connection: readonly Step[] = [],
  ): Promise<
    | { kind: 'granted'; outcome: AcquireOutcome }
    | { kind: 'lock'; seen: Item | undefined }
    | { kind: 'record'; record: Item | undefined }
    | { kind: 'connection' }
  > {
    const now = this.clock.now();
    const key = requestKeyOf(cmd);
    const grantee = granteeOf(cmd);
    const exclusive = { condition: withOptional(queueIsEmpty, notAlreadyServed(key)) };
    const { write, grant } =
      seen === UNREAD
        ? clockFencedGrant(grantee, now, this.ids(), exclusive)
        : cmd.mode === 'shared'
          ? oneSharedGrant(
              pinnedSharedGrants([{ ...grantee, maxHolders: cmd.maxHolders }], seen, now, this.ids(), {
                condition: queueIsEmpty,
              }),
            )
          : pinnedGrant(grantee, seen, now, this.ids(), exclusive);
    const session =
      cmd.tenure.kind === 'session'
        ? sessionGrantSteps(cmd.tenure.sessionId, cmd.owner, cmd.clientId, cmd.name, now)
        : [];
    const steps: Step[] = [
      updateStep(lockRef(cmd.name), write),
      ...session,
      ...connection,
      ...(record ? [grantedAtOnceStep(record, grant.fencingToken, now, gcFromHeld(grant.held) ?? now)] : []),
    ];
    const result = await this.paths.transact(cmd.name, steps, seen === UNREAD ? undefined : { seen });
    if (result.ok) {
      if (seen !== UNREAD) auditLapse(cmd.name, seen, now);
      return { kind: 'granted', outcome: granted(grant, false) };
    }
    if (cmd.tenure.kind === 'session' && refusedAt(result, 1))
      throw await this.sessions.whyRefused(cmd.tenure.sessionId, cmd.owner, cmd.clientId);
    if (connection.length && refusedAt(result, 1 + session.length)) return { kind: 'connection' };
    if (record && refusedAt(result, steps.length - 1))
      return { kind: 'record', record: oldAt(result, steps.length - 1) };
    return { kind: 'lock', seen: oldAt(result, 0) };
  }

  /**
   * A re-entry. Through a session, answered only if the session still takes locks after the write:
   * a session ends before its locks are released (two writes), and a re-entry in between must not
   * be answered as a grant. The count it added goes with the session's release (all re-entries at once).
   */
  private async reenterChecked(cmd: AcquireCommand, seen: Item | undefined): Promise<AcquireOutcome> {
    const outcome = await this.reenter(cmd, seen);
    if (cmd.tenure.kind !== 'session') return outcome;
    const refused = await this.sessions.refusesLocks(cmd.tenure.sessionId, cmd.owner, cmd.clientId);
    if (refused) throw refused;
    return outcome;
  }

  private async reenter(cmd: AcquireCommand, seen: Item | undefined): Promise<AcquireOutcome> {
    const now = this.clock.now();
    const current = liveGrants(seen, now).find((g) => g.owner === cmd.owner && g.clientId === cmd.clientId);
    if (!current)
      throw new LatchkeyError('UNAVAILABLE', 'the lock changed while re-entering it; retry', undefined, 0);
    return this.run(cmd.name, reenterProtocolIn(cmd, { ...current, lock: cmd.name }, now));
  }

  /** A retry of a waiting request: the record it left decides the answer (on a connection that is the caller's). */
  private async follow(
    cmd: AcquireCommand & { requestId: string },
    wait: WaitOptions,
    item: Item | undefined,
  ) {
    if (wait.connectionId !== undefined) await this.connections.owned(wait.connectionId, cmd.owner);
    const who = requestIdentity(cmd, cmd.requestId);
    const record = requestOf(item);
    if (record?.state !== 'queued') {
      const pending = { ...who, order: '', deadline: 0, connectionId: undefined };
      return { kind: 'done' as const, outcome: await this.answer(pending, record, wait.connectionId) };
    }
    const { order, deadline, connectionId } = record;
    const pending = { ...who, order, deadline, connectionId };
    if (wait.connectionId !== undefined && wait.connectionId !== record.connectionId) {
      // Asked again on another connection (the first one dropped): push the grant here from now on.
      const moved = await this.storage.transact(
        moveDeliverySteps(pending, wait.connectionId, this.clock.now()),
      );
      if (!moved.ok) {
        const now = requestOf(await this.storage.read(requestRef(cmd.name, who.requestKey)));
        return { kind: 'done' as const, outcome: await this.answer(pending, now, wait.connectionId) };
      }
    }
    const here = { ...pending, connectionId: wait.connectionId ?? connectionId };
    return { kind: 'queued' as const, wait: here };
  }

  /**
   * The answer a request's record gives once it is no longer queued at the place asked about, to
   * an attempt made on `connectionId` (none: over HTTP). `seen`: the lock item as a strongly
   * consistent read made before the record was read showed it, if the caller has one (see replay).
   */
  private async answer(
    wait: PendingWait,
    record: RequestRecord | undefined,
    connectionId?: string,
    seen?: Item,
  ): Promise<AcquireOutcome | Ended> {
    if (record?.state === 'granted') return this.replay(wait, record, connectionId, seen);
    if (record?.state === 'ended') {
      if (record.reason === 'session-ended')
        throw new LatchkeyError(
          'SESSION_EXPIRED',
          `the session of request ${wait.requestId} ended while it waited`,
        );
      if (record.reason === 'deadlock')
        throw new LatchkeyError(
          'DEADLOCK',
          `request ${wait.requestId} was refused as the victim of a cycle of waits (a deadlock) while it waited for ${wait.lock}: release what this client holds, then try again with a new request_id`,
        );
      return this.notAcquired(wait, record.reason);
    }
    // Still queued, at another place or connection (a retry moved it): its outcome is not known yet,
    // and "not acquired" would be wrong if it is granted there. This attempt is told to ask again.
    if (record?.state === 'queued') throw stillQueuedElsewhere(wait);
    // No record: the wait was never recorded, or its record was collected after the retention period.
    return this.notAcquired(wait, 'timeout');
  }

  /**
   * Answers a request with the grant its record names, if that grant is
   * still in force. A grant pushed over WebSocket is claimed first, so it
   * can no longer be taken back from a caller who now has it.
   *
   * The lock item says whether the grant is in force. A claimed grant is judged on `seen` when
   * that read shows it live now: it is answered as of that read (a linearizable answer, as if given
   * then; the holder's renewal or release since then is as much a race as after a fresh read).
   * Otherwise, and before a claim, on a fresh read: `seen` may predate the grant.
   */
  private async replay(
    wait: PendingWait,
    record: RequestRecord & { state: 'granted' },
    connectionId: string | undefined,
    seen?: Item,
  ): Promise<AcquireOutcome | Ended> {
    const { fence } = record;
    const claimed = record.claimed || !record.connectionId;
    if (!claimed) {
      const claim = await this.storage.transact([claimStep(wait, fence, this.clock.now())]);
      if (!claim.ok) return this.answer(wait, requestOf(oldAt(claim, 0)), connectionId);
    }
    const live = (lock: Item | undefined) =>
      liveGrants(lock, this.clock.now()).find((g) => g.fencingToken === fence);
    const holder =
      (claimed && seen !== undefined ? live(seen) : undefined) ??
      live(await this.storage.read(lockRef(wait.lock)));
    return this.grantedAs(wait, fence, holder, connectionId, record.atOnce);
  }

  /**
   * The answer to an attempt of `wait`, on `connectionId`, whose request was granted `fence`:
   * `holder`, the live grant with that token (undefined: it has ended), if it is held as this
   * attempt asks; otherwise LEASE_EXPIRED. `retried`: the grant was the request's own write (a
   * retry of it is audited again: see counted).
   */
  private grantedAs(
    wait: PendingWait,
    fence: number,
    holder: Grant | undefined,
    connectionId: string | undefined,
    retried = false,
  ): AcquireOutcome {
    if (holder?.fencingToken === fence && holder.clientId === wait.clientId) {
      // Held as this attempt asks (see holdsAs); a lock held through a WebSocket connection only on that connection.
      const connection =
        holder.held.kind === 'session' ? connectionOfSession(holder.held.sessionId) : undefined;
      const asked = wait.tenure === undefined || holdsAs(holder.held, wait.tenure);
      if (asked && (connection === undefined || connection === connectionId))
        // A request's own grant at once is a fresh grant (a re-entry writes no such record).
        return retried
          ? grantedAgain({ ...holder, lock: wait.lock }, true)
          : granted({ ...holder, lock: wait.lock }, true);
      throw new LatchkeyError(
        'LEASE_EXPIRED',
        `request ${wait.requestId} was granted fencing token ${fence} through a session or connection this attempt does not speak for`,
      );
    }
    throw new LatchkeyError(
      'LEASE_EXPIRED',
      `request ${wait.requestId} was granted fencing token ${fence}, and that lock has been released or its lease has ended`,
    );
  }

  private queueFull(name: string, retryAfterMs = 1_000): LatchkeyError {
    return new LatchkeyError(
      'QUEUE_FULL',
      `the queue of ${name} is full (${this.limits.maxQueueLength} waiters, the stack's maxQueueLength): try later`,
      undefined,
      retryAfterMs,
    );
  }

  private tooManyWaiters(w: Waiter, connection: boolean): LatchkeyError {
    const message = connection
      ? `WebSocket connection ${w.connectionId} has ${this.limits.maxWaitersPerConnection} waiters (the stack's maxWaitersPerConnection): wait for some to end, or use another connection`
      : `your principal has its share of waiters queued (the stack's maxWaitersPerPrincipal is ${this.limits.maxWaitersPerPrincipal}): wait for some to end`;
    return new LatchkeyError('TOO_MANY_WAITERS', message, undefined, 1_000);
  }

  /** "Not acquired" for a wait that ended, explained from the lock as it is now, for the wait's mode. */
  private async notAcquired(wait: Pick<PendingWait, 'lock' | 'mode'>, reason: EndReason): Promise<Ended> {
    const item = await this.storage.read(lockRef(wait.lock));
    return { ...refusal(wait.lock, item, this.clock.now(), wait.mode), ended: reason };
  }

  /** Throws NOT_FOUND or FORBIDDEN unless the connection a wait named is open and its caller's (a read). */
  private async checkConnection(w: Waiter): Promise<void> {
    await this.connections.owned(w.connectionId ?? '', w.owner);
  }

  /** The error for a write that a wait's connection check refused: why, read from the connection. */
  private async connectionRefused(w: Waiter): Promise<LatchkeyError> {
    await this.checkConnection(w);
    // Open and the caller's after all: it opened just then (a race with its $connect).
    return new LatchkeyError(
      'UNAVAILABLE',
      `WebSocket connection ${w.connectionId} was not open when the wait joined the queue; retry`,
      undefined,
      50,
    );
  }

  /** Runs a protocol on the lock item, each write one conditional UpdateItem. */
  private run<Outcome>(name: string, protocol: Protocol<Outcome>): Promise<Outcome> {
    return this.paths.run(name, protocol, this.ids);
  }
}

/** A grant made without reading the lock first (core/lock.ts clockFencedGrant). */
const UNREAD = Symbol('unread');

/** "Not acquired", for a grant kept out by a holder above it or a grant below it. */
const subtreeRefusal = (lock: string, block: SubtreeBlock): Refusal => ({
  acquired: false,
  lock,
  holder:
    block.clientId === undefined
      ? undefined
      : { clientId: block.clientId, expiresAt: block.expiresAt, session: block.session },
  queued: 0,
  retryAfterMs: block.retryAfterMs,
  blockedBy: { lock: block.lock, reason: block.reason },
});

/** The one grant of a single shared grantee's write. */
const oneSharedGrant = (g: {
  readonly write: import('../core/items').ItemWrite;
  readonly grants: Grant[];
}) => ({
  write: g.write,
  grant: g.grants[0] as Grant,
});

/**
 * What a new wait keeps while it waits (core/deadlock.ts keptBy). Its own hold of the lock it waits
 * for never blocks it, so that one is not named; an enclosing client's does (a wait nested in a
 * hold of its own lock: a cycle of one wait), so it stays. An enclosing client id that is the
 * waiter's own names its own holds.
 */
function keptLocks(cmd: AcquireCommand): Pick<Waiter, 'holding' | 'enclosing'> {
  const own = (cmd.enclosing ?? []).filter((c) => c.clientId === cmd.clientId).flatMap((c) => c.holding);
  const holding = [...new Set([...(cmd.holding ?? []), ...own])].filter((name) => name !== cmd.name);
  // One entry per client id, in the order given (a client named twice keeps both lists).
  const byClient = new Map<string, Set<string>>();
  for (const c of cmd.enclosing ?? [])
    if (c.clientId !== cmd.clientId)
      byClient.set(c.clientId, new Set([...(byClient.get(c.clientId) ?? []), ...c.holding]));
  const enclosing = [...byClient].map(([clientId, names]) => ({ clientId, holding: [...names] }));
  return {
    ...(cmd.holding === undefined && own.length === 0 ? {} : { holding: holding.slice(0, MAX_HOLDING) }),
    ...(enclosing.length ? { enclosing } : {}),
  };
}

export function newWaiter(
  cmd: AcquireCommand & { requestId: string },
  wait: WaitOptions,
  now: number,
): Waiter {
  const priority = wait.priority ?? PRIORITY.default;
  const key = requestKey(cmd.owner, cmd.clientId, cmd.requestId);
  return {
    lock: cmd.name,
    owner: cmd.owner,
    // The tie-breaker comes from the request, so a retry in the same millisecond lands on the same
    // place and DynamoDB refuses the second waiter item outright.
    order: queueOrder(priority, now, tieBreaker(key)),
    clientId: cmd.clientId,
    tenure: cmd.tenure,
    requestId: cmd.requestId,
    requestKey: key,
    deadline: now + wait.waitMs,
    priority,
    arrivedAt: now,
    connectionId: wait.connectionId,
    ...(wait.connectionId === undefined && wait.bell !== undefined
      ? { bell: wait.bell, ...(wait.slot === undefined ? {} : { slot: wait.slot }) }
      : {}),
    mode: cmd.mode ?? 'exclusive',
    maxHolders: cmd.mode === 'shared' ? cmd.maxHolders : undefined,
    ...keptLocks(cmd),
  };
}

/** A request joined a queue. */
const auditWait = (w: Waiter) =>
  audit('wait', {
    lock: w.lock,
    principal: w.owner,
    client_id: w.clientId,
    ...(w.tenure.kind === 'session' ? { session_id: w.tenure.sessionId } : {}),
    request_id: w.requestId,
    priority: w.priority,
    wait_until: new Date(w.deadline).toISOString(),
    ...(w.connectionId === undefined ? {} : { connection_id: w.connectionId }),
    reason: 'queued',
  });

/** Who asks, in a request `requestId` of `cmd`: what a wait of it is known by before its place is. */
const requestIdentity = (cmd: AcquireCommand, requestId: string) => ({
  lock: cmd.name,
  requestKey: requestKey(cmd.owner, cmd.clientId, requestId),
  clientId: cmd.clientId,
  requestId,
  tenure: cmd.tenure,
  mode: cmd.mode ?? 'exclusive',
});

const pendingOf = (w: Waiter): PendingWait => ({
  lock: w.lock,
  requestKey: w.requestKey,
  clientId: w.clientId,
  requestId: w.requestId,
  order: w.order,
  deadline: w.deadline,
  tenure: w.tenure,
  connectionId: w.connectionId,
  bell: w.bell,
  mode: w.mode,
});

const tieBreaker = (key: string) => createHash('sha256').update(key).digest('hex').slice(0, 12);
