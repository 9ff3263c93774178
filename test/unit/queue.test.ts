/**
 * Tests of the wait queue's rules (lambdas/core/queue.ts) together with the
 * lock rules they lean on (lambdas/core/lock.ts), run in memory.
 *
 * The model is one lock item (kept by MemoryLock, which runs the lock
 * protocols exactly as the DynamoDB store does) and the waiter items beside
 * it, keyed by their sort key (`order`). Queue steps run as DynamoDB's
 * TransactWriteItems does: every step's condition is checked against the
 * items as they are, and only if all hold do all steps apply.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LatchkeyError } from '../../lambdas/core/errors';
import { applyUpdate, evaluate, type Item, type Write } from '../../lambdas/core/expr';
import {
  LockAttr as A,
  type AcquireCommand,
  type AcquireOutcome,
  acquireProtocol,
  fenceFloor,
  type Grant,
  grantOf,
  liveHolder,
  type Protocol,
  queuedCount,
  releaseProtocol,
  renewProtocol,
  requestKey,
  runProtocol,
  sessionReleaseWrite,
} from '../../lambdas/core/lock';
import {
  duplicateOf,
  enqueueSteps,
  handoffSteps,
  onLockChange,
  PRIORITY,
  planServe,
  queueOrder,
  RELEASER_BACKUP_MS,
  removalSteps,
  resetCountWrite,
  type Step,
  stillWatched,
  tookHolderOff,
  undoGrantWrite,
  type Waiter,
  waiterItem as waiterItemOf,
  waiterOf,
} from '../../lambdas/core/queue';
import type { TransactResult } from '../../lambdas/store/queue-store';
import { MemoryLock } from '../support/memory-store';

const LOCK = 'L';
const START = 1_800_000_000_000;
const CLIENTS = ['a', 'b', 'c'] as const;

/** A lock item and its waiter items, with DynamoDB's write semantics. */
class QueueModel {
  readonly lock = new MemoryLock();
  readonly waiters = new Map<string, Item>();
  /** Session items (for grants tied to a session), and the sessions that recorded taking this lock. */
  readonly sessions = new Map<string, Item>();
  readonly sessionLocks = new Set<string>();
  /** Called with the lock item before and after every change of it, as its stream would report it. */
  onLockWrite: (old: Item | undefined, current: Item | undefined) => void = () => {};
  private ids = 0;

  get item(): Item | undefined {
    return this.lock.item;
  }

  /** TransactWriteItems: all conditions hold and every step applies, or nothing changes. */
  transact(steps: readonly Step[]): TransactResult {
    const targets = steps.map((s) =>
      s.target === 'lock'
        ? 'lock'
        : s.target === 'waiter'
          ? `waiter ${s.order}`
          : `${s.target} ${s.sessionId}`,
    );
    // DynamoDB rejects a transaction that names one item twice.
    expect(new Set(targets).size).toBe(targets.length);
    const holds = steps.map((s) => {
      if (s.target === 'session-lock') return true;
      const item =
        s.target === 'lock'
          ? this.lock.item
          : s.target === 'session'
            ? this.sessions.get(s.sessionId)
            : this.waiters.get(s.order);
      return evaluate(s.condition, item);
    });
    if (holds.includes(false)) {
      const lockIndex = steps.findIndex((s) => s.target === 'lock');
      const lockRefused = lockIndex >= 0 && holds[lockIndex] === false;
      const sessionIndex = steps.findIndex((s) => s.target === 'session');
      const sessionRefused = sessionIndex >= 0 && holds[sessionIndex] === false;
      return { ok: false, lockRefused, sessionRefused, lockOld: lockRefused ? this.lock.item : undefined };
    }
    const old = this.lock.item;
    for (const step of steps) {
      if (step.target === 'lock') this.lock.item = applyUpdate(this.lock.item, step.update);
      else if (step.target === 'session') continue;
      else if (step.target === 'session-lock') this.sessionLocks.add(step.sessionId);
      else if ('delete' in step) this.waiters.delete(step.order);
      else this.waiters.set(step.order, applyUpdate(this.waiters.get(step.order), step.update));
    }
    if (steps.some((s) => s.target === 'lock')) this.onLockWrite(old, this.lock.item);
    return { ok: true };
  }

  /** One conditional UpdateItem of the lock item. */
  write(write: Write): boolean {
    if (!evaluate(write.condition, this.lock.item)) return false;
    const old = this.lock.item;
    this.lock.item = applyUpdate(this.lock.item, write.update);
    this.onLockWrite(old, this.lock.item);
    return true;
  }

  /** Runs a lock protocol the way MemoryLock does, reporting each applied write. */
  run<O>(protocol: Protocol<O>): Promise<O> {
    return runProtocol(
      protocol,
      async (write) => {
        const old = this.lock.item;
        const result = await this.lock.tryWrite(write);
        if (result.ok) this.onLockWrite(old, result.item);
        return result;
      },
      () => `write-${++this.ids}`,
    );
  }

  /** What a strongly consistent Query of the partition returns: the first `limit` waiters in sort-key order. */
  read(limit: number): { lock: Item | undefined; waiters: Waiter[]; complete: boolean } {
    const orders = [...this.waiters.keys()].sort();
    const page = orders.slice(0, limit);
    return {
      lock: this.lock.item,
      waiters: page.map((order) => waiterOf(order, this.waiters.get(order) as Item)),
      complete: page.length === orders.length,
    };
  }

  state(): unknown {
    const waiters = [...this.waiters].sort(([x], [y]) => compareStrings(x, y));
    return structuredClone({ lock: this.lock.item, waiters });
  }
}

/** A waiter as LockService builds one (newWaiter), with a chosen nonce. */
function makeWaiter(
  cmd: { clientId: string; ttlMs: number; requestId: string },
  wait: { priority: number; waitMs: number; nonce: string; connectionId?: string },
  now: number,
): Waiter {
  return {
    lock: LOCK,
    order: queueOrder(wait.priority, now, wait.nonce),
    clientId: cmd.clientId,
    ttlMs: cmd.ttlMs,
    requestId: cmd.requestId,
    requestKey: requestKey(cmd.clientId, cmd.requestId),
    deadline: now + wait.waitMs,
    priority: wait.priority,
    arrivedAt: now,
    connectionId: wait.connectionId,
  };
}

async function orError<T>(run: () => Promise<T>): Promise<T | LatchkeyError> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof LatchkeyError) return error;
    throw error;
  }
}

const compareStrings = (x: string, y: string) => (x < y ? -1 : x > y ? 1 : 0);

describe('queueOrder', () => {
  // Mostly a few values, so that equal priorities and equal arrivals are common.
  const priority = fc.oneof(
    fc.constantFrom(PRIORITY.min, -1, 0, 1, PRIORITY.max),
    fc.integer({ min: PRIORITY.min, max: PRIORITY.max }),
  );
  const arrival = fc.oneof(
    fc.integer({ min: START, max: START + 3 }),
    fc.integer({ min: 0, max: 4_102_444_800_000 }), // up to the year 2100
  );
  const nonce = fc.stringMatching(/^[0-9a-f]{1,8}$/);

  it('sorts as plain strings by priority (higher first), then arrival (earlier first), then nonce', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(priority, arrival, nonce), { minLength: 2, maxLength: 12 }),
        (entries) => {
          const keyed = entries.map(([p, at, n]) => ({ p, at, n, order: queueOrder(p, at, n) }));
          const byString = [...keyed].sort((x, y) => compareStrings(x.order, y.order));
          const byRule = [...keyed].sort((x, y) => y.p - x.p || x.at - y.at || compareStrings(x.n, y.n));
          expect(byString.map((k) => [k.p, k.at, k.n])).toEqual(byRule.map((k) => [k.p, k.at, k.n]));
          // DynamoDB compares sort keys as UTF-8 bytes: the same order.
          const bytes = byString.map((k) => Buffer.from(k.order));
          for (let i = 1; i < bytes.length; i++)
            expect(Buffer.compare(bytes[i - 1] as Buffer, bytes[i] as Buffer)).toBeLessThanOrEqual(0);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('priority beats arrival across the whole range, and ties fall to arrival', () => {
    expect(queueOrder(PRIORITY.max, 9e14, 'z') < queueOrder(PRIORITY.max - 1, 0, 'a')).toBe(true);
    expect(queueOrder(PRIORITY.min + 1, 9e14, 'z') < queueOrder(PRIORITY.min, 0, 'a')).toBe(true);
    expect(queueOrder(0, 999, 'z') < queueOrder(0, 1000, 'a')).toBe(true);
    expect(queueOrder(-5, 1000, 'z') > queueOrder(5, 1000, 'a')).toBe(true);
    // Arrival counts whole milliseconds; within one, the nonce decides.
    expect(queueOrder(0, 1000.9, 'b') > queueOrder(0, 1000.1, 'a')).toBe(true);
    expect(queueOrder(0, 1000.9, 'a') < queueOrder(0, 1000.1, 'b')).toBe(true);
    expect(queueOrder(-0, START, 'n')).toBe(queueOrder(0, START, 'n'));
  });

  it('rejects a priority that is out of range or not an integer', () => {
    for (const bad of [PRIORITY.max + 1, PRIORITY.min - 1, 1000, 0.5, -1.5, Number.NaN, Infinity, -Infinity])
      expect(() => queueOrder(bad, START, 'n'), String(bad)).toThrow(RangeError);
    for (const good of [PRIORITY.min, PRIORITY.max, 0, 42])
      expect(() => queueOrder(good, START, 'n')).not.toThrow();
  });
});

// ---------------------------------------------------------------------------------------------------------
// Random histories

type Cmd =
  | { op: 'acquire'; client: string; ttl: number; rid: string | undefined; reentrant: boolean }
  /** A waiting acquire: enqueue, or a plain acquire when the queue refuses (LockService.acquire). */
  | {
      op: 'wait';
      client: string;
      ttl: number;
      rid: string | undefined;
      reentrant: boolean;
      priority: number;
      waitMs: number;
      nonce: string;
      crashed: boolean;
    }
  /** By the live holder (`byHolder`), or by `client` with one of its tokens, maybe stale. */
  | { op: 'release'; byHolder: boolean; client: string; pick: number }
  | { op: 'renew'; byHolder: boolean; client: string; pick: number; ttl: number }
  /** Handoff.serve: read, plan, expire, hand off; a push that fails takes the grant back. */
  | { op: 'serve'; limit: number; pushFails: boolean[] }
  /** The first half of a serve whose transaction is sent later (a slow or racing server). */
  | { op: 'plan' }
  | { op: 'commit' }
  | { op: 'leave'; pick: number }
  | { op: 'undo'; pick: number }
  | { op: 'tick'; ms: number }
  /** Jump to the exact end of the current lease. */
  | { op: 'lapse' };

const clientArb = fc.constantFrom(...CLIENTS);
const ttlArb = fc.integer({ min: 1, max: 40 });
const cmdArb = (rids: readonly string[]): fc.Arbitrary<Cmd> => {
  const rid = rids.length ? fc.option(fc.constantFrom(...rids), { nil: undefined }) : fc.constant(undefined);
  return fc.oneof(
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant('acquire' as const),
        client: clientArb,
        ttl: ttlArb,
        rid,
        reentrant: fc.boolean(),
      }),
    },
    {
      weight: 5,
      arbitrary: fc.record({
        op: fc.constant('wait' as const),
        client: clientArb,
        ttl: ttlArb,
        rid,
        reentrant: fc.boolean(),
        priority: fc.constantFrom(PRIORITY.min, -1, 0, 0, 7, PRIORITY.max),
        waitMs: fc.integer({ min: 1, max: 60 }),
        nonce: fc.constantFrom('0', '7', 'f'),
        /** The service died between joining and checking for an earlier attempt of the same request. */
        crashed: fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant('release' as const),
        byHolder: fc.boolean(),
        client: clientArb,
        pick: fc.nat(),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant('renew' as const),
        byHolder: fc.boolean(),
        client: clientArb,
        pick: fc.nat(),
        ttl: ttlArb,
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant('serve' as const),
        limit: fc.integer({ min: 1, max: 4 }),
        pushFails: fc.array(fc.boolean(), { maxLength: 3 }),
      }),
    },
    { weight: 2, arbitrary: fc.constant({ op: 'plan' as const }) },
    { weight: 2, arbitrary: fc.constant({ op: 'commit' as const }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('leave' as const), pick: fc.nat() }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('undo' as const), pick: fc.nat() }) },
    {
      weight: 3,
      arbitrary: fc.record({ op: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 25 }) }),
    },
    { weight: 1, arbitrary: fc.constant({ op: 'lapse' as const }) },
  );
};

/** What a client was told it holds. */
interface Told {
  client: string;
  expiresAt: number;
  /** Released to 0, or taken back before anyone received it. */
  ended: boolean;
}

/** A waiter as the test enqueued it, to judge the serving order independently of the sort key. */
interface Joined {
  order: string;
  client: string;
  priority: number;
  arrivedAt: number;
  nonce: string;
  deadline: number;
  ttl: number;
  requestKey: string;
  /**
   * Shared by waiters with the same request queued at the same time: at most one of them is served.
   * Not promised when a service died between joining and its duplicate check (`crashed`) and the twins
   * are further apart than a serve reads: that case is only caught within the read (25 waiters).
   */
  group?: { grants: number; crashed: boolean };
}

/** Runs one random history against the model, checking every rule on the way. */
async function runHistory(cmds: readonly Cmd[]): Promise<void> {
  const m = new QueueModel();
  let now = START;
  let fresh = 0;
  const told = new Map<number, Told>();
  let lastFence = 0;
  const joined = new Map<string, Joined>();
  const everJoined: Joined[] = [];
  /** Grants made by a handoff; `group`: see Joined (a grant taken back no longer counts). */
  const handoffs: { grant: Grant; requestKey: string; group: Joined['group'] }[] = [];
  /** Fences the notifier armed an expiry timer for. */
  const armed = new Set<number>();
  const servedLapsed = new Set<number>();
  /** Whether the notifier was asked to serve the queue since the last serve. */
  let notifierServes = false;
  let pending: { steps: Step[]; grant: Grant; head: Waiter; fence: unknown } | undefined;

  m.onLockWrite = (old, current) => {
    // Records one at a time here; batches are covered in the onLockChange tests.
    const decision = onLockChange(oneRecord(old, current), now);
    if (decision.serve) notifierServes = true;
    const holder = liveHolder(current, now);
    // The notifier serves only when a change leaves the lock free with waiters, and not when the change
    // took the holder off (a release, or a grant taken back): its writer serves inline, and should it
    // die first, the timer armed for that grant's lease serves the queue then.
    const holderTakenOff = old?.[A.holder] !== undefined && current?.[A.holder] === undefined;
    if (decision.serve) expect(!holder && queuedCount(current) > 0 && !holderTakenOff).toBe(true);
    // (A grant whose lease had already lapsed when the notifier saw it was served then, not timed.)
    if (decision.serve && current?.[A.holder] !== undefined) servedLapsed.add(current[A.fence] as number);
    if (decision.timer && holder) {
      expect(decision.timer).toEqual({ at: holder.expiresAt, fence: holder.fencingToken });
      armed.add(decision.timer.fence);
    } else if (decision.timer) {
      // A backup timer for a released grant that had none: at its lease end, watching its token.
      expect(holderTakenOff).toBe(true);
      expect(decision.timer).toEqual({ at: old?.[A.expiresAt], fence: old?.[A.fence] });
      armed.add(decision.timer.fence);
    }
    if (!holder && queuedCount(current) > 0 && holderTakenOff) {
      const fence = old?.[A.fence] as number;
      expect(armed.has(fence) || servedLapsed.has(fence)).toBe(true);
    }
    // The fencing counter never goes back.
    const fence = current?.[A.fence];
    const oldFence = old?.[A.fence];
    if (typeof oldFence === 'number') expect(fence).toBeGreaterThanOrEqual(oldFence);
  };

  /**
   * A plain acquire that reuses the request id of a waiting acquire still queued is a client's mistake
   * (a request id names one call), not a retry; histories leave it out.
   */
  const stillQueued = (key: string) => [...joined.values()].some((j) => j.requestKey === key);
  /** Waiters with the request the lock last served, or with one queued ahead of them: never served. */
  const duplicatesAmong = (ordered: readonly Joined[]) => {
    const seen = new Set<unknown>([m.item?.[A.grantRequest]]);
    const dups = new Set<string>();
    for (const j of ordered) {
      if (seen.has(j.requestKey)) dups.add(j.order);
      seen.add(j.requestKey);
    }
    return dups;
  };
  const servingOrder = (js: Iterable<Joined>) =>
    [...js].sort(
      (x, y) => y.priority - x.priority || x.arrivedAt - y.arrivedAt || compareStrings(x.nonce, y.nonce),
    );

  const newGrant = (grant: Grant, key: string | undefined, before: Item | undefined) => {
    // The request the lock last served is never served again: a retry gets that grant back, not a new one.
    if (key !== undefined) expect(before?.[A.grantRequest]).not.toBe(key);
    expect(grant.fencingToken).toBeGreaterThan(lastFence);
    lastFence = grant.fencingToken;
    told.set(grant.fencingToken, { client: grant.clientId, expiresAt: grant.expiresAt, ended: false });
  };

  /** A plain acquire, checked against the state it ran in. */
  const acquire = async (cmd: AcquireCommand): Promise<AcquireOutcome | LatchkeyError> => {
    const before = m.item;
    const holderBefore = liveHolder(before, now);
    const queuedBefore = queuedCount(before);
    const key = cmd.requestId === undefined ? undefined : requestKey(cmd.clientId, cmd.requestId);
    const isRetry = key !== undefined && before?.[A.grantRequest] === key;
    const out = await orError(() => m.run(acquireProtocol(cmd, now)));
    if (out instanceof LatchkeyError) {
      // Only a retry of a request whose lease has ended fails.
      expect(out.code).toBe('LEASE_EXPIRED');
      expect(isRetry).toBe(true);
      return out;
    }
    if (!out.acquired) {
      // Refused only for a live holder, or for waiters ahead (free but promised to them).
      expect(holderBefore !== undefined || queuedBefore > 0).toBe(true);
      expect(out.queued).toBe(queuedBefore);
      expect(out.holder?.clientId).toBe(holderBefore?.clientId);
      if (holderBefore?.clientId === cmd.clientId) expect(cmd.reentrant).toBeFalsy();
      return out;
    }
    if (out.replayed) {
      expect(isRetry).toBe(true);
      expect(out.grant.fencingToken).toBe(holderBefore?.fencingToken);
      expect(out.grant.clientId).toBe(cmd.clientId);
      return out;
    }
    if (holderBefore) {
      // A re-entry: the same grant, counted once more. Never a second holder.
      expect(cmd.reentrant).toBe(true);
      expect(holderBefore.clientId).toBe(cmd.clientId);
      expect(out.grant.fencingToken).toBe(holderBefore.fencingToken);
      expect(out.grant.reentry).toBe(holderBefore.reentry + 1);
      return out;
    }
    // A new grant: only of a free lock, and never past queued waiters (no barging).
    expect(queuedBefore).toBe(0);
    expect(out.grant.reentry).toBe(1);
    newGrant(out.grant, key, before);
    return out;
  };

  /** Handoff.serve, one read-plan-act round at a time. */
  const serve = (limit: number, pushFails: readonly boolean[]) => {
    let granted = 0;
    for (let round = 0; round < 8; round++) {
      const snapshot = m.read(limit);
      const plan = planServe(snapshot.lock, snapshot.waiters, now, snapshot.complete);
      const windowDups = duplicatesAmong(snapshot.waiters.map((w) => joined.get(w.order) as Joined));
      expect(plan.duplicates.map((w) => w.order)).toEqual([...windowDups]);
      expect(plan.expired.map((w) => w.order)).toEqual(
        snapshot.waiters.filter((w) => w.deadline <= now && !windowDups.has(w.order)).map((w) => w.order),
      );
      for (const w of [...plan.duplicates, ...plan.expired]) {
        expect(m.transact(removalSteps(w)).ok).toBe(true);
        joined.delete(w.order);
      }
      const holder = liveHolder(snapshot.lock, now);
      if (plan.kind === 'held') {
        expect(plan).toMatchObject({ expiresAt: holder?.expiresAt, fence: holder?.fencingToken });
        return;
      }
      expect(holder).toBeUndefined();
      const queue = servingOrder(joined.values());
      const dups = duplicatesAmong(queue);
      const waiting = queue.filter((j) => j.deadline > now && !dups.has(j.order));
      if (plan.kind === 'idle') {
        // The count always matches the items here, so it never drifts.
        expect(plan.countDrift).toBe(0);
        if (plan.expired.length + plan.duplicates.length && !snapshot.complete) continue;
        // Nobody live is waiting.
        expect(waiting).toEqual([]);
        return;
      }
      // The head: highest priority, then earliest arrival, among waiters still waiting.
      expect(plan.head.order).toBe(waiting[0]?.order);
      const meta = joined.get(plan.head.order);
      if (meta?.group && !meta.group.crashed) expect(++meta.group.grants).toBe(1);
      expect(plan.head).toMatchObject({
        clientId: meta?.client,
        ttlMs: meta?.ttl,
        requestKey: meta?.requestKey,
        deadline: meta?.deadline,
        priority: meta?.priority,
        arrivedAt: meta?.arrivedAt,
      });

      const before = m.item;
      const queuedBefore = queuedCount(before);
      const { steps, grant } = handoffSteps(plan.head, snapshot.lock, now);
      const result = m.transact(steps);
      // Nothing else ran since the read, so the handoff goes through.
      expect(result.ok).toBe(true);
      joined.delete(plan.head.order);
      // The grant returned is the grant written.
      const item = m.item as Item;
      expect(grantOf(item)).toEqual(grant);
      expect(liveHolder(item, now)).toEqual(grant);
      expect(item[A.grantRequest]).toBe(plan.head.requestKey);
      expect(queuedCount(item)).toBe(queuedBefore - 1);
      expect(m.waiters.has(plan.head.order)).toBe(false);
      newGrant(grant, plan.head.requestKey, before);
      handoffs.push({ grant, requestKey: plan.head.requestKey, group: meta?.group });
      if (!pushFails[granted++]) return;
      // Nobody received it: take it back and serve the next waiter.
      expect(m.write(undoGrantWrite(grant, plan.head.requestKey, now))).toBe(true);
      expect(liveHolder(m.item, now)).toBeUndefined();
      expect(queuedCount(m.item)).toBe(queuedBefore - 1);
      (told.get(grant.fencingToken) as Told).ended = true;
      if (meta?.group) meta.group.grants--;
    }
  };

  for (const cmd of cmds) {
    switch (cmd.op) {
      case 'tick':
        now += cmd.ms;
        break;
      case 'lapse': {
        const end = m.item?.[A.expiresAt];
        if (typeof end === 'number' && end > now) now = end;
        break;
      }
      case 'acquire':
        if (cmd.rid !== undefined && stillQueued(requestKey(cmd.client, cmd.rid))) break;
        await acquire({
          name: LOCK,
          clientId: cmd.client,
          ttlMs: cmd.ttl,
          requestId: cmd.rid,
          reentrant: cmd.reentrant,
        });
        break;
      case 'wait': {
        const requestId = cmd.rid ?? `fresh-${++fresh}`;
        // A retry repeats its message: a request still queued comes back with the same priority.
        const key = requestKey(cmd.client, requestId);
        // Its tie-breaker comes from the request (newWaiter), so in the same millisecond it lands on the
        // very place of the first attempt.
        const queuedTwin = [...joined.values()].find((j) => j.requestKey === key);
        const priority = queuedTwin?.priority ?? cmd.priority;
        const nonce = queuedTwin?.nonce ?? cmd.nonce;
        const waiter = makeWaiter(
          { clientId: cmd.client, ttlMs: cmd.ttl, requestId },
          { priority, waitMs: cmd.waitMs, nonce },
          now,
        );
        const before = m.item;
        const state = m.state();
        const newOrder = !m.waiters.has(waiter.order);
        const result = m.transact(enqueueSteps(waiter, now));
        if (result.ok) {
          // Queued only behind a live holder (not itself) or behind other waiters, and only once per order.
          const holder = liveHolder(before, now);
          expect(holder !== undefined || queuedCount(before) > 0).toBe(true);
          expect(holder?.clientId).not.toBe(cmd.client);
          expect(before?.[A.grantRequest]).not.toBe(waiter.requestKey);
          expect(newOrder).toBe(true);
          expect(m.waiters.get(waiter.order)).toMatchObject({
            client_id: cmd.client,
            deadline: waiter.deadline,
          });
          const j: Joined = {
            order: waiter.order,
            client: cmd.client,
            priority,
            arrivedAt: now,
            nonce,
            deadline: waiter.deadline,
            ttl: cmd.ttl,
            requestKey: waiter.requestKey,
          };
          const twins = [...joined.values()].filter((o) => o.requestKey === j.requestKey);
          j.group = twins[0]?.group ?? { grants: 0, crashed: false };
          if (cmd.crashed && twins.length) j.group.crashed = true;
          const first = servingOrder([...twins, j])[0] as Joined;
          joined.set(j.order, j);
          everJoined.push(j);
          if (cmd.crashed) break;
          // LockService: read the lock and the queue up to the newcomer; a repeat of a request leaves again.
          const snapshot = m.read(Number.MAX_SAFE_INTEGER);
          const ahead = snapshot.waiters.filter((w) => w.order <= waiter.order);
          const original = duplicateOf(waiter, snapshot.lock, ahead);
          const served =
            before?.[A.grantRequest] === waiter.requestKey || m.item?.[A.grantRequest] === waiter.requestKey;
          expect(served).toBe(false); // the queue refused it then
          expect(original === undefined ? undefined : original !== 'served' && original.order).toBe(
            first === j ? undefined : first.order,
          );
          if (original === undefined) break;
          expect(m.transact(removalSteps(waiter)).ok).toBe(true);
          joined.delete(waiter.order);
          break;
        }
        expect(m.state()).toEqual(state);
        if (newOrder) expect(result.lockRefused).toBe(true);
        // Refused by the waiter item alone: this request is already at that place (LockService answers
        // `queued`), or another one is (it tries again a millisecond later).
        if (!result.lockRefused) break;
        const out = await acquire({
          name: LOCK,
          clientId: cmd.client,
          ttlMs: cmd.ttl,
          requestId,
          reentrant: cmd.reentrant,
        });
        // When the queue refuses a new waiter, the plain acquire settles it (LockService relies on this).
        if (newOrder && !(out instanceof LatchkeyError) && !out.acquired)
          expect(out.holder?.clientId).toBe(cmd.client);
        break;
      }
      case 'release':
      case 'renew': {
        const holder = liveHolder(m.item, now);
        const client = cmd.byHolder && holder ? holder.clientId : cmd.client;
        const mine = [...told].filter(([, t]) => t.client === client).map(([fence]) => fence);
        const token =
          cmd.byHolder && holder
            ? holder.fencingToken
            : mine.length
              ? (mine[cmd.pick % mine.length] as number)
              : lastFence;
        const rightful = holder?.clientId === client && holder.fencingToken === token;
        if (cmd.op === 'release') {
          const out = await orError(() =>
            m.run(releaseProtocol({ name: LOCK, clientId: client, fencingToken: token }, now)),
          );
          expect(out instanceof LatchkeyError).toBe(!rightful);
          if (out instanceof LatchkeyError) break;
          expect(out.remaining).toBe((holder?.reentry ?? 1) - 1);
          expect(out.queued).toBe(m.waiters.size);
          if (out.remaining === 0) (told.get(token) as Told).ended = true;
        } else {
          const out = await orError(() =>
            m.run(renewProtocol({ name: LOCK, clientId: client, fencingToken: token, ttlMs: cmd.ttl }, now)),
          );
          expect(out instanceof LatchkeyError).toBe(!rightful);
          if (out instanceof LatchkeyError) break;
          (told.get(token) as Told).expiresAt = out.grant.expiresAt;
        }
        break;
      }
      case 'serve':
        notifierServes = false;
        serve(cmd.limit, cmd.pushFails);
        break;
      case 'plan': {
        const snapshot = m.read(25);
        const plan = planServe(snapshot.lock, snapshot.waiters, now, snapshot.complete);
        if (plan.kind !== 'grant') break;
        pending = {
          ...handoffSteps(plan.head, snapshot.lock, now),
          head: plan.head,
          fence: snapshot.lock?.[A.fence],
        };
        break;
      }
      case 'commit': {
        if (!pending) break;
        const { steps, grant, head, fence } = pending;
        pending = undefined;
        const state = m.state();
        const before = m.item;
        const result = m.transact(steps);
        if (!result.ok) {
          expect(m.state()).toEqual(state);
          break;
        }
        // A late handoff only wins if nothing was granted since it read the lock (so the lock is still
        // free), and its waiter is still there.
        expect(before?.[A.fence]).toBe(fence);
        expect(liveHolder(before, now)).toBeUndefined();
        expect(joined.has(head.order)).toBe(true);
        const group = joined.get(head.order)?.group;
        if (group && !group.crashed) expect(++group.grants).toBe(1);
        joined.delete(head.order);
        expect(grantOf(m.item as Item)).toEqual(grant);
        newGrant(grant, head.requestKey, before);
        handoffs.push({ grant, requestKey: head.requestKey, group });
        break;
      }
      case 'leave': {
        if (!everJoined.length) break;
        const j = everJoined[cmd.pick % everJoined.length] as Joined;
        const present = m.waiters.has(j.order);
        const state = m.state();
        const result = m.transact(removalSteps(j));
        expect(result.ok).toBe(present);
        if (!result.ok) expect(m.state()).toEqual(state);
        else expect(m.waiters.has(j.order)).toBe(false);
        joined.delete(j.order);
        break;
      }
      case 'undo': {
        if (!handoffs.length) break;
        const {
          grant,
          requestKey: key,
          group,
        } = handoffs[cmd.pick % handoffs.length] as (typeof handoffs)[number];
        const before = m.item;
        const applied = m.write(undoGrantWrite(grant, key, now));
        // Only the very grant it names (no later grant, not released or undone), and only while the item
        // still says which request it answered (a re-entry without a request id clears that).
        const current = grant.fencingToken === lastFence && !(told.get(grant.fencingToken) as Told).ended;
        expect(applied).toBe(current && before?.[A.grantRequest] === key);
        if (applied) {
          expect(before?.[A.holder]).toBe(grant.clientId);
          expect(m.item?.[A.holder]).toBeUndefined();
          expect(queuedCount(m.item)).toBe(queuedCount(before));
          (told.get(grant.fencingToken) as Told).ended = true;
          if (group) group.grants--;
        }
        break;
      }
    }

    // The count and the waiter items never disagree.
    expect(m.item?.[A.queued] ?? 0).toBe(m.waiters.size);
    expect([...joined.keys()].sort()).toEqual([...m.waiters.keys()].sort());
    // Never two live holders: every lease a client may still use is the one the item records.
    const live = [...told].filter(([, t]) => !t.ended && t.expiresAt > now).map(([fence]) => fence);
    expect(live.length).toBeLessThanOrEqual(1);
    expect(liveHolder(m.item, now)?.fencingToken).toBe(live[0]);
    // A live grant with waiters behind it always has an expiry timer.
    const holder = liveHolder(m.item, now);
    if (holder && queuedCount(m.item) > 0) expect(armed.has(holder.fencingToken)).toBe(true);
    // Nobody is left waiting on a free lock: the notifier serves it, or a timer still watches its grant
    // (a timer serves only while the lock carries the token it was armed for).
    if (!holder && queuedCount(m.item) > 0) {
      const fence = m.item?.[A.fence] as number;
      expect(stillWatched(m.item, fence)).toBe(true);
      expect(notifierServes || armed.has(fence) || servedLapsed.has(fence)).toBe(true);
    }
  }
}

describe('the queue under random histories', () => {
  it('no barging, serving order, counts, fencing, timers and grants hold for every history', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(cmdArb(['r1', 'r2']), { minLength: 1, maxLength: 60, size: 'max' }), (cmds) =>
        runHistory(cmds),
      ),
      { numRuns: 200 },
    );
  }, 20_000);
});

const granted = (out: AcquireOutcome): Grant => {
  if (!out.acquired) throw new Error(`not acquired: ${JSON.stringify(out)}`);
  return out.grant;
};

/** A scripted history of one lock, for examples; `changes` are the lock item's stream records. */
class Scene {
  readonly m = new QueueModel();
  readonly changes: { old: Item | undefined; current: Item | undefined }[] = [];

  constructor() {
    this.m.onLockWrite = (old, current) => this.changes.push({ old, current });
  }

  /** The notifier's decision about the latest change of the lock item. */
  decide(now: number) {
    const last = this.changes.at(-1);
    return onLockChange(oneRecord(last?.old, last?.current), now);
  }

  async acquire(clientId: string, now: number, extra: Partial<AcquireCommand> = {}): Promise<AcquireOutcome> {
    return this.m.run(acquireProtocol({ name: LOCK, clientId, ttlMs: 100, ...extra }, now));
  }

  enqueue(
    clientId: string,
    now: number,
    opts: { rid?: string; priority?: number; nonce?: string } = {},
  ): Waiter {
    const w = makeWaiter(
      { clientId, ttlMs: 100, requestId: opts.rid ?? `${clientId}-${now}` },
      { priority: opts.priority ?? 0, waitMs: 1000, nonce: opts.nonce ?? 'n' },
      now,
    );
    expect(this.m.transact(enqueueSteps(w, now)).ok).toBe(true);
    return w;
  }

  release(grant: Grant, now: number) {
    return this.m.run(
      releaseProtocol({ name: LOCK, clientId: grant.clientId, fencingToken: grant.fencingToken }, now),
    );
  }

  /** One serve that must hand the lock to the head of the queue. */
  handoff(now: number): { grant: Grant; head: Waiter } {
    const snapshot = this.m.read(25);
    const plan = planServe(snapshot.lock, snapshot.waiters, now, snapshot.complete);
    if (plan.kind !== 'grant') throw new Error(`nothing to hand off: ${plan.kind}`);
    const { steps, grant } = handoffSteps(plan.head, snapshot.lock, now);
    expect(this.m.transact(steps).ok).toBe(true);
    return { grant, head: plan.head };
  }
}

const nothing = { serve: false, timer: undefined };
/** One stream record's images. */
const oneRecord = (old: Item | undefined, current: Item | undefined) => ({
  before: old,
  released: tookHolderOff(old, current) ? old : undefined,
  after: current,
});
/** A batch of records seen as its first and last images, and the grant its last release took off. */
const batch = (first: Item | undefined, last: Item | undefined, released?: Item) => ({
  before: first,
  released,
  after: last,
});

describe('onLockChange', () => {
  it('arms a timer when a grant first has waiters, not on renewal, re-entry or another enqueue; serves when free', async () => {
    const s = new Scene();
    const a = granted(await s.acquire('a', START));
    expect(s.decide(START)).toEqual(nothing); // a grant with nobody waiting
    s.enqueue('b', START + 1);
    expect(s.decide(START + 1)).toEqual({ serve: false, timer: { at: a.expiresAt, fence: a.fencingToken } });
    s.enqueue('c', START + 2);
    expect(s.decide(START + 2)).toEqual(nothing);
    await s.m.run(
      renewProtocol({ name: LOCK, clientId: 'a', fencingToken: a.fencingToken, ttlMs: 500 }, START + 3),
    );
    expect(s.decide(START + 3)).toEqual(nothing); // the armed timer re-arms itself at the new lease end
    granted(await s.acquire('a', START + 4, { reentrant: true }));
    expect(s.decide(START + 4)).toEqual(nothing);
    expect(await s.release(a, START + 5)).toMatchObject({ remaining: 1, queued: 2 });
    expect(s.decide(START + 5)).toEqual(nothing); // still held
    expect(await s.release(a, START + 6)).toMatchObject({ remaining: 0, queued: 2 });
    // Free with waiters, but by a release: the releaser serves inline (LockService.release), and if it
    // died first, the timer armed for a's lease serves the queue at the lease end.
    expect(s.decide(START + 6)).toEqual(nothing);

    // A handoff is a new grant with a waiter behind it: its own timer.
    const b = s.handoff(START + 7).grant;
    expect(b.clientId).toBe('b');
    expect(s.decide(START + 7)).toEqual({ serve: false, timer: { at: b.expiresAt, fence: b.fencingToken } });
    // The same record read after that lease lapsed (a slow notifier): serve instead.
    expect(s.decide(b.expiresAt)).toEqual({ serve: true, timer: undefined });

    // Without waiters: nothing, whether held or free, or the item is gone.
    const c = s.m.read(25).waiters[0] as Waiter;
    expect(s.m.transact(removalSteps(c)).ok).toBe(true);
    expect(s.decide(START + 8)).toEqual(nothing);
    await s.release(b, START + 9);
    expect(s.decide(START + 9)).toEqual(nothing);
    expect(onLockChange(batch(s.m.item, undefined), START + 9)).toEqual(nothing);
    expect(onLockChange(batch(undefined, undefined), START + 9)).toEqual(nothing);
  });

  it('judges a batch by its first and last images: a different grant gets its own timer', async () => {
    const s = new Scene();
    const a = granted(await s.acquire('a', START));
    const bare = s.m.item; // a holds, nobody waits
    s.enqueue('b', START + 1);
    s.enqueue('c', START + 2);
    const waitedOn = s.m.item; // a holds with waiters: timer armed for a
    await s.m.run(
      renewProtocol({ name: LOCK, clientId: 'a', fencingToken: a.fencingToken, ttlMs: 300 }, START + 3),
    );
    const renewed = s.m.item;
    expect(onLockChange(batch(waitedOn, renewed), START + 3)).toEqual(nothing);
    // Waiters and a renewal in one batch: the timer goes to the lease end after the batch.
    expect(onLockChange(batch(bare, renewed), START + 3)).toEqual({
      serve: false,
      timer: { at: START + 303, fence: a.fencingToken },
    });
    await s.release(a, START + 4);
    const b = s.handoff(START + 4).grant;
    // Release and handoff in one batch after a's timer was armed: b's grant still needs a timer.
    expect(onLockChange(batch(waitedOn, s.m.item), START + 4)).toEqual({
      serve: false,
      timer: { at: b.expiresAt, fence: b.fencingToken },
    });
  });

  it('leaves serving to the writer of a batch’s last release, and arms a timer for a grant it never saw timed', async () => {
    const s = new Scene();
    const a = granted(await s.acquire('a', START));
    s.enqueue('b', START + 1);
    s.enqueue('c', START + 2);
    const waitedOn = s.m.item; // a's timer was armed for this
    await s.release(a, START + 3);
    const b = s.handoff(START + 3).grant;
    const bHeld = s.m.item;
    await s.release(b, START + 4);
    // One batch: a released, b granted, b released. b's grant was never seen with its timer, so the
    // notifier arms one at b's lease end as the backup of b's releaser; it does not serve.
    expect(onLockChange(batch(waitedOn, s.m.item, bHeld), START + 4)).toEqual({
      serve: false,
      timer: { at: b.expiresAt, fence: b.fencingToken },
    });
    // The release alone, after b's grant was seen (its lease-end timer is the backup): nothing to do.
    expect(onLockChange(batch(bHeld, s.m.item, bHeld), START + 4)).toEqual(nothing);
    // A waiter joining after the release, in the same batch: still the releaser's to serve.
    const released = s.m.item;
    s.enqueue('d', START + 5);
    expect(onLockChange(batch(bHeld, s.m.item, bHeld), START + 5)).toEqual(nothing);
    // A waiter joining a free lock that already had waiters: that state already had its server.
    expect(onLockChange(batch(released, s.m.item), START + 5)).toEqual(nothing);
    // But a free lock with waiters that nobody took off (the serve that left it gave up): serve it.
    const c = s.handoff(START + 6);
    const cHeld = s.m.item;
    const lapsed = c.grant.expiresAt;
    expect(onLockChange(batch(released, cHeld), lapsed)).toEqual({ serve: true, timer: undefined });
  });

  it('serves when the first waiter joins a lock whose lease lapsed before the notifier saw it', async () => {
    const s = new Scene();
    const a = granted(await s.acquire('a', START, { ttlMs: 10 }));
    const held = s.m.item; // nobody waiting: no timer was armed for a's lease
    s.enqueue('b', START + 9); // joins while a's lease still runs
    // Seen after a's lease lapsed: nothing will serve b unless the notifier does.
    expect(onLockChange(batch(held, s.m.item), a.expiresAt + 1)).toEqual({ serve: true, timer: undefined });
    // Seen in time: a timer for a's lease end.
    expect(onLockChange(batch(held, s.m.item), START + 9)).toEqual({
      serve: false,
      timer: { at: a.expiresAt, fence: a.fencingToken },
    });
  });

  it('backs up the release of a long lease with a timer within RELEASER_BACKUP_MS, not at its lease end', async () => {
    const s = new Scene();
    const a = granted(await s.acquire('a', START, { ttlMs: 3_600_000 }));
    s.enqueue('b', START + 1);
    const waitedOn = s.m.item; // a's timer is armed at its lease end, an hour away
    await s.release(a, START + 2);
    expect(onLockChange(batch(waitedOn, s.m.item, waitedOn), START + 2)).toEqual({
      serve: false,
      timer: { at: START + 2 + RELEASER_BACKUP_MS, fence: a.fencingToken },
    });
  });

  it('treats a missing, zero or negative count as no waiters', async () => {
    const s = new Scene();
    granted(await s.acquire('a', START));
    const held = s.m.item as Item;
    for (const queued of [undefined, 0, -1]) {
      const current = { ...held, [A.queued]: queued };
      expect(onLockChange(batch(undefined, current), START)).toEqual(nothing);
      expect(onLockChange(batch(undefined, { ...current, [A.holder]: undefined }), START)).toEqual(nothing);
    }
  });
});

describe('undoGrantWrite', () => {
  it('takes back exactly the grant it names, never a later one', async () => {
    const s = new Scene();
    const a = granted(await s.acquire('a', START));
    s.enqueue('b', START + 1, { rid: 'rb' });
    s.enqueue('c', START + 2, { rid: 'rc' });
    await s.release(a, START + 3);
    const { grant: g1, head: h1 } = s.handoff(START + 3);
    expect(h1.clientId).toBe('b');

    const held = structuredClone(s.m.item);
    const wrong = [
      undoGrantWrite({ ...g1, fencingToken: g1.fencingToken - 1 }, h1.requestKey, START + 4),
      undoGrantWrite({ ...g1, fencingToken: g1.fencingToken + 1 }, h1.requestKey, START + 4),
      undoGrantWrite({ ...g1, clientId: 'c' }, h1.requestKey, START + 4),
      undoGrantWrite(g1, requestKey('b', 'rc'), START + 4),
      undoGrantWrite(g1, requestKey('c', 'rb'), START + 4),
    ];
    for (const write of wrong) expect(s.m.write(write)).toBe(false);
    expect(s.m.item).toEqual(held);

    // The exact grant: the lock is free again, the queue untouched, the token spent.
    expect(s.m.write(undoGrantWrite(g1, h1.requestKey, START + 4))).toBe(true);
    expect(liveHolder(s.m.item, START + 4)).toBeUndefined();
    expect(queuedCount(s.m.item)).toBe(1);
    expect(s.m.item?.[A.fence]).toBe(g1.fencingToken);
    // The server that took it back goes on serving the queue itself (Handoff.serve).
    expect(s.decide(START + 4)).toEqual(nothing);
    // Taken back once only, and a plain acquire still may not barge.
    expect(s.m.write(undoGrantWrite(g1, h1.requestKey, START + 4))).toBe(false);
    expect(await s.acquire('a', START + 4)).toMatchObject({ acquired: false, queued: 1 });

    const { grant: g2 } = s.handoff(START + 5);
    expect(g2).toMatchObject({ clientId: 'c', fencingToken: g1.fencingToken + 1 });
    const later = structuredClone(s.m.item);
    expect(s.m.write(undoGrantWrite(g1, h1.requestKey, START + 6))).toBe(false);
    expect(s.m.item).toEqual(later);
  });

  it('does not take back a grant its holder has used since (re-entered or released)', async () => {
    for (const use of ['reenter', 'release'] as const) {
      const s = new Scene();
      const a = granted(await s.acquire('a', START));
      s.enqueue('b', START + 1, { rid: 'rb' });
      await s.release(a, START + 2);
      const { grant, head } = s.handoff(START + 2);
      if (use === 'reenter')
        granted(await s.acquire('b', START + 3, { reentrant: true, requestId: 'again' }));
      else await s.release(grant, START + 3);
      const before = structuredClone(s.m.item);
      expect(s.m.write(undoGrantWrite(grant, head.requestKey, START + 4)), use).toBe(false);
      expect(s.m.item).toEqual(before);
    }
  });
});

describe('handoffSteps', () => {
  it('two servers racing: a handoff planned before another grant is refused, even once that grant ends', async () => {
    const s = new Scene();
    const a = granted(await s.acquire('a', START));
    const x = s.enqueue('x', START + 1);
    await s.release(a, START + 2);
    // Server 1 reads the free lock and plans to hand it to x...
    const snapshot = s.m.read(25);
    const plan = planServe(snapshot.lock, snapshot.waiters, START + 2, snapshot.complete);
    expect(plan.kind === 'grant' && plan.head.order).toBe(x.order);
    const stale = handoffSteps(x, snapshot.lock, START + 2);
    // ...meanwhile y joins ahead of x and server 2 hands the lock to y, who holds it, then releases it.
    s.enqueue('y', START + 2, { priority: PRIORITY.max });
    const y = s.handoff(START + 2);
    expect(y.head.clientId).toBe('y');
    const held = structuredClone(s.m.state());
    expect(s.m.transact(stale.steps)).toMatchObject({ ok: false, lockRefused: true });
    await s.release(y.grant, START + 3);
    const released = structuredClone(s.m.state());
    // Free again with x still queued, but the fencing token moved on: granting x now would reuse y's token.
    expect(s.m.transact(stale.steps)).toMatchObject({ ok: false, lockRefused: true });
    expect(s.m.state()).toEqual(released);
    expect(stale.grant.fencingToken).toBe(y.grant.fencingToken);
    expect(held).not.toEqual(released);
    // Served afresh, x gets the next token.
    const xs = s.handoff(START + 3);
    expect(xs.grant).toMatchObject({ clientId: 'x', fencingToken: y.grant.fencingToken + 1 });
  });

  it('refuses a held lock, a waiter already gone, and a count that does not include the waiter', async () => {
    const s = new Scene();
    const a = granted(await s.acquire('a', START));
    const b = s.enqueue('b', START + 1);
    const c = s.enqueue('c', START + 2);
    // Held: no handoff, whatever the caller read.
    const state = s.m.state();
    expect(s.m.transact(handoffSteps(b, s.m.item, START + 3).steps)).toMatchObject({
      ok: false,
      lockRefused: true,
    });
    expect(s.m.state()).toEqual(state);
    await s.release(a, START + 4);
    // A waiter that left meanwhile is not granted.
    expect(s.m.transact(removalSteps(b)).ok).toBe(true);
    const without = s.m.state();
    expect(s.m.transact(handoffSteps(b, s.m.item, START + 5).steps)).toMatchObject({
      ok: false,
      lockRefused: false,
    });
    expect(s.m.state()).toEqual(without);
    // A count that drifted to 0 with c's item still there: no handoff drives it below zero.
    s.m.lock.item = { ...(s.m.item as Item), [A.queued]: 0 };
    const drifted = s.m.state();
    expect(s.m.transact(handoffSteps(c, s.m.item, START + 5).steps)).toMatchObject({
      ok: false,
      lockRefused: true,
    });
    expect(s.m.state()).toEqual(drifted);
  });

  it('starts the token from the clock floor when the lock item has none', () => {
    const m = new QueueModel();
    const w = makeWaiter(
      { clientId: 'b', ttlMs: 50, requestId: 'r' },
      { priority: 0, waitMs: 10, nonce: 'n' },
      START,
    );
    // A lock item that only counts a waiter (its fence was removed by hand).
    m.lock.item = { [A.name]: LOCK, [A.queued]: 1 };
    m.waiters.set(w.order, waiterItemOf(w));
    const { steps, grant } = handoffSteps(w, m.item, START + 7.5);
    expect(grant.fencingToken).toBe(fenceFloor(START + 7.5) + 1);
    expect(m.transact(steps).ok).toBe(true);
    expect(grantOf(m.item as Item)).toEqual(grant);
    expect(m.item?.[A.queued]).toBe(0);
  });
});

describe('planServe and resetCountWrite', () => {
  it('serves the first live waiter in order and expires the timed-out ones it read', async () => {
    const s = new Scene();
    const a = granted(await s.acquire('a', START));
    const low = s.enqueue('b', START + 1, { priority: -3 });
    const early = s.enqueue('c', START + 2, { priority: 5 });
    const late = s.enqueue('b', START + 3, { priority: 5, nonce: 'a' });
    const same = s.enqueue('c', START + 3, { priority: 5, nonce: 'b' });
    expect(s.m.read(25).waiters.map((w) => w.order)).toEqual([early, late, same, low].map((w) => w.order));
    const snapshot = s.m.read(25);
    expect(planServe(snapshot.lock, snapshot.waiters, START + 4, true)).toEqual({
      kind: 'held',
      expired: [],
      duplicates: [],
      expiresAt: a.expiresAt,
      fence: a.fencingToken,
    });
    // Once `early` (and `low`, which came first) timed out and the lock is free, `late` is next; every
    // timed-out waiter read is expired on the way, in queue order.
    const lapsed = early.deadline;
    expect(low.deadline).toBeLessThan(lapsed);
    const plan = planServe(snapshot.lock, snapshot.waiters, lapsed, true);
    expect(plan.kind === 'grant' && plan.head.order).toBe(late.order);
    expect(plan.expired.map((w) => w.order)).toEqual([early.order, low.order]);
    // Only timed-out waiters read: nothing to hand off, and no conclusion about the count.
    const allLapsed = planServe(snapshot.lock, snapshot.waiters.slice(0, 1), lapsed, false);
    expect(allLapsed).toEqual({
      kind: 'idle',
      expired: [snapshot.waiters[0]],
      duplicates: [],
      countDrift: 0,
    });
  });

  it('resets a count no waiter item backs, only while it has not moved', async () => {
    const s = new Scene();
    const a = granted(await s.acquire('a', START));
    const w = s.enqueue('b', START + 1);
    s.m.waiters.delete(w.order); // deleted by hand: the count drifted
    await s.release(a, START + 2);
    expect(await s.acquire('c', START + 2)).toMatchObject({ acquired: false, holder: undefined, queued: 1 });
    const snapshot = s.m.read(25);
    expect(planServe(snapshot.lock, snapshot.waiters, START + 2, false)).toEqual({
      kind: 'idle',
      expired: [],
      duplicates: [],
      countDrift: 0, // not the whole queue: no conclusion
    });
    const plan = planServe(snapshot.lock, snapshot.waiters, START + 2, true);
    expect(plan).toEqual({ kind: 'idle', expired: [], duplicates: [], countDrift: 1 });

    // Someone joins behind the phantom meanwhile: the reset must not apply.
    const c = s.enqueue('c', START + 3);
    expect(s.m.write(resetCountWrite(1))).toBe(false);
    expect(queuedCount(s.m.item)).toBe(2);
    expect(s.m.transact(removalSteps(c)).ok).toBe(true);
    expect(s.m.write(resetCountWrite(1))).toBe(true);
    expect(s.m.item?.[A.queued]).toBe(0);
    expect(granted(await s.acquire('c', START + 4)).clientId).toBe('c');
  });
});

describe('a request is granted at most once', () => {
  /** `a` holds; `b` waits with request r1, and retries r1 while still queued (the retry joins too). */
  const retriedWhileQueued = async () => {
    const s = new Scene();
    const a = granted(await s.acquire('a', START));
    const first = s.enqueue('b', START + 1, { rid: 'r1' });
    const retry = makeWaiter(
      { clientId: 'b', ttlMs: 100, requestId: 'r1' },
      { priority: 0, waitMs: 1000, nonce: 'n' },
      START + 2,
    );
    expect(s.m.transact(enqueueSteps(retry, START + 2)).ok).toBe(true);
    return { s, a, first, retry };
  };

  // A request that is queued and retried (same client and request id, e.g. after a lost response) must
  // not be served twice: the second grant would be one nobody waits for, idle until its lease ends.

  it('a waiting acquire retried while still queued finds its first attempt, and leaves', async () => {
    const { s, first, retry } = await retriedWhileQueued();
    const snapshot = s.m.read(25);
    // What LockService reads right after joining: the lock and everyone up to the newcomer.
    const ahead = snapshot.waiters.filter((w) => w.order <= retry.order);
    expect(duplicateOf(retry, snapshot.lock, ahead)).toEqual({ order: first.order });
    expect(duplicateOf(first, snapshot.lock, ahead)).toBeUndefined();
  });

  it('a retry that joined after its first attempt was served is told so', async () => {
    const { s, a, first, retry } = await retriedWhileQueued();
    await s.release(a, START + 3);
    expect(s.handoff(START + 3).head.order).toBe(first.order);
    const snapshot = s.m.read(25);
    expect(duplicateOf(retry, snapshot.lock, snapshot.waiters)).toBe('served');
  });

  it('a duplicate left in the queue (its writer died before it could leave) is dropped, not served', async () => {
    const { s, a, first, retry } = await retriedWhileQueued();
    const other = s.enqueue('c', START + 2, { nonce: 'o' });
    await s.release(a, START + 3);
    const served = s.handoff(START + 3);
    expect(served.head.order).toBe(first.order);
    await s.release(served.grant, START + 4);
    const snapshot = s.m.read(25);
    const plan = planServe(snapshot.lock, snapshot.waiters, START + 4, snapshot.complete);
    expect(plan).toMatchObject({ kind: 'grant', duplicates: [{ order: retry.order }] });
    expect(plan.kind === 'grant' && plan.head.order).toBe(other.order);
    // And the handoff itself refuses the request the lock last served.
    expect(s.m.transact(handoffSteps(retry, snapshot.lock, START + 4).steps).ok).toBe(false);
    const grantsOfR1 = s.changes.filter(
      ({ old, current }) =>
        current?.[A.grantRequest] === first.requestKey && current?.[A.fence] !== old?.[A.fence],
    );
    expect(grantsOfR1).toHaveLength(1);
  });

  it('a handoff never serves the request the lock item says it already served', async () => {
    const s = new Scene();
    const c = granted(await s.acquire('c', START, { ttlMs: 10 }));
    s.enqueue('a', START + 1); // a's first waiting acquire
    const queued = s.enqueue('a', START + 2, { rid: 'r1' }); // and a second one, r1
    await s.release(c, START + 3);
    const first = s.handoff(START + 3);
    // a, holding, acquires reentrantly with r1's request id: a re-entry that records r1 as served.
    const again = granted(await s.acquire('a', START + 4, { requestId: 'r1', reentrant: true }));
    expect(again).toMatchObject({ fencingToken: first.grant.fencingToken, reentry: 2 });
    expect(s.m.item?.[A.grantRequest]).toBe(queued.requestKey);
    // The lease lapses with r1's waiter still queued: it is dropped, and a handoff to it is refused.
    const lapsed = first.grant.expiresAt;
    const snapshot = s.m.read(25);
    const plan = planServe(snapshot.lock, snapshot.waiters, lapsed, snapshot.complete);
    expect(plan).toMatchObject({ kind: 'idle', duplicates: [{ order: queued.order }], countDrift: 0 });
    expect(s.m.transact(handoffSteps(queued, snapshot.lock, lapsed).steps).ok).toBe(false);
  });
});

describe('lock-delay after a session expired', () => {
  it('arms the delay’s timer when the first waiter joins after the release', async () => {
    const s = new Scene();
    const a = granted(await s.acquire('a', START, { sessionId: 's1', ttlMs: 10_000 }));
    expect(s.m.write(sessionReleaseWrite('s1', START + 2, 100))).toBe(true);
    expect(s.decide(START + 2)).toEqual(nothing); // nobody waits: nothing to arm
    s.enqueue('b', START + 3);
    expect(s.decide(START + 3)).toEqual({ serve: false, timer: { at: START + 102, fence: a.fencingToken } });
  });

  it('keeps a lock ungrantable until the delay ends: acquires are refused with the time left', async () => {
    const s = new Scene();
    const a = granted(await s.acquire('a', START, { sessionId: 's1', ttlMs: 10_000 }));
    // An explicit release never blocks; an expiry release with a delay does.
    expect(s.m.write(sessionReleaseWrite('other', START + 1, 100))).toBe(false);
    expect(s.m.write(sessionReleaseWrite('s1', START + 2, 100))).toBe(true);
    expect(liveHolder(s.m.item, START + 2)).toBeUndefined();
    expect(await s.acquire('c', START + 3)).toMatchObject({
      acquired: false,
      holder: undefined,
      retryAfterMs: 99,
    });
    expect(await s.acquire('c', START + 101)).toMatchObject({ acquired: false, retryAfterMs: 1 });
    const c = granted(await s.acquire('c', START + 102));
    expect(c.fencingToken).toBe(a.fencingToken + 1);
    expect(s.m.item?.[A.blockedUntil]).toBeUndefined(); // a grant clears it
    // Releasing normally leaves no delay behind.
    await s.release(c, START + 103);
    expect(granted(await s.acquire('d', START + 103)).clientId).toBe('d');
  });

  it('queues waiters meanwhile, arms a timer at its end, and hands over only then', async () => {
    const s = new Scene();
    const a = granted(await s.acquire('a', START, { sessionId: 's1', ttlMs: 10_000 }));
    s.enqueue('b', START + 1);
    expect(s.m.write(sessionReleaseWrite('s1', START + 2, 100))).toBe(true);
    // The release's record: nothing to serve yet, a timer for the delay's end watching the same token.
    expect(s.decide(START + 2)).toEqual({ serve: false, timer: { at: START + 102, fence: a.fencingToken } });
    const c = s.enqueue('c', START + 3); // joining a lock under delay is allowed
    expect(s.decide(START + 3)).toEqual(nothing); // same delay: its timer is already armed
    const early = s.m.read(25);
    expect(planServe(early.lock, early.waiters, START + 50, true)).toMatchObject({
      kind: 'held',
      expiresAt: START + 102,
      fence: a.fencingToken,
    });
    expect(stillWatched(early.lock, a.fencingToken)).toBe(true);
    expect(s.m.transact(handoffSteps(early.waiters[0] as Waiter, early.lock, START + 50).steps).ok).toBe(
      false,
    );
    const { grant, head } = s.handoff(START + 102);
    expect(head.clientId).toBe('b');
    expect(grant.fencingToken).toBe(a.fencingToken + 1);
    expect(s.m.waiters.has(c.order)).toBe(true);
  });
});
