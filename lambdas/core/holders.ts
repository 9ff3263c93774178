/**
 * Shared holders of a lock (read-write locks and semaphores), stored in the
 * lock item beside the exclusive holder's attributes.
 *
 * Each shared holder is an entry: a few top-level attributes named
 * `s:<slot>:<field>`, `slot` being a short hash of its principal and client
 * id, so a holder identity has at most one entry per lock and every rule can
 * name the entry it means without reading the item. Flat attributes, not a
 * map: the condition language works on flat items, and a single
 * UpdateExpression can then give an entry its token from the lock's counter
 * (`addFrom`), so an uncontended shared acquire stays one write.
 *
 * The lock item also keeps `shared_count` (entries present, live or lapsed),
 * `shared_version` (moved by every write that adds, removes or renews an
 * entry: a write decided from a read of lapsed entries is pinned on it) and
 * `max_holders` (a semaphore's N, while entries exist).
 *
 * Item size bounds the number of entries: an entry takes about 205 bytes (nine
 * 16-byte attribute names, numbers, a 22-character request tag) plus its
 * principal ARN and client id, so MAX_SHARED_HOLDERS entries fit the item's
 * 400 KB while those two stay under about 200 characters together (100 and
 * 40: about 345 KB). A write past it is refused as TOO_MANY_HOLDERS.
 */
import { createHash } from 'node:crypto';
import {
  add,
  addFrom,
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

/** Most shared holders of one lock at once, and the largest semaphore. */
export const MAX_SHARED_HOLDERS = 1_000;
/**
 * Most entries one write removes: each is nine REMOVE actions, and an UpdateExpression is at most
 * 4 KB. A write that finds more lapsed entries removes this many (the oldest); the next removes more.
 */
export const MAX_DROP = 16;

export const SharedAttr = {
  count: 'shared_count',
  version: 'shared_version',
  maxHolders: 'max_holders',
  /** Entries held through a session: while any is, no write sets the item's TTL (see gcFor). */
  sessions: 'shared_sessions',
  /** Lock-delay after a shared holder's session expired: exclusive grants wait for it, shared ones do not. */
  writersBlockedUntil: 'writers_blocked_until',
} as const;
const S = SharedAttr;

const FIELDS = {
  fence: 'f',
  owner: 'o',
  client: 'c',
  expiresAt: 'x',
  ttlMs: 't',
  session: 's',
  acquiredAt: 'a',
  reentry: 'r',
  grantRequest: 'q',
  /** The releases that counted the entry down (lock.ts RECENT_RELEASES): retries are answered. */
  releases: 'l',
} as const;
type Field = keyof typeof FIELDS;

const ENTRY_PREFIX = 's:';

/** The slot of a holder identity: 72 bits of a hash, base64url. */
export const slotOf = (owner: string, clientId: string): string =>
  createHash('sha256').update(owner).update('\u0000').update(clientId).digest('base64url').slice(0, 12);

/**
 * What an entry records of the request it answered: a hash of its request key (requestKey in
 * lock.ts names the principal and client again, which the entry holds already), 22 characters.
 */
export const requestTag = (key: string): string =>
  createHash('sha256').update(key).digest('base64url').slice(0, 22);

/** The attribute of one field of the entry in `slot`. */
export const entryAttr = (slot: string, field: Field): string => `${ENTRY_PREFIX}${slot}:${FIELDS[field]}`;

/** One shared holder as recorded (it may have lapsed). */
export interface SharedEntry {
  readonly slot: string;
  readonly owner: string;
  readonly clientId: string;
  readonly fencingToken: number;
  /** Lease end, or undefined when held through `session`. */
  readonly expiresAt: number | undefined;
  readonly ttlMs: number | undefined;
  readonly session: string | undefined;
  readonly acquiredAt: number;
  readonly reentry: number;
  readonly grantRequest: string | undefined;
}

const num = (item: Item, attr: string) =>
  typeof item[attr] === 'number' ? (item[attr] as number) : undefined;
const str = (item: Item, attr: string) =>
  typeof item[attr] === 'string' ? (item[attr] as string) : undefined;

/**
 * The entries of one family of flat attributes `<prefix><key>:<field>` that an item records
 * (shared holders here, a hierarchy's intentions in hierarchy.ts): every key whose `fenceField`
 * holds a number, read by `read`.
 */
export function flatEntries<T>(
  item: Item | undefined,
  prefix: string,
  fenceField: string,
  read: (key: string, fencingToken: number) => T,
): T[] {
  if (!item) return [];
  const suffix = `:${fenceField}`;
  const out: T[] = [];
  for (const attr of Object.keys(item)) {
    const fencingToken = item[attr];
    if (!attr.startsWith(prefix) || !attr.endsWith(suffix) || typeof fencingToken !== 'number') continue;
    out.push(read(attr.slice(prefix.length, attr.length - suffix.length), fencingToken));
  }
  return out;
}

/** Every entry recorded on a lock item, in token order. */
export const sharedEntries = (item: Item | undefined): SharedEntry[] =>
  flatEntries(item, ENTRY_PREFIX, FIELDS.fence, (slot, fencingToken) => {
    const at = item as Item;
    return {
      slot,
      owner: str(at, entryAttr(slot, 'owner')) ?? '',
      clientId: str(at, entryAttr(slot, 'client')) ?? '',
      fencingToken,
      expiresAt: num(at, entryAttr(slot, 'expiresAt')),
      ttlMs: num(at, entryAttr(slot, 'ttlMs')),
      session: str(at, entryAttr(slot, 'session')),
      acquiredAt: num(at, entryAttr(slot, 'acquiredAt')) ?? 0,
      reentry: num(at, entryAttr(slot, 'reentry')) ?? 1,
      grantRequest: str(at, entryAttr(slot, 'grantRequest')),
    };
  }).sort((a, b) => a.fencingToken - b.fencingToken);

/** The entry in `slot`, if any. */
export const entryIn = (item: Item | undefined, slot: string): SharedEntry | undefined =>
  item && num(item, entryAttr(slot, 'fence')) !== undefined
    ? sharedEntries({ ...pick(item, slot) }).at(0)
    : undefined;

function pick(item: Item, slot: string): Item {
  const out: Record<string, string | number> = {};
  for (const field of Object.keys(FIELDS) as Field[]) {
    const attr = entryAttr(slot, field);
    const v = item[attr];
    if (v !== undefined) out[attr] = v;
  }
  return out;
}

/** Live at `now`: held through a session (its end removes the entry), or a lease not yet ended. */
export const isLiveEntry = (e: SharedEntry, now: number): boolean =>
  e.session !== undefined || (e.expiresAt !== undefined && e.expiresAt > now);

export const liveEntries = (item: Item | undefined, now: number): SharedEntry[] =>
  sharedEntries(item).filter((e) => isLiveEntry(e, now));

/** Entries present (the count the item keeps; what a condition can check). */
export const entryCount = (item: Item | undefined): number => Math.max(0, (item && num(item, S.count)) ?? 0);

/** The semaphore's N in force (undefined: plain shared mode, or no entries). */
export const maxHoldersOf = (item: Item | undefined): number | undefined =>
  item && entryCount(item) > 0 ? num(item, S.maxHolders) : undefined;

export const sharedVersion = (item: Item | undefined): number | undefined =>
  item ? num(item, S.version) : undefined;

/** When exclusive grants may start again after a shared holder's session expired (undefined: now). */
export function writersBlockedUntil(item: Item | undefined, now: number): number | undefined {
  const until = item ? num(item, S.writersBlockedUntil) : undefined;
  return until !== undefined && until > now ? until : undefined;
}

// Conditions.

/** No entry at all, live or lapsed: what an exclusive grant's first write requires. */
export const noEntries: Condition = or(missing(S.count), le(S.count, 0));
export const writersNotBlockedAt = (now: number): Condition =>
  or(missing(S.writersBlockedUntil), le(S.writersBlockedUntil, now));
/** The entries are exactly those read (nothing added, removed or renewed since). */
export const sameEntries = (seen: Item | undefined): Condition => {
  const v = sharedVersion(seen);
  return v === undefined ? missing(S.version) : eq(S.version, v);
};
/** Room for one more entry under the semaphore `maxHolders` (undefined: plain shared mode). */
export const roomFor = (maxHolders: number | undefined): Condition =>
  or(
    noEntries,
    and(
      lt(S.count, maxHolders ?? MAX_SHARED_HOLDERS),
      maxHolders === undefined ? missing(S.maxHolders) : eq(S.maxHolders, maxHolders),
    ),
  );
export const noEntryIn = (slot: string): Condition => missing(entryAttr(slot, 'fence'));
/** The entry in `slot` is the grant with this token and principal. */
export const entryHeldBy = (slot: string, owner: string, token: number): Condition =>
  and(eq(entryAttr(slot, 'fence'), token), eq(entryAttr(slot, 'owner'), owner));
/** The entry in `slot` is live at `now`: held through a session, or its lease has not ended. */
export const entryLiveAt = (slot: string, now: number): Condition =>
  or(exists(entryAttr(slot, 'session')), gt(entryAttr(slot, 'expiresAt'), now));
/** The entry in `slot` is held once (not re-entered): one release removes it. */
export const entryNotReentered = (slot: string): Condition =>
  or(missing(entryAttr(slot, 'reentry')), le(entryAttr(slot, 'reentry'), 1));

// Updates.

/** Removes an entry's attributes (the count and version are the caller's to move). */
export const removeEntry = (slot: string): UpdateAction[] =>
  (Object.keys(FIELDS) as Field[]).map((field) => remove(entryAttr(slot, field)));

/** Moves the version on: every write that changes an entry does. */
export const bumpVersion: UpdateAction = add(S.version, 1, 0);
export const countBy = (by: number): UpdateAction => add(S.count, by, 0);

export interface EntryGrantee {
  readonly owner: string;
  readonly clientId: string;
  readonly held:
    | { readonly kind: 'lease'; readonly ttlMs: number; readonly expiresAt: number }
    | { readonly kind: 'session'; readonly sessionId: string };
  readonly requestKey?: string | undefined;
}

/**
 * Writes an entry, its token taken from the lock's counter: either the counter's next value in the
 * same expression (`fence` undefined: the counter moves by one here too), or a token fixed in advance.
 */
export function entryFields(
  slot: string,
  g: EntryGrantee,
  now: number,
  fence: { readonly fromCounter: string; readonly floor: number } | number,
): UpdateAction[] {
  const a = (field: Field) => entryAttr(slot, field);
  return [
    typeof fence === 'number'
      ? set(a('fence'), fence)
      : addFrom(a('fence'), fence.fromCounter, 1, fence.floor),
    set(a('owner'), g.owner),
    set(a('client'), g.clientId),
    ...(g.held.kind === 'lease'
      ? [set(a('expiresAt'), g.held.expiresAt), set(a('ttlMs'), g.held.ttlMs), remove(a('session'))]
      : [set(a('session'), g.held.sessionId), remove(a('expiresAt')), remove(a('ttlMs'))]),
    set(a('acquiredAt'), now),
    set(a('reentry'), 1),
    g.requestKey === undefined ? remove(a('grantRequest')) : set(a('grantRequest'), requestTag(g.requestKey)),
    remove(a('releases')),
  ];
}
