/**
 * Wire schemas of HTTP API v1: JSON bodies in snake_case, unknown fields
 * refused. Shared by the handlers and (later) the SDK.
 */

import * as z from 'zod/mini';
import { MAX_ENCLOSING, MAX_HOLDING } from './deadlock';
import type { Item } from './expr';
import { intentionCounts } from './hierarchy';
import { MAX_SHARED_HOLDERS, maxHoldersOf, sharedEntries } from './holders';
import {
  type AcquireCommand,
  type AcquireOutcome,
  blockedUntil,
  type Grant,
  type Held,
  LockAttr,
  lastFencingToken,
  lease,
  liveGrants,
  queuedCount,
  type ReleaseCommand,
  type ReleaseOutcome,
  type RenewCommand,
  throughSession,
} from './lock';
import { IDENTIFIER, IDENTIFIER_CHARACTERS, IDENTIFIER_MAX_LENGTH, lockNameProblem } from './names';
import { PRIORITY, type QueueLimits, type Waiter } from './queue';
import './zod-messages';
import { heartbeatIntervalMs, type Session, sessionState } from './session';

/** What callers may ask for: lease lengths and priorities (the schemas check them). */
export interface Limits {
  readonly minTtlMs: number;
  readonly maxTtlMs: number;
  /** The priorities callers may ask for, within −100..100 (README: "Limits"). */
  readonly minPriority: number;
  readonly maxPriority: number;
}

/** Every limit of the service (README: "Limits"); each is a LatchkeyStack prop. */
export interface ServiceLimits extends Limits, QueueLimits {
  /** HTTP waits polling at once, service-wide: they hold a function instance each (TOO_MANY_WAITS past it). */
  readonly maxHttpWaits: number;
}

export const DEFAULT_LIMITS: ServiceLimits = {
  minTtlMs: 1_000,
  maxTtlMs: 3_600_000,
  minPriority: PRIORITY.min,
  maxPriority: PRIORITY.max,
  maxQueueLength: 1_000,
  maxWaitersPerConnection: 100,
  maxWaitersPerPrincipal: 25_000,
  maxHttpWaits: 100,
};

/** The longest a request may wait (API Gateway closes a WebSocket connection after 2 hours). */
export const MAX_WAIT_MS = 2 * 3600 * 1000 - 60_000;

/**
 * Why a retention period is too short, or undefined. Items are collected only
 * after what they record ends, plus retention: the retention must outlast the
 * longest lease and the longest wait, so that a lock item with waiters (which
 * a long wait keeps free of any new lease end) is never collected under them,
 * and a request_id is remembered for at least a day.
 */
export function retentionProblem(retentionSeconds: number, maxTtlMs: number): string | undefined {
  const needed = Math.max(86_400, Math.ceil(Math.max(maxTtlMs, MAX_WAIT_MS) / 1000) + 3_600);
  return retentionSeconds >= needed
    ? undefined
    : `the retention period (${retentionSeconds} s) must be at least ${needed} s: a day, and an hour more than the longest lease (${maxTtlMs} ms) and the longest wait (${MAX_WAIT_MS} ms)`;
}
/** Room for the largest valid body: 32 `holding` and 32 `enclosing` names of 256 characters, and the rest. */
export const MAX_BODY_BYTES = 24 * 1024;
export const MAX_LIST_LIMIT = 100;

const identifier = (what: string) =>
  z
    .string()
    .check(
      z.minLength(1, `${what} must not be empty`),
      z.maxLength(IDENTIFIER_MAX_LENGTH, `${what} must be at most ${IDENTIFIER_MAX_LENGTH} characters`),
      z.regex(IDENTIFIER, `${what} may contain only ${IDENTIFIER_CHARACTERS}`),
    );

export const clientId = identifier('client_id');
export const requestId = identifier('request_id');
export const fencingToken = z.int().check(z.minimum(1, 'fencing_token must be a positive integer'));

export const ttlMs = (limits: Limits) =>
  z
    .int('ttl_ms must be an integer number of milliseconds')
    .check(
      z.minimum(limits.minTtlMs, `ttl_ms must be at least ${limits.minTtlMs}`),
      z.maximum(limits.maxTtlMs, `ttl_ms must be at most ${limits.maxTtlMs}`),
    );

/** An HTTP acquire may wait this long (API Gateway's HTTP integration timeout is 30 s). */
export const MAX_HTTP_WAIT_MS = 25_000;

export const priority = (limits: Pick<Limits, 'minPriority' | 'maxPriority'>) =>
  z
    .int('priority must be an integer')
    .check(
      z.minimum(limits.minPriority, `priority must be at least ${limits.minPriority} (this service's range)`),
      z.maximum(limits.maxPriority, `priority must be at most ${limits.maxPriority} (this service's range)`),
    );

export const waitTimeoutMs = (max: number, hint = '') =>
  z
    .int('wait_timeout_ms must be an integer number of milliseconds')
    .check(
      z.minimum(0, 'wait_timeout_ms must not be negative'),
      z.maximum(max, `wait_timeout_ms must be at most ${max}${hint}`),
    );

export const SESSION_TTL_MESSAGE =
  'ttl_ms is not used with a session: the lock is held as long as its session lives';

export const sessionId = z.uuid('session_id must be a session id (a UUID) from POST /api/v1/sessions');
/** Any session's id, as operators name it: a session id (a UUID), or a WebSocket connection's (`conn-<connection id>`). */
export const anySessionId = z.union([sessionId, z.string().check(z.regex(/^conn-[A-Za-z0-9+=_-]{1,128}$/))], {
  error: 'the session id must be a session id (a UUID) or conn-<connection id>',
});

/** A WebSocket connection id, as API Gateway hands them out (and the `welcome` frame tells). */
export const connectionId = z
  .string()
  .check(
    z.minLength(1, 'connection_id must not be empty'),
    z.maxLength(128, 'connection_id must be at most 128 characters'),
    z.regex(/^[A-Za-z0-9+/=_-]+$/, 'connection_id is a WebSocket connection id from the welcome frame'),
  );

/** A lock named in a body (`holding`): the naming rule, as for one named in a path. */
/** Lock names a wait keeps while it waits: at most MAX_HOLDING, none twice. */
const heldLockNames = (what: string) =>
  z.array(heldLockName).check(
    z.maxLength(MAX_HOLDING, `${what} names at most ${MAX_HOLDING} locks`),
    z.refine((names) => new Set(names).size === names.length, `${what} names a lock twice`),
  );

const heldLockName = z.string().check(
  z.superRefine((name, ctx) => {
    const problem = lockNameProblem(name);
    if (problem)
      ctx.addIssue({
        code: 'custom',
        message: `holding: the lock name ${JSON.stringify(name.slice(0, 64))} ${problem}`,
      });
  }),
);

export const lockMode = z.enum(['exclusive', 'shared'], "mode must be 'exclusive' or 'shared'");
export const maxHolders = z
  .int('max_holders must be an integer')
  .check(
    z.minimum(1, 'max_holders must be at least 1'),
    z.maximum(MAX_SHARED_HOLDERS, `max_holders must be at most ${MAX_SHARED_HOLDERS}`),
  );

export const acquireBody = (limits: Limits) =>
  z
    .strictObject({
      client_id: clientId,
      /** Required, except for a lock held through a session or a connection (it lasts as long as that). */
      ttl_ms: z.optional(ttlMs(limits)),
      wait_timeout_ms: z.optional(waitTimeoutMs(MAX_WAIT_MS)),
      priority: z.optional(priority(limits)),
      mode: z.optional(lockMode),
      /** Shared mode: a semaphore of this many holders. */
      max_holders: z.optional(maxHolders),
      request_id: z.optional(requestId),
      reentrant: z.optional(z.boolean()),
      session_id: z.optional(sessionId),
      /** Push the grant to this WebSocket connection (the caller's own) instead of waiting in this request. */
      connection_id: z.optional(connectionId),
      /** Hold the lock through that connection: released when it closes. */
      ephemeral: z.optional(z.boolean()),
      /** Say the queued request's place in its queue (one more read, of the waiters ahead). */
      with_position: z.optional(z.boolean()),
      /** The locks the caller holds and keeps while this request waits (deadlock detection). */
      holding: z.optional(heldLockNames('holding')),
      /**
       * Locks held by other client ids of the caller's principal, kept until this request is
       * served: the processes that started this one, each waiting for it (a `latchkey run` nested
       * in another's command, itself maybe nested), nearest last. Deadlock detection counts them
       * as kept by this wait.
       */
      enclosing: z.optional(
        z
          .array(
            z.strictObject({
              client_id: identifier('enclosing[].client_id'),
              holding: heldLockNames('enclosing[].holding').check(
                z.minLength(1, 'enclosing[].holding names the locks that client holds: at least one'),
              ),
            }),
          )
          .check(
            z.maxLength(MAX_ENCLOSING, `enclosing names at most ${MAX_ENCLOSING} clients`),
            z.refine(
              (clients) => clients.reduce((n, c) => n + c.holding.length, 0) <= MAX_HOLDING,
              `enclosing names at most ${MAX_HOLDING} locks in all`,
            ),
          ),
      ),
    })
    .check(
      z.superRefine((b, ctx) => {
        const held = b.session_id !== undefined || b.ephemeral === true;
        if (!held && b.ttl_ms === undefined)
          ctx.addIssue({
            code: 'custom',
            path: ['ttl_ms'],
            message: 'ttl_ms is required (unless session_id is given, or ephemeral)',
          });
        if (held && b.ttl_ms !== undefined)
          ctx.addIssue({ code: 'custom', path: ['ttl_ms'], message: SESSION_TTL_MESSAGE });
        if (b.max_holders !== undefined && b.mode !== 'shared')
          ctx.addIssue({
            code: 'custom',
            path: ['max_holders'],
            message: "max_holders makes a semaphore of a shared lock: give mode 'shared' with it",
          });
        if (b.ephemeral && b.session_id !== undefined)
          ctx.addIssue({
            code: 'custom',
            path: ['ephemeral'],
            message: 'give session_id or ephemeral, not both',
          });
        if (b.ephemeral && b.connection_id === undefined)
          ctx.addIssue({
            code: 'custom',
            path: ['ephemeral'],
            message: 'ephemeral holds the lock through a WebSocket connection: give connection_id',
          });
        if (b.connection_id === undefined && (b.wait_timeout_ms ?? 0) > MAX_HTTP_WAIT_MS)
          ctx.addIssue({
            code: 'custom',
            path: ['wait_timeout_ms'],
            message: `wait_timeout_ms must be at most ${MAX_HTTP_WAIT_MS} when waiting in the request; to wait longer, give connection_id and receive the grant over the WebSocket API (README: "Waiting for a lock")`,
          });
      }),
    );

export const cancelBody = z.strictObject({
  client_id: clientId,
  /** The request to cancel; without it, every wait of this client for the lock. */
  request_id: z.optional(requestId),
  /** The caller's WebSocket connection, for a grant held through one that the cancel finds. */
  connection_id: z.optional(connectionId),
});

export const forceReleaseBody = z.strictObject({
  reason: z
    .string()
    .check(
      z.minLength(1, 'reason must not be empty'),
      z.maxLength(500, 'reason must be at most 500 characters'),
    ),
  /** End only the grant with this token (what the operator looked at); another is left alone. */
  fencing_token: z.optional(fencingToken),
});

/** Grace after a missed deadline before a session's locks go: up to 10 minutes, 5 s by default. */
export const DEFAULT_GRACE_MS = 5_000;
export const MAX_GRACE_MS = 600_000;
/** Lock-delay after a session expired (Chubby's default is 1 minute): up to 10 minutes, none by default. */
export const MAX_LOCK_DELAY_MS = 600_000;

export const sessionBody = (limits: Limits) =>
  z.strictObject({
    client_id: clientId,
    ttl_ms: ttlMs(limits),
    grace_ms: z.optional(
      z
        .int('grace_ms must be an integer number of milliseconds')
        .check(
          z.minimum(0, 'grace_ms must not be negative'),
          z.maximum(MAX_GRACE_MS, `grace_ms must be at most ${MAX_GRACE_MS}`),
        ),
    ),
    lock_delay_ms: z.optional(
      z
        .int('lock_delay_ms must be an integer number of milliseconds')
        .check(
          z.minimum(0, 'lock_delay_ms must not be negative'),
          z.maximum(MAX_LOCK_DELAY_MS, `lock_delay_ms must be at most ${MAX_LOCK_DELAY_MS}`),
        ),
    ),
  });
export const heartbeatBody = z.strictObject({ client_id: clientId });
export const closeSessionQuery = z.strictObject({ client_id: clientId });

export function sessionResponse(s: Session, now: number) {
  return {
    session_id: s.id,
    client_id: s.clientId,
    state: sessionState(s, now),
    ttl_ms: s.ttlMs,
    grace_ms: s.graceMs,
    lock_delay_ms: s.lockDelayMs,
    heartbeat_interval_ms: heartbeatIntervalMs(s.ttlMs),
    expires_at: isoTime(s.deadline),
    grace_until: isoTime(s.expiresAt),
  };
}

/** `mode` on a release or renew: the mode the caller holds the lock in (a hint that saves a write). */
export const releaseBody = z.strictObject({
  client_id: clientId,
  fencing_token: fencingToken,
  mode: z.optional(lockMode),
  /** The same on every retry of this release: a retry of one already applied is answered, not applied again. */
  release_id: z.optional(identifier('release_id')),
});

export const renewBody = (limits: Limits) =>
  z.strictObject({
    client_id: clientId,
    fencing_token: fencingToken,
    ttl_ms: ttlMs(limits),
    mode: z.optional(lockMode),
  });

/** The paging fields of a listing's query string: `limit` (1–MAX_LIST_LIMIT) and an opaque `cursor`. */
export const pageFields = {
  limit: z.optional(
    z.pipe(
      z.pipe(z.string().check(z.regex(/^[0-9]+$/, 'limit must be a positive integer')), z.transform(Number)),
      z
        .int()
        .check(
          z.minimum(1, 'limit must be at least 1'),
          z.maximum(MAX_LIST_LIMIT, `limit must be at most ${MAX_LIST_LIMIT}`),
        ),
    ),
  ),
  cursor: z.optional(z.string().check(z.maxLength(2048, 'cursor is too long'))),
};

export const listQuery = z.strictObject(pageFields);

export type AcquireBody = z.infer<ReturnType<typeof acquireBody>>;
export type CancelBody = z.infer<typeof cancelBody>;
export type ReleaseBody = z.infer<typeof releaseBody>;
export type RenewBody = z.infer<ReturnType<typeof renewBody>>;
export type ListQuery = z.infer<typeof listQuery>;

// Wire bodies to core commands, and core outcomes to wire bodies.
export const acquireCommand = (name: string, owner: string, b: AcquireBody): AcquireCommand => ({
  name,
  owner,
  clientId: b.client_id,
  // The schema requires a ttl unless held through a session (or a connection: its session is found later).
  tenure: b.session_id !== undefined ? throughSession(b.session_id) : lease(b.ttl_ms ?? 0),
  requestId: b.request_id,
  reentrant: b.reentrant,
  mode: b.mode ?? 'exclusive',
  maxHolders: b.mode === 'shared' ? b.max_holders : undefined,
  holding: b.holding,
  enclosing: b.enclosing?.map((c) => ({ clientId: c.client_id, holding: c.holding })),
});
export const releaseCommand = (name: string, owner: string, b: ReleaseBody): ReleaseCommand => ({
  name,
  owner,
  clientId: b.client_id,
  fencingToken: b.fencing_token,
  mode: b.mode,
  releaseId: b.release_id,
});
export const renewCommand = (name: string, owner: string, b: RenewBody): RenewCommand => ({
  name,
  owner,
  clientId: b.client_id,
  fencingToken: b.fencing_token,
  ttlMs: b.ttl_ms,
  mode: b.mode,
});

export const releaseResponse = (outcome: ReleaseOutcome) => ({
  released: true as const,
  lock: outcome.lock,
  remaining_reentries: outcome.remaining,
});

export const renewResponse = (grant: Grant, now: number) => ({
  renewed: true as const,
  lock: grant.lock,
  fencing_token: grant.fencingToken,
  ...tenureView(grant.held, now),
  mode: grant.mode,
  ...(grant.maxHolders === undefined ? {} : { max_holders: grant.maxHolders }),
});

/**
 * How a grant is held, on the wire: a lease's end, its ttl and what is left of it at `now`; or,
 * for a lock held through a session, the session (and no lease: `expires_at` is null).
 */
export function tenureView(held: Held, now: number) {
  return held.kind === 'lease'
    ? {
        expires_at: isoTime(held.expiresAt),
        remaining_ms: Math.max(0, held.expiresAt - now),
        ttl_ms: held.ttlMs,
      }
    : { expires_at: null, remaining_ms: null, ttl_ms: null, session_id: held.sessionId };
}

/** Timestamps go out as ISO-8601 UTC with milliseconds: exactly the server's value, never rounded up. */
export const isoTime = (ms: number): string => new Date(ms).toISOString();

/** A wait whose grant will be pushed over WebSocket (the acquire named a connection). */
export const queuedResponse = (
  lock: string,
  requestId: string,
  deadline: number,
  position: number | undefined,
) => ({
  acquired: false as const,
  queued: true as const,
  lock,
  request_id: requestId,
  ...(position === undefined ? {} : { position }),
  wait_until: isoTime(deadline),
});

export function acquireResponse(outcome: AcquireOutcome, now: number) {
  if (outcome.acquired) {
    const { grant } = outcome;
    return {
      acquired: true as const,
      lock: grant.lock,
      client_id: grant.clientId,
      fencing_token: grant.fencingToken,
      ...tenureView(grant.held, now),
      mode: grant.mode,
      ...(grant.maxHolders === undefined ? {} : { max_holders: grant.maxHolders }),
      reentry: grant.reentry,
    };
  }
  return {
    acquired: false as const,
    lock: outcome.lock,
    holder: holderSummary(outcome.holder),
    ...(outcome.shared === undefined
      ? {}
      : { shared_holders: outcome.shared.holders, max_holders: outcome.shared.maxHolders ?? null }),
    queued: outcome.queued,
    retry_after_ms: outcome.retryAfterMs,
    ...(outcome.blockedBy === undefined
      ? {}
      : { blocked_by: { lock: outcome.blockedBy.lock, reason: outcome.blockedBy.reason } }),
  };
}

/** Who holds a lock, as shown to someone refused it: a label and until when (null: as long as a session lives). */
export const holderSummary = (
  holder:
    | {
        readonly clientId: string;
        readonly expiresAt: number | undefined;
        readonly session: boolean;
        readonly mine?: true;
      }
    | undefined,
) =>
  holder
    ? {
        client_id: holder.clientId,
        expires_at: holder.expiresAt === undefined ? null : isoTime(holder.expiresAt),
        held_by: holder.session ? ('session' as const) : ('lease' as const),
        // The caller's own hold (a wait is not queued behind it): only ever the caller's to see.
        ...(holder.mine ? { mine: true as const } : {}),
      }
    : null;

/**
 * A holder as `viewer` (a principal) may see it: everyone sees that it is held, until when and by
 * which label; only the holder's own principal sees its capabilities, the fencing token and the
 * session id.
 */
export function holderView(grant: Grant, viewer: string) {
  const held = grant.held;
  const own = viewer === grant.owner;
  return {
    client_id: grant.clientId,
    mine: own,
    ...(own ? { fencing_token: grant.fencingToken } : {}),
    mode: grant.mode,
    acquired_at: isoTime(grant.acquiredAt),
    expires_at: held.kind === 'lease' ? isoTime(held.expiresAt) : null,
    held_by: held.kind,
    ...(own && held.kind === 'session' ? { session_id: held.sessionId } : {}),
    reentry: grant.reentry,
  };
}

export function waiterView(w: Waiter, position: number) {
  return {
    client_id: w.clientId,
    position,
    mode: w.mode,
    priority: w.priority,
    via: w.connectionId === undefined ? ('http' as const) : ('websocket' as const),
    queued_at: isoTime(w.arrivedAt),
    wait_until: isoTime(w.deadline),
  };
}

/**
 * What GET /api/v1/locks/{name} and the listing say about one lock at `now`.
 * `queued` is the lock's own count; `waiters` (single lock only) lists the head of the queue.
 */
export function lockView(
  name: string,
  item: Item | undefined,
  now: number,
  viewer: string,
  waiters?: readonly Waiter[],
) {
  const grants = liveGrants(item, now);
  const live = grants[0];
  const blocked = blockedUntil(item, now);
  // The last token issued is its grant's capability: shown only to that grant's principal while the
  // grant is recorded (held, or lapsed with nothing written since: its holder may still be at work),
  // and to nobody under lock-delay (an expired session's holder may still be at work).
  const lastShared = sharedEntries(item).at(-1);
  const recorded =
    item?.[LockAttr.holder] !== undefined
      ? String(item[LockAttr.owner] ?? '')
      : lastShared?.fencingToken === lastFencingToken(item)
        ? lastShared?.owner
        : undefined;
  const hidden = (recorded !== undefined && recorded !== viewer) || (blocked !== undefined && !live);
  const last = hidden ? undefined : lastFencingToken(item);
  // In a hierarchical namespace: the live grants below it (its intentions), by mode.
  const below = intentionCounts(item, now);
  return {
    lock: name,
    state: live ? ('held' as const) : blocked !== undefined ? ('delayed' as const) : ('free' as const),
    ...(blocked !== undefined && !live ? { blocked_until: isoTime(blocked) } : {}),
    mode: live ? live.mode : null,
    max_holders: live?.mode === 'shared' ? (maxHoldersOf(item) ?? null) : null,
    holders: grants.map((g) => holderView(g, viewer)),
    queued: queuedCount(item),
    ...(waiters ? { waiters: waiters.map((w, i) => waiterView(w, i + 1)) } : {}),
    fencing_token: last ?? null,
    ...(below.IS + below.IX > 0 ? { below: { exclusive: below.IX, shared: below.IS } } : {}),
  };
}
