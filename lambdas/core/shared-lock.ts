/**
 * The rules of shared mode (read-write locks and semaphores): who may hold
 * a lock in shared mode, and the writes that grant, re-enter, renew and
 * release a shared grant. The entries they write are described in
 * holders.ts; exclusive mode is lock.ts.
 *
 * A shared grant requires: no live exclusive holder, no lock-delay, nobody
 * queued (writer preference: once anyone waits, everyone queues behind
 * them, so a stream of readers cannot starve a queued writer), no entry of
 * the caller's own, and room under the semaphore's N (or MAX_SHARED_HOLDERS).
 * Every holder of a semaphore asks for the same N.
 *
 * Like exclusive mode, each command is a protocol: a blind first write (one
 * call when nothing is in the way), and a second write decided from the item
 * DynamoDB returns with a refusal. Entries that lapsed are removed by such an
 * informed write, pinned on the entries' version.
 */
import { LatchkeyError } from './errors';
import {
  add,
  and,
  type Condition,
  eq,
  gt,
  type Item,
  le,
  missing,
  or,
  remove,
  set,
  type UpdateAction,
} from './expr';
import {
  bumpVersion,
  countBy,
  entryAttr,
  entryFields,
  entryHeldBy,
  entryIn,
  entryLiveAt,
  entryNotReentered,
  isLiveEntry,
  liveEntries,
  MAX_DROP,
  MAX_SHARED_HOLDERS,
  maxHoldersOf,
  noEntryIn,
  removeEntry,
  requestTag,
  roomFor,
  SharedAttr,
  type SharedEntry,
  sameEntries,
  sharedEntries,
  slotOf,
} from './holders';
import type { ItemWrite } from './items';
import {
  type AcquireCommand,
  type AcquireDecision,
  type AcquireOutcome,
  blockedUntil,
  entryGrant,
  fenceFloor,
  type Grant,
  granted,
  grantedAgain,
  heldFrom,
  holdsAs,
  isGrantableAt,
  LockAttr,
  liveHolder,
  nextFence,
  ownHoldRefusal,
  type Protocol,
  queuedCount,
  queueIsEmpty,
  type ReleaseCommand,
  type ReleaseOutcome,
  type RenewCommand,
  type RenewOutcome,
  recentReleases,
  refusal,
  releasedBefore,
  releasesAsSeen,
  releaseTag,
  rememberRelease,
  requestKeyOf,
  sameFence,
  withOptional,
  withRelease,
} from './lock';

const S = SharedAttr;

/** No entry is held through a session: then a write may set the item's TTL (see gcFor). */
const noSessionEntries: Condition = or(missing(S.sessions), le(S.sessions, 0));

/**
 * The exclusive holder's attributes a shared grant clears: a lapsed exclusive lease leaves them
 * behind, and a shared grant must not look like one.
 */
const clearExclusive: UpdateAction[] = [
  remove(LockAttr.holder),
  remove(LockAttr.owner),
  remove(LockAttr.expiresAt),
  remove(LockAttr.ttlMs),
  remove(LockAttr.acquiredAt),
  remove(LockAttr.reentry),
  remove(LockAttr.mode),
  remove(LockAttr.session),
];

const semaphoreFields = (maxHolders: number | undefined): UpdateAction[] =>
  maxHolders === undefined ? [remove(S.maxHolders)] : [set(S.maxHolders, maxHolders)];

/**
 * The item's TTL after a shared write at `now` (lock items are kept a retention period, at least
 * the longest lease and an hour more, after their `gcFrom`): from `now` when no entry is held
 * through a session, as every lease ends within the retention period of its last write; never
 * while one is (a session has no end a lock item knows of); `undefined` leaves it as it is.
 */
const gcFor = (now: number, sessions: 'none' | 'some'): number | null => (sessions === 'none' ? now : null);

/** Entries held through sessions: none, or some (then the item keeps no TTL), pinned by the condition. */
type Sessions = 'none' | 'some';
const sessionsIn = (item: Item | undefined): Sessions =>
  typeof item?.[S.sessions] === 'number' && (item[S.sessions] as number) > 0 ? 'some' : 'none';
const sessionsAre = (sessions: Sessions): Condition =>
  sessions === 'none' ? noSessionEntries : gt(S.sessions, 0);

/** Whether `cmd` (its principal and client) may hold `entry`'s grant as asked. */
const mineAsAsked = (entry: SharedEntry, cmd: AcquireCommand, now: number) =>
  isLiveEntry(entry, now) &&
  holdsAs(
    entry.session !== undefined
      ? { kind: 'session', sessionId: entry.session }
      : { kind: 'lease', ttlMs: entry.ttlMs ?? 0, expiresAt: entry.expiresAt ?? 0 },
    cmd.tenure,
  );

/**
 * What a shared acquire can do with the lock as it is. A retry of the request the caller's entry
 * answered gets that grant back (or LEASE_EXPIRED); a semaphore asked for with another N than its
 * live holders' is MAX_HOLDERS_MISMATCH.
 */
export function decideSharedAcquire(
  cmd: AcquireCommand,
  item: Item | undefined,
  now: number,
): AcquireDecision {
  const slot = slotOf(cmd.owner, cmd.clientId);
  const key = requestKeyOf(cmd);
  const mine = entryIn(item, slot);
  if (key !== undefined && mine?.grantRequest === requestTag(key)) {
    if (mineAsAsked(mine, cmd, now))
      return { kind: 'answer', outcome: grantedAgain(entryGrant(mine, cmd.name)) };
    throw new LatchkeyError(
      'LEASE_EXPIRED',
      `request ${cmd.requestId} was already granted fencing token ${mine.fencingToken}, and that grant has been released or its lease has ended`,
    );
  }
  const no = () => ({ kind: 'answer' as const, outcome: refusal(cmd.name, item, now, 'shared') });
  if (liveHolder(item, now) || blockedUntil(item, now) !== undefined) return no();
  if (mine && isLiveEntry(mine, now))
    return cmd.reentrant
      ? { kind: 'reenter', current: entryGrant(mine, cmd.name) }
      : { kind: 'answer', outcome: ownHoldRefusal(cmd.name, entryGrant(mine, cmd.name), item, now) };
  const live = liveEntries(item, now);
  const inForce = maxHoldersOf(item);
  if (live.length > 0 && inForce !== cmd.maxHolders)
    throw new LatchkeyError(
      'MAX_HOLDERS_MISMATCH',
      inForce === undefined
        ? `${cmd.name} is held in shared mode without max_holders: ask without it, or wait until it is free`
        : `${cmd.name} is held as a semaphore of max_holders ${inForce}: every holder must ask for the same max_holders`,
      [{ path: 'max_holders', message: inForce === undefined ? 'none in force' : `${inForce} in force` }],
    );
  if (queuedCount(item) > 0 || live.length >= (cmd.maxHolders ?? MAX_SHARED_HOLDERS)) return no();
  return { kind: 'grant' };
}

/**
 * The blind shared grant (a lease; the one-call acquire): its token is the counter's next value,
 * set in the same expression. Requires everything decideSharedAcquire would, as far as a condition
 * can tell without reading: entries present (live or not) count against the room.
 */
function blindGrantWrite(cmd: AcquireCommand, now: number, key: string | undefined): ItemWrite {
  const slot = slotOf(cmd.owner, cmd.clientId);
  const held = heldFrom(cmd.tenure, now);
  return {
    condition: and(
      isGrantableAt(now),
      queueIsEmpty,
      noEntryIn(slot),
      roomFor(cmd.maxHolders),
      noSessionEntries,
    ),
    update: [
      add(LockAttr.fence, 1, fenceFloor(now)),
      set(LockAttr.name, cmd.name),
      ...entryFields(slot, { owner: cmd.owner, clientId: cmd.clientId, held, requestKey: key }, now, {
        fromCounter: LockAttr.fence,
        floor: fenceFloor(now),
      }),
      countBy(1),
      bumpVersion,
      ...semaphoreFields(cmd.maxHolders),
      ...clearExclusive,
      remove(LockAttr.releasedAt),
    ],
    gcFrom: gcFor(now, 'none'),
  };
}

/** Who a shared grant goes to. */
export interface SharedGrantee {
  readonly name: string;
  readonly owner: string;
  readonly clientId: string;
  readonly tenure: AcquireCommand['tenure'];
  readonly requestKey?: string | undefined;
  readonly maxHolders?: number | undefined;
}

/**
 * Grants shared entries to `grantees` (one, or a run of queued readers) in one write, from the
 * item as last seen: tokens fixed in advance (seen's counter + 1, + 2, ...), conditional on the
 * counter and the entries being unchanged, so the grants are known without reading them back. The
 * entries `seen` had that lapsed by `now` (and any earlier entry of a grantee's own) are removed.
 * The caller has decided the grants fit (decideSharedAcquire, planServe); `extra` narrows the
 * condition (a queue count) and adds updates.
 */
export function pinnedSharedGrants(
  grantees: readonly SharedGrantee[],
  seen: Item | undefined,
  now: number,
  /** Stamped as `last_write` (inside a transaction); a protocol's write is stamped by runProtocol. */
  writeId: string | undefined,
  extra: { readonly condition?: Condition | undefined; readonly updates?: readonly UpdateAction[] } = {},
): { readonly write: ItemWrite; readonly grants: Grant[] } {
  const first = nextFence(seen, now);
  const mySlots = new Set(grantees.map((g) => slotOf(g.owner, g.clientId)));
  if (mySlots.size < grantees.length)
    throw new Error('one holder identity granted two shared entries at once');
  const entries = sharedEntries(seen);
  const kept = entries.filter((e) => isLiveEntry(e, now) && !mySlots.has(e.slot));
  // A grantee's own earlier entry is overwritten field by field, not removed (one path, one action);
  // at most MAX_DROP lapsed ones go with this write (the expression's size), the rest with later ones.
  const dropped = entries.filter((e) => !kept.includes(e) && !mySlots.has(e.slot)).slice(0, MAX_DROP);
  const overwritten = entries.filter((e) => mySlots.has(e.slot)).length;
  const sessions =
    kept.filter((e) => e.session !== undefined).length +
    grantees.filter((g) => g.tenure.kind === 'session').length;
  const grants = grantees.map(
    (g, i): Grant => ({
      lock: g.name,
      owner: g.owner,
      clientId: g.clientId,
      fencingToken: first + i,
      held: heldFrom(g.tenure, now),
      mode: 'shared',
      acquiredAt: now,
      reentry: 1,
      maxHolders: grantees[0]?.maxHolders,
    }),
  );
  const update: UpdateAction[] = [
    set(LockAttr.fence, first + grantees.length - 1),
    ...dropped.flatMap((e) => removeEntry(e.slot)),
    ...grantees.flatMap((g, i) =>
      entryFields(
        slotOf(g.owner, g.clientId),
        { owner: g.owner, clientId: g.clientId, held: heldFrom(g.tenure, now), requestKey: g.requestKey },
        now,
        first + i,
      ),
    ),
    set(S.count, entries.length - dropped.length - overwritten + grantees.length),
    set(S.sessions, sessions),
    bumpVersion,
    ...semaphoreFields(grantees[0]?.maxHolders),
    ...clearExclusive,
    remove(LockAttr.releasedAt),
    ...(extra.updates ?? []),
    ...(writeId === undefined ? [] : [set(LockAttr.lastWrite, writeId)]),
  ];
  return {
    write: {
      condition: withOptional(isGrantableAt(now), sameFence(seen), sameEntries(seen), extra.condition),
      update,
      gcFrom: gcFor(now, sessions > 0 ? 'some' : 'none'),
    },
    grants,
  };
}

/** Re-enters the caller's live shared grant; the lease end stays what it was. */
function reenterWrite(current: Grant, now: number, key: string | undefined): ItemWrite {
  const slot = slotOf(current.owner, current.clientId);
  return {
    condition: and(
      entryHeldBy(slot, current.owner, current.fencingToken),
      entryLiveAt(slot, now),
      current.reentry > 1 ? eq(entryAttr(slot, 'reentry'), current.reentry) : entryNotReentered(slot),
    ),
    update: [
      add(entryAttr(slot, 'reentry'), 1, 1),
      key === undefined
        ? remove(entryAttr(slot, 'grantRequest'))
        : set(entryAttr(slot, 'grantRequest'), requestTag(key)),
    ],
  };
}

/** A shared acquire of a lease: one write when nothing is in the way. */
export function sharedAcquireProtocol(cmd: AcquireCommand, now: number): Protocol<AcquireOutcome> {
  const key = requestKeyOf(cmd);
  return {
    first: blindGrantWrite(cmd, now, key),
    onRefused(old) {
      const decision = decideSharedAcquire(cmd, old, now);
      if (decision.kind === 'answer') return { outcome: decision.outcome };
      if (decision.kind === 'reenter') return { write: reenterWrite(decision.current, now, key) };
      return {
        write: pinnedSharedGrants([{ ...cmd, requestKey: key }], old, now, undefined, {
          condition: queueIsEmpty,
        }).write,
      };
    },
    onWritten: (item) => {
      const entry = entryIn(item, slotOf(cmd.owner, cmd.clientId));
      if (!entry) throw new LatchkeyError('INTERNAL', 'a shared grant left no entry');
      return granted({ ...entryGrant(entry, cmd.name), maxHolders: maxHoldersOf(item) }, false);
    },
  };
}

/** Explains why a release or renew of a shared grant was refused (undefined: it may proceed). */
function entryRefusal(old: Item | undefined, cmd: ReleaseCommand, now: number): LatchkeyError | undefined {
  const entry = entryIn(old, slotOf(cmd.owner, cmd.clientId));
  if (!entry || entry.fencingToken !== cmd.fencingToken || entry.owner !== cmd.owner)
    return new LatchkeyError(
      'NOT_HOLDER',
      `${cmd.clientId} does not hold ${cmd.name} in shared mode with fencing token ${cmd.fencingToken}`,
    );
  if (!isLiveEntry(entry, now))
    return new LatchkeyError(
      'LEASE_EXPIRED',
      `the shared lease of ${cmd.clientId} on ${cmd.name} (fencing token ${cmd.fencingToken}) has expired`,
    );
  return undefined;
}

/** Whether the item records `cmd`'s grant as a shared entry (live or not). */
export const recordsSharedGrant = (item: Item | undefined, cmd: ReleaseCommand): boolean =>
  entryIn(item, slotOf(cmd.owner, cmd.clientId))?.fencingToken === cmd.fencingToken;

/** Releases a lease's entry; `sessions` says (and the condition pins) whether sessions hold entries too. */
/** Removes the entry. Blind (`seen` null) only where it keeps no list of releases (never counted down). */
function releaseWrite(cmd: ReleaseCommand, now: number, sessions: Sessions, seen: Item | null): ItemWrite {
  const slot = slotOf(cmd.owner, cmd.clientId);
  return {
    condition: and(
      entryHeldBy(slot, cmd.owner, cmd.fencingToken),
      entryLiveAt(slot, now),
      entryNotReentered(slot),
      missing(entryAttr(slot, 'session')),
      sessionsAre(sessions),
      releasesAsSeen(entryAttr(slot, 'releases'), seen?.[entryAttr(slot, 'releases')]),
    ),
    update: [
      ...removeEntry(slot),
      countBy(-1),
      // A lease's entry: the sessions' count is unchanged (a session's grant ends with it).
      bumpVersion,
      set(LockAttr.releasedAt, now),
      ...rememberRelease(cmd),
    ],
    gcFrom: gcFor(now, sessions),
  };
}

export function sharedReleaseProtocol(cmd: ReleaseCommand, now: number): Protocol<ReleaseOutcome> {
  const slot = slotOf(cmd.owner, cmd.clientId);
  const tag = releaseTag(cmd);
  return {
    first: releaseWrite(cmd, now, 'none', null),
    onRefused(old) {
      const list = entryAttr(slot, 'releases');
      const mine = entryIn(old, slot);
      // This very release counted the entry down already (its answer was lost): answered as it stands.
      if (
        tag &&
        mine?.fencingToken === cmd.fencingToken &&
        mine.owner === cmd.owner &&
        recentReleases(old?.[list]).includes(tag)
      )
        return {
          outcome: {
            lock: cmd.name,
            remaining: isLiveEntry(mine, now) ? mine.reentry : 0,
            queued: queuedCount(old),
          },
        };
      // This very release removed the entry already: answered as released.
      if (releasedBefore(old, cmd))
        return { outcome: { lock: cmd.name, remaining: 0, queued: queuedCount(old), again: true } };
      const refused = entryRefusal(old, cmd, now);
      if (refused) throw refused;
      const entry = mine as SharedEntry;
      if (entry.reentry > 1)
        return {
          write: {
            // The exact count and list seen: never counted down twice, by a second delivery of this
            // write or a second sending of this release.
            condition: and(
              entryHeldBy(slot, cmd.owner, cmd.fencingToken),
              entryLiveAt(slot, now),
              eq(entryAttr(slot, 'reentry'), entry.reentry),
              releasesAsSeen(list, old?.[list]),
            ),
            update: [
              add(entryAttr(slot, 'reentry'), -1, 1),
              ...(tag ? [set(list, withRelease(old?.[list], tag))] : []),
            ],
          },
        };
      // Held through a session: released as its session's end would, without lock-delay.
      if (entry.session !== undefined) {
        const variant = sessionSharedReleaseVariant(old, cmd.owner, cmd.clientId, entry.session, now, 0);
        if (variant) {
          const write = sessionSharedReleaseWrite(cmd.owner, cmd.clientId, entry.session, now, 0, variant);
          return { write: { ...write, update: [...write.update, ...rememberRelease(cmd)] } };
        }
      }
      return { write: releaseWrite(cmd, now, sessionsIn(old), old ?? null) };
    },
    onWritten: (item) => ({
      lock: cmd.name,
      remaining: entryIn(item, slot)?.reentry ?? 0,
      queued: queuedCount(item),
    }),
  };
}

export function sharedRenewProtocol(cmd: RenewCommand, now: number): Protocol<RenewOutcome> {
  const slot = slotOf(cmd.owner, cmd.clientId);
  const write = (sessions: Sessions): ItemWrite => ({
    condition: and(
      entryHeldBy(slot, cmd.owner, cmd.fencingToken),
      missing(entryAttr(slot, 'session')),
      gt(entryAttr(slot, 'expiresAt'), now),
      sessionsAre(sessions),
    ),
    // The version moves: a write pinned on entries read as lapsed must not land over a renewal.
    update: [
      set(entryAttr(slot, 'expiresAt'), now + cmd.ttlMs),
      set(entryAttr(slot, 'ttlMs'), cmd.ttlMs),
      bumpVersion,
    ],
    gcFrom: gcFor(now, sessions),
  });
  return {
    first: write('none'),
    onRefused(old) {
      const refused = entryRefusal(old, cmd, now);
      if (refused) throw refused;
      if ((entryIn(old, slot) as SharedEntry).session !== undefined)
        throw new LatchkeyError(
          'HELD_BY_SESSION',
          `${cmd.name} is held through a session: it lasts as long as the session lives, so there is no lease to renew; heartbeat the session instead`,
        );
      return { write: write(sessionsIn(old)) };
    },
    onWritten: (item) => {
      const entry = entryIn(item, slot);
      if (!entry) throw new LatchkeyError('INTERNAL', 'a renewed shared grant left no entry');
      return { grant: { ...entryGrant(entry, cmd.name), maxHolders: maxHoldersOf(item) } };
    },
  };
}

/**
 * Releases the shared grant held through session `sessionId` by (owner, clientId), all re-entries
 * at once. Under lock-delay exclusive grants wait until it ends (`writers_blocked_until`, never
 * moved earlier); other shared holders are not kept out: a reader cut off cannot conflict with
 * another reader.
 */
export function sessionSharedReleaseWrite(
  owner: string,
  clientId: string,
  sessionId: string,
  now: number,
  lockDelayMs: number,
  variant: { readonly lastSession: boolean; readonly delayMoves: boolean },
): ItemWrite {
  const slot = slotOf(owner, clientId);
  const until = now + lockDelayMs;
  return {
    condition: and(
      eq(entryAttr(slot, 'session'), sessionId),
      variant.lastSession ? or(missing(S.sessions), le(S.sessions, 1)) : gt(S.sessions, 1),
      ...(lockDelayMs > 0
        ? [
            variant.delayMoves
              ? or(missing(S.writersBlockedUntil), le(S.writersBlockedUntil, until))
              : gt(S.writersBlockedUntil, until),
          ]
        : []),
    ),
    update: [
      ...removeEntry(slot),
      countBy(-1),
      add(S.sessions, -1, 0),
      bumpVersion,
      set(LockAttr.releasedAt, now),
      ...(lockDelayMs > 0 && variant.delayMoves ? [set(S.writersBlockedUntil, until)] : []),
    ],
    // The last session entry gone: every lease left ends within the retention period of now.
    gcFrom: variant.lastSession ? Math.max(now, until) : null,
  };
}

/** The variant of sessionSharedReleaseWrite that fits the item as it is (undefined: nothing to release). */
export function sessionSharedReleaseVariant(
  item: Item | undefined,
  owner: string,
  clientId: string,
  sessionId: string,
  now: number,
  lockDelayMs: number,
): { readonly lastSession: boolean; readonly delayMoves: boolean } | undefined {
  const entry = entryIn(item, slotOf(owner, clientId));
  if (!item || entry?.session !== sessionId) return undefined;
  const sessions = typeof item[S.sessions] === 'number' ? (item[S.sessions] as number) : 0;
  const blocked =
    typeof item[S.writersBlockedUntil] === 'number' ? (item[S.writersBlockedUntil] as number) : undefined;
  return { lastSession: sessions <= 1, delayMoves: blocked === undefined || blocked <= now + lockDelayMs };
}

/** Re-enters the caller's live shared grant (reentrant), as its own protocol. */
export function sharedReenterProtocol(
  cmd: AcquireCommand,
  current: Grant,
  now: number,
): Protocol<AcquireOutcome> {
  const key = requestKeyOf(cmd);
  return {
    first: reenterWrite(current, now, key),
    onRefused(old) {
      const decision = decideSharedAcquire(cmd, old, now);
      if (decision.kind === 'reenter') return { write: reenterWrite(decision.current, now, key) };
      if (decision.kind === 'grant')
        throw new LatchkeyError('UNAVAILABLE', 'the lock changed while re-entering it; retry', undefined, 0);
      return { outcome: decision.outcome };
    },
    onWritten: (item) => {
      const entry = entryIn(item, slotOf(cmd.owner, cmd.clientId));
      if (!entry) throw new LatchkeyError('INTERNAL', 'a re-entered shared grant left no entry');
      return granted({ ...entryGrant(entry, cmd.name), maxHolders: maxHoldersOf(item) }, false);
    },
  };
}

/**
 * An administrator ends shared grants `ending` (at most MAX_DROP per write: the caller repeats), whoever
 * holds them, and moves the fencing counter one past every token issued, recording who, when and
 * why. Pinned on the entries as read, so a grant made or renewed since is never touched.
 */
export function forceReleaseSharedWrite(
  ending: readonly SharedEntry[],
  seen: Item | undefined,
  by: string,
  reason: string,
  now: number,
): ItemWrite {
  const sessions = ending.filter((e) => e.session !== undefined).length;
  const sessionsLeft = sharedEntries(seen).filter((e) => e.session !== undefined).length - sessions;
  return {
    condition: and(sameEntries(seen), sameFence(seen)),
    update: [
      ...ending.flatMap((e) => removeEntry(e.slot)),
      countBy(-ending.length),
      ...(sessions > 0 ? [add(S.sessions, -sessions, 0)] : []),
      bumpVersion,
      add(LockAttr.fence, 1, fenceFloor(now)),
      set(LockAttr.releasedAt, now),
      set(LockAttr.forcedBy, by),
      set(LockAttr.forcedAt, now),
      set(LockAttr.forcedReason, reason),
      // This force names no one exclusive grant: an earlier one's record must not be told as it.
      remove(LockAttr.forcedToken),
      remove(LockAttr.forcedOwner),
    ],
    // Pinned on the entries, so exact: no TTL while an entry held through a session is left.
    gcFrom: gcFor(now, sessionsLeft > 0 ? 'some' : 'none'),
  };
}

/**
 * Removes the entries of `seen` that lapsed by `now` (nothing else), pinned on the entries as read:
 * what a wait does when lapsed holders are all that keep it from the queue's rules (a semaphore's
 * N they held it with, say). Undefined when none lapsed.
 */
export function pruneLapsedWrite(seen: Item | undefined, now: number): ItemWrite | undefined {
  const entries = sharedEntries(seen);
  const lapsed = entries.filter((e) => !isLiveEntry(e, now)).slice(0, MAX_DROP);
  if (lapsed.length === 0) return undefined;
  const left = entries.length - lapsed.length;
  return {
    condition: sameEntries(seen),
    update: [
      ...lapsed.flatMap((e) => removeEntry(e.slot)),
      set(S.count, left),
      set(S.sessions, entries.filter((e) => e.session !== undefined).length),
      bumpVersion,
      ...(left === 0 ? [remove(S.maxHolders)] : []),
    ],
  };
}
