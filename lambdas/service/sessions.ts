/**
 * Sessions for every entry point: create, heartbeat, close; and the end of
 * a session, which releases its locks and hands each to its next waiter.
 * Ending is idempotent and safe to run twice at once or to rerun after a
 * crash: the session is marked ended first (one conditional write), each
 * lock is released only if still held through that session, and the
 * session is marked swept (leaving the due index, and only then becoming
 * collectable) once all of that is done.
 */

import { openAndOwnedBy } from '../core/connection';
import { LatchkeyError } from '../core/errors';
import { evaluate, type Item } from '../core/expr';
import { connectionRef, sessionLockRef, sessionRef, updateStep } from '../core/items';
import { lastFencingToken, liveHolder, queuedCount, sessionReleaseWrite } from '../core/lock';
import {
  createWrite,
  dueEntryMisfiled,
  type EndReason,
  endWrite,
  heartbeatWrite,
  refileWrite,
  type Session,
  SessionAttr,
  type SessionSettings,
  sessionDueAt,
  sessionOfItem,
  sessionState,
  sessionTakesLocks,
  sweptWrite,
} from '../core/session';
import { sessionSharedReleaseVariant, sessionSharedReleaseWrite } from '../core/shared-lock';
import { type AuditFields, audit } from '../shared/log';
import { filedDueAt } from '../store/table';
import type { Clock } from './clock';
import type { Connection } from './connections';
import type { Handoff } from './handoff';
import type { Paths } from './paths';
import { refusedAt, type Storage } from './storage';

/** API Gateway closes a WebSocket connection after 2 hours. */
const CONNECTION_LIFETIME_MS = 2 * 3_600_000;
const CONNECTION_SESSION_PREFIX = 'conn-';
/** Writes a session's end tries on one lock whose shared holders keep changing (see releaseOne). */
const SHARED_RELEASE_ATTEMPTS = 20;
/** A heartbeat overtaken by a concurrent one is read and tried again (see heartbeat). */
const HEARTBEAT_ATTEMPTS = 3;
/** Tries to move a misfiled due entry while heartbeats race it; then the caller's retry takes over. */
const REFILE_ATTEMPTS = 3;
export const connectionSessionId = (connectionId: string) => `${CONNECTION_SESSION_PREFIX}${connectionId}`;
/** The WebSocket connection a session stands for, if it is a connection's (ephemeral locks). */
export const connectionOfSession = (sessionId: string): string | undefined =>
  sessionId.startsWith(CONNECTION_SESSION_PREFIX)
    ? sessionId.slice(CONNECTION_SESSION_PREFIX.length)
    : undefined;

export class Sessions {
  constructor(
    private readonly storage: Storage,
    private readonly paths: Paths,
    private readonly handoff: Handoff,
    private readonly clock: Clock,
    private readonly newId: () => string,
  ) {}

  async create(owner: string, clientId: string, settings: SessionSettings): Promise<Session> {
    const id = this.newId();
    const write = createWrite(owner, clientId, settings, this.clock.now());
    const result = await this.storage.write(sessionRef(id), write);
    if (!result.ok) throw new LatchkeyError('UNAVAILABLE', 'session id collision; retry', undefined, 0);
    const session = sessionOfItem(id, result.item);
    audit('session-open', {
      ...sessionFields(session),
      ttl_ms: settings.ttlMs,
      grace_ms: settings.graceMs,
      lock_delay_ms: settings.lockDelayMs,
      // As the API names them: the heartbeat deadline, and the end of its grace.
      expires_at: new Date(session.deadline).toISOString(),
      grace_until: new Date(session.expiresAt).toISOString(),
      reason: 'opened',
    });
    return session;
  }

  /**
   * Extends the session, and with it every lock held through it: one read and one write, whatever
   * the locks. The write moves the session's due index entry only when it must (heartbeatWrite).
   */
  async heartbeat(id: string, owner: string, clientId: string): Promise<Session> {
    for (let attempt = 1; ; attempt++) {
      const item = await this.ownedItem(id, owner, clientId);
      const seen = sessionOfItem(id, item);
      const now = this.clock.now();
      const write = heartbeatWrite(seen, now, filedDueAt(item));
      const result = await this.storage.write(sessionRef(id), write);
      if (result.ok) return sessionOfItem(id, result.item);
      // A heartbeat that left the due entry in place is refused if another one, on a clock ahead of
      // this one, moved the expiry past it meanwhile: read again (then it moves the entry).
      const old = result.old && sessionOfItem(id, result.old);
      const overtaken =
        write.sweepAt === undefined &&
        old !== undefined &&
        old.owner === owner &&
        old.clientId === clientId &&
        sessionState(old, now) !== 'expired' &&
        sessionState(old, now) !== 'ended';
      if (!overtaken || attempt >= HEARTBEAT_ATTEMPTS) throw refusal(id, owner, clientId, result.old, now);
    }
  }

  /**
   * Ends the session at its client's request and releases its locks. `why` is the audit trail's
   * reason ("closed"; "connection-closed" for a WebSocket connection's; an operator's text).
   */
  async close(
    id: string,
    owner: string,
    clientId: string,
    why: { readonly reason: string; readonly by?: string; readonly admin?: boolean } = { reason: 'closed' },
  ): Promise<number> {
    const now = this.clock.now();
    const reason = why.admin ? 'ended-by-operator' : 'closed';
    const result = await this.storage.write(sessionRef(id), endWrite({ owner, clientId }, reason, now));
    if (result.ok) {
      audit('session-end', { ...sessionFields({ id, owner, clientId }), ...why });
      return this.releaseLocks({ id, owner, clientId }, 0, why.by);
    }
    const session = result.old && sessionOfItem(id, result.old);
    if (!session || session.owner !== owner || session.clientId !== clientId)
      throw refusal(id, owner, clientId, result.old, now);
    // Already past its expiry (no heartbeat in time): it ends as expired, lock-delay and all.
    if (session.endedAt === undefined) return (await this.expire(id, now)) ?? 0;
    // Closing twice (a retry) or after the sweeper ended it: finish whatever is left, answer as done.
    return this.releaseLocks(session, session.endReason === 'expired' ? session.lockDelayMs : 0);
  }

  /** The session, if it is this principal's and client's and may still take locks; a clear 403/404/409 otherwise. */
  async live(id: string, owner: string, clientId: string): Promise<Session> {
    const session = await this.owned(id, owner, clientId);
    if (session.endedAt !== undefined || sessionState(session, this.clock.now()) === 'expired')
      throw refusal(id, owner, clientId, undefined, 0, session);
    return session;
  }

  /**
   * Why the session no longer takes locks for this caller (ended, expired, or not its), by a
   * consistent read now, with the very condition a grant through it checks; undefined while it does.
   */
  async refusesLocks(id: string, owner: string, clientId: string): Promise<LatchkeyError | undefined> {
    const item = await this.storage.read(sessionRef(id));
    const now = this.clock.now();
    return evaluate(sessionTakesLocks(owner, clientId, now), item)
      ? undefined
      : refusal(id, owner, clientId, item, now);
  }

  /** Why a grant held through session `id` was refused (its check failed): the error to answer with. */
  async whyRefused(id: string, owner: string, clientId: string): Promise<LatchkeyError> {
    const item = await this.storage.read(sessionRef(id));
    return refusal(id, owner, clientId, item, this.clock.now());
  }

  /**
   * The session of a WebSocket connection (created on first use): locks held
   * through it are released when the connection closes ($disconnect), or by
   * the sweeper once API Gateway's 2-hour connection limit has passed.
   */
  async ofConnection(connection: Connection): Promise<string> {
    const id = connectionSessionId(connection.id);
    const now = this.clock.now();
    const lifetime = Math.max(1, connection.connectedAt + CONNECTION_LIFETIME_MS - now);
    const settings = { ttlMs: lifetime, graceMs: 0, lockDelayMs: 0 };
    const write = createWrite(connection.owner, connection.clientId, settings, now);
    // Only while the connection is open: its $disconnect marks it closed before ending this session.
    const created = await this.storage.transact([
      { kind: 'check', ref: connectionRef(connection.id), condition: openAndOwnedBy(connection.owner) },
      updateStep(sessionRef(id), write),
    ]);
    if (refusedAt(created, 0))
      throw new LatchkeyError('NOT_FOUND', `WebSocket connection ${connection.id} has closed: reconnect`);
    if (created.ok)
      audit('session-open', {
        ...sessionFields({ id, owner: connection.owner, clientId: connection.clientId }),
        ttl_ms: settings.ttlMs,
        expires_at: new Date(now + settings.ttlMs).toISOString(),
        reason: 'ephemeral',
      });
    // Made by an earlier acquire: still usable?
    if (!created.ok) await this.live(id, connection.owner, connection.clientId);
    return id;
  }

  /** Ends a closed connection's session, if it had one, releasing its locks. */
  async endConnection(connectionId: string): Promise<number> {
    const id = connectionSessionId(connectionId);
    const item = await this.storage.read(sessionRef(id));
    if (!item) return 0;
    const session = sessionOfItem(id, item);
    return this.close(id, session.owner, session.clientId, { reason: 'connection-closed' });
  }

  /** When something about session `id` is due (see sessionDueAt); undefined once fully ended, or unknown. */
  async dueAt(id: string): Promise<number | undefined> {
    const item = await this.storage.read(sessionRef(id));
    return item ? sessionDueAt(sessionOfItem(id, item), this.clock.now()) : undefined;
  }

  /** Ends a session that is due (undefined if a heartbeat saved it) and releases its locks. */
  async expire(id: string, now = this.clock.now()): Promise<number | undefined> {
    const item = await this.storage.read(sessionRef(id));
    if (!item) return undefined;
    const session = sessionOfItem(id, item);
    let reason = session.endReason;
    if (session.endedAt === undefined) {
      const ended = await this.storage.write(sessionRef(id), endWrite(session, 'expired', now));
      if (!ended.ok && ended.old?.[SessionAttr.endedAt] === undefined) {
        // A heartbeat won (or it was never due: its due entry is early). Not ended, so file it at its expiry.
        await this.refile(id, ended.old, now);
        return undefined;
      }
      if (ended.ok)
        audit('session-end', {
          ...sessionFields(session),
          reason: 'expired',
          ...(session.lockDelayMs > 0 ? { lock_delay_ms: session.lockDelayMs } : {}),
        });
      reason = ended.ok ? 'expired' : sessionOfItem(id, ended.old as Item).endReason;
    }
    // Lock-delay only for a session that expired: its holder may merely be cut off, still working.
    return this.releaseLocks(session, reason === 'expired' ? session.lockDelayMs : 0);
  }

  /**
   * Releases what `session` holds of lock `name`: its exclusive grant, or its shared entry (then
   * in the variant that fits the item the refusal returned: tried a few times, as others change it).
   */
  private async releaseOne(
    session: Pick<Session, 'id' | 'owner' | 'clientId'>,
    name: string,
    now: number,
    lockDelayMs: number,
  ) {
    let result = await this.paths.write(name, sessionReleaseWrite(session.id, now, lockDelayMs));
    // Each refusal of a shared release means another write changed the item (other sessions ending
    // at once, say): try the variant that fits it now. Never give up with the entry still there:
    // its session's link would go, and nothing would ever end it; the sweeper retries instead.
    for (let attempt = 0; !result.ok; attempt++) {
      const variant = sessionSharedReleaseVariant(
        result.old,
        session.owner,
        session.clientId,
        session.id,
        now,
        lockDelayMs,
      );
      if (!variant) break;
      if (attempt >= SHARED_RELEASE_ATTEMPTS)
        throw new LatchkeyError(
          'UNAVAILABLE',
          `lock ${name} kept changing while session ${session.id} released it; retry`,
        );
      result = await this.paths.write(
        name,
        sessionSharedReleaseWrite(session.owner, session.clientId, session.id, now, lockDelayMs, variant),
      );
    }
    return result;
  }

  private async releaseLocks(
    session: Pick<Session, 'id' | 'owner' | 'clientId'>,
    lockDelayMs: number,
    by?: string,
  ): Promise<number> {
    const { id } = session;
    let released = 0;
    for (const name of await this.storage.sessionLocks(id)) {
      const now = this.clock.now();
      const result = await this.releaseOne(session, name, now, lockDelayMs);
      if (result.ok) {
        released++;
        audit('release', {
          lock: name,
          ...sessionFields(session),
          fencing_token: lastFencingToken(result.item),
          reason: 'session-ended',
          ...(lockDelayMs > 0 ? { lock_delay_ms: lockDelayMs } : {}),
          ...(by === undefined ? {} : { by }),
        });
      }
      // Served even when this run's release was refused: an earlier run may have released it and died.
      const item = result.ok ? result.item : result.old;
      if (!liveHolder(item, now) && queuedCount(item) > 0) await this.handoff.serve(name);
      await this.storage.remove(sessionLockRef(id, name));
    }
    await this.storage.write(sessionRef(id), sweptWrite(this.clock.now()));
    return released;
  }

  /**
   * Moves a live session's due entry to its expiry if it is misfiled (dueEntryMisfiled): due by
   * `now` though the session is not, so the sweeper would find it on every run until it expires,
   * and, once the sweeper's cursor has passed the entry's minute, not at its expiry at all. A
   * heartbeat landing meanwhile refuses the move (it placed the entry itself): read again.
   */
  private async refile(id: string, seen: Item | undefined, now: number): Promise<void> {
    let item = seen;
    for (let attempt = 1; item !== undefined; attempt++) {
      const session = sessionOfItem(id, item);
      if (!dueEntryMisfiled(session, filedDueAt(item), now)) return;
      if (attempt > REFILE_ATTEMPTS)
        throw new LatchkeyError('UNAVAILABLE', `session ${id} kept changing while its due entry was moved`);
      const moved = await this.storage.write(sessionRef(id), refileWrite(session, now));
      if (moved.ok) return;
      item = moved.old;
    }
  }

  private async owned(id: string, owner: string, clientId: string): Promise<Session> {
    return sessionOfItem(id, await this.ownedItem(id, owner, clientId));
  }

  /** The session item, if it is this principal's and client's; a clear 403/404 otherwise. */
  private async ownedItem(id: string, owner: string, clientId: string): Promise<Item> {
    const item = await this.storage.read(sessionRef(id));
    const session = item && sessionOfItem(id, item);
    if (!item || !session) throw refusal(id, owner, clientId, undefined, 0);
    if (session.owner !== owner || session.clientId !== clientId)
      throw refusal(id, owner, clientId, undefined, 0, session);
    return item;
  }
}

/** The fields naming a session in the audit trail (and its WebSocket connection, if it is one's). */
function sessionFields(s: Pick<Session, 'id' | 'owner' | 'clientId'>): AuditFields {
  const connection = connectionOfSession(s.id);
  return {
    session_id: s.id,
    principal: s.owner,
    client_id: s.clientId,
    ...(connection === undefined ? {} : { connection_id: connection }),
  };
}

function refusal(
  id: string,
  owner: string,
  clientId: string,
  old: Item | undefined,
  now: number,
  known: Session | undefined = old && sessionOfItem(id, old),
): LatchkeyError {
  if (!known) return new LatchkeyError('NOT_FOUND', `no session ${id}`);
  if (known.owner !== owner)
    return new LatchkeyError('FORBIDDEN', 'that session belongs to another principal');
  if (known.clientId !== clientId)
    return new LatchkeyError('NOT_SESSION_OWNER', `session ${id} belongs to another client`);
  if (known.endedAt !== undefined)
    return new LatchkeyError('SESSION_EXPIRED', `session ${id} has ended: ${endedHow(known.endReason)}`);
  const state = sessionState(known, now);
  return new LatchkeyError(
    'SESSION_EXPIRED',
    state === 'expired'
      ? `session ${id} expired: no heartbeat since its deadline and grace passed`
      : `session ${id} changed meanwhile; retry`,
  );
}

/** How a session ended, in words. */
function endedHow(reason: EndReason | undefined): string {
  if (reason === 'expired') return 'it expired (no heartbeat before its deadline and grace passed)';
  if (reason === 'ended-by-operator') return 'an operator ended it';
  return 'its client closed it';
}
