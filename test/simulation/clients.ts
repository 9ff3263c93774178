/**
 * The simulation's clients: they use latchkey the way the SDK does. They
 * retry an unanswered or 503-answered call with the same request_id, give
 * up a wait past its end (a WebSocket waiter then cancels it), reconnect
 * and ask again on a dropped connection, release a grant they did not
 * expect, renew, pause past their lease, stop heartbeating, and close.
 * What each client is told is reported to the checker: a belief that it
 * holds a lock (until its own deadline), or a request answered "not
 * acquired".
 */
import { partyId } from '../../lambdas/core/deadlock';
import type { LatchkeyError } from '../../lambdas/core/errors';
import { connectionRef, lockRef } from '../../lambdas/core/items';
import {
  type AcquireCommand,
  type Grant,
  type LockMode,
  lease,
  liveGrants,
  requestKey,
  throughSession,
} from '../../lambdas/core/lock';
import { SessionAttr } from '../../lambdas/core/session';
import type { Frame } from '../../lambdas/core/ws-wire';
import type { HeldSlot } from '../../lambdas/service/http-waits';
import type { Services } from '../../lambdas/service/services';
import type { Belief, Checker, CycleEdge, Trace } from './checks';
import { Rng } from './scheduler';
import type { Answer, SimConnection, World } from './world';

/** HTTP waits are at most this long in the simulation (25 s on the real API). */
const MAX_HTTP_WAIT_MS = 3_000;
/** Past its wait by this much without an answer, a WebSocket waiter gives up and cancels (as the SDK does). */
const OVERDUE_SLACK_MS = 5_000;
/** How long a call is retried (well inside the simulation's 30 s retention of request records). */
const RETRY_WINDOW_MS = 15_000;

type AnyFrame = Frame & Record<string, unknown>;

/** Invocations of the hostile principal that must change nothing (see Checker.onCommit). */
/** How a release is refused when its grant is not (or no longer) held. */
const REFUSED_AS_NOT_HOLDER = new Set(['NOT_HOLDER', 'LEASE_EXPIRED', 'FORBIDDEN']);

export const HOSTILE = 'hostile-';

/**
 * Which mode clients ask for, per history: exclusive only (`shared` 0: the histories from before
 * shared mode, unchanged), or a mix of shared and exclusive acquires on the same locks. Each lock
 * is a read-write lock (N undefined) or a semaphore of N; every holder asks for that N, save an
 * occasional one asking for another (refused MAX_HOLDERS_MISMATCH while holders of the N in force
 * are live). Its own random source: the main one, and so every exclusive-only history, is as
 * without it.
 */
export interface ModeMix {
  /** Chance that an acquire asks for shared mode. */
  readonly shared: number;
  /** The semaphore's N of each lock (absent or undefined: plain shared mode). */
  readonly maxHolders: ReadonlyMap<string, number | undefined>;
  readonly rng: Rng;
}

export const exclusiveOnly = (): ModeMix => ({ shared: 0, maxHolders: new Map(), rng: new Rng(0) });

/** What an acquire asks for. */
export interface Asked {
  readonly mode: LockMode;
  readonly maxHolders: number | undefined;
  /** Another N than the lock's (see ModeMix). */
  readonly mismatched: boolean;
}

const EXCLUSIVE: Asked = { mode: 'exclusive', maxHolders: undefined, mismatched: false };

/** The acquire command's fields for `asked`. */
const modeFields = (asked: Asked): Pick<AcquireCommand, 'mode' | 'maxHolders'> =>
  asked.mode === 'shared'
    ? { mode: 'shared', ...(asked.maxHolders === undefined ? {} : { maxHolders: asked.maxHolders }) }
    : {};

export abstract class Client {
  /** Cleared when the simulation winds down: finish what is under way, start nothing new. */
  active = true;
  /** Which modes it asks for (set by the simulation for the history). */
  mix: ModeMix = exclusiveOnly();

  constructor(
    readonly id: string,
    /** The IAM principal it acts as; several clients may share one (one role, many processes). */
    readonly owner: string,
    protected readonly world: World,
    protected readonly check: Checker,
    protected readonly trace: Trace,
    protected readonly locks: readonly string[],
  ) {}

  abstract run(): Promise<void>;

  protected get rng() {
    return this.world.rng;
  }
  protected now() {
    return this.world.sched.now();
  }
  protected sleep(ms: number) {
    return this.world.sched.sleep(ms);
  }

  /**
   * One call, retried as the SDK does: on no answer or a retryable error, the same call again, for
   * at most RETRY_WINDOW_MS. (The SDK retries for about a minute, and a request is remembered for
   * at least a day; here retention is 30 s, so retries stop well inside it. `until` stops them early.)
   */
  protected async call<T>(
    name: string,
    run: (s: Services) => Promise<T>,
    attempts = 6,
    until: () => boolean = () => false,
    /** Whether what the call acts on is surely this client's (a FORBIDDEN would then be a bug). */
    ownsIt: () => boolean = () => true,
  ): Promise<Answer<T>> {
    let answer: Answer<T> = { kind: 'none' };
    const stopAt = this.now() + RETRY_WINDOW_MS;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (attempt > 1 && (this.now() >= stopAt || until())) return answer;
      answer = await this.world.call(name, 29_000, run);
      // A client acting on what is its own is never taken for another principal. (A retry may be: its
      // first attempt applied unseen, a release say, and another principal's grant followed.)
      if (attempt === 1 && answer.kind === 'error' && answer.error.code === 'FORBIDDEN' && ownsIt())
        this.check.hostile(`refuse ${this.id} its own ${name} (FORBIDDEN)`, false);
      if (answer.kind === 'ok' || (answer.kind === 'error' && !answer.error.retryable)) return answer;
      await this.sleep(this.rng.int(20, 100 * 2 ** attempt));
    }
    return answer;
  }

  /** Holds a lease: maybe renews it, maybe pauses past it, then releases it (over HTTP). */
  protected async holdLease(
    grant: Grant,
    sentAt: number,
    remainingMs: number,
    asked: Asked = EXCLUSIVE,
  ): Promise<void> {
    let deadline = sentAt + remainingMs;
    const belief: Belief = {
      client: this.id,
      lock: grant.lock,
      token: grant.fencingToken,
      from: this.now(),
      until: () => deadline,
      mode: grant.mode,
      maxHolders: asked.maxHolders,
    };
    this.check.hold(belief);
    const ttl = grant.held.kind === 'lease' ? grant.held.ttlMs : remainingMs;
    // A holder sometimes acquires it again (reentrant): each confirmed re-entry is released once more
    // (with waiters, an exclusive one's last release hands the lock over). Only in histories with
    // shared mode, from the mix's own random source: exclusive-only histories are as they were.
    const reentries =
      this.mix.shared > 0 && this.mix.rng.chance(0.3) ? await this.reenter(grant, belief, () => deadline) : 0;
    const renewals = this.rng.chance(0.3) ? this.rng.int(1, 3) : 0;
    for (let i = 0; i < renewals && this.now() < deadline - ttl / 2; i++) {
      await this.sleep(this.rng.int(0, ttl / 3));
      if (this.now() >= deadline) break;
      const renewAt = this.now();
      const cmd = {
        name: grant.lock,
        owner: this.owner,
        clientId: this.id,
        fencingToken: grant.fencingToken,
        ttlMs: ttl,
        ...this.hint(grant.mode),
      };
      const renewed = await this.call(
        'renew',
        (s) => s.locks.renew(cmd),
        6,
        undefined,
        () => renewAt < deadline && (belief.endedAt ?? Number.POSITIVE_INFINITY) > renewAt,
      );
      if (renewed.kind === 'ok') deadline = Math.max(deadline, renewAt + ttl);
      else if (renewed.kind === 'error') break; // lost it: the deadline it had is all it has
    }
    if (this.rng.chance(0.1)) {
      // Paused past its lease (a long GC, say): it stops using the lock at its deadline, and never releases.
      belief.endedAt = Math.min(belief.endedAt ?? Number.POSITIVE_INFINITY, deadline);
      await this.sleep(Math.max(0, deadline - this.now()) + this.rng.int(0, 2_000));
      return;
    }
    await this.sleep(this.rng.int(0, Math.max(0, Math.min(ttl, deadline - this.now()))));
    // Each release carries a release_id, the same on every retry: a retry of one applied (its answer
    // lost) is answered, never counted down twice. Without any answer, what it did is unknown.
    let sure = true;
    for (let i = 0; i < reentries && sure && this.now() < deadline; i++)
      sure = await this.leaveReentry(grant, belief);
    await this.release(grant, belief, sure);
  }

  /**
   * Acquires a grant it holds once more (reentrant, a try over HTTP): the answer is the same
   * grant (its token), re-entered. Answers how many re-entries it was told of.
   */
  private async reenter(grant: Grant, belief: Belief, deadline: () => number): Promise<number> {
    if (grant.held.kind !== 'lease' || this.now() >= deadline()) return 0;
    const requestId = this.newRequest();
    const asked: Asked =
      grant.mode === 'shared'
        ? { mode: 'shared', maxHolders: belief.maxHolders, mismatched: false }
        : EXCLUSIVE;
    const cmd: AcquireCommand = {
      name: grant.lock,
      owner: this.owner,
      clientId: this.id,
      tenure: lease(grant.held.ttlMs),
      requestId,
      reentrant: true,
      ...modeFields(asked),
    };
    this.sent(grant.lock, requestId, asked);
    const out = await this.call('reenter', (s) => overHttp(s, cmd, { waitMs: 0 }));
    this.trace.add(`${this.id} re-enter ${grant.lock} #${grant.fencingToken} ${requestId}: ${describe(out)}`);
    this.mismatch(grant.lock, requestId, asked, out);
    if (out.kind !== 'ok') return 0;
    const key = this.key(requestId);
    if (!out.value.acquired) {
      this.check.answeredNotAcquired(grant.lock, key);
      return 0;
    }
    const again = out.value.grant;
    this.check.answeredGranted(grant.lock, key, again.fencingToken, again.mode, asked);
    if (again.fencingToken === grant.fencingToken) {
      this.check.counts.reentries++;
      return 1;
    }
    // A new grant (its own was force-released meanwhile): held from now, and let go at once.
    const other: Belief = {
      client: this.id,
      lock: grant.lock,
      token: again.fencingToken,
      from: this.now(),
      until: () => (again.held.kind === 'lease' ? again.held.expiresAt : this.now()),
      mode: again.mode,
      maxHolders: asked.maxHolders,
    };
    this.check.hold(other);
    await this.release(again, other);
    return 0;
  }

  /** Releases one re-entry of a grant (it stays held). */
  private async leaveReentry(grant: Grant, belief: Belief): Promise<boolean> {
    // Fenced out meanwhile (a force-release), or lapsed before the answer came (the request may have
    // reached the service only then), it may be another principal's: then FORBIDDEN is right.
    const alive = () => belief.until() > this.now() && (belief.endedAt ?? Infinity) > this.now();
    const cmd = {
      name: grant.lock,
      owner: this.owner,
      clientId: grant.clientId,
      fencingToken: grant.fencingToken,
      ...this.hint(grant.mode),
      releaseId: this.newRequest(),
    };
    const out = await this.call('release', (s) => s.locks.release(cmd), 6, undefined, alive);
    this.trace.add(
      `${this.id} release a re-entry of ${grant.lock} #${grant.fencingToken}: ${describe(out)}${out.kind === 'ok' ? ` (${out.value.remaining} left)` : ''}`,
    );
    return out.kind === 'ok';
  }

  protected async release(grant: Grant, belief?: Belief, sure = true): Promise<void> {
    // Alive until the answer: not past its deadline, nor fenced out by an operator's force-release
    // (checks.ts); and not perhaps released already (a re-entry's release whose answer was lost). A
    // lease that lapses before the answer may have lapsed before the request reached the service.
    const endedBefore = belief?.endedAt ?? Infinity;
    const alive = () =>
      sure &&
      belief !== undefined &&
      belief.until() > this.now() &&
      endedBefore > this.now() &&
      // Its own release ends the belief at once (below), so a force-release during it is asked here.
      !this.check.isFencedOut(grant.lock, grant.fencingToken);
    if (belief) belief.endedAt = Math.min(belief.endedAt ?? Infinity, this.now(), belief.until());
    const cmd = {
      name: grant.lock,
      owner: this.owner,
      clientId: grant.clientId,
      fencingToken: grant.fencingToken,
      ...this.hint(grant.mode),
      releaseId: this.newRequest(),
    };
    // A lease that lapsed (or was fenced out) may be another principal's by now: then FORBIDDEN is right.
    const out = await this.call('release', (s) => s.locks.release(cmd), 6, undefined, alive);
    // Its lease live to the answer: a refusal as not held can only be a retry of a release that applied.
    if (out.kind === 'error' && REFUSED_AS_NOT_HOLDER.has(out.error.code) && alive())
      this.check.rightfulReleaseRefused(cmd, out.error.code);
    this.trace.add(
      `${this.id} release ${grant.mode === 'shared' ? 'shared ' : ''}${grant.lock} #${grant.fencingToken}${cmd.mode ? ` (hint ${cmd.mode})` : ''} (believed until ${belief?.until() ?? '-'}): ${describe(out)}`,
    );
  }

  /**
   * The lock of the next acquire: any, as before, in exclusive-only histories; with shared mode,
   * mostly the first (so readers pile up behind writers, and runs of them are handed over together).
   */
  protected pickLock(): string {
    if (this.mix.shared <= 0) return this.rng.pick(this.locks);
    return this.mix.rng.chance(0.5) ? (this.locks[0] as string) : this.mix.rng.pick(this.locks);
  }

  /** The mode (and semaphore N) of the next acquire of `lock`. */
  protected chooseMode(lock: string): Asked {
    const { mix } = this;
    if (mix.shared <= 0 || !mix.rng.chance(mix.shared)) return EXCLUSIVE;
    const n = mix.maxHolders.get(lock);
    if (mix.rng.chance(0.06)) {
      const other = n === undefined ? mix.rng.int(2, 3) : mix.rng.chance(0.5) ? undefined : n + 1;
      return { mode: 'shared', maxHolders: other, mismatched: true };
    }
    return { mode: 'shared', maxHolders: n, mismatched: false };
  }

  /**
   * The mode hint a release or renew of a grant held in `mode` carries: mostly right, sometimes
   * wrong or absent (the service finds the grant either way). None in exclusive-only histories.
   */
  protected hint(mode: LockMode): Pick<AcquireCommand, 'mode'> {
    if (this.mix.shared <= 0) return {};
    const r = this.mix.rng.float();
    return r < 0.7 ? { mode } : r < 0.85 ? { mode: mode === 'shared' ? 'exclusive' : 'shared' } : {};
  }

  /** Tells the checker of a request's first attempt (what its arrival is judged from). */
  protected sent(lock: string, requestId: string, asked: Asked): void {
    this.check.sent(lock, this.key(requestId), asked.mode, this.now());
  }

  /** An acquire refused MAX_HOLDERS_MISMATCH (a final "not acquired"): it must have changed nothing. */
  protected mismatch(lock: string, requestId: string, asked: Asked, out: Answer<unknown>): void {
    if (out.kind === 'error' && out.error.code === 'MAX_HOLDERS_MISMATCH')
      this.check.mismatchRefused(lock, this.key(requestId), asked);
  }

  protected newRequest() {
    return `r${this.world.newId('')}`;
  }

  protected key(requestId: string) {
    return requestKey(this.owner, this.id, requestId);
  }
}

/** An HTTP acquire, as the handler answers it: these clients never wait for a push, so never "queued". */
async function overHttp(s: Services, cmd: AcquireCommand, wait: { waitMs: number }, slot?: HeldSlot) {
  const result = await s.locks.acquireOverHttp(cmd, wait, slot);
  if (result.kind !== 'done') throw new Error(`an HTTP acquire of ${cmd.requestId} was answered "queued"`);
  return result.outcome;
}

const describeAsked = (asked: Asked): string =>
  asked.mode === 'shared'
    ? ` shared${asked.maxHolders === undefined ? '' : ` N=${asked.maxHolders}`}${asked.mismatched ? ' (mismatched)' : ''}`
    : '';

export const describe = (a: Answer<unknown>): string =>
  a.kind === 'ok' ? 'ok' : a.kind === 'error' ? (a.error as LatchkeyError).code : 'no answer';

/** Acquires over HTTP: tries, or waits up to a few seconds, each request retried with its request_id. */
export class HttpClient extends Client {
  async run(): Promise<void> {
    while (this.active) {
      await this.sleep(this.rng.int(0, 800));
      if (!this.active) return;
      const lock = this.pickLock();
      const waitMs = this.rng.chance(0.4) ? 0 : this.rng.int(50, MAX_HTTP_WAIT_MS);
      const ttl = this.rng.int(300, 3_000);
      const requestId = this.newRequest();
      const asked = this.chooseMode(lock);
      const cmd: AcquireCommand = {
        name: lock,
        owner: this.owner,
        clientId: this.id,
        tenure: lease(ttl),
        requestId,
        ...modeFields(asked),
      };
      const key = this.key(requestId);
      this.sent(lock, requestId, asked);
      let sentAt = this.now();
      const until = sentAt + waitMs;
      let out: Answer<Awaited<ReturnType<typeof overHttp>>> = { kind: 'none' };
      const firstSentAt = sentAt;
      for (let attempt = 1; attempt <= 6; attempt++) {
        if (attempt > 1 && this.now() - firstSentAt >= RETRY_WINDOW_MS) break;
        sentAt = this.now();
        // A retry asks for what is left of the wait, down to none (any client may; the old SDK did).
        const left = waitMs === 0 ? 0 : Math.max(0, until - sentAt);
        // A wait holds one of the HTTP-wait slots while it polls, as the lock-commands handler does.
        const slotHolder = `${requestId}#${attempt}`;
        out = await this.world.call('acquire', 29_000, (s) =>
          left > 0
            ? s.httpWaits.during(slotHolder, this.now() + left, (slot) =>
                overHttp(s, cmd, { waitMs: left }, slot),
              )
            : overHttp(s, cmd, { waitMs: left }),
        );
        if (out.kind === 'ok' || (out.kind === 'error' && !out.error.retryable)) break;
        await this.sleep(this.rng.int(20, 100 * 2 ** attempt));
      }
      this.trace.add(
        `${this.id} acquire ${lock}${describeAsked(asked)} wait ${waitMs} ${requestId}: ${describe(out)}`,
      );
      this.mismatch(lock, requestId, asked, out);
      if (out.kind !== 'ok') continue; // told nothing final (or LEASE_EXPIRED for a grant that ended)
      if (!out.value.acquired) {
        this.check.answeredNotAcquired(lock, key);
        continue;
      }
      const grant = out.value.grant;
      this.check.answeredGranted(lock, key, grant.fencingToken, grant.mode, asked);
      const remaining = grant.held.kind === 'lease' ? grant.held.expiresAt - this.now() : 0;
      await this.holdLease(grant, sentAt, remaining, asked);
    }
  }
}

/**
 * Holds one lock and, while holding it, waits for a second one naming the first in `holding`, as
 * a nested withLock does. Two of them taking the same two locks in opposite orders deadlock: the
 * service must refuse the wait that closes the cycle (DEADLOCK), and its cycle must be true
 * (Checker.deadlockRefused); otherwise their leases and waits end it.
 */
export class NestingClient extends Client {
  async run(): Promise<void> {
    while (this.active) {
      await this.sleep(this.rng.int(0, 600));
      if (!this.active) return;
      // Mostly in the order of its own (nest0: a then b, nest1: b then a), so the two cross.
      const [a, b] = this.locks as [string, string];
      const mine = this.id.endsWith('0');
      const [first, second] = this.rng.chance(0.8) === mine ? [a, b] : [b, a];
      const ttl = this.rng.int(2_000, 5_000);
      const outer = await this.take(first, ttl, this.rng.int(100, MAX_HTTP_WAIT_MS), []);
      if (!outer) continue;
      await this.sleep(this.rng.int(0, 300));
      if (outer.belief.until() > this.now()) {
        const inner = await this.take(second, ttl, this.rng.int(100, MAX_HTTP_WAIT_MS), [first]);
        if (inner) {
          await this.sleep(this.rng.int(0, 200));
          await this.release(inner.grant, inner.belief);
        }
      }
      await this.release(outer.grant, outer.belief);
    }
  }

  /** One exclusive acquire over HTTP that may wait, naming `holding`; the grant, believed held, or nothing. */
  private async take(lock: string, ttl: number, waitMs: number, holding: readonly string[]) {
    const requestId = this.newRequest();
    const key = this.key(requestId);
    const cmd: AcquireCommand = {
      name: lock,
      owner: this.owner,
      clientId: this.id,
      tenure: lease(ttl),
      requestId,
      ...(holding.length ? { holding } : {}),
    };
    this.sent(lock, requestId, EXCLUSIVE);
    const sentAt = this.now();
    const out = await this.call('acquire', (s) => overHttp(s, cmd, { waitMs }));
    this.trace.add(
      `${this.id} acquire ${lock} holding [${holding.join(' ')}] wait ${waitMs} ${requestId}: ${describe(out)}`,
    );
    if (out.kind === 'error' && out.error.code === 'DEADLOCK') {
      const cycle = (out.error.fields?.cycle ?? []) as CycleEdge[];
      this.check.deadlockRefused(lock, key, partyId({ owner: this.owner, clientId: this.id }), cycle, sentAt);
      return undefined;
    }
    if (out.kind !== 'ok') return undefined;
    if (!out.value.acquired) {
      this.check.answeredNotAcquired(lock, key);
      return undefined;
    }
    const grant = out.value.grant;
    this.check.answeredGranted(lock, key, grant.fencingToken, grant.mode, EXCLUSIVE);
    const deadline = sentAt + (grant.held.kind === 'lease' ? grant.held.expiresAt - this.now() : 0);
    const belief: Belief = {
      client: this.id,
      lock,
      token: grant.fencingToken,
      from: this.now(),
      until: () => deadline,
      mode: grant.mode,
      maxHolders: undefined,
    };
    this.check.hold(belief);
    return { grant, belief };
  }
}

interface PendingWait {
  readonly requestId: string;
  readonly lock: string;
  readonly asked: Asked;
  readonly ttl: number;
  readonly waitMs: number;
  readonly ephemeral: boolean;
  /** When the wait ends, on this client's clock. */
  readonly until: number;
  /**
   * Send time of the request's first attempt: a grant is counted from there, whichever attempt it
   * answers. (A grant pushed for an earlier attempt can arrive after a later one was sent: counting
   * from the later send would overstate the lease. The simulation caught exactly that, seed 1728.)
   */
  readonly sentAt: number;
  cancels: number;
  settle(result: { grant: Grant; remaining: number; sentAt: number } | undefined): void;
}

/**
 * Waits with grants pushed over WebSocket, as the SDK does: one connection (it says `hello`), each
 * wait asked for over HTTP naming it; when the connection drops, a new one and the same request
 * asked again naming the new one; past its end with no answer, a cancel over HTTP whose answer is
 * the outcome.
 */
export class WsClient extends Client {
  private connection: SimConnection | undefined;
  private pending: PendingWait | undefined;
  /** Requests given up on: a grant that still arrives for one is released at once. */
  private readonly abandoned = new Set<string>();
  /** Requests already answered with their grant: the same grant may arrive again (a push and a retry's answer). */
  private readonly answered = new Set<string>();

  async run(): Promise<void> {
    while (this.active) {
      await this.sleep(this.rng.int(0, 800));
      if (!this.active) break;
      if (!(await this.ensureConnected())) continue;
      const lock = this.pickLock();
      const ephemeral = this.rng.chance(0.1);
      const wait: PendingWait = this.startWait(lock, ephemeral);
      const result = await new Promise<Parameters<PendingWait['settle']>[0]>((resolve) => {
        wait.settle = resolve;
      });
      this.pending = undefined;
      if (!result) continue;
      if (ephemeral) await this.holdThroughConnection(result.grant, wait.asked);
      else await this.holdLease(result.grant, result.sentAt, result.remaining, wait.asked);
    }
    if (this.connection) this.world.disconnect(this.connection);
  }

  private startWait(lock: string, ephemeral: boolean): PendingWait {
    const waitMs = this.rng.chance(0.2) ? 0 : this.rng.int(100, 6_000);
    const wait: PendingWait = {
      requestId: this.newRequest(),
      lock,
      asked: this.chooseMode(lock),
      ttl: this.rng.int(300, 3_000),
      waitMs,
      ephemeral,
      until: this.now() + waitMs,
      sentAt: this.now(),
      cancels: 0,
      settle: () => {},
    };
    this.pending = wait;
    this.sent(lock, wait.requestId, wait.asked);
    void this.ask(wait);
    this.watchOverdue(wait);
    return wait;
  }

  /** The acquire over HTTP, naming this client's connection; retried (same request) while unanswered. */
  private async ask(wait: PendingWait): Promise<void> {
    const connection = this.connection;
    if (!connection?.open) return;
    this.trace.add(
      `${this.id} -> acquire ${wait.lock}${describeAsked(wait.asked)} ${wait.requestId} on ${connection.id}${wait.ephemeral ? ' (ephemeral)' : ''}`,
    );
    // Sometimes the connection drops while waiting: reconnect and ask again with the same request.
    if (this.rng.chance(0.08))
      this.world.sched.at(this.now() + this.rng.int(0, 2_000), () => void this.drop(wait));
    const cmd: AcquireCommand = {
      name: wait.lock,
      owner: this.owner,
      clientId: this.id,
      tenure: lease(wait.ttl),
      requestId: wait.requestId,
      ...modeFields(wait.asked),
    };
    const out = await this.call('acquire', (s) =>
      s.locks.acquireByPush(
        cmd,
        { waitMs: Math.max(wait.waitMs === 0 ? 0 : 1, wait.until - this.now()), connectionId: connection.id },
        wait.ephemeral,
      ),
    );
    this.trace.add(
      `${this.id} acquire ${wait.requestId} answered: ${describe(out)}${out.kind === 'ok' ? ` ${out.value.kind}` : ''}`,
    );
    this.mismatch(wait.lock, wait.requestId, wait.asked, out);
    if (out.kind === 'ok') {
      if (out.value.kind === 'queued') return; // the grant or the timeout will be pushed
      const outcome = out.value.outcome;
      if (outcome.acquired)
        this.onGrant(
          wait.requestId,
          grantOfOutcome(outcome.grant),
          outcome.grant.held,
          Math.max(0, outcome.grant.held.kind === 'lease' ? outcome.grant.held.expiresAt - this.now() : 0),
        );
      else if (this.pending === wait) {
        this.check.answeredNotAcquired(wait.lock, this.key(wait.requestId));
        wait.settle(undefined);
      }
      return;
    }
    if (this.pending !== wait) return;
    if (out.kind === 'error' && out.error.code === 'LEASE_EXPIRED') wait.settle(undefined); // granted, and over
    if (out.kind === 'error' && out.error.code === 'MAX_HOLDERS_MISMATCH') wait.settle(undefined); // refused
    // Anything else (no answer, a connection gone, a limit): no outcome yet. The overdue watch decides.
  }

  /** Past its wait with no answer: cancel it over HTTP; the answer is the outcome (cancelled, or the grant). */
  private watchOverdue(wait: PendingWait): void {
    this.world.sched.at(wait.until + OVERDUE_SLACK_MS * (wait.cancels + 1), () => {
      if (this.pending !== wait) return;
      if (wait.cancels >= 3) {
        this.abandoned.add(wait.requestId); // told nothing: whatever arrives later is released
        wait.settle(undefined);
        return;
      }
      wait.cancels++;
      void this.cancel(wait);
      this.watchOverdue(wait);
    });
  }

  private async cancel(wait: PendingWait): Promise<void> {
    const connectionId = this.connection?.open ? this.connection.id : undefined;
    const cancel = {
      lock: wait.lock,
      owner: this.owner,
      clientId: this.id,
      requestId: wait.requestId,
      connectionId,
    };
    const out = await this.call('cancel', (s) => s.locks.cancel(cancel));
    this.trace.add(`${this.id} cancel ${wait.requestId}: ${describe(out)}`);
    if (out.kind !== 'ok' || this.pending !== wait) return;
    const granted = out.value.granted;
    if (granted?.acquired) {
      const g = granted.grant;
      this.onGrant(
        wait.requestId,
        grantOfOutcome(g),
        g.held,
        g.held.kind === 'lease' ? Math.max(0, g.held.expiresAt - this.now()) : 0,
      );
    } else {
      this.check.answeredNotAcquired(wait.lock, this.key(wait.requestId));
      wait.settle(undefined);
    }
  }

  private async drop(wait: PendingWait): Promise<void> {
    if (this.pending !== wait || !this.connection) return;
    this.trace.add(`${this.id} connection ${this.connection.id} dropped while waiting`);
    this.world.disconnect(this.connection);
    this.connection = undefined;
    if (await this.ensureConnected()) if (this.pending === wait) await this.ask(wait);
  }

  private async ensureConnected(): Promise<boolean> {
    if (this.connection?.open) return true;
    this.connection = await this.world.connect(this.owner, this.id, (frame) =>
      this.onFrame(frame as AnyFrame),
    );
    // As the SDK does: learn the connection id (the simulation knows it already; the answer is traced).
    if (this.connection) this.world.sendWs(this.connection.id, { action: 'hello' });
    return this.connection !== undefined;
  }

  /** A grant, answered or pushed: the pending wait's, the same one again, or one to release. */
  private onGrant(requestId: string | undefined, grant: Grant, held: Grant['held'], remaining: number): void {
    const wait = this.pending;
    if (!wait || requestId !== wait.requestId) {
      // A grant this client did not expect (a wait it gave up on): it is its own, so it releases it. The
      // same grant twice (pushed, and the answer to a retry) is not unexpected: it may be in use.
      if (!(requestId !== undefined && this.answered.has(requestId))) void this.release({ ...grant, held });
      return;
    }
    this.check.answeredGranted(
      wait.lock,
      this.key(wait.requestId),
      grant.fencingToken,
      grant.mode,
      wait.asked,
    );
    this.answered.add(wait.requestId);
    wait.settle({ grant: { ...grant, held }, remaining, sentAt: wait.sentAt });
  }

  private onFrame(frame: AnyFrame): void {
    const wait = this.pending;
    const requestId = typeof frame.request_id === 'string' ? frame.request_id : undefined;
    this.trace.add(
      `${this.id} <- ${frame.type} ${requestId ?? ''} ${frame.type === 'error' ? JSON.stringify(frame.error) : ''}`,
    );
    if (frame.type === 'granted') {
      const grant = grantOfFrame(frame, this.owner, this.id);
      this.onGrant(requestId, grant, grant.held, Number(frame.remaining_ms ?? 0));
      return;
    }
    if (!wait || requestId !== wait.requestId) return;
    if (frame.type === 'timeout') {
      this.check.answeredNotAcquired(wait.lock, this.key(wait.requestId));
      wait.settle(undefined);
    } else if (frame.type === 'error') {
      // Pushed when a wait ended for a reason of its own (its session ended): not acquired.
      this.check.answeredNotAcquired(wait.lock, this.key(wait.requestId));
      wait.settle(undefined);
    }
  }

  /** A lock held through this connection: kept until the client disconnects. */
  private async holdThroughConnection(grant: Grant, asked: Asked): Promise<void> {
    const connection = this.connection;
    const belief: Belief = {
      client: this.id,
      lock: grant.lock,
      token: grant.fencingToken,
      from: this.now(),
      until: () => (connection?.open ? Number.POSITIVE_INFINITY : (belief.endedAt ?? this.now())),
      mode: grant.mode,
      maxHolders: asked.maxHolders,
    };
    this.check.hold(belief);
    await this.sleep(this.rng.int(0, 2_000));
    belief.endedAt = Math.min(belief.endedAt ?? Number.POSITIVE_INFINITY, this.now());
    if (connection) this.world.disconnect(connection);
    this.connection = undefined;
  }
}

/** Opens a session, heartbeats it, takes locks in it, sometimes stops heartbeating, and closes it. */
export class SessionClient extends Client {
  async run(): Promise<void> {
    while (this.active) {
      await this.sleep(this.rng.int(0, 1_000));
      if (!this.active) return;
      await this.oneSession();
    }
  }

  private async oneSession(): Promise<void> {
    const ttl = this.rng.int(600, 3_000);
    const grace = this.rng.int(0, 500);
    const lockDelay = this.rng.chance(0.3) ? this.rng.int(1, 1_000) : 0;
    const openedAt = this.now();
    const opened = await this.call('open-session', (s) =>
      s.sessions.create(this.owner, this.id, { ttlMs: ttl, graceMs: grace, lockDelayMs: lockDelay }),
    );
    if (opened.kind !== 'ok') return;
    const id = opened.value.id;
    const session = { deadline: openedAt + ttl, lost: false, closedAt: undefined as number | undefined };
    const beliefs: Belief[] = [];
    // Heartbeats every ttl/3; the session is lost for good once its deadline passes without one.
    const stopHeartbeatsAt = this.rng.chance(0.2)
      ? this.now() + this.rng.int(0, 4_000)
      : Number.POSITIVE_INFINITY;
    const heartbeats = (async () => {
      while (!session.lost && session.closedAt === undefined) {
        await this.sleep(ttl / 3);
        if (session.closedAt !== undefined) return;
        if (this.now() >= session.deadline) session.lost = true;
        if (session.lost || this.now() >= stopHeartbeatsAt) return;
        const sentAt = this.now();
        const beat = await this.world.call('heartbeat', 10_000, (s) =>
          s.sessions.heartbeat(id, this.owner, this.id),
        );
        if (beat.kind === 'ok' && sentAt < session.deadline) session.deadline = sentAt + ttl;
        else if (beat.kind === 'error' && !beat.error.retryable) session.lost = true;
      }
    })();
    const uses = this.rng.int(1, 4);
    for (let i = 0; i < uses && this.active && !session.lost && this.now() < session.deadline; i++) {
      const lock = this.pickLock();
      const waitMs = this.rng.chance(0.5) ? 0 : this.rng.int(50, MAX_HTTP_WAIT_MS);
      const requestId = this.newRequest();
      const asked = this.chooseMode(lock);
      const cmd: AcquireCommand = {
        name: lock,
        owner: this.owner,
        clientId: this.id,
        tenure: throughSession(id),
        requestId,
        ...modeFields(asked),
      };
      this.sent(lock, requestId, asked);
      const out = await this.call('acquire-in-session', (s) => overHttp(s, cmd, { waitMs }));
      this.trace.add(
        `${this.id} acquire ${lock}${describeAsked(asked)} in session ${id} wait ${waitMs}: ${describe(out)}`,
      );
      this.mismatch(lock, requestId, asked, out);
      const key = this.key(requestId);
      if (out.kind !== 'ok') continue;
      if (!out.value.acquired) {
        this.check.answeredNotAcquired(lock, key);
        continue;
      }
      const grant = out.value.grant;
      this.check.answeredGranted(lock, key, grant.fencingToken, grant.mode, asked);
      // As the SDK's session.acquire (its wait runs under the session's signal): a grant answered
      // once the session is lost here (its deadline passed with no heartbeat confirmed) is released,
      // never held; the service may have expired the session and granted the lock on meanwhile.
      if (session.lost || this.now() >= session.deadline) {
        await this.release(grant);
        break;
      }
      const belief: Belief = {
        client: this.id,
        lock,
        token: grant.fencingToken,
        from: this.now(),
        until: () => session.deadline,
        mode: grant.mode,
        maxHolders: asked.maxHolders,
      };
      this.check.hold(belief);
      beliefs.push(belief);
      if (this.rng.chance(0.2)) {
        // A confused client renews a lock it holds through its session: refused (HELD_BY_SESSION), nothing changes.
        const renew = {
          name: lock,
          owner: this.owner,
          clientId: this.id,
          fencingToken: grant.fencingToken,
          ttlMs: this.rng.int(300, 1_000),
          ...this.hint(grant.mode),
        };
        const renewed = await this.world.call('renew', 10_000, (s) => s.locks.renew(renew));
        this.trace.add(`${this.id} renew session lock ${lock}: ${describe(renewed)}`);
      }
      await this.sleep(this.rng.int(0, 2 * ttl));
      if (this.rng.chance(0.5) && !session.lost) await this.release(grant, belief);
    }
    // Done (or lost it): close the session, which releases whatever is still held through it.
    session.closedAt = this.now();
    for (const b of beliefs) b.endedAt ??= Math.min(session.closedAt, session.deadline);
    if (!session.lost || this.rng.chance(0.5)) {
      const closed = await this.call('close-session', (s) => s.sessions.close(id, this.owner, this.id));
      this.trace.add(`${this.id} close session ${id}: ${describe(closed)}`);
    }
    await heartbeats;
  }
}

function grantOfFrame(frame: AnyFrame, owner: string, clientId: string): Grant {
  const expires = typeof frame.expires_at === 'string' ? Date.parse(frame.expires_at) : undefined;
  return {
    lock: String(frame.lock),
    owner,
    clientId,
    fencingToken: Number(frame.fencing_token),
    held:
      frame.session_id !== undefined && frame.session_id !== null
        ? { kind: 'session', sessionId: String(frame.session_id) }
        : { kind: 'lease', ttlMs: Number(frame.ttl_ms ?? 0), expiresAt: expires ?? 0 },
    mode: frame.mode === 'shared' ? 'shared' : 'exclusive',
    acquiredAt: 0,
    reentry: 1,
    ...(typeof frame.max_holders === 'number' ? { maxHolders: frame.max_holders } : {}),
  };
}

/** A grant as the client keeps it (the service's own record of it). */
const grantOfOutcome = (grant: Grant): Grant => ({ ...grant });

/**
 * A hostile caller: another principal that has learnt everything it could (tokens, client ids,
 * session ids, connection ids: it reads them straight from the table) and uses them. Every attempt
 * to release, renew, heartbeat, close, cancel or wait on someone else's behalf must be refused,
 * and change nothing. Sometimes it is an administrator instead, and force-releases a held lock: its
 * holder is fenced out at that moment.
 */
export class HostileClient extends Client {
  async run(): Promise<void> {
    while (this.active) {
      await this.sleep(this.rng.int(100, 1_500));
      if (!this.active) return;
      const move = this.rng.int(0, 6);
      if (move === 0) await this.stealLock();
      else if (move === 1) await this.hijackSession();
      else if (move === 2) await this.useConnection();
      else if (move === 3) await this.cancelOthers();
      else if (move === 4 && this.rng.chance(0.3)) await this.forceRelease();
      else if (move === 5) await this.waitUnderTheirLabel();
    }
  }

  /**
   * A live holder of a random lock, as the table has it (if it is not this principal's): the
   * exclusive one, or one of its shared holders.
   */
  private victim(): Grant | undefined {
    const lock = this.rng.pick(this.locks);
    const grants = liveGrants(this.world.memory.readNow(lockRef(lock)), this.now());
    const holder = grants.length > 1 ? this.mix.rng.pick(grants) : grants[0];
    return holder && holder.owner !== this.owner ? { ...holder, lock } : undefined;
  }

  private refusedAsOthers(out: Answer<unknown>): boolean {
    // No answer is no evidence either way; a typed refusal is what must come.
    return out.kind !== 'ok';
  }

  private async stealLock(): Promise<void> {
    const holder = this.victim();
    if (!holder) return;
    const as = {
      name: holder.lock,
      owner: this.owner,
      clientId: holder.clientId,
      fencingToken: holder.fencingToken,
      ...this.hint(holder.mode),
    };
    const renew = this.rng.chance(0.5);
    // Named as hostile: the checker fails any commit to a lock made on its behalf (it must change nothing).
    const out = renew
      ? await this.world.call(`${HOSTILE}renew`, 10_000, (s) => s.locks.renew({ ...as, ttlMs: 60_000 }))
      : await this.world.call(`${HOSTILE}release`, 10_000, (s) => s.locks.release(as));
    this.trace.add(
      `${this.id} (hostile) ${renew ? 'renew' : 'release'} ${holder.mode === 'shared' ? 'shared ' : ''}${holder.lock} #${holder.fencingToken}${as.mode ? ` (hint ${as.mode})` : ''}: ${describe(out)}`,
    );
    if (out.kind !== 'none')
      this.check.hostile(
        `${renew ? 'renew' : 'release'} ${holder.mode === 'shared' ? 'the shared grant of ' : ''}${holder.lock} of ${holder.owner}${out.kind === 'error' ? ` (${out.error.code})` : ''}`,
        holder.mode === 'shared'
          ? out.kind === 'error' && ['NOT_HOLDER', 'FORBIDDEN', 'UNAVAILABLE'].includes(out.error.code)
          : this.refusedAsOthers(out),
      );
  }

  private async hijackSession(): Promise<void> {
    const sessions = this.world.memory
      .all()
      .filter((e) => e.ref?.kind === 'session' && e.item[SessionAttr.owner] !== this.owner);
    const victim = sessions.length ? this.rng.pick(sessions) : undefined;
    if (victim?.ref?.kind !== 'session') return;
    const id = victim.ref.session;
    const client = String(victim.item[SessionAttr.client]);
    const close = this.rng.chance(0.5);
    const out = close
      ? await this.world.call('close-session', 10_000, (s) => s.sessions.close(id, this.owner, client))
      : await this.world.call('heartbeat', 10_000, (s) => s.sessions.heartbeat(id, this.owner, client));
    this.trace.add(`${this.id} (hostile) ${close ? 'close' : 'heartbeat'} session ${id}: ${describe(out)}`);
    if (out.kind !== 'none')
      this.check.hostile(`${close ? 'close' : 'heartbeat'} session ${id}`, this.refusedAsOthers(out));
  }

  /** Waits naming someone else's connection: the grant would be pushed there. */
  private async useConnection(): Promise<void> {
    const open = [...this.world.connections.values()].filter((c) => c.open);
    const victim = open.length ? this.rng.pick(open) : undefined;
    if (!victim) return;
    const item = this.world.memory.readNow(connectionRef(victim.id));
    if (!item || item.principal === this.owner) return;
    const cmd: AcquireCommand = {
      name: this.rng.pick(this.locks),
      owner: this.owner,
      clientId: String(item.client_id),
      tenure: lease(1_000),
      requestId: this.newRequest(),
    };
    const ephemeral = this.rng.chance(0.3);
    const out = await this.world.call('acquire', 29_000, (s) =>
      s.locks.acquireByPush(cmd, { waitMs: 5_000, connectionId: victim.id }, ephemeral),
    );
    this.trace.add(`${this.id} (hostile) acquire on connection ${victim.id}: ${describe(out)}`);
    if (out.kind !== 'none') this.check.hostile(`wait on connection ${victim.id}`, this.refusedAsOthers(out));
  }

  /** Cancels the waits of someone else's client, by its client id and request ids. */
  private async cancelOthers(): Promise<void> {
    const lock = this.rng.pick(this.locks);
    const waiters = this.world.memory.queueNow(lock).waiters.filter((w) => w.owner !== this.owner);
    const victim = waiters.length ? this.rng.pick(waiters) : undefined;
    if (!victim) return;
    const byRequest = this.rng.chance(0.5);
    // This caller's own waits under the same label (one whose answer was lost is queued all the
    // same): a cancel by client id may remove those, and only those.
    const own = this.world.memory
      .queueNow(lock)
      .waiters.filter(
        (w) =>
          w.owner === this.owner &&
          w.clientId === victim.clientId &&
          (!byRequest || w.requestId === victim.requestId),
      ).length;
    const cancel = {
      lock,
      owner: this.owner,
      clientId: victim.clientId,
      ...(byRequest ? { requestId: victim.requestId } : {}),
    };
    const out = await this.world.call('cancel', 10_000, (s) => s.locks.cancel(cancel));
    this.trace.add(
      `${this.id} (hostile) cancel ${lock} ${victim.clientId} ${byRequest ? victim.requestId : '*'}: ${describe(out)}`,
    );
    if (out.kind !== 'ok') return;
    const still = this.world.memory.queueNow(lock).waiters.some((w) => w.order === victim.order);
    const touched = out.value.removed > own || out.value.granted !== undefined;
    this.check.hostile(`cancel the wait ${victim.requestId} of ${victim.owner}`, !touched);
    if (!still && victim.deadline > this.now() + 1_000 && touched)
      this.check.hostile(`remove the waiter ${victim.order} of ${victim.owner}`, false);
  }

  /**
   * Waits (over HTTP) for a lock someone else holds, under that holder's own client id: a label is
   * not an identity, so this is just another waiter, queued and served in turn (then released).
   */
  private async waitUnderTheirLabel(): Promise<void> {
    const holder = this.victim();
    if (!holder) return;
    const cmd: AcquireCommand = {
      name: holder.lock,
      owner: this.owner,
      clientId: holder.clientId,
      tenure: lease(500),
      requestId: this.newRequest(),
    };
    const out = await this.world.call('acquire', 29_000, (s) => overHttp(s, cmd, { waitMs: 2_000 }));
    this.trace.add(`${this.id} (label) wait ${holder.lock} as ${holder.clientId}: ${describe(out)}`);
    if (out.kind !== 'ok') return;
    const outcome = out.value;
    if (outcome.acquired) {
      // Its own grant now (the holder's label, this principal): it releases it.
      await this.world.call('release', 10_000, (s) =>
        s.locks.release({
          name: holder.lock,
          owner: this.owner,
          clientId: holder.clientId,
          fencingToken: outcome.grant.fencingToken,
        }),
      );
      return;
    }
    // A wait is not refused at once for sharing a label: it ends (timeout), it is not turned away.
    this.check.hostile(
      `turn away a wait on ${holder.lock} for sharing the label ${holder.clientId}`,
      'ended' in outcome,
    );
  }

  /** As an administrator: ends the current grant of a lock, whoever holds it. */
  private async forceRelease(): Promise<void> {
    const lock = this.rng.pick(this.locks);
    const out = await this.world.call('force-release', 10_000, (s) =>
      s.locks.forceRelease(lock, this.owner, 'simulated'),
    );
    this.trace.add(`${this.id} (admin) force-release ${lock}: ${describe(out)}`);
    // The checker ends the fenced holder's belief when the force-release commits (see checks.ts).
    void out;
  }
}
