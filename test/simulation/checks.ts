/**
 * The guarantees as invariants, checked while the simulation runs (after
 * every commit and every answer a client receives) and once it has settled:
 *
 * - never two holders: at no instant do two clients each believe they hold
 *   the same lock (a belief lasts from the answer until the client's own
 *   deadline: its send time + the lease left, or its session's deadline),
 *   unless both hold it in shared mode: then at most N at once for a
 *   semaphore of N, all of the same N; the lock item, after every commit,
 *   never shows a live exclusive holder beside a live shared entry, nor
 *   more live entries than its max_holders, and its shared_count is the
 *   number of entries it has;
 * - fencing: every new grant of a name (exclusive, or each shared entry of a
 *   run) carries a token above every token that name ever had, across
 *   deletions of its item;
 * - writer preference: no shared grant goes to a request first sent after a
 *   live exclusive waiter (of the default priority) joined the queue and
 *   while it is still there;
 * - a MAX_HOLDERS_MISMATCH refusal leaves nothing of its request (no entry,
 *   waiter or record); a hostile release or renew commits nothing;
 * - one outcome per request: a request answered "not acquired" is never
 *   granted afterwards and leaves nothing in the queue; no request is told
 *   two different grants;
 * - housekeeping: no write moves `gc_at` before what the item records ends
 *   (a lease, a wait); an item held through a session, or a session not yet
 *   swept, has none;
 * - limits do not leak: after every commit, each waiter counter (limits) equals the number of
 *   waiter items it counts (unless TTL collected one of them: then nothing removed it in time);
 * - FIFO within a priority: a handoff never passes over a live waiter of
 *   the same priority that arrived in an earlier millisecond and joined
 *   first;
 * - liveness once faults stop: nothing left queued, held by an ended
 *   session, or due and unhandled;
 * - promptness, in histories without the faults that SQS and Lambda do not
 *   promise to avoid (simulate.ts TIMELY): a lock left free (no live holder
 *   or shared entry, no lock-delay) with a live waiter first in its queue is
 *   handed on within PROMPT_MS, whether a release, a lease that lapsed or a
 *   wait that ended left it so; and a WebSocket waiter (among the first 25
 *   a serve reads) leaves its queue, told `timeout`, within PROMPT_MS of its
 *   deadline. The sweeper (a minute) is only the backstop for lost timers; a
 *   timer nobody armed, or armed too late, fails here.
 */

import { partyId } from '../../lambdas/core/deadlock';
import type { Item } from '../../lambdas/core/expr';
import { IntentAttr, intentionsOf } from '../../lambdas/core/hierarchy';
import {
  liveEntries,
  MAX_SHARED_HOLDERS,
  requestTag,
  SharedAttr,
  type SharedEntry,
  sharedEntries,
  writersBlockedUntil,
} from '../../lambdas/core/holders';
import { lockRef, requestRef } from '../../lambdas/core/items';
import {
  blockedUntil,
  LockAttr,
  type LockMode,
  liveGrants,
  liveHolder,
  type ReleaseCommand,
  releasedBefore,
  releasedSlot,
} from '../../lambdas/core/lock';
import { connectionQuotaScope, principalQuotaScope, WaitAttr, waiterOf } from '../../lambdas/core/queue';
import { RequestAttr } from '../../lambdas/core/request';
import { SessionAttr } from '../../lambdas/core/session';
import { DUE_INDEX, GC_ATTRIBUTE } from '../../lambdas/store/table';
import { intentionProblems } from '../support/hierarchy-checks';
import type { Change, MemoryStorage } from '../support/memory-storage';
import type { Scheduler } from './scheduler';

export interface Belief {
  readonly client: string;
  readonly lock: string;
  readonly token: number;
  readonly from: number;
  /** The client's own deadline for it (a session's moves with its heartbeats). */
  readonly until: () => number;
  /** When the client stopped using it (sent its release, closed its session, disconnected). */
  endedAt?: number;
  /** Default exclusive. */
  readonly mode?: LockMode;
  /** A shared grant of a semaphore: the N it asked for. */
  readonly maxHolders?: number | undefined;
}

/** What an acquire asked for (clients.ts Asked). */
interface AskedMode {
  readonly mode: LockMode;
  readonly maxHolders: number | undefined;
}

/** Invocations of the hostile principal that must change nothing (clients.ts HOSTILE). */
const HOSTILE = 'hostile-';

export class Violation extends Error {
  override readonly name = 'Violation';
}

/** A ring of recent events, printed with a failure. */
export class Trace {
  private readonly lines: string[] = [];
  constructor(
    private readonly sched: Scheduler,
    private readonly keep = 400,
  ) {}
  add(line: string): void {
    this.lines.push(`${String(this.sched.now() % 10_000_000).padStart(7)} ${line}`);
    if (this.lines.length > this.keep) this.lines.shift();
  }
  tail(n = 80): string {
    return this.lines.slice(-n).join('\n');
  }
}

const requestText = (lock: string, key: string) => `${lock} ${key}`;

/** A cycle's edge as a DEADLOCK's body carries it (core/deadlock.ts edgeBody). */
export interface CycleEdge {
  readonly waiter: { readonly client_id: string; readonly party: string };
  readonly lock: string;
  readonly blocker: { readonly client_id: string; readonly party: string };
  readonly blocker_is: 'holder' | 'ahead';
  /** In a hierarchy: the lock above or below `lock` the blocker holds. */
  readonly through?: string;
}

/**
 * How long a free lock may keep a live waiter at its head (TIMELY histories): stream delivery
 * (up to 250 ms), a timer's lateness (up to 50 ms) and the calls of one serve, with room to spare;
 * far below the sweeper's minute, so only a timer or a notifier can meet it.
 */
export const PROMPT_MS = 1_500;

export class Checker {
  readonly violations: string[] = [];
  /** Per lock: the head waiter it was first seen free with (and when), while it stays so. */
  private readonly freeWithHead = new Map<string, { readonly order: string; readonly since: number }>();
  private readonly beliefs = new Map<string, Belief[]>();
  private readonly maxFence = new Map<string, number>();
  private readonly notAcquired = new Set<string>();
  private readonly grantedTo = new Map<string, number>();
  private readonly joined = new Map<string, number>();
  /** When each waiter item appeared (virtual ms), by `${lock} ${order}`. */
  private readonly joinedAt = new Map<string, number>();
  /** When each request was first sent, by requestText. */
  private readonly firstSent = new Map<string, number>();
  /** Request keys by the tag a shared entry records of them (holders.ts requestTag), by `${lock} ${tag}`. */
  private readonly tagged = new Map<string, string>();
  private commits = 0;
  readonly counts = {
    grants: 0,
    notAcquired: 0,
    beliefs: 0,
    hostile: 0,
    sharedGrants: 0,
    sharedRuns: 0,
    sharedBeliefs: 0,
    maxConcurrentShared: 0,
    reentries: 0,
    mismatches: 0,
    /** Shared grants made while a live exclusive waiter was queued (to requests sent before it joined). */
    sharedBesideWriter: 0,
    /** Waits refused as a deadlock's victim (each cycle checked against what the store held). */
    deadlocks: 0,
  };

  /**
   * Who held each lock, and who waited for it (with what each wait named as held), over time: what
   * a DEADLOCK's cycle is checked against. Intervals by lock; `to` undefined while it lasts.
   */
  private readonly heldOver = new Map<string, { party: string; from: number; to?: number }[]>();
  private readonly waitedOver = new Map<
    string,
    { party: string; order: string; holding: readonly string[]; from: number; to?: number }[]
  >();

  constructor(
    private readonly memory: MemoryStorage,
    private readonly sched: Scheduler,
    private readonly trace: Trace,
    private readonly retentionSeconds: number,
    /** The locks, when they form a hierarchy (core/hierarchy.ts): its rules are checked too. */
    private readonly tree?: readonly string[],
  ) {}

  /**
   * A belief beside live ones on the locks above and below it: an exclusive holder covers its whole
   * subtree, so two beliefs on a lock and one below it may stand together only if both are shared.
   */
  private acrossLevels(belief: Belief, now: number): void {
    if (!this.tree) return;
    const related = (other: string) =>
      other.startsWith(`${belief.lock}/`) || belief.lock.startsWith(`${other}/`);
    for (const [lock, others] of this.beliefs) {
      if (!related(lock)) continue;
      for (const other of others) {
        const alive = (other.endedAt === undefined || other.endedAt > now) && other.until() > now;
        if (!alive || (belief.mode === 'shared' && other.mode === 'shared')) continue;
        this.fail(
          `${belief.client} holds ${belief.lock} (${belief.mode ?? 'exclusive'}, #${belief.token}) while ${other.client} holds ${lock} (${other.mode ?? 'exclusive'}, #${other.token})`,
        );
      }
    }
  }

  /**
   * After every commit, in a hierarchy: each lock's live intentions are exactly the live grants
   * below it (none missing, none left over), and its counts are exact.
   */
  private intentionsAgree(now: number): void {
    if (!this.tree) return;
    for (const problem of intentionProblems(this.tree, (lock) => this.memory.readNow(lockRef(lock)), now))
      this.fail(problem);
  }

  private fail(message: string): void {
    this.violations.push(message);
    this.trace.add(`VIOLATION ${message}`);
  }

  /** A client now believes it holds `lock`: nobody else may believe so at this instant. */
  hold(belief: Belief): void {
    const now = this.sched.now();
    // Told of a grant an operator has fenced out meanwhile (the push was on its way): over already.
    if (belief.token <= (this.fenced.get(belief.lock) ?? 0)) {
      belief.endedAt = now;
      return;
    }
    this.counts.beliefs++;
    this.acrossLevels(belief, now);
    const shared = belief.mode === 'shared';
    if (shared) this.counts.sharedBeliefs++;
    const others = this.beliefs.get(belief.lock) ?? [];
    const sharers = [belief];
    for (const other of others) {
      const alive = (other.endedAt === undefined || other.endedAt > now) && other.until() > now;
      if (!alive) continue;
      if (shared && other.mode === 'shared') {
        sharers.push(other);
        continue;
      }
      this.fail(
        `two holders of ${belief.lock}: ${other.client} (${other.mode ?? 'exclusive'}, token ${other.token}, until ${other.until()}) and ${belief.client} (${belief.mode ?? 'exclusive'}, token ${belief.token})`,
      );
    }
    if (shared) {
      this.counts.maxConcurrentShared = Math.max(this.counts.maxConcurrentShared, sharers.length);
      const who = () => sharers.map((b) => `${b.client} #${b.token} N=${b.maxHolders ?? '-'}`).join(', ');
      const ns = new Set(sharers.map((b) => b.maxHolders));
      if (ns.size > 1) this.fail(`shared holders of ${belief.lock} with different max_holders: ${who()}`);
      const n = Math.min(...sharers.map((b) => b.maxHolders ?? MAX_SHARED_HOLDERS));
      if (sharers.length > n)
        this.fail(`${sharers.length} shared holders of ${belief.lock}, a semaphore of ${n}: ${who()}`);
    }
    // Only beliefs that may still be alive matter from now on.
    this.beliefs.set(belief.lock, [
      ...others.filter((o) => (o.endedAt ?? Infinity) > now && o.until() > now),
      belief,
    ]);
  }

  /**
   * An administrator force-released `lock`, ending the grant with `token`: its holder is fenced out
   * from now on (its writes carry a stale token), so its belief ends here.
   */
  fencedOut(lock: string, token: number): void {
    const now = this.sched.now();
    this.fenced.set(lock, Math.max(this.fenced.get(lock) ?? 0, token));
    for (const belief of this.beliefs.get(lock) ?? [])
      if (belief.token <= token && (belief.endedAt === undefined || belief.endedAt > now))
        belief.endedAt = now;
  }

  /** Whether an operator has fenced out the grant with `token` on `lock` (force-released it, or one after it). */
  isFencedOut(lock: string, token: number): boolean {
    return token <= (this.fenced.get(lock) ?? 0);
  }

  /**
   * The rightful holder's release of a lease live until its answer was refused as not held (its
   * first attempt applied, its answer lost, and a retry refused): a bug, unless a later grant's
   * release took the slot that remembered it (guarantee 4's bound). The lock remembering it, or
   * never having remembered it (its slot still empty), is a bug.
   */
  rightfulReleaseRefused(cmd: ReleaseCommand, code: string): void {
    const item = this.memory.readNow(lockRef(cmd.name));
    if (releasedBefore(item, cmd) || item?.[releasedSlot(cmd.fencingToken)] === undefined)
      this.fail(
        `the release of ${cmd.name} #${cmd.fencingToken} by its rightful holder, its lease live, was refused ${code}`,
      );
  }

  /** A hostile caller's request that must have been refused. */
  hostile(what: string, refused: boolean): void {
    this.counts.hostile++;
    if (!refused) this.fail(`another principal was allowed to ${what}`);
  }

  /** A client sent a request's first attempt (its arrival, however often it is retried). */
  sent(lock: string, requestKey: string, _mode: LockMode, at: number): void {
    const key = requestText(lock, requestKey);
    if (!this.firstSent.has(key)) this.firstSent.set(key, at);
    this.tagged.set(`${lock} ${requestTag(requestKey)}`, requestKey);
  }

  /**
   * An acquire was refused MAX_HOLDERS_MISMATCH: a final refusal, so "not acquired" (nothing of the
   * request may be live in the queue, nor be granted later), and it holds nothing of the lock. (A
   * retry may be refused so after an earlier attempt queued: what that left must have ended.)
   */
  mismatchRefused(lock: string, requestKey: string, asked: AskedMode): void {
    this.counts.mismatches++;
    const key = requestText(lock, requestKey);
    if (asked.mode !== 'shared')
      this.fail(`request ${key} in exclusive mode was refused MAX_HOLDERS_MISMATCH`);
    const item = this.memory.readNow(lockRef(lock));
    const entry = sharedEntries(item).find((e) => this.requestOf(lock, e) === requestKey);
    if (entry) this.fail(`request ${key} was refused MAX_HOLDERS_MISMATCH yet holds #${entry.fencingToken}`);
    if (item?.[LockAttr.grantRequest] === requestKey && liveHolder(item, this.sched.now()))
      this.fail(`request ${key} was refused MAX_HOLDERS_MISMATCH yet holds the lock`);
    this.answeredNotAcquired(lock, requestKey);
  }

  /** A client was answered with a grant for its request. */
  answeredGranted(
    lock: string,
    requestKey: string,
    token: number,
    mode: LockMode = 'exclusive',
    asked?: AskedMode,
  ): void {
    const key = requestText(lock, requestKey);
    if (asked && asked.mode !== mode)
      this.fail(`request ${key} asked for ${asked.mode} mode and was granted #${token} in ${mode} mode`);
    if (this.notAcquired.has(key))
      this.fail(`request ${key} was told "not acquired", then granted token ${token}`);
    const before = this.grantedTo.get(key);
    if (before !== undefined && before !== token)
      this.fail(`request ${key} was told two grants: tokens ${before} and ${token}`);
    this.grantedTo.set(key, token);
  }

  /** A client was answered "not acquired" for its request: nothing of it may remain, nor be granted later. */
  answeredNotAcquired(lock: string, requestKey: string): void {
    const key = requestText(lock, requestKey);
    this.counts.notAcquired++;
    if (this.grantedTo.has(key)) this.fail(`request ${key} was granted, then told "not acquired"`);
    // A queue entry past its deadline can never be granted (a handoff serves only live waiters): it is
    // garbage waiting for the sweeper, not a wait. A live one must not remain.
    const now = this.sched.now();
    const queued = this.memory
      .queueNow(lock)
      .waiters.filter((w) => w.requestKey === requestKey && w.deadline > now);
    if (queued.length)
      this.fail(`request ${key} was told "not acquired" while still queued at ${queued[0]?.order}`);
    const record = this.memory.readNow(requestRef(lock, requestKey));
    const state = record?.[RequestAttr.state];
    const deadline = Number(record?.[RequestAttr.deadline] ?? 0);
    if ((state === 'queued' && deadline > now) || state === 'granted')
      this.fail(`request ${key} was told "not acquired" while its record says ${state}`);
    this.notAcquired.add(key);
  }

  /** Every committed change: fencing, grants after "not acquired", gc_at, FIFO. */
  /** The highest token an operator fenced out, by lock: a grant told after that is over already. */
  private readonly fenced = new Map<string, number>();

  /** Counter scopes whose waiters TTL collected (never decremented by design): not compared. */
  private readonly untracked = new Set<string>();

  onCommit = (changes: readonly Change[]): void => {
    this.commits++;
    this.countersAgree(changes);
    const now = this.sched.now();
    this.intentionsAgree(now);
    const served = changes.filter((c) => c.ref.kind === 'waiter' && c.old && !c.new);
    const invocation = (this.sched.current() as { name?: string } | undefined)?.name;
    for (const c of changes) {
      if (invocation?.startsWith(HOSTILE) && c.ref.kind === 'lock')
        this.fail(
          `another principal's ${invocation.slice(HOSTILE.length)} changed ${c.ref.lock}: ${JSON.stringify(c.old)} -> ${JSON.stringify(c.new)}`,
        );
      if (c.ref.kind === 'waiter' && c.new && !c.old) {
        this.joined.set(`${c.ref.lock} ${c.ref.order}`, this.commits);
        this.joinedAt.set(`${c.ref.lock} ${c.ref.order}`, now);
      }
      if (process.env.SIM_DEBUG_LOCK && c.ref.kind === 'lock' && c.ref.lock === process.env.SIM_DEBUG_LOCK)
        this.trace.add(
          `DEBUG ${c.ref.lock}: ${JSON.stringify(c.old)} -> ${JSON.stringify(c.new)} with ${changes.map((x) => x.ref.kind).join(',')} in ${JSON.stringify((this.sched.current() as { name?: string } | undefined)?.name)}`,
        );
      if (c.ref.kind === 'lock') this.holdersOver(c.ref.lock, c.new, now);
      if (c.ref.kind === 'waiter') this.waitersOver(c.ref.lock, c.ref.order, c.old, c.new, now);
      if (c.ref.kind === 'lock' && c.new) this.lockChanged(c.ref.lock, c.old, c.new, served, now);
      if (c.new) this.gcRule(c, now);
      // A queue's count lives in the lock item: collecting it while waits it counts go on loses
      // them (new grants would pass them by). A lock item is only ever deleted by its TTL.
      if (c.ref.kind === 'lock' && c.old && !c.new)
        for (const w of this.memory.queueNow(c.ref.lock).waiters)
          if (w.deadline > now)
            this.fail(
              `lock ${c.ref.lock} was collected while ${w.clientId} waits in its queue until ${w.deadline}`,
            );
    }
  };

  /** Opens and closes the holding intervals of a lock's holders as its item changes. */
  private holdersOver(lock: string, item: Item | undefined, now: number): void {
    const live = new Set(liveGrants(item, now).map((g) => partyId(g)));
    const spans = this.heldOver.get(lock) ?? [];
    for (const s of spans) if (s.to === undefined && !live.has(s.party)) s.to = now;
    for (const party of live)
      if (!spans.some((s) => s.party === party && s.to === undefined)) spans.push({ party, from: now });
    this.heldOver.set(lock, spans);
  }

  private waitersOver(
    lock: string,
    order: string,
    old: Item | undefined,
    item: Item | undefined,
    now: number,
  ) {
    const spans = this.waitedOver.get(lock) ?? [];
    if (item && !old) {
      const w = waiterOf(order, item);
      spans.push({ party: partyId(w), order, holding: w.holding ?? [], from: now });
    }
    if (!item && old) for (const s of spans) if (s.order === order && s.to === undefined) s.to = now;
    this.waitedOver.set(lock, spans);
  }

  /**
   * A wait was refused as a deadlock's victim: it is "not acquired" (nothing of it may remain or be
   * granted later), and its cycle is a true one: each edge's blocker held that lock, or waited
   * ahead for it, at some time since the request was sent; each hold is kept by the next edge's
   * wait, which names it; and the cycle closes on the refused wait's own client.
   */
  deadlockRefused(
    lock: string,
    requestKey: string,
    party: string,
    cycle: readonly CycleEdge[],
    sentAt: number,
  ): void {
    this.counts.deadlocks++;
    this.answeredNotAcquired(lock, requestKey);
    const now = this.sched.now();
    const during = (s: { from: number; to?: number }) => s.from <= now && (s.to ?? now) >= sentAt;
    const bad = (why: string) => this.fail(`DEADLOCK for ${requestText(lock, requestKey)}: ${why}`);
    // A retry told of an earlier refusal (its first answer was lost) carries no cycle.
    if (cycle.length === 0) return;
    const first = cycle[0];
    if (!first || first.lock !== lock || first.waiter.party !== party)
      bad('the cycle does not start at the refused wait');
    cycle.forEach((e, i) => {
      const next = cycle[(i + 1) % cycle.length] as CycleEdge;
      if (e.blocker.party !== next.waiter.party) bad(`edge ${i} does not lead to edge ${i + 1}`);
      // Through a hierarchy, the blocker holds a lock above or below.
      const at = e.through ?? e.lock;
      if (e.blocker_is === 'holder') {
        if (!(this.heldOver.get(at) ?? []).some((s) => s.party === e.blocker.party && during(s)))
          bad(`${e.blocker.client_id} never held ${at} while the request ran`);
        const keeps = (this.waitedOver.get(next.lock) ?? []).some(
          (s) => s.party === next.waiter.party && s.holding.includes(at) && during(s),
        );
        if (!keeps) bad(`no wait of ${next.waiter.client_id} for ${next.lock} named ${at} as held`);
      } else if (!(this.waitedOver.get(at) ?? []).some((s) => s.party === e.blocker.party && during(s)))
        bad(`${e.blocker.client_id} never waited for ${at} while the request ran`);
    });
  }

  /** Each waiter counter a commit touched equals the waiter items it counts. */
  private countersAgree(changes: readonly Change[]): void {
    const scopesOf = (item: Item | undefined, order: string) => {
      if (!item) return [];
      const w = waiterOf(order, item);
      return [
        principalQuotaScope(w.requestKey),
        ...(w.connectionId ? [connectionQuotaScope(w.connectionId)] : []),
      ];
    };
    const touched = new Set<string>();
    for (const c of changes) {
      if (c.ref.kind === 'quota') touched.add(c.ref.scope);
      if (c.ref.kind !== 'waiter') continue;
      for (const scope of [...scopesOf(c.old, c.ref.order), ...scopesOf(c.new, c.ref.order)]) {
        touched.add(scope);
        if (this.memory.collecting) this.untracked.add(scope);
      }
    }
    if (!touched.size || this.memory.collecting) return;
    const counted = new Map<string, number>();
    const counters = new Map<string, number>();
    for (const { ref, item } of this.memory.all()) {
      if (ref?.kind === 'quota') counters.set(ref.scope, Number(item.waiting ?? 0));
      if (ref?.kind === 'waiter')
        for (const scope of scopesOf(item, ref.order)) counted.set(scope, (counted.get(scope) ?? 0) + 1);
    }
    for (const scope of touched) {
      if (this.untracked.has(scope) || !counters.has(scope)) continue;
      if (counters.get(scope) !== (counted.get(scope) ?? 0))
        this.fail(
          `waiter counter ${scope} says ${counters.get(scope)} but ${counted.get(scope) ?? 0} waiters count in it`,
        );
    }
  }

  private lockChanged(
    lock: string,
    old: Item | undefined,
    item: Item,
    served: readonly Change[],
    now: number,
  ) {
    const fence = item[LockAttr.fence];
    const holder = item[LockAttr.holder];
    // A force-release (an administrator) fences the old holder out the moment it commits.
    const forced = item[LockAttr.forcedAt];
    if (
      forced !== undefined &&
      forced !== old?.[LockAttr.forcedAt] &&
      typeof old?.[LockAttr.fence] === 'number'
    ) {
      this.trace.add(`force-release ${lock}: #${old[LockAttr.fence]} fenced out`);
      this.fencedOut(lock, old[LockAttr.fence] as number);
    }
    const fresh = this.sharedState(lock, old, item, now);
    const isNewGrant = typeof fence === 'number' && holder !== undefined && fence !== old?.[LockAttr.fence];
    if (!isNewGrant && fresh.length === 0) return;
    const max = this.maxFence.get(lock) ?? 0;
    if (isNewGrant) {
      this.counts.grants++;
      if (fence <= max) this.fail(`fencing token of ${lock} went from ${max} to ${fence}`);
      this.maxFence.set(lock, Math.max(max, fence));
      const request = item[LockAttr.grantRequest];
      if (typeof request === 'string' && this.notAcquired.has(requestText(lock, request)))
        this.fail(
          `request ${request} on ${lock} was granted token ${fence} after it was told "not acquired"`,
        );
      this.trace.add(
        `grant ${lock} #${fence} to ${String(holder)} (${String(request ?? '-')}) until ${String(item[LockAttr.expiresAt] ?? 'session')}`,
      );
    } else {
      // Shared grants (one, or a run handed over together): each token above every earlier one.
      this.counts.sharedGrants += fresh.length;
      if (fresh.length > 1) this.counts.sharedRuns++;
      let highest = max;
      for (const e of fresh) {
        if (e.fencingToken <= highest)
          this.fail(`fencing token of ${lock} went from ${highest} to ${e.fencingToken} (a shared grant)`);
        highest = Math.max(highest, e.fencingToken);
        const request = this.requestOf(lock, e);
        if (request !== undefined && this.notAcquired.has(requestText(lock, request)))
          this.fail(
            `request ${request} on ${lock} was granted shared token ${e.fencingToken} after it was told "not acquired"`,
          );
        this.writerPreference(lock, e, now);
        this.trace.add(
          `grant ${lock} #${e.fencingToken} shared${item[SharedAttr.maxHolders] === undefined ? '' : ` N=${item[SharedAttr.maxHolders]}`} to ${e.clientId} (${request ?? e.grantRequest ?? '-'}) until ${e.expiresAt ?? `session ${e.session}`}`,
        );
      }
      this.maxFence.set(lock, highest);
    }
    for (const c of served)
      if (c.old && c.ref.kind === 'waiter' && c.ref.lock === lock)
        this.fifo(lock, waiterOf(c.ref.order, c.old), now);
  }

  /**
   * The shared side of a lock item after a commit: its counts agree with its entries, no live
   * exclusive holder beside a live entry, no more live entries than its N, no entry above the
   * counter. Answers the entries this commit granted (new, or a slot given a new token), in token order.
   */
  private sharedState(lock: string, old: Item | undefined, item: Item, now: number): SharedEntry[] {
    const entries = sharedEntries(item);
    if (Number(item[SharedAttr.count] ?? 0) !== entries.length)
      this.fail(
        `${lock}: shared_count is ${item[SharedAttr.count]} but the item has ${entries.length} entries`,
      );
    const sessions = entries.filter((e) => e.session !== undefined).length;
    const sessionCount = Math.max(0, Number(item[SharedAttr.sessions] ?? 0));
    if (sessionCount !== sessions)
      this.fail(
        `${lock}: shared_sessions is ${item[SharedAttr.sessions]} but ${sessions} entries are held through sessions`,
      );
    if (entries.length === 0) return [];
    const live = liveEntries(item, now);
    const exclusive = liveHolder(item, now);
    if (exclusive && live.length)
      this.fail(
        `${lock} is held exclusively by ${exclusive.clientId} (#${exclusive.fencingToken}) beside ${live.length} live shared holders (#${live.map((e) => e.fencingToken).join(', #')})`,
      );
    const n =
      typeof item[SharedAttr.maxHolders] === 'number' ? (item[SharedAttr.maxHolders] as number) : undefined;
    if (live.length > (n ?? MAX_SHARED_HOLDERS))
      this.fail(`${lock} has ${live.length} live shared holders, max_holders ${n ?? '-'}`);
    const counter = item[LockAttr.fence];
    for (const e of entries)
      if (typeof counter !== 'number' || e.fencingToken > counter)
        this.fail(`${lock}: shared entry #${e.fencingToken} is above the fencing counter ${String(counter)}`);
    const before = new Set(sharedEntries(old).map((e) => `${e.slot} ${e.fencingToken}`));
    return entries.filter((e) => !before.has(`${e.slot} ${e.fencingToken}`));
  }

  /** The request key a shared entry answered, if a client told of it (entries record a tag of it). */
  private requestOf(lock: string, e: SharedEntry): string | undefined {
    if (e.grantRequest === undefined) return undefined;
    return (
      this.tagged.get(`${lock} ${e.grantRequest}`) ??
      (e.grantRequest.includes(':') ? e.grantRequest : undefined)
    );
  }

  /**
   * Writer preference: a shared grant never goes to a request first sent after a live exclusive
   * waiter (of the default priority, as every simulated one is) joined the queue while it is still
   * queued. (That request would have arrived behind the writer: a shared acquire with anyone
   * queued queues; a request already queued ahead, or a retry of one, was first sent earlier.)
   */
  private writerPreference(lock: string, e: SharedEntry, now: number) {
    const request = this.requestOf(lock, e);
    if (request === undefined) return;
    const sent = this.firstSent.get(requestText(lock, request));
    if (sent === undefined) return;
    for (const w of this.memory.queueNow(lock).waiters) {
      const joinedAt = this.joinedAt.get(`${lock} ${w.order}`);
      if (w.mode !== 'exclusive' || w.priority < 0 || w.deadline <= now || joinedAt === undefined) continue;
      this.counts.sharedBesideWriter++;
      if (joinedAt < sent)
        this.fail(
          `writer starved on ${lock}: shared #${e.fencingToken} went to ${e.clientId} (${request}, first sent at ${sent}) while the exclusive waiter ${w.clientId} (${w.order}) queued since ${joinedAt} waits`,
        );
    }
  }

  /**
   * A waiter just served (alone, or in a run of shared waiters granted together): no live waiter of
   * its priority that arrived earlier and joined first was passed over.
   */
  private fifo(lock: string, head: ReturnType<typeof waiterOf>, now: number) {
    const headJoined = this.joined.get(`${lock} ${head.order}`) ?? 0;
    for (const w of this.memory.queueNow(lock).waiters) {
      const joined = this.joined.get(`${lock} ${w.order}`) ?? Infinity;
      if (
        w.priority === head.priority &&
        w.arrivedAt < head.arrivedAt &&
        joined < headJoined &&
        w.deadline > now
      )
        this.fail(
          `FIFO: ${lock} served ${head.clientId} (${head.mode}, ${head.order}) before ${w.clientId} (${w.mode}, ${w.order})`,
        );
    }
  }

  private gcRule(c: Change, now: number) {
    const item = c.new as Item;
    const gc = item[GC_ATTRIBUTE];
    const gcMs = typeof gc === 'number' ? (gc - this.retentionSeconds) * 1000 : undefined;
    const label = `${c.ref.kind} ${JSON.stringify(c.ref)}`;
    if (c.ref.kind === 'lock' && item[LockAttr.holder] !== undefined) {
      if (item[LockAttr.session] !== undefined && gc !== undefined)
        this.fail(`${label} is held through a session yet may be collected (gc_at ${gc})`);
      const end = item[LockAttr.expiresAt];
      // Grants below it held through sessions (a hierarchy) keep it from ever being collected.
      const keptBelow = Number(item[IntentAttr.sessions] ?? 0) > 0 && gc === undefined;
      if (
        item[LockAttr.session] === undefined &&
        typeof end === 'number' &&
        !keptBelow &&
        (gcMs === undefined || gcMs + 1000 < end)
      )
        this.fail(`${label} records a lease to ${end} but may be collected from ${gcMs}`);
    }
    if (c.ref.kind === 'lock' && gc !== undefined && sharedEntries(item).some((e) => e.session !== undefined))
      this.fail(`${label} has a shared holder through a session yet may be collected (gc_at ${gc})`);
    if (c.ref.kind === 'lock') {
      // Intentions (a hierarchy): one held through a session keeps the item forever; a lease's
      // keeps it at least to the lease's end (its writes start the retention period from their
      // time, which is longer than any lease).
      for (const i of intentionsOf(item)) {
        if (i.session !== undefined && gc !== undefined)
          this.fail(
            `${label} records ${i.name}'s grant through a session below it, yet may be collected (gc_at ${gc})`,
          );
        if (i.expiresAt !== undefined && typeof gc === 'number' && gc * 1000 + 1000 < i.expiresAt)
          this.fail(
            `${label} records ${i.name}'s lease below it to ${i.expiresAt} but is collected at ${gc * 1000}`,
          );
      }
    }
    if (c.ref.kind === 'waiter' || (c.ref.kind === 'request' && item[RequestAttr.state] === 'queued')) {
      const deadline = item[WaitAttr.deadline];
      if (typeof deadline === 'number' && (gcMs === undefined || gcMs + 1000 < deadline))
        this.fail(`${label} waits until ${deadline} but may be collected from ${gcMs}`);
    }
    if (c.ref.kind === 'session' && item[SessionAttr.sweptAt] === undefined && gc !== undefined)
      this.fail(`${label} is not swept yet may be collected (gc_at ${gc})`);
    void now;
  }

  /** Once faults have stopped and everything had time to settle. */
  /** Promptness (see the top of this file): called every few virtual ms of a TIMELY history. */
  handedOnPromptly(locks: readonly string[]): void {
    const now = this.sched.now();
    for (const lock of locks) {
      const item = this.memory.readNow(lockRef(lock));
      const waiters = Number(item?.[LockAttr.queued] ?? 0) > 0 ? this.memory.queueNow(lock, 25).waiters : [];
      const overdue = waiters.find((w) => w.connectionId !== undefined && w.deadline < now - PROMPT_MS);
      if (overdue)
        this.fail(
          `${lock}: WebSocket waiter ${overdue.clientId} (${overdue.order}) still queued ${now - overdue.deadline} ms after its deadline`,
        );
      const freeWithWaiters =
        waiters.length > 0 &&
        !liveHolder(item, now) &&
        liveEntries(item, now).length === 0 &&
        blockedUntil(item, now) === undefined &&
        writersBlockedUntil(item, now) === undefined;
      // The first waiter a handoff may take (one past its deadline is dropped instead).
      const head = freeWithWaiters ? waiters.find((w) => w.deadline > now) : undefined;
      const free = head !== undefined && head.deadline > now + PROMPT_MS;
      const seen = this.freeWithHead.get(lock);
      if (!free) this.freeWithHead.delete(lock);
      else if (seen?.order !== head.order) this.freeWithHead.set(lock, { order: head.order, since: now });
      else if (now - seen.since > PROMPT_MS)
        this.fail(
          `${lock} has been free for ${now - seen.since} ms with ${head.clientId} (${head.order}) next in its queue`,
        );
    }
  }

  settled(): void {
    const now = this.sched.now();
    for (const { ref, item } of this.memory.all()) {
      if (ref?.kind === 'waiter') this.fail(`waiter ${ref.lock} ${ref.order} still queued at the end`);
      if (ref?.kind === 'lock') {
        const holder = liveHolder(item, now);
        if (holder)
          this.fail(`${ref.lock} still held at the end by ${holder.clientId} (#${holder.fencingToken})`);
        const readers = liveEntries(item, now);
        if (readers.length)
          this.fail(
            `${ref.lock} still held in shared mode at the end by ${readers.map((e) => `${e.clientId} (#${e.fencingToken})`).join(', ')}`,
          );
        if (!holder && readers.length === 0 && Number(item[LockAttr.queued] ?? 0) > 0)
          this.fail(`${ref.lock} is free with a queue count of ${item[LockAttr.queued]} at the end`);
      }
      if (ref?.kind === 'request' && item[RequestAttr.state] === 'queued')
        this.fail(`request ${String(item[RequestAttr.key])} still queued at the end`);
      // Every waiter is gone, so every waiter counter is back to 0 (limits do not leak).
      if (ref?.kind === 'quota' && Number(item.waiting ?? 0) !== 0)
        this.fail(`waiter counter ${ref.scope} is ${item.waiting} at the end, with no waiter left`);
      // Every HTTP wait is over, so every slot is free or its lease has ended.
      if (ref?.kind === 'http-wait' && item.holder !== undefined && Number(item.until ?? 0) > now)
        this.fail(`HTTP-wait slot ${ref.slot} is still held at the end by ${item.holder}`);
      if (ref?.kind === 'session' && item[SessionAttr.sweptAt] === undefined)
        this.fail(`session ${ref.session} never swept (ended: ${item[SessionAttr.endedAt] !== undefined})`);
      const due = item[DUE_INDEX.sk];
      if (typeof due === 'number' && due < now - 5 * 60_000)
        this.fail(`${JSON.stringify(ref)} was due at ${due} and is still in the due index`);
    }
    void lockRef;
  }
}
