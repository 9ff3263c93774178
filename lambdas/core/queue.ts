/**
 * The wait queue: who is next for a lock, and the transactions that put a
 * waiter in the queue, take it out, or hand it the lock.
 *
 * A waiter is an item beside its lock item (same partition) whose sort key
 * orders the queue: priority first (higher first), then arrival (earlier
 * first). The lock item counts its waiters (`queued`). A free lock with
 * waiters is promised to the head of the queue: a plain acquire cannot take
 * it (see `grantWrite` in lock.ts), only a handoff can. Every move is one
 * transaction over the lock item, one waiter item and that waiter's request
 * record (request.ts), so the count, the queue and each request's state
 * never disagree; and a grant is conditional on the lock being free and
 * carrying the fencing token the server read: two handoffs racing for the
 * same lock cannot both win.
 *
 * Waiters ask for either mode. The queue is FIFO within a priority and
 * writer-preferring: once anyone waits, every acquire queues behind them
 * (a stream of readers cannot starve a queued writer), and a run of shared
 * waiters at the head is granted together, in one transaction.
 */

import { createHash } from 'node:crypto';
import {
  add,
  and,
  type Condition,
  eq,
  exists,
  ge,
  gt,
  type Item,
  le,
  lt,
  missing,
  ne,
  or,
  remove,
  set,
} from './expr';
import { intentionsEased, keptOutTtl, newYieldEnd, wakeCount } from './hierarchy';
import {
  entryAttr,
  entryCount,
  entryIn,
  isLiveEntry,
  liveEntries,
  MAX_SHARED_HOLDERS,
  maxHoldersOf,
  removeEntry,
  requestTag,
  SharedAttr,
  sharedEntries,
  slotOf,
  writersBlockedUntil,
} from './holders';
import { type ItemWrite, lockRef, quotaRef, type Step, updateStep, waiterRef } from './items';
import {
  blockedUntil,
  type Enclosing,
  type Grant,
  type Grantee,
  gcFromHeld,
  heldBy,
  isBlockedAt,
  isFreeAt,
  isHeldAt,
  LockAttr,
  type LockMode,
  lastFencingToken,
  liveHolder,
  notAlreadyServed,
  pinnedGrant,
  queuedCount,
  type ReleaseCommand,
  releaseFields,
  someoneQueued,
  type Tenure,
  withOptional,
} from './lock';
import {
  type EndReason,
  endedStep,
  handedStep,
  movedStep,
  openStep,
  type RequestIdentity,
  takenBackStep,
} from './request';
import { sessionGrantSteps } from './session';
import { pinnedSharedGrants } from './shared-lock';

export const PRIORITY = { min: -100, max: 100, default: 0 } as const;

/** Attribute names of a waiter item. */
export const WaitAttr = {
  name: 'lock_name',
  /** The principal that waits (principal.ts): the grant will belong to it. */
  owner: 'principal',
  client: 'client_id',
  ttlMs: 'ttl_ms',
  requestId: 'request_id',
  /** requestKey(client, request): names the request's record, and the lock's grant_request once served. */
  requestKey: 'request_key',
  /** When the waiter gives up, ms on the server's clock. */
  deadline: 'deadline',
  priority: 'priority',
  arrivedAt: 'arrived_at',
  /** The WebSocket connection to push the grant to; absent for an HTTP waiter (it polls). */
  connection: 'connection_id',
  /**
   * An HTTP waiter's doorbell: the WebSocket connection of the function that waits for it
   * (service/relay.ts), told `ring` when the waiter is granted or ended, so it reads its record then
   * rather than at its next poll. A hint only: the record is the answer.
   */
  bell: 'bell',
  /**
   * The HTTP-wait slot (core/http-wait.ts) a rung waiter's function holds, as `<index> <holder>`:
   * whoever grants it frees that slot after the ring that carries the grant, so the waiting
   * function answers without a write of its own.
   */
  slot: 'http_slot',
  /** The session the grant will be held through, if any (see session.ts). */
  session: 'session_id',
  /** Absent for exclusive. */
  mode: 'mode',
  /** A semaphore's N (shared mode only). */
  maxHolders: 'max_holders',
  /** The locks the waiting task holds and keeps until it is served (deadlock detection), space-separated. */
  holding: 'holding',
  /**
   * Locks enclosing clients of the same principal hold and keep until it is served: per client,
   * its id then the names, space-separated; clients separated by `;` (in neither an id nor a name).
   */
  enclosing: 'enclosing',
} as const;
const W = WaitAttr;

export interface Waiter {
  readonly lock: string;
  /** Sorts in serving order within the lock's queue. */
  readonly order: string;
  readonly owner: string;
  readonly clientId: string;
  /** How the grant will be held: a lease of its ttl, or through a session. */
  readonly tenure: Tenure;
  readonly requestId: string;
  readonly requestKey: string;
  readonly deadline: number;
  readonly priority: number;
  readonly arrivedAt: number;
  readonly connectionId: string | undefined;
  /** An HTTP waiter's doorbell (WaitAttr.bell); only for waiters without a connection. */
  readonly bell?: string | undefined;
  /** The HTTP-wait slot its function holds (WaitAttr.slot); only for waiters with a doorbell. */
  readonly slot?: WaitSlot | undefined;
  readonly mode: LockMode;
  readonly maxHolders: number | undefined;
  /** The locks the waiting task holds and keeps until it is served (core/deadlock.ts). */
  readonly holding?: readonly string[] | undefined;
  /** Locks another client id of its principal holds and keeps until it is served (core/deadlock.ts). */
  readonly enclosing?: readonly Enclosing[] | undefined;
}

/**
 * Serving order as a string: priority inverted (so higher sorts first), then
 * arrival time on the server's clock, then a tie-breaker. FIFO holds to the
 * precision of the servers' clocks (AWS Time Sync: well under a ms).
 */
export function queueOrder(priority: number, arrivedAt: number, nonce: string): string {
  if (!Number.isInteger(priority) || priority < PRIORITY.min || priority > PRIORITY.max)
    throw new RangeError(`priority must be an integer from ${PRIORITY.min} to ${PRIORITY.max}`);
  const inverted = String(PRIORITY.max - priority).padStart(3, '0');
  return `${inverted}#${String(Math.floor(arrivedAt)).padStart(15, '0')}#${nonce}`;
}

export function waiterItem(w: Waiter): Record<string, string | number> {
  return {
    [W.name]: w.lock,
    [W.owner]: w.owner,
    [W.client]: w.clientId,
    ...(w.tenure.kind === 'lease' ? { [W.ttlMs]: w.tenure.ttlMs } : { [W.session]: w.tenure.sessionId }),
    [W.requestId]: w.requestId,
    [W.requestKey]: w.requestKey,
    [W.deadline]: w.deadline,
    [W.priority]: w.priority,
    [W.arrivedAt]: w.arrivedAt,
    ...(w.connectionId === undefined ? {} : { [W.connection]: w.connectionId }),
    ...(w.bell === undefined ? {} : { [W.bell]: w.bell }),
    ...(w.slot === undefined ? {} : { [W.slot]: `${w.slot.index} ${w.slot.holder}` }),
    ...(w.mode === 'shared' ? { [W.mode]: 'shared' } : {}),
    ...(w.maxHolders === undefined ? {} : { [W.maxHolders]: w.maxHolders }),
    // Lock names never contain a space.
    ...(w.holding?.length ? { [W.holding]: w.holding.join(' ') } : {}),
    // Client ids never contain a space either.
    ...(w.enclosing?.length
      ? { [W.enclosing]: w.enclosing.map((c) => [c.clientId, ...c.holding].join(' ')).join(';') }
      : {}),
  };
}

/** An HTTP-wait slot: its index, and the holder it was taken for (core/http-wait.ts). */
export interface WaitSlot {
  readonly index: number;
  readonly holder: string;
}

function waitSlotOf(value: unknown): WaitSlot | undefined {
  if (typeof value !== 'string') return undefined;
  const space = value.indexOf(' ');
  const index = Number(value.slice(0, space));
  if (space < 1 || !Number.isInteger(index) || index < 0) return undefined;
  return { index, holder: value.slice(space + 1) };
}

function enclosingOf(value: string): { enclosing?: Enclosing[] } {
  const enclosing = value
    .split(';')
    .map((client) => client.split(' '))
    .flatMap(([clientId, ...holding]) => (clientId && holding.length > 0 ? [{ clientId, holding }] : []));
  return enclosing.length > 0 ? { enclosing } : {};
}

export function waiterOf(order: string, item: Item): Waiter {
  const n = (a: string) => (typeof item[a] === 'number' ? (item[a] as number) : 0);
  const s = (a: string) => (typeof item[a] === 'string' ? (item[a] as string) : '');
  const connection = item[W.connection];
  const bell = item[W.bell];
  const slot = waitSlotOf(item[W.slot]);
  const session = item[W.session];
  return {
    lock: s(W.name),
    order,
    owner: s(W.owner),
    clientId: s(W.client),
    tenure:
      typeof session === 'string'
        ? { kind: 'session', sessionId: session }
        : { kind: 'lease', ttlMs: n(W.ttlMs) },
    requestId: s(W.requestId),
    requestKey: s(W.requestKey),
    deadline: n(W.deadline),
    priority: n(W.priority),
    arrivedAt: n(W.arrivedAt),
    connectionId: typeof connection === 'string' ? connection : undefined,
    ...(typeof bell === 'string' ? { bell } : {}),
    ...(slot === undefined ? {} : { slot }),
    mode: item[W.mode] === 'shared' ? 'shared' : 'exclusive',
    maxHolders: typeof item[W.maxHolders] === 'number' ? (item[W.maxHolders] as number) : undefined,
    holding: s(W.holding) === '' ? undefined : s(W.holding).split(' '),
    ...enclosingOf(s(W.enclosing)),
  };
}

export const identityOf = (w: Pick<Waiter, 'lock' | 'requestKey' | 'clientId'>): RequestIdentity => ({
  lock: w.lock,
  requestKey: w.requestKey,
  clientId: w.clientId,
});

const waiterPresent = exists(W.client);
const countBy = (by: number) => add(LockAttr.queued, by, 0);

/** The waiter item is there, and its grant goes to `connectionId` (none: an HTTP waiter). */
const waiterAt = (connectionId: string | undefined): Condition =>
  and(waiterPresent, connectionId === undefined ? missing(W.connection) : eq(W.connection, connectionId));

/**
 * Limits on waiting (README: "Limits"), each checked in the same transaction that queues a waiter,
 * so none can be exceeded by racing requests.
 */
export interface QueueLimits {
  /** Waiters in one lock's queue. */
  readonly maxQueueLength: number;
  /** Waiters whose grant goes to one WebSocket connection. */
  readonly maxWaitersPerConnection: number;
  /** Waiters of one principal, over all locks: counted in QUOTA_SHARDS shards of an equal share each. */
  readonly maxWaitersPerPrincipal: number;
}

/**
 * Waiter counts live in counter items ("quotas"): one per WebSocket connection, and
 * QUOTA_SHARDS per principal (a request counts in the shard its key hashes to), so a principal
 * with many clients queuing at once does not make one hot item. Every transaction that adds or
 * removes a waiter item moves its counters with it.
 */
export const QUOTA_SHARDS = 16;
const QuotaAttr = { waiting: 'waiting' } as const;
/** Counters are collected a retention period after their last change (past any wait they count). */
const QUOTA_GC_DELAY_MS = 2 * 3_600_000;

const digest = (text: string) => createHash('sha256').update(text).digest();

/** The principal a request key names (lock.ts: requestKey). */
function ownerOfRequestKey(key: string): string {
  const colon = key.indexOf(':');
  const length = Number(key.slice(0, colon));
  return key.slice(colon + 1, colon + 1 + length);
}

export const principalQuotaScope = (requestKey: string) =>
  `P#${digest(ownerOfRequestKey(requestKey)).toString('base64url').slice(0, 22)}#${digest(requestKey).readUInt32BE(0) % QUOTA_SHARDS}`;
export const connectionQuotaScope = (connectionId: string) => `C#${connectionId}`;

/** The counter items a waiter counts in. */
const quotaScopes = (w: Pick<Waiter, 'requestKey' | 'connectionId'>) => [
  principalQuotaScope(w.requestKey),
  ...(w.connectionId === undefined ? [] : [connectionQuotaScope(w.connectionId)]),
];

function quotaStep(scope: string, by: number, now: number, cap?: number): Step {
  return updateStep(quotaRef(scope), {
    ...(cap === undefined ? {} : { condition: or(missing(QuotaAttr.waiting), lt(QuotaAttr.waiting, cap)) }),
    update: [add(QuotaAttr.waiting, by, 0)],
    gcFrom: now + QUOTA_GC_DELAY_MS,
  });
}

/** Waiters leave: each of their counters goes down by one (one step per counter item, as a transaction needs). */
const releaseQuotaSteps = (
  waiters:
    | Pick<Waiter, 'requestKey' | 'connectionId'>
    | readonly Pick<Waiter, 'requestKey' | 'connectionId'>[],
  now: number,
): Step[] => {
  const counts = new Map<string, number>();
  for (const w of Array.isArray(waiters) ? waiters : [waiters])
    for (const scope of quotaScopes(w)) counts.set(scope, (counts.get(scope) ?? 0) + 1);
  return [...counts].map(([scope, n]) => quotaStep(scope, -n, now));
};

/** Which limit a refused enqueue hit, by the index of the step that refused (see enqueueSteps). */
export const ENQUEUE_STEP = { lock: 0, waiter: 1, record: 2, principalQuota: 3, connectionQuota: 4 } as const;

/**
 * Joins the queue, only while the lock cannot be granted at once (held by
 * someone else, or promised to earlier waiters, or under lock-delay), and
 * only if the request has no record yet (it never waited before). When the
 * lock step refuses, the caller may grant at once; when the record refuses,
 * the caller follows the record.
 */
/**
 * The lock cannot be granted at once in `w`'s mode (so a waiter queues): held by someone else,
 * under lock-delay, promised to earlier waiters; for an exclusive waiter also any shared entry
 * (one that lapsed is removed by the handoff that serves it) or a writers' lock-delay; for a shared
 * waiter also no room under its semaphore (entries present count), or another N in force.
 */
function mustWait(w: Waiter, now: number): Condition {
  const common = [isHeldAt(now), isBlockedAt(now), someoneQueued];
  if (w.mode === 'exclusive')
    return or(...common, gt(SharedAttr.count, 0), gt(SharedAttr.writersBlockedUntil, now));
  const cap = w.maxHolders ?? MAX_SHARED_HOLDERS;
  return or(...common, and(gt(SharedAttr.count, 0), ge(SharedAttr.count, cap)));
}

/**
 * A shared waiter asks for the N in force (or, for a plain shared lock, none), or nobody holds it:
 * otherwise its enqueue is refused and the acquire answers 409 MAX_HOLDERS_MISMATCH.
 */
const sameSemaphore = (w: Waiter): Condition | undefined =>
  w.mode !== 'shared'
    ? undefined
    : or(
        missing(SharedAttr.count),
        le(SharedAttr.count, 0),
        w.maxHolders === undefined ? missing(SharedAttr.maxHolders) : eq(SharedAttr.maxHolders, w.maxHolders),
      );

/** Not already a live holder as this principal and client: that is a re-entry or a refusal, not a wait. */
function notMineAlready(w: Waiter, now: number): Condition {
  const slot = slotOf(w.owner, w.clientId);
  return and(
    or(isFreeAt(now), ne(LockAttr.holder, w.clientId), ne(LockAttr.owner, w.owner)),
    or(
      missing(entryAttr(slot, 'fence')),
      and(missing(entryAttr(slot, 'session')), le(entryAttr(slot, 'expiresAt'), now)),
    ),
  );
}

/**
 * Joins the queue of a lock the waiter cannot take now. `keptOut` (the lock as last read): the
 * lock itself is free, but its hierarchy keeps the waiter out (an ancestor's holder, a grant
 * below: core/hierarchy.ts), so it queues all the same, and the lock item, which may have had
 * nothing to keep it, is kept at least as long as the wait; the notifier serves it once that changes.
 */
export function enqueueSteps(
  w: Waiter,
  now: number,
  limits: QueueLimits,
  keptOut?: { readonly seen: Item | undefined },
): Step[] {
  // A TTL counted from now never falls below a lease that holds the lock now (one granted since
  // the read): queued all the same only while no lease does; a held lock takes a plain join.
  const ttl = keptOut ? keptOutTtl(keptOut.seen, now) : undefined;
  const ttlCondition = ttl?.condition;
  const queueHasRoom = or(missing(LockAttr.queued), lt(LockAttr.queued, limits.maxQueueLength));
  const principalShare = Math.max(1, Math.ceil(limits.maxWaitersPerPrincipal / QUOTA_SHARDS));
  return [
    updateStep(lockRef(w.lock), {
      condition: withOptional(
        ttlCondition ? and(queueHasRoom, ttlCondition) : and(mustWait(w, now), queueHasRoom),
        sameSemaphore(w),
        notMineAlready(w, now),
        notAlreadyServed(w.requestKey),
        or(
          missing(entryAttr(slotOf(w.owner, w.clientId), 'grantRequest')),
          ne(entryAttr(slotOf(w.owner, w.clientId), 'grantRequest'), requestTag(w.requestKey)),
        ),
      ),
      update: [
        set(LockAttr.name, w.lock),
        countBy(1),
        // Above the default priority it may sort ahead of waiters already queued (core/known-queue.ts).
        ...(w.priority > PRIORITY.default ? [add(LockAttr.reordered, 1, 0)] : []),
      ],
      ...(ttl?.gcFrom === undefined ? {} : { gcFrom: ttl.gcFrom }),
    }),
    updateStep(waiterRef(w.lock, w.order), {
      condition: missing(W.client),
      update: Object.entries(waiterItem(w)).map(([attr, value]) => set(attr, value)),
      // The sweeper's backstop for a waiter nobody served or expired by its deadline.
      sweepAt: w.deadline,
      gcFrom: w.deadline,
      owner: w.connectionId ?? null,
    }),
    openStep(identityOf(w), w.order, w.deadline, w.connectionId),
    quotaStep(principalQuotaScope(w.requestKey), 1, now, principalShare),
    ...(w.connectionId === undefined
      ? []
      : [quotaStep(connectionQuotaScope(w.connectionId), 1, now, limits.maxWaitersPerConnection)]),
  ];
}

/** Whether a lock item (as a refused enqueue saw it) has no room for another waiter. */
export const queueIsFull = (lock: Item | undefined, limits: QueueLimits) =>
  queuedCount(lock) >= limits.maxQueueLength;

/** Leaves the queue without a grant (timed out, cancelled, connection gone, session ended). */
export type QueuedWaiter = Pick<Waiter, 'lock' | 'order' | 'requestKey' | 'clientId' | 'connectionId'>;

export function leaveSteps(w: QueuedWaiter, reason: EndReason, now: number): Step[] {
  return [
    updateStep(lockRef(w.lock), { condition: someoneQueued, update: [countBy(-1)] }),
    { kind: 'delete', ref: waiterRef(w.lock, w.order), condition: waiterAt(w.connectionId) },
    endedStep(identityOf(w), w.order, reason, now),
    ...releaseQuotaSteps(w, now),
  ];
}

/** Leaves the queue when the lock's count no longer includes the waiter (the count drifted). */
export const orphanLeaveSteps = (w: QueuedWaiter, reason: EndReason, now: number): Step[] => [
  { kind: 'delete', ref: waiterRef(w.lock, w.order), condition: waiterAt(w.connectionId) },
  endedStep(identityOf(w), w.order, reason, now),
  ...releaseQuotaSteps(w, now),
];

/** A retry arrived on another WebSocket connection: the waiter's grant is pushed there from now on. */
export const moveDeliverySteps = (w: QueuedWaiter, connectionId: string, now: number): Step[] => [
  updateStep(waiterRef(w.lock, w.order), {
    condition: waiterAt(w.connectionId),
    // Its doorbell, if it had one, is no longer how it learns: the connection is. Its HTTP attempt
    // frees its own slot as it ends.
    update: [set(W.connection, connectionId), remove(W.bell), remove(W.slot)],
    owner: connectionId,
  }),
  movedStep(w, w.order, connectionId),
  // Counted on the new connection from now on (a retry after a reconnect is not refused for it).
  ...(w.connectionId === undefined ? [] : [quotaStep(connectionQuotaScope(w.connectionId), -1, now)]),
  quotaStep(connectionQuotaScope(connectionId), 1, now),
];

/**
 * Hands a free lock to waiter `w`. The token is computed from the lock item
 * read just before and the write is conditional on it being unchanged, so
 * the grant (fencing token included) is known without reading it back. The
 * lock step is stamped with `writeId`: the grant may be taken back only
 * while nothing has written the lock since.
 */
export function handoffSteps(
  w: Waiter,
  lock: Item | undefined,
  now: number,
  writeId: string,
  releasing?: ReleaseCommand,
  /** More the lock must satisfy (a release from a queue read earlier: core/known-queue.ts). */
  also?: Condition,
): { steps: Step[]; grant: Grant } {
  if (w.mode === 'shared' && !releasing) {
    const { steps, grants } = runHandoffSteps([w], lock, now, writeId);
    return { steps, grant: grants[0] as Grant };
  }
  const grantee: Grantee = {
    name: w.lock,
    owner: w.owner,
    clientId: w.clientId,
    tenure: w.tenure,
    requestKey: w.requestKey,
  };
  const { write, grant } = pinnedGrant(grantee, lock, now, writeId, {
    condition: withOptional(someoneQueued, also),
    updates: [countBy(-1)],
    releasing,
  });
  const session =
    w.tenure.kind === 'session'
      ? sessionGrantSteps(w.tenure.sessionId, w.owner, w.clientId, w.lock, now)
      : [];
  return {
    steps: [
      updateStep(lockRef(w.lock), write),
      { kind: 'delete', ref: waiterRef(w.lock, w.order), condition: waiterAt(w.connectionId) },
      handedStep(identityOf(w), w.order, grant.fencingToken, gcFromHeld(grant.held) ?? now),
      ...session,
      ...releaseQuotaSteps(w, now),
    ],
    grant,
  };
}

/** Items one waiter's grant touches in a handoff transaction besides the lock (DynamoDB allows 100). */
const ITEMS_PER_WAITER = 6;
/** The most shared waiters one handoff grants together: a transaction holds 100 items. */
export const MAX_RUN = Math.floor(99 / ITEMS_PER_WAITER);

/**
 * Hands a lock to a run of shared waiters (the head of its queue) in one transaction: one write of
 * the lock item adds an entry per waiter (tokens fixed from the lock as read), and each waiter's
 * item, record, session check and counters move with it. Counters shared by several waiters of
 * the run are one step each.
 */
export function runHandoffSteps(
  run: readonly Waiter[],
  lock: Item | undefined,
  now: number,
  writeId: string,
): { steps: Step[]; grants: Grant[] } {
  const { write, grants } = pinnedSharedGrants(
    run.map((w) => ({
      name: w.lock,
      owner: w.owner,
      clientId: w.clientId,
      tenure: w.tenure,
      requestKey: w.requestKey,
      maxHolders: w.maxHolders,
    })),
    lock,
    now,
    writeId,
    { condition: ge(LockAttr.queued, run.length), updates: [countBy(-run.length)] },
  );
  const perWaiter = run.flatMap((w, i): Step[] => {
    const grant = grants[i] as Grant;
    return [
      { kind: 'delete', ref: waiterRef(w.lock, w.order), condition: waiterAt(w.connectionId) },
      handedStep(identityOf(w), w.order, grant.fencingToken, gcFromHeld(grant.held) ?? now),
      ...(w.tenure.kind === 'session'
        ? sessionGrantSteps(w.tenure.sessionId, w.owner, w.clientId, w.lock, now)
        : []),
    ];
  });
  return {
    steps: [updateStep(lockRef(run[0]?.lock ?? ''), write), ...perWaiter, ...releaseQuotaSteps(run, now)],
    grants,
  };
}

/**
 * Takes back a grant nobody received (its push found the connection gone),
 * so the next waiter can be served: only while nothing has written the lock
 * since the handoff (`writeId`), and the request was not claimed by a retry.
 */
export function takeBackSteps(grant: Grant, w: Waiter, writeId: string, now: number): Step[] {
  if (grant.mode === 'shared') {
    // One entry of a run: untouched since (not re-entered, not renewed), whatever else was written.
    const slot = slotOf(grant.owner, grant.clientId);
    const end = grant.held.kind === 'lease' ? grant.held.expiresAt : undefined;
    return [
      updateStep(lockRef(w.lock), {
        condition: and(
          eq(entryAttr(slot, 'fence'), grant.fencingToken),
          eq(entryAttr(slot, 'reentry'), 1),
          end === undefined ? exists(entryAttr(slot, 'session')) : eq(entryAttr(slot, 'expiresAt'), end),
        ),
        update: [
          ...removeEntry(slot),
          add(SharedAttr.count, -1, 0),
          ...(end === undefined ? [add(SharedAttr.sessions, -1, 0)] : []),
          add(SharedAttr.version, 1, 0),
          set(LockAttr.releasedAt, now),
        ],
      }),
      takenBackStep(identityOf(w), grant.fencingToken, w.connectionId ?? '', now),
    ];
  }
  return [
    updateStep(lockRef(w.lock), {
      condition: and(
        heldBy(grant.owner, grant.clientId, grant.fencingToken),
        eq(LockAttr.lastWrite, writeId),
      ),
      update: releaseFields(now),
      gcFrom: now,
    }),
    takenBackStep(identityOf(w), grant.fencingToken, w.connectionId ?? '', now),
  ];
}

/** Resets a waiter count that no waiter item backs (items deleted by hand), only if it has not moved. */
export const resetCountWrite = (seen: number): ItemWrite => ({
  condition: eq(LockAttr.queued, seen),
  update: [set(LockAttr.queued, 0)],
});

/**
 * Whether a release can hand the lock straight to the next waiter in the same transaction, from one
 * read of the queue (`lock` and its first `waiters`): only when that release frees it (the caller's
 * live lease, not re-entered) and the head of the queue can simply be granted (its deadline not
 * passed, none passed before it, held by a lease). Otherwise undefined, and the release is the
 * plain one, followed by serving the queue (which deals with all the rest).
 */
export function planRelease(
  release: ReleaseCommand,
  lock: Item | undefined,
  waiters: readonly Waiter[],
  now: number,
): Waiter | undefined {
  const holder = liveHolder(lock, now);
  if (
    !holder ||
    holder.owner !== release.owner ||
    holder.clientId !== release.clientId ||
    holder.fencingToken !== release.fencingToken ||
    holder.reentry > 1 ||
    // Counted down before: released the plain way, where a retry of a count-down is recognised.
    lock?.[LockAttr.releases] !== undefined ||
    holder.held.kind !== 'lease' ||
    blockedUntil(lock, now) !== undefined
  )
    return undefined;
  const head = waiters[0];
  if (
    !head ||
    head.deadline <= now ||
    head.tenure.kind !== 'lease' ||
    head.mode !== 'exclusive' ||
    queuedCount(lock) === 0 ||
    writersBlockedUntil(lock, now) !== undefined
  )
    return undefined;
  return head;
}

export type ServePlan =
  /** Waiters whose deadline passed go first; then the lock is still held, so nothing to hand off. */
  | {
      readonly kind: 'held';
      readonly expired: readonly Waiter[];
      readonly expiresAt: number | undefined;
      readonly fence: number;
    }
  /** Grant `run` (one exclusive waiter, or the shared waiters at the head); `head` is its first. */
  | {
      readonly kind: 'grant';
      readonly expired: readonly Waiter[];
      readonly head: Waiter;
      readonly run: readonly Waiter[];
    }
  /** The lock is free and nobody (live) waits: the count should be 0. */
  | { readonly kind: 'idle'; readonly expired: readonly Waiter[]; readonly countDrift: number };

/**
 * What serving a lock's queue means now, from the lock item and its first
 * waiters in order (`complete` when that is the whole queue).
 */
export function planServe(
  lock: Item | undefined,
  waiters: readonly Waiter[],
  now: number,
  complete: boolean,
): ServePlan {
  const expired = waiters.filter((w) => w.deadline <= now);
  const holder = liveHolder(lock, now);
  if (holder)
    return {
      kind: 'held',
      expired,
      expiresAt: holder.held.kind === 'lease' ? holder.held.expiresAt : undefined,
      fence: holder.fencingToken,
    };
  // Under lock-delay it is as good as held until the delay ends (a timer serves it then).
  const fence = lastFencingToken(lock) ?? 0;
  const blocked = blockedUntil(lock, now);
  if (blocked !== undefined) return { kind: 'held', expired, expiresAt: blocked, fence };
  const live = waiters.filter((w) => w.deadline > now);
  const head = live[0];
  if (!head) {
    const drift = complete && expired.length === 0 ? queuedCount(lock) : 0;
    return { kind: 'idle', expired, countDrift: drift };
  }
  const holders = liveEntries(lock, now);
  // Shared holders in the way: look again when the first of their leases ends (a slot frees, or
  // the last one ends); never for those held through sessions (their ends serve the queue).
  const ends = holders.flatMap((e) => (e.expiresAt === undefined ? [] : [e.expiresAt]));
  const held = {
    kind: 'held' as const,
    expired,
    expiresAt: ends.length ? Math.min(...ends) : undefined,
    fence,
  };
  if (head.mode === 'exclusive') {
    if (holders.length > 0) return held;
    const writersBlocked = writersBlockedUntil(lock, now);
    if (writersBlocked !== undefined) return { kind: 'held', expired, expiresAt: writersBlocked, fence };
    return { kind: 'grant', expired, head, run: [head] };
  }
  const run = sharedRun(live, lock, holders.length, now);
  return run.length ? { kind: 'grant', expired, head, run } : held;
}

/**
 * The shared waiters at the head of the queue that may be granted together now: up to the first
 * exclusive waiter, within the room the semaphore leaves (its N as in force, or as the head asks
 * when nobody holds it), asking for that same N, one per holder identity (none that already holds
 * it), and at most MAX_RUN (one transaction).
 */
function sharedRun(
  waiters: readonly Waiter[],
  lock: Item | undefined,
  holding: number,
  now: number,
): Waiter[] {
  const head = waiters[0] as Waiter;
  const n = holding > 0 ? maxHoldersOf(lock) : head.maxHolders;
  const room = Math.min(MAX_RUN, (n ?? MAX_SHARED_HOLDERS) - holding);
  const run: Waiter[] = [];
  const slots = new Set<string>();
  for (const w of waiters) {
    if (run.length >= room || w.mode !== 'shared' || w.maxHolders !== n) break;
    const slot = slotOf(w.owner, w.clientId);
    const mine = entryIn(lock, slot);
    if (slots.has(slot) || (mine !== undefined && isLiveEntry(mine, now))) break;
    slots.add(slot);
    run.push(w);
  }
  return run;
}

/**
 * One lock's change over a batch of stream records: the image before the
 * batch, the image after it, and `released`: the grant the batch's last
 * release (or take-back) took off the lock, as it was before that record.
 */
export interface LockChangeImages {
  readonly before: Item | undefined;
  readonly released: Item | undefined;
  readonly after: Item | undefined;
}

export type NotifierDecision = {
  readonly serve: boolean;
  /**
   * When a timer must look at the lock, if one must (core/lock-timer.ts: the lock's timer may
   * cover it already): what will change then writes nothing.
   */
  readonly lookBy: number | undefined;
};

/**
 * How long a releaser may take to serve the queue after its release: the
 * longest function timeout (the sweeper's, 60 s). A backup timer watches a
 * release for that long at most.
 */
export const RELEASER_BACKUP_MS = 60_000;

/**
 * What the notifier does about a lock's change (from its stream records):
 * have a timer look at the lock when a lease in the way ends (or a
 * lock-delay), because a lease that lapses writes nothing and so raises no
 * stream record; and serve the queue when the lock is free with waiters and
 * nobody else will.
 *
 * Somebody else will when the batch took a holder off the lock (a release,
 * a grant taken back, a session's end): that writer serves inline before it
 * answers, and serving here too would only race it and lose. In case it died
 * first, a timer serves the queue at the released lease's end or within
 * RELEASER_BACKUP_MS, whichever is sooner. And if the batch started with the
 * same grant and waiters already queued, that state already had its server
 * (a timer, or whoever freed the lock).
 */
export function onLockChange(
  { before, released, after }: LockChangeImages,
  now: number,
  /** The lock is in a hierarchical namespace (core/hierarchy.ts). */
  hierarchical = false,
): NotifierDecision {
  const nothing = { serve: false, lookBy: undefined };
  if (!after || queuedCount(after) === 0) return nothing;
  const holder = liveHolder(after, now);
  if (holder) {
    // A lock held through a session is freed by the session's end (whose writer serves it), not by a lease.
    if (holder.held.kind === 'session') return nothing;
    return { serve: false, lookBy: holder.held.expiresAt };
  }
  const shared = liveEntries(after, now);
  if (shared.length > 0) {
    // Entries that lapsed: serving may remove them and grant (a semaphore's room, or the last reader
    // gone). A waiter joined: with a priority above a queued writer's, a reader may share at once.
    const joined = queuedCount(after) > queuedCount(before);
    if (entryCount(after) > shared.length || joined) return { serve: true, lookBy: undefined };
    // Shared holders with waiters behind: look again when the first of their leases ends (serving
    // then looks on to the next); a release or a session's end serves the queue itself.
    const ends = shared.flatMap((e) => (e.expiresAt === undefined ? [] : [e.expiresAt]));
    return { serve: false, lookBy: ends.length ? Math.min(...ends) : undefined };
  }
  // Under lock-delay (a session expired): nobody may serve it before the delay ends, so a timer will.
  const blocked = blockedUntil(after, now);
  if (blocked !== undefined) return { serve: false, lookBy: blocked };
  // Lock-delay after a shared holder's session expired: an exclusive head waits for it, and a timer
  // serves the queue when it ends (a shared head was served by the session's end).
  const writersBlocked = writersBlockedUntil(after, now);
  if (writersBlocked !== undefined) return { serve: false, lookBy: writersBlocked };
  // Released: its releaser serves the queue if it saw anyone queued. If it saw nobody, whoever is
  // queued now joined after it (a waiter that lost the race for the free lock queues all the
  // same, and serves the queue itself, which may have failed): serve it.
  if (released && queuedCount(released) > 0) return { serve: false, lookBy: releaseBackupAt(released, now) };
  if (released) return { serve: true, lookBy: undefined };
  // The last shared holders left (released, ended): their releaser serves inline; should it have
  // died first, a timer serves the queue at their lease end or within RELEASER_BACKUP_MS.
  const gone = sharedEntries(before).filter(
    (e) => !sharedEntries(after).some((a) => a.slot === e.slot && a.fencingToken === e.fencingToken),
  );
  // Nobody was queued when the batch began: whoever is now joined meanwhile, perhaps after the
  // last of those releases (which then served nobody), so serve it.
  if (gone.length > 0 && queuedCount(before) === 0) return { serve: true, lookBy: undefined };
  if (gone.length > 0) {
    const ends = gone.map((e) => e.expiresAt ?? now + RELEASER_BACKUP_MS);
    return { serve: false, lookBy: Math.min(now + RELEASER_BACKUP_MS, ...ends) };
  }
  // Free with waiters. In a hierarchical namespace that can last (a holder above it, a grant below
  // it keeps the head out), so serve it again whenever its queue moves (a new head may fit), a
  // grant below it ends, or a wait below it marked it or was served (its head stands aside for an
  // older one, or stood aside for one that is gone).
  const queueMoved = hierarchical && queuedCount(after) !== queuedCount(before);
  const wokeBelow = hierarchical && wakeCount(after) !== wakeCount(before);
  // Standing aside for waits below it (hierarchy.ts yieldToBelow): its head is served when that ends.
  const asideUntil = hierarchical ? newYieldEnd(before, after) : undefined;
  return {
    serve: !alreadyWaiting(before, after) || queueMoved || wokeBelow || intentionsEased(before, after),
    lookBy: asideUntil,
  };
}

/** When a timer serves a released lock's queue should its releaser die before it does. */
function releaseBackupAt(released: Item, now: number): number {
  const leaseEnd = released[LockAttr.expiresAt];
  return typeof leaseEnd === 'number' ? Math.min(leaseEnd, now + RELEASER_BACKUP_MS) : now;
}

/** The batch began with the same grant (or none) and waiters already queued: that state had a server. */
const alreadyWaiting = (before: Item | undefined, after: Item) =>
  before !== undefined &&
  queuedCount(before) > 0 &&
  before[LockAttr.fence] === after[LockAttr.fence] &&
  before[LockAttr.holder] === after[LockAttr.holder];

/** The old image of a record that took a holder off the lock (a release, a take-back, a session end). */
export const tookHolderOff = (old: Item | undefined, current: Item | undefined) =>
  old?.[LockAttr.holder] !== undefined && current?.[LockAttr.holder] === undefined;
