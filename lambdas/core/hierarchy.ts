/**
 * Hierarchical (subtree) locks: multiple-granularity locking (Gray et al.)
 * over lock names, in the namespaces a stack opts into (its
 * `hierarchicalPrefixes`). Inside such a namespace, `a/b` is the parent of
 * `a/b/c`, and a lock on `a/b` covers everything under `a/b/`.
 *
 * Every grant of a name below others takes an *intention* on each of them, in
 * the same transaction: IS for a shared grant, IX for an exclusive one. An
 * intention is an entry in the ancestor's lock item that mirrors the grant
 * (its fencing token, its lease end or session), so it lapses exactly when
 * the grant does and goes with it when it is released. The grant's own item
 * is checked against the intentions it carries from below. Who may hold what
 * is the standard compatibility matrix (COMPATIBLE); SIX is not offered.
 *
 * The rules, each a condition of one transaction:
 * - IS on an ancestor: no live exclusive holder, no lock-delay, nobody queued.
 * - IX on an ancestor: as IS, and no live shared holder, no shared lock-delay.
 * - X on a node: no live intention on it (nothing below is held).
 * - S on a node: no live IX intention on it (nothing below is held exclusively).
 * "Nobody queued" is writer preference across levels: once anyone waits for
 * `a/b`, new grants below it wait too, so a stream of children cannot starve
 * the parent. Waits are ordered by arrival across levels the other way too
 * (yieldToBelow): a serve of `a/b` whose head arrived after a wait below it
 * that `a/b` keeps out lets that wait in first, so a parent taken back to back
 * cannot starve its children either.
 *
 * Intention entries are flat attributes `i:<key>:<field>` (the key hashes the
 * descendant's name and token), like shared entries (holders.ts), with counts
 * of the entries present (lapsed or not: what a blind condition can check)
 * and a version that moves with every change (what a write decided from a
 * read of lapsed entries is pinned on). This module is pure: the service's
 * Paths (service/paths.ts) runs the writes.
 */
import { createHash } from 'node:crypto';
import {
  add,
  and,
  type Condition,
  eq,
  exists,
  gt,
  type Item,
  le,
  lt,
  missing,
  or,
  remove,
  set,
  type UpdateAction,
} from './expr';
import {
  flatEntries,
  liveEntries,
  MAX_DROP,
  noEntries,
  SharedAttr,
  sameEntries,
  sharedEntries,
  writersBlockedUntil,
  writersNotBlockedAt,
} from './holders';
import type { ItemWrite } from './items';
import {
  blockedUntil,
  entryGrant,
  grantOf,
  type Held,
  isGrantableAt,
  LockAttr,
  liveHolder,
  queuedCount,
  queueIsEmpty,
  SESSION_HOLDER_RETRY_MS,
  sameFence,
} from './lock';

// Modes.

/** The modes of multiple-granularity locking this service offers. */
export type HierarchyMode = 'IS' | 'IX' | 'S' | 'X';
export type IntentionKind = 'IS' | 'IX';

/** Which modes may be held on one node at once, by different grants (symmetric). */
export const COMPATIBLE: Readonly<Record<HierarchyMode, readonly HierarchyMode[]>> = {
  IS: ['IS', 'IX', 'S'],
  IX: ['IS', 'IX'],
  S: ['IS', 'S'],
  X: [],
};
export const compatible = (a: HierarchyMode, b: HierarchyMode): boolean => COMPATIBLE[a].includes(b);

/** The intention a grant in `mode` takes on each ancestor. */
export const intentionFor = (mode: 'shared' | 'exclusive'): IntentionKind =>
  mode === 'shared' ? 'IS' : 'IX';

// Names.

/**
 * Most ancestors a hierarchical name may have (levels below its namespace's prefix, less one). A
 * grant's transaction writes its node and every ancestor, beside at most four more items (a
 * session's check and record, a request's record, a connection's check): 64 + 5 stays well
 * inside DynamoDB's 100 items per transaction, and every level costs two write units.
 */
export const MAX_ANCESTORS = 64;

/** Most intention entries (live grants below) one node carries: about 150 bytes each in its item. */
export const MAX_INTENTIONS = 1_000;

/** The namespace prefix `name` lies in (strictly below it), if any. */
export const namespaceOf = (name: string, prefixes: readonly string[]): string | undefined =>
  prefixes.find((p) => name.length > p.length && name.startsWith(p));

/** The ancestors of `name` inside its namespace, root first (none outside every namespace). */
export function ancestorsOf(name: string, prefixes: readonly string[]): string[] {
  const prefix = namespaceOf(name, prefixes);
  if (prefix === undefined) return [];
  const levels = name.slice(prefix.length).split('/');
  return levels.slice(0, -1).map((_, i) => prefix + levels.slice(0, i + 1).join('/'));
}

/** Why `name` cannot be locked under these prefixes (too deep), or undefined. */
export function hierarchyProblem(name: string, prefixes: readonly string[]): string | undefined {
  const depth = ancestorsOf(name, prefixes).length;
  return depth > MAX_ANCESTORS
    ? `${name} has ${depth} levels above it in its hierarchical namespace; at most ${MAX_ANCESTORS} are allowed (one transaction writes them all)`
    : undefined;
}

/**
 * Why a list of hierarchical prefixes is unusable, or undefined: each ends with '/', is a valid
 * lock-name prefix, and none lies inside another (a name would have two hierarchies).
 */
export function prefixesProblem(
  prefixes: readonly string[],
  prefixProblem: (p: string) => string | undefined,
): string | undefined {
  for (const p of prefixes) {
    if (!p.endsWith('/')) return `hierarchical prefix ${JSON.stringify(p)} must end with '/'`;
    const problem = prefixProblem(p);
    if (problem) return `hierarchical prefix ${JSON.stringify(p)}: ${problem}`;
    const outer = prefixes.find((q) => q !== p && p.startsWith(q));
    if (outer) return `hierarchical prefix ${JSON.stringify(p)} lies inside ${JSON.stringify(outer)}`;
  }
  return undefined;
}

/** Parses a comma-separated list of prefixes (the CLI flag, the environment variable). */
export const parsePrefixes = (text: string | undefined): string[] =>
  (text ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p.length > 0);

// Intention entries.

export const IntentAttr = {
  /** Entries present, lapsed or not. */
  count: 'intent_count',
  /** IX entries present, lapsed or not. */
  ix: 'intent_ix',
  /** Entries held through a session: while any is, the item keeps no TTL. */
  sessions: 'intent_sessions',
  /** Moved by every write that adds, removes or renews an entry. */
  version: 'intent_version',
} as const;
const I = IntentAttr;

/**
 * When each kind of grant was last made on a node, by the server's clock of the write that made it:
 * exclusive and shared grants of the node itself, and intentions (any, and IX) taken on it from
 * below. A conflicting grant can only be made once a lease has ended, so one stamped at or after
 * a lease's end tells a renewal of that lease, landing late, that something came (and maybe went)
 * since: it is refused, as a plain lock's renewal is once its fencing counter moved.
 */
export const GrantedAt = {
  X: 'x_granted_at',
  S: 's_granted_at',
  below: 'intent_added_at',
  belowX: 'intent_ix_added_at',
} as const;

/** Nothing was stamped in `attr` at or after `end` (undefined: no lease end, nothing to check). */
const notSince = (attr: string, end: number | undefined): Condition[] =>
  end === undefined ? [] : [or(missing(attr), lt(attr, end))];
const stampedSince = (item: Item | undefined, attr: string, end: number | undefined): boolean =>
  end !== undefined && item !== undefined && (num(item, attr) ?? Number.NEGATIVE_INFINITY) >= end;

/** Moved by every write of a hierarchical node's own grants: a write planned from a read is pinned on it. */
export const PATH_VERSION = 'path_version';

const FIELDS = {
  kind: 'k',
  fence: 'f',
  expiresAt: 'x',
  session: 's',
  name: 'n',
  client: 'c',
} as const;
type Field = keyof typeof FIELDS;
const INTENT_PREFIX = 'i:';

/** The key of the intention a grant (its lock name and token) leaves on each ancestor. */
export const intentionKey = (name: string, token: number): string =>
  createHash('sha256').update(name).update('\u0000').update(String(token)).digest('base64url').slice(0, 12);

export const intentionAttr = (key: string, field: Field): string => `${INTENT_PREFIX}${key}:${FIELDS[field]}`;

/** One intention as recorded in an ancestor (it may have lapsed). */
export interface Intention {
  readonly key: string;
  readonly kind: IntentionKind;
  /** The descendant whose grant it mirrors. */
  readonly name: string;
  readonly clientId: string;
  readonly fencingToken: number;
  readonly expiresAt: number | undefined;
  readonly session: string | undefined;
}

const num = (item: Item, attr: string) =>
  typeof item[attr] === 'number' ? (item[attr] as number) : undefined;
const str = (item: Item, attr: string) =>
  typeof item[attr] === 'string' ? (item[attr] as string) : undefined;

/** Every intention an item records, in name order. */
export const intentionsOf = (item: Item | undefined): Intention[] =>
  flatEntries(item, INTENT_PREFIX, FIELDS.fence, (key, fencingToken): Intention => {
    const at = item as Item;
    return {
      key,
      kind: str(at, intentionAttr(key, 'kind')) === 'IS' ? 'IS' : 'IX',
      name: str(at, intentionAttr(key, 'name')) ?? '',
      clientId: str(at, intentionAttr(key, 'client')) ?? '',
      fencingToken,
      expiresAt: num(at, intentionAttr(key, 'expiresAt')),
      session: str(at, intentionAttr(key, 'session')),
    };
  }).sort((a, b) => a.name.localeCompare(b.name) || a.fencingToken - b.fencingToken);

/** Live at `now`: held through a session (its end removes it), or a lease not yet ended. */
export const isLiveIntention = (i: Intention, now: number): boolean =>
  i.session !== undefined || (i.expiresAt !== undefined && i.expiresAt > now);

export const liveIntentions = (item: Item | undefined, now: number): Intention[] =>
  intentionsOf(item).filter((i) => isLiveIntention(i, now));

/** The live intentions of each kind: how many grants below hold the node's subtree, by mode. */
export function intentionCounts(item: Item | undefined, now: number): { IS: number; IX: number } {
  const live = liveIntentions(item, now);
  return { IS: live.filter((i) => i.kind === 'IS').length, IX: live.filter((i) => i.kind === 'IX').length };
}

// What a node's write changes below its ancestors.

/** A grant recorded on a node (live or lapsed): what its intentions mirror. */
export interface Recorded {
  readonly fencingToken: number;
  readonly kind: IntentionKind;
  readonly clientId: string;
  readonly held: Held;
  /** A renewal's: the lease end it had before (a renewal must not reach back over what came after it). */
  readonly previousEnd?: number | undefined;
}

/** Every grant an item records: its exclusive holder's attributes and its shared entries. */
export function recordedGrants(item: Item | undefined): Recorded[] {
  if (!item) return [];
  const exclusive =
    item[LockAttr.holder] !== undefined && typeof item[LockAttr.fence] === 'number' ? [grantOf(item)] : [];
  return [...exclusive, ...sharedEntries(item).map((e) => entryGrant(e))].map((g) => ({
    fencingToken: g.fencingToken,
    kind: intentionFor(g.mode),
    clientId: g.clientId,
    held: g.held,
  }));
}

export interface IntentionDelta {
  /** Grants the write makes: each takes an intention on every ancestor. */
  readonly added: readonly Recorded[];
  /** Grants it ends (released, or lapsed ones overwritten): their intentions go. */
  readonly removed: readonly Recorded[];
  /** Grants whose tenure it changes (a renewal): their intentions follow. */
  readonly renewed: readonly Recorded[];
  /**
   * Grants held through a session that it ends under lock-delay (the session expired: its holder
   * may only be cut off, still at work): their intentions stay, as leases to the delay's end, so
   * nothing above covers what that holder may still touch.
   */
  readonly delayed: readonly Recorded[];
}

const sameHeld = (a: Held, b: Held) =>
  a.kind === 'lease'
    ? b.kind === 'lease' && a.expiresAt === b.expiresAt
    : b.kind === 'session' && a.sessionId === b.sessionId;

/** What a write at `now` that turns `before` into `after` does to the grants its ancestors mirror. */
export function intentionDelta(
  before: Item | undefined,
  after: Item | undefined,
  now: number,
): IntentionDelta {
  const was = new Map(recordedGrants(before).map((g) => [g.fencingToken, g]));
  const is = new Map(recordedGrants(after).map((g) => [g.fencingToken, g]));
  const added = [...is.values()].filter((g) => !was.has(g.fencingToken));
  const ended = [...was.values()].filter((g) => !is.has(g.fencingToken));
  const renewed = [...is.values()].flatMap((g) => {
    const old = was.get(g.fencingToken);
    if (old === undefined || sameHeld(old.held, g.held)) return [];
    return [{ ...g, previousEnd: old.held.kind === 'lease' ? old.held.expiresAt : undefined }];
  });
  // Ended under lock-delay: exclusive grants until `blocked_until`, shared ones until writers may
  // come back (`writers_blocked_until`); both only for a grant held through a session.
  const delayOf = (g: Recorded) =>
    g.held.kind !== 'session'
      ? undefined
      : g.kind === 'IX'
        ? blockedUntil(after, now)
        : writersBlockedUntil(after, now);
  const delayed = ended.flatMap((g) => {
    const until = delayOf(g);
    return until === undefined
      ? []
      : [{ ...g, held: { kind: 'lease' as const, ttlMs: until - now, expiresAt: until } }];
  });
  const removed = ended.filter((g) => delayOf(g) === undefined);
  return { added, removed, renewed, delayed };
}

// What blocks a grant.

/** Who keeps a grant out: a holder of an ancestor, or a grant below the node itself. */
export interface SubtreeBlock {
  /** The lock that holder holds. */
  readonly lock: string;
  readonly clientId: string | undefined;
  /** When the blocking lease ends (undefined: held through a session, or not a lease). */
  readonly expiresAt: number | undefined;
  readonly session: boolean;
  /** Why, in words. */
  readonly reason: string;
  /** When to try again, ms from now. */
  readonly retryAfterMs: number;
}

const retryAfter = (expiresAt: number | undefined, now: number, session: boolean) =>
  session ? SESSION_HOLDER_RETRY_MS : expiresAt === undefined ? 50 : Math.max(1, expiresAt - now);

/**
 * The mode a write's grants hold on their own node from now on (X wins over S), or undefined: the
 * grants it makes, and those it renews (a renewal sent before its lease ended may land after it,
 * when something below may have been granted since: it must not bring the grant back over that).
 */
const askedOnNode = (delta: IntentionDelta): 'X' | 'S' | undefined => {
  const holding = [...delta.added, ...delta.renewed];
  return holding.some((g) => g.kind === 'IX') ? 'X' : holding.length > 0 ? 'S' : undefined;
};

/** No entry held through a session among the intentions (then a write may set the item's TTL). */
export const noSessionIntentions: Condition = or(missing(I.sessions), le(I.sessions, 0));
const someSessionIntentions: Condition = gt(I.sessions, 0);
const sessionIntentionsIn = (item: Item | undefined) => ((item && num(item, I.sessions)) ?? 0) > 0;

/** What the PathWriter adds to a node's own write: a condition, updates, and a TTL override. */
export interface NodeGuard {
  readonly condition: Condition;
  readonly updates: readonly UpdateAction[];
  /** Set when the item's intentions decide its TTL: null keeps it forever (held through sessions below). */
  readonly gcFrom?: null;
}

/**
 * What a node's write needs of the intentions the node carries: the grants it makes must be
 * compatible with every live one (blocked otherwise); lapsed conflicting ones are removed in the
 * same write, pinned on the intentions' version. The TTL stays unset while grants below are held
 * through sessions.
 */
export function nodeGuard(
  name: string,
  seen: Item | undefined,
  delta: IntentionDelta,
  now: number,
): NodeGuard | { readonly blocked: SubtreeBlock } {
  const sessions = sessionIntentionsIn(seen);
  const ttl: Pick<NodeGuard, 'gcFrom'> = sessions ? { gcFrom: null } : {};
  // A renewal landing after its lease ended: nothing below may have been granted since.
  const since: Condition[] = [];
  for (const g of delta.renewed) {
    const attr = g.kind === 'IX' ? GrantedAt.below : GrantedAt.belowX;
    if (stampedSince(seen, attr, g.previousEnd))
      return {
        blocked: {
          lock: name,
          clientId: undefined,
          expiresAt: undefined,
          session: false,
          reason: `something below ${name} was granted after the lease ended`,
          retryAfterMs: 0,
        },
      };
    since.push(...notSince(attr, g.previousEnd));
  }
  // What this write grants is stamped, for later renewals below it to see.
  const made = delta.added.some((g) => g.kind === 'IX') ? 'X' : delta.added.length > 0 ? 'S' : undefined;
  // A grant of the node ends any standing aside for waits below it (yieldToBelow).
  const stamp = made === undefined ? [] : [set(GrantedAt[made], now), ...yieldEnds];
  const sessionCondition = and(sessions ? someSessionIntentions : noSessionIntentions, ...since);
  const asked = askedOnNode(delta);
  if (asked === undefined) return { condition: sessionCondition, updates: stamp, ...ttl };
  const present = intentionsOf(seen);
  const conflicting = present.filter((i) => !compatible(asked, i.kind));
  const live = conflicting.find((i) => isLiveIntention(i, now));
  if (live)
    return {
      blocked: {
        lock: live.name,
        clientId: live.clientId,
        expiresAt: live.expiresAt,
        session: live.session !== undefined,
        reason: `${live.name}, below ${name}, is held ${live.kind === 'IX' ? 'exclusively' : 'shared'}`,
        retryAfterMs: retryAfter(live.expiresAt, now, live.session !== undefined),
      },
    };
  const blind = asked === 'X' ? or(missing(I.count), le(I.count, 0)) : or(missing(I.ix), le(I.ix, 0));
  if (conflicting.length === 0) return { condition: and(blind, sessionCondition), updates: stamp, ...ttl };
  // Only lapsed ones in the way: remove them (a write's worth), on exactly the entries seen.
  const dropped = conflicting.slice(0, MAX_DROP);
  const left = present.filter((i) => !dropped.includes(i));
  return {
    condition: and(eq(I.version, num(seen as Item, I.version) ?? 0), sessionCondition),
    updates: [
      ...dropped.flatMap((i) => removeIntentionFields(i.key)),
      set(I.count, left.length),
      set(I.ix, left.filter((i) => i.kind === 'IX').length),
      add(I.version, 1, 0),
      ...stamp,
    ],
    ...ttl,
  };
}

/** Why an ancestor cannot take intention `kind` now (as `item` shows it), or undefined. */
export function ancestorBlock(
  ancestor: string,
  item: Item | undefined,
  kind: IntentionKind,
  now: number,
  /** Whether waiters queued for the ancestor count (they do for a new grant, not for a renewal). */
  queue = true,
  /** When the grant's request arrived, if it waited (its queue's order): the ancestor may yield to it. */
  arrivedAt?: number,
): SubtreeBlock | undefined {
  const block = (
    clientId: string | undefined,
    expiresAt: number | undefined,
    session: boolean,
    reason: string,
  ): SubtreeBlock => ({
    lock: ancestor,
    clientId,
    expiresAt,
    session,
    reason,
    retryAfterMs: retryAfter(expiresAt, now, session),
  });
  const holder = liveHolder(item, now);
  if (holder) {
    const end = holder.held.kind === 'lease' ? holder.held.expiresAt : undefined;
    return block(holder.clientId, end, end === undefined, `${ancestor} is held exclusively`);
  }
  const delay = blockedUntil(item, now);
  if (delay !== undefined) return block(undefined, delay, false, `${ancestor} is under lock-delay`);
  if (queue && queueKeepsOut(item, arrivedAt, now))
    return block(undefined, undefined, false, `requests wait for ${ancestor}, and are served first`);
  if (kind === 'IX') {
    const shared = liveEntries(item, now)[0];
    if (shared) {
      const end = shared.session === undefined ? shared.expiresAt : undefined;
      return block(shared.clientId, end, end === undefined, `${ancestor} is held shared`);
    }
    const writers = writersBlockedUntil(item, now);
    if (writers !== undefined) return block(undefined, writers, false, `${ancestor} is under lock-delay`);
  }
  return undefined;
}

// Ancestor writes.

const removeIntentionFields = (key: string): UpdateAction[] =>
  (Object.keys(FIELDS) as Field[]).map((f) => remove(intentionAttr(key, f)));

/** Anything held through a session in an item: then it keeps no TTL. */
const someSessionHeld: Condition = or(
  exists(LockAttr.session),
  gt(SharedAttr.sessions, 0),
  someSessionIntentions,
);
const nothingSessionHeld: Condition = and(
  missing(LockAttr.session),
  or(missing(SharedAttr.sessions), le(SharedAttr.sessions, 0)),
  noSessionIntentions,
);
const sessionHeldIn = (item: Item | undefined): boolean =>
  item !== undefined &&
  (item[LockAttr.session] !== undefined ||
    (num(item, SharedAttr.sessions) ?? 0) > 0 ||
    sessionIntentionsIn(item));

/**
 * The TTL a lease's intention may set: from `now` when nothing in the item is held through a
 * session (a lease ends within the retention period of its last write), else left unset. `known`
 * is the item as last read (undefined: not read, assume nothing held through a session).
 */
function leaseTtl(known: Item | undefined): { condition: Condition; fromNow: boolean } {
  return sessionHeldIn(known)
    ? { condition: someSessionHeld, fromNow: false }
    : { condition: nothingSessionHeld, fromNow: true };
}

/** What one grant of a node does to one ancestor. */
export type AncestorOp =
  | { readonly kind: 'add'; readonly grant: Recorded }
  | { readonly kind: 'remove'; readonly grant: Recorded }
  | { readonly kind: 'renew'; readonly grant: Recorded }
  /** A session's intention becomes a lease to its lock-delay's end (`grant.held`). */
  | { readonly kind: 'delay'; readonly grant: Recorded };

export const ancestorOps = (delta: IntentionDelta): AncestorOp[] => [
  ...delta.removed.map((grant) => ({ kind: 'remove' as const, grant })),
  ...delta.delayed.map((grant) => ({ kind: 'delay' as const, grant })),
  ...delta.added.map((grant) => ({ kind: 'add' as const, grant })),
  ...delta.renewed.map((grant) => ({ kind: 'renew' as const, grant })),
];

/**
 * The write of one ancestor for `ops` (the grants of `node` that change), from the ancestor as
 * last read (`known`; undefined: not read, a blind write that counts on the usual case). Each
 * condition makes the change exact: an intention is added where none with its key is, removed or
 * renewed only where it is.
 */
export function ancestorWrite(
  ancestor: string,
  node: string,
  ops: readonly AncestorOp[],
  known: Item | undefined,
  now: number,
  /** When the request the grants serve arrived, if it waited: the ancestor may have yielded to it. */
  arrivedAt?: number,
): ItemWrite {
  const conditions: Condition[] = [];
  const updates: UpdateAction[] = [];
  let count = 0;
  let ix = 0;
  let sessions = 0;
  for (const op of ops) {
    const g = op.grant;
    const key = intentionKey(node, g.fencingToken);
    const a = (f: Field) => intentionAttr(key, f);
    const session = g.held.kind === 'session' ? 1 : 0;
    if (op.kind === 'add') {
      conditions.push(missing(a('fence')));
      updates.push(
        set(a('kind'), g.kind),
        set(a('fence'), g.fencingToken),
        set(a('name'), node),
        set(a('client'), g.clientId),
        g.held.kind === 'lease' ? set(a('expiresAt'), g.held.expiresAt) : set(a('session'), g.held.sessionId),
      );
      count++;
      if (g.kind === 'IX') ix++;
      sessions += session;
    } else if (op.kind === 'remove') {
      conditions.push(eq(a('fence'), g.fencingToken));
      updates.push(...removeIntentionFields(key));
      count--;
      if (g.kind === 'IX') ix--;
      sessions -= session;
    } else if (op.kind === 'delay') {
      conditions.push(eq(a('fence'), g.fencingToken), exists(a('session')));
      if (g.held.kind === 'lease') updates.push(set(a('expiresAt'), g.held.expiresAt), remove(a('session')));
      sessions -= 1;
    } else {
      conditions.push(eq(a('fence'), g.fencingToken));
      if (g.held.kind === 'lease') updates.push(set(a('expiresAt'), g.held.expiresAt));
      // Landing late: the ancestor may not have been granted (in a conflicting mode) since.
      conditions.push(...notSince(GrantedAt.X, g.previousEnd));
      if (g.kind === 'IX') conditions.push(...notSince(GrantedAt.S, g.previousEnd));
    }
  }
  const adds = ops.filter((op) => op.kind === 'add');
  // New grants, and renewals (which must find the ancestor as a new grant would: a renewal that
  // lands late must not bring back a grant something above covered since), need it grantable.
  const holds = ops.filter((op) => op.kind === 'add' || op.kind === 'renew');
  if (holds.length > 0) {
    const kind: IntentionKind = holds.some((op) => op.grant.kind === 'IX') ? 'IX' : 'IS';
    conditions.push(isGrantableAt(now));
    if (kind === 'IX') {
      // No shared holder: none recorded, or exactly the lapsed ones last read.
      const lapsedOnly =
        known !== undefined && sharedEntries(known).length > 0 && liveEntries(known, now).length === 0;
      conditions.push(lapsedOnly ? sameEntries(known) : noEntries, writersNotBlockedAt(now));
    }
  }
  if (adds.length > 0) {
    // Writer preference across levels: nobody new below a lock that requests wait for, unless
    // it yielded to waits below it that arrived before its head (yieldToBelow).
    conditions.push(
      arrivedAt === undefined ? queueIsEmpty : or(queueIsEmpty, standsAsideFor(arrivedAt, now)),
    );
    updates.push(set(GrantedAt.below, now));
    if (adds.some((op) => op.grant.kind === 'IX')) updates.push(set(GrantedAt.belowX, now));
    // Room for the new entries. Entries that lapsed count until removed: a write from a read that
    // shows the item full removes some of them, on exactly the entries read.
    const present = intentionsOf(known);
    const mine = new Set(ops.map((op) => intentionKey(node, op.grant.fencingToken)));
    const lapsed = present.filter((i) => !isLiveIntention(i, now) && !mine.has(i.key));
    const full = present.length + adds.length > MAX_INTENTIONS;
    if (known !== undefined && full && lapsed.length > 0) {
      const dropped = lapsed.slice(0, MAX_DROP);
      conditions.push(eq(I.version, num(known, I.version) ?? 0));
      for (const i of dropped) updates.push(...removeIntentionFields(i.key));
      count -= dropped.length;
      ix -= dropped.filter((i) => i.kind === 'IX').length;
    } else conditions.push(or(missing(I.count), le(I.count, MAX_INTENTIONS - adds.length)));
  }
  // The TTL: never while anything is held through a session; from now while only leases are.
  let gcFrom: number | null | undefined;
  if (sessions > 0) gcFrom = null;
  else if (sessions < 0) {
    // A session's intention goes: if it was the last thing held through a session, the item may be
    // collected again (every lease it records ends within the retention period of now).
    const last = known === undefined || !sessionHeldAfter(known, -sessions);
    conditions.push(last ? onlySessionIntentions(-sessions) : moreSessionHeld(-sessions));
    if (last) gcFrom = now;
  } else if (ops.some((op) => op.kind !== 'remove' && op.grant.held.kind === 'lease')) {
    const ttl = leaseTtl(known);
    conditions.push(ttl.condition);
    if (ttl.fromNow) gcFrom = now;
  }
  updates.push(
    set(LockAttr.name, ancestor),
    ...(count !== 0 ? [add(I.count, count, 0)] : []),
    ...(ix !== 0 ? [add(I.ix, ix, 0)] : []),
    ...(sessions !== 0 ? [add(I.sessions, sessions, 0)] : []),
    add(I.version, 1, 0),
  );
  return {
    condition: and(...conditions),
    update: updates,
    ...(gcFrom === undefined ? {} : { gcFrom }),
  };
}

/**
 * What a wait that queues on a free lock its hierarchy keeps out does to the lock item's TTL: the
 * item now records a queue (the waiter's own item lasts to its deadline), so its retention starts
 * now, unless anything in it is held through a session (then it has none, and keeps none).
 */
export function keptOutTtl(seen: Item | undefined, now: number): { condition: Condition; gcFrom?: number } {
  const ttl = leaseTtl(seen);
  if (!ttl.fromNow) return { condition: ttl.condition };
  // Counted from now, it must not fall below a lease that holds the lock now (one granted since
  // the read, by a serve racing this one): then the write is refused, and that grant's own TTL stands.
  const noLiveLease = or(missing(LockAttr.expiresAt), le(LockAttr.expiresAt, now));
  return { condition: and(ttl.condition, noLiveLease), gcFrom: now };
}

/**
 * Keeps a lock item whose queue its hierarchy holds up from being collected before the waits it
 * counts end (they may last longer than whatever last set its TTL); nothing else changes.
 */
export function keepQueueWrite(seen: Item | undefined, now: number): ItemWrite {
  const ttl = keptOutTtl(seen, now);
  return {
    condition: and(gt(LockAttr.queued, 0), ttl.condition),
    update: [add(LockAttr.queued, 0, 0)],
    ...(ttl.gcFrom === undefined ? {} : { gcFrom: ttl.gcFrom }),
  };
}

/** Nothing is held through a session in the item but `n` session intentions (about to go). */
const onlySessionIntentions = (n: number): Condition =>
  and(
    missing(LockAttr.session),
    or(missing(SharedAttr.sessions), le(SharedAttr.sessions, 0)),
    le(I.sessions, n),
  );
/** More is held through a session than the `n` session intentions about to go. */
const moreSessionHeld = (n: number): Condition =>
  or(exists(LockAttr.session), gt(SharedAttr.sessions, 0), gt(I.sessions, n));
const sessionHeldAfter = (item: Item, going: number): boolean =>
  item[LockAttr.session] !== undefined ||
  (num(item, SharedAttr.sessions) ?? 0) > 0 ||
  (num(item, I.sessions) ?? 0) > going;

/**
 * Why an ancestor refused `ops` as `old` shows it: blocked (a conflicting holder: the grant is
 * refused), gone (an intention to remove or renew is not there), or neither (the blind guess was
 * wrong: write again from `old`).
 */
export function ancestorVerdict(
  ancestor: string,
  node: string,
  ops: readonly AncestorOp[],
  old: Item | undefined,
  now: number,
  arrivedAt?: number,
):
  | { readonly kind: 'blocked'; readonly block: SubtreeBlock }
  | { readonly kind: 'gone'; readonly ops: AncestorOp[] }
  | { readonly kind: 'retry' }
  | { readonly kind: 'full' }
  /** A renewal finds the ancestor taken since its grant lapsed: that grant is over. */
  | { readonly kind: 'superseded'; readonly block: SubtreeBlock } {
  const adds = ops.filter((op) => op.kind === 'add');
  const holds = ops.filter((op) => op.kind === 'add' || op.kind === 'renew');
  if (holds.length > 0) {
    const kind: IntentionKind = holds.some((op) => op.grant.kind === 'IX') ? 'IX' : 'IS';
    const block = ancestorBlock(ancestor, old, kind, now, adds.length > 0, arrivedAt);
    if (block) return adds.length > 0 ? { kind: 'blocked', block } : { kind: 'superseded', block };
  }
  for (const op of ops) {
    if (op.kind !== 'renew') continue;
    const end = op.grant.previousEnd;
    if (
      stampedSince(old, GrantedAt.X, end) ||
      (op.grant.kind === 'IX' && stampedSince(old, GrantedAt.S, end))
    )
      return {
        kind: 'superseded',
        block: {
          lock: ancestor,
          clientId: undefined,
          expiresAt: undefined,
          session: false,
          reason: `${ancestor} was granted after the lease ended`,
          retryAfterMs: 0,
        },
      };
  }
  // Full of live grants below; lapsed ones are removed by the next write (see ancestorWrite).
  if (adds.length > 0 && liveIntentions(old, now).length + adds.length > MAX_INTENTIONS)
    return { kind: 'full' };
  const present = new Set(intentionsOf(old).map((i) => i.key));
  const gone = ops.filter(
    (op) => op.kind !== 'add' && !present.has(intentionKey(node, op.grant.fencingToken)),
  );
  if (gone.length > 0) return { kind: 'gone', ops: gone };
  return { kind: 'retry' };
}

// Waking waits an ancestor kept out.

/**
 * A wait for a node that an ancestor keeps out (its holder, its queue) leaves a wake mark on that
 * ancestor: `w:<hash of the node's name>` = `<intention kind>:<nonce>~<arrived at>:<node>`, the
 * arrival of the wait's head (marks written before it was recorded have none). Every change of the
 * ancestor's item reaches the stream notifier, which serves the marked node's queue once the
 * ancestor no longer keeps that kind out (wakesDue), then removes the mark it read (a serve that
 * fails leaves it, for the retried batch). A mark written after the
 * ancestor became free is itself such a change: no wake-up is lost. A lapse (no write at all) is
 * covered by a timer at the blocking lease's end.
 */
const WAKE_PREFIX = 'w:';
export const wakeAttr = (node: string): string =>
  `${WAKE_PREFIX}${createHash('sha256').update(node).digest('base64url').slice(0, 12)}`;

/**
 * Marks `node` (kept out of `kind` on this ancestor) to be served when that changes; only on an
 * item that exists (whatever keeps a node out, a holder or a queue, left a fence or a count). The
 * mark carries a fresh `nonce`: whoever serves it removes exactly the mark it read, never one
 * written again since by a serve that found the node still kept out.
 */
export function wakeWrite(
  node: string,
  kind: IntentionKind,
  nonce: string,
  /** 'new' where the node has no mark yet (counted, at most MAX_WAKES), 'again' where it has one. */
  variant: 'new' | 'again',
  /** When the node's waiting head arrived: the ancestor's own queue yields to it if that came later. */
  arrivedAt: number,
): ItemWrite {
  const attr = wakeAttr(node);
  const value = `${kind}:${nonce}~${arrivedAt}:${node}`;
  return variant === 'again'
    ? { condition: exists(attr), update: [set(attr, value)] }
    : {
        condition: and(
          or(exists(LockAttr.fence), exists(LockAttr.queued)),
          missing(attr),
          or(missing(WAKES), lt(WAKES, MAX_WAKES)),
        ),
        update: [set(attr, value), add(WAKES, 1, 0)],
      };
}

/**
 * Most wake marks one ancestor carries (about 100 bytes each). Past it, a node kept out is looked
 * at again by a timer instead, every WAKE_POLL_MS.
 */
export const MAX_WAKES = 1_000;
/** How often a node kept out with no mark to wake it is looked at again (each look writes its ancestor). */
export const WAKE_POLL_MS = 5_000;
const WAKES = 'wake_count';
/** How many wake marks an item carries. */
export const wakeCount = (item: Item | undefined): number => (item && num(item, WAKES)) ?? 0;

/** Why a refused 'new' mark was refused, as the item it returned shows: marked already, full, or gone. */
export const wakeRefusal = (node: string, old: Item | undefined): 'marked' | 'full' | 'gone' =>
  old?.[wakeAttr(node)] !== undefined
    ? 'marked'
    : old?.[LockAttr.fence] === undefined && old?.[LockAttr.queued] === undefined
      ? 'gone'
      : 'full';

/** A wake mark on an ancestor, and what keeps its node out now (undefined: nothing, it is due). */
interface WakeMark {
  readonly attr: string;
  readonly value: string;
  readonly node: string;
  readonly kind: IntentionKind;
  /** When the marked wait arrived (undefined: a mark from before arrivals were recorded). */
  readonly arrivedAt: number | undefined;
  readonly block: SubtreeBlock | undefined;
}

function wakeMarks(ancestor: string, item: Item | undefined, now: number): WakeMark[] {
  if (!item) return [];
  const marks: WakeMark[] = [];
  for (const [attr, value] of Object.entries(item)) {
    if (!attr.startsWith(WAKE_PREFIX) || typeof value !== 'string') continue;
    const [kindText = '', nonce = ''] = value.split(':', 2);
    const node = value.slice(kindText.length + nonce.length + 2);
    const arrival = nonce.includes('~') ? Number(nonce.slice(nonce.indexOf('~') + 1)) : Number.NaN;
    const arrivedAt = Number.isFinite(arrival) ? arrival : undefined;
    const kind: IntentionKind = kindText === 'IS' ? 'IS' : 'IX';
    const block = ancestorBlock(ancestor, item, kind, now, true, arrivedAt);
    marks.push({ attr, value, node, kind, arrivedAt, block });
  }
  return marks;
}

/** The marks on an ancestor whose node may now be served, as `item` shows it at `now`. */
export const wakesDue = (ancestor: string, item: Item | undefined, now: number): WakeMark[] =>
  wakeMarks(ancestor, item, now).filter((m) => m.block === undefined);

/**
 * Whether `ancestor` is held shared and a mark on it is kept out by its queue alone (writer
 * preference) and tells when its wait arrived: the ancestor may owe it a turn ahead of a newer
 * head of its queue (yieldToBelow decides, given that head). A free ancestor stands aside as its
 * serve hands it on (Handoff.standAside); one held exclusively keeps every mark out anyway.
 */
export const markedBehindQueue = (ancestor: string, item: Item | undefined, now: number): boolean =>
  liveEntries(item, now).length > 0 &&
  wakeMarks(ancestor, item, now).some(
    (m) =>
      m.block !== undefined &&
      m.arrivedAt !== undefined &&
      ancestorBlock(ancestor, item, m.kind, now, false) === undefined,
  );

/**
 * When to look at an ancestor's marks again without a write (undefined: only a write will free
 * them): the soonest end of a lease or lock-delay that keeps a marked node out. A lapse changes
 * nothing in the item, so the stream cannot tell.
 */
export function wakeTimerAt(ancestor: string, item: Item | undefined, now: number): number | undefined {
  const ends = wakeMarks(ancestor, item, now).flatMap((m) =>
    m.block?.expiresAt === undefined || m.block.session ? [] : [m.block.expiresAt],
  );
  return ends.length > 0 ? Math.min(...ends) : undefined;
}

// Yielding to waits below.

/**
 * Set on a lock whose queue lets waits below it in first: `before` is the arrival of the queue's
 * head it served then (waits below that arrived earlier may take their intentions on it though
 * its queue is not empty), `at` when it did. A grant of the lock itself removes both.
 */
export const YieldAttr = { before: 'yield_before', at: 'yield_at' } as const;

/**
 * How long a queue's head stands aside for older waits below it. They are usually served within
 * a stream record or two; a wait below that does not take its turn by then (its own lock is held,
 * its request gone) does not hold the head up longer.
 */
export const YIELD_MS = 2_000;

/**
 * Whether `item`'s queue keeps out a new grant below it whose request arrived at `arrivedAt`
 * (undefined: a request that did not wait, which arrived now): anyone queued does, unless the
 * lock stands aside (for YIELD_MS from `yield_at`) for waits that arrived before its head, and
 * this one did.
 */
function queueKeepsOut(item: Item | undefined, arrivedAt: number | undefined, now: number): boolean {
  if (queuedCount(item) === 0) return false;
  if (arrivedAt === undefined) return true;
  const before = num(item as Item, YieldAttr.before);
  const at = num(item as Item, YieldAttr.at);
  return before === undefined || at === undefined || before <= arrivedAt || at + YIELD_MS <= now;
}

/** The condition of queueKeepsOut's exception: standing aside, within its window, for `arrivedAt`. */
const standsAsideFor = (arrivedAt: number, now: number): Condition =>
  and(gt(YieldAttr.before, arrivedAt), gt(YieldAttr.at, now - YIELD_MS));

export type YieldDecision =
  /** Nothing older waits below it (or the head stood aside long enough): serve the head. */
  | { readonly kind: 'serve' }
  /** Standing aside already: look again at `until` (or when the waits below are served). */
  | { readonly kind: 'wait'; readonly until: number }
  /** Stand aside: `write` lets the older waits below in (its stream record serves them). */
  | { readonly kind: 'yield'; readonly write: ItemWrite; readonly until: number };

/**
 * Before a free lock is handed to the head of its queue (`headArrivedAt`), or while it is held
 * shared and that head cannot be granted yet (Handoff.asideForOlderBelow): whether waits below it
 * that it keeps out (their wake marks) arrived before that head, and would fit but for its queue.
 * Then they go first, and the head waits for them like any grant below: ordered by arrival across
 * levels, so a lock taken back to back cannot starve the waits below it, as writer preference
 * (ancestorBlock's queue rule) keeps a stream of new grants below from starving the lock.
 */
export function yieldToBelow(
  node: string,
  item: Item | undefined,
  headArrivedAt: number,
  now: number,
): YieldDecision {
  const older = wakeMarks(node, item, now).filter(
    (m) =>
      m.arrivedAt !== undefined &&
      m.arrivedAt < headArrivedAt &&
      ancestorBlock(node, item, m.kind, now, false) === undefined,
  );
  if (older.length === 0 || item === undefined) return { kind: 'serve' };
  const at = num(item, YieldAttr.at);
  if (num(item, YieldAttr.before) === headArrivedAt && at !== undefined)
    return now < at + YIELD_MS ? { kind: 'wait', until: at + YIELD_MS } : { kind: 'serve' };
  return {
    kind: 'yield',
    until: now + YIELD_MS,
    write: {
      // Still waited for, and granted as read (a grant since moves the fencing counter).
      condition: and(gt(LockAttr.queued, 0), sameFence(item)),
      update: [set(YieldAttr.before, headArrivedAt), set(YieldAttr.at, now)],
    },
  };
}

/** When standing aside that `after` began (and `before` did not show) ends; undefined: none began. */
export function newYieldEnd(before: Item | undefined, after: Item | undefined): number | undefined {
  const at = after === undefined ? undefined : num(after, YieldAttr.at);
  if (at === undefined || (before !== undefined && num(before, YieldAttr.at) === at)) return undefined;
  return at + YIELD_MS;
}

/**
 * What a grant of the lock itself removes: it no longer stands aside. Unconditionally: a yield
 * written after the grant's read is not pinned on.
 */
const yieldEnds: UpdateAction[] = [remove(YieldAttr.before), remove(YieldAttr.at)];

/** Removes a mark, unless it was written again since (then its new writer is waiting on it). */
export const clearWakeWrite = (attr: string, value: string): ItemWrite => ({
  condition: eq(attr, value),
  update: [remove(attr), add(WAKES, -1, 0)],
});

/** Lapsed intentions an item keeps before the stream notifier removes them (every write below reads past them). */
export const PRUNE_ABOVE = 16;
/**
 * How long an intention stays after it lapsed before the notifier may remove it: longer than any
 * request takes, so a renewal sent before its lease ended that lands a little after it is judged
 * by what was granted since, not by housekeeping.
 */
export const PRUNE_AFTER_MS = 60_000;

/**
 * Removes lapsed intentions (a write's worth, the oldest names first), pinned on exactly the
 * intentions read, when more than PRUNE_ABOVE have lapsed; undefined otherwise. Without it a
 * namespace of short-lived jobs would fill its parent with crashed holders' intentions, and every
 * write of the parent would carry them.
 */
export function pruneIntentionsWrite(item: Item | undefined, now: number): ItemWrite | undefined {
  const present = intentionsOf(item);
  const lapsed = present.filter((i) => !isLiveIntention(i, now - PRUNE_AFTER_MS));
  if (!item || lapsed.length <= PRUNE_ABOVE) return undefined;
  const dropped = new Set(lapsed.slice(0, MAX_DROP).map((i) => i.key));
  const left = present.filter((i) => !dropped.has(i.key));
  return {
    condition: eq(I.version, num(item, I.version) ?? 0),
    update: [
      ...[...dropped].flatMap(removeIntentionFields),
      set(I.count, left.length),
      set(I.ix, left.filter((i) => i.kind === 'IX').length),
      add(I.version, 1, 0),
    ],
  };
}

/**
 * When a queue kept out by grants below its lock should be looked at again without a write: the
 * soonest end of a live lease among the lock's intentions, while anyone waits (undefined: nobody
 * waits, or only sessions' intentions, whose end is a write). A lapse changes nothing in the item.
 */
export function intentionTimerAt(item: Item | undefined, now: number): number | undefined {
  if (queuedCount(item) === 0) return undefined;
  const ends = liveIntentions(item, now).flatMap((i) => (i.expiresAt === undefined ? [] : [i.expiresAt]));
  return ends.length > 0 ? Math.min(...ends) : undefined;
}

/**
 * Whether a change eased the intentions on a node: one went (a grant below it ended) or will lapse
 * sooner (renewed with a shorter ttl, or a session's turned into a lease to its lock-delay's end).
 * A waiter they kept out may be served now, or needs a timer for when they lapse: serve its queue.
 */
export function intentionsEased(before: Item | undefined, after: Item | undefined): boolean {
  const now = new Map(intentionsOf(after).map((i) => [i.key, i]));
  return intentionsOf(before).some((i) => {
    const later = now.get(i.key);
    if (!later) return true;
    if (later.expiresAt === undefined) return false;
    return i.expiresAt === undefined || later.expiresAt < i.expiresAt;
  });
}
