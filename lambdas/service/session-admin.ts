/**
 * What an operator does with sessions (GET and DELETE /api/v1/admin/sessions): list the live ones
 * and end any of them, whoever owns it.
 *
 * Listing never Scans: a session not yet swept has an entry in the due index (`by_due`) at the
 * minute it falls due (while it lives, its expiry or earlier: a heartbeat moves the entry only
 * when it must, and the sweeper moves one it finds early to the expiry, core/session.ts; at once
 * once it has ended with locks left to release), so the listing reads the index minute by minute over the window a session can be due
 * in: from LOOKBACK_MINUTES back (expired or ended, not swept yet: the sweeper normally ends them
 * within a minute or two) to HORIZON_MINUTES ahead (the longest a session can live: a WebSocket
 * connection's, 2 hours). A page reads at most MINUTES_PER_PAGE minutes of the index (a Query per
 * shard of each, 16 a minute), then each session it lists (a read, and a Query of its locks), so
 * a page may hold fewer sessions than asked, even none, and still have a next cursor: follow it
 * until it is null (7 pages for the whole window). Pages follow the index's order (due minute,
 * then id); a session whose entry moves between two pages (about every 3rd heartbeat) may be
 * listed twice or missed.
 */
import { invalidRequest, LatchkeyError } from '../core/errors';
import { sessionRef } from '../core/items';
import { type Session, sessionOfItem, sessionState } from '../core/session';
import { minuteOf } from '../store/table';
import type { Clock } from './clock';
import type { Sessions } from './sessions';
import type { Storage } from './storage';

export const LOOKBACK_MINUTES = 15;
export const HORIZON_MINUTES = 2 * 60 + 5;
/** Minutes of the index one page reads at most. */
export const MINUTES_PER_PAGE = 20;
/** Minutes of the index read side by side (each is DUE_SHARDS Queries). */
const MINUTES_AT_ONCE = 2;

export interface ListedSession {
  readonly session: Session;
  readonly locksHeld: number;
}

export interface SessionPage {
  readonly sessions: readonly ListedSession[];
  readonly nextCursor: string | undefined;
}

export interface SessionFilter {
  readonly principal?: string | undefined;
  readonly clientId?: string | undefined;
}

type Position = { readonly minute: number; readonly after: string };

const encodeCursor = (p: Position) =>
  Buffer.from(JSON.stringify({ m: p.minute, a: p.after })).toString('base64url');

function decodeCursor(cursor: string): Position {
  try {
    const parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as {
      m?: unknown;
      a?: unknown;
    };
    if (Number.isInteger(parsed.m) && typeof parsed.a === 'string')
      return { minute: parsed.m as number, after: parsed.a };
  } catch {
    // not JSON: refused below
  }
  throw invalidRequest('cursor is not valid: pass back the next_cursor of the previous page', [
    { path: 'cursor', message: 'not a cursor this API issued' },
  ]);
}

export class SessionAdmin {
  constructor(
    private readonly storage: Storage,
    private readonly sessions: Sessions,
    private readonly clock: Clock,
  ) {}

  /** Sessions not yet swept (alive, in grace, expired or ended with locks still to release), a page at a time. */
  async list(limit: number, cursor?: string, filter: SessionFilter = {}): Promise<SessionPage> {
    const now = this.clock.now();
    const first = minuteOf(now) - LOOKBACK_MINUTES;
    const last = minuteOf(now) + HORIZON_MINUTES;
    const from = cursor === undefined ? { minute: first, after: '' } : decodeCursor(cursor);
    const listed: ListedSession[] = [];
    const begin = Math.max(first, from.minute);
    const end = Math.min(last, begin + MINUTES_PER_PAGE - 1);
    for (let start = begin; start <= end; start += MINUTES_AT_ONCE) {
      const minutes = Array.from({ length: Math.min(MINUTES_AT_ONCE, end - start + 1) }, (_, i) => start + i);
      const refs = await Promise.all(minutes.map((m) => this.storage.dueIn(m, Number.MAX_SAFE_INTEGER)));
      for (const [i, minute] of minutes.entries()) {
        const ids = [
          ...new Set((refs[i] ?? []).flatMap((ref) => (ref.kind === 'session' ? [ref.session] : []))),
        ]
          .filter((id) => minute !== from.minute || id > from.after)
          .sort();
        for (const id of ids) {
          const item = await this.storage.read(sessionRef(id));
          if (!item) continue;
          const session = sessionOfItem(id, item);
          if (session.sweptAt !== undefined) continue;
          if (filter.principal !== undefined && session.owner !== filter.principal) continue;
          if (filter.clientId !== undefined && session.clientId !== filter.clientId) continue;
          const locksHeld = (await this.storage.sessionLocks(id)).length;
          listed.push({ session, locksHeld });
          if (listed.length === limit)
            return { sessions: listed, nextCursor: encodeCursor({ minute, after: id }) };
        }
      }
    }
    // This page's minutes are read: the next page starts after them, if any are left.
    return {
      sessions: listed,
      nextCursor: end < last ? encodeCursor({ minute: end + 1, after: '' }) : undefined,
    };
  }

  /**
   * Ends session `id`, whoever owns it, and releases its locks to their next waiters, as if its
   * client had closed it (no lock-delay); audited as `session-end` with the operator's principal
   * (`by`) and `reason`. A session that had already ended (or expires meanwhile) is finished, not
   * ended twice: `alreadyEnded` says so.
   */
  async end(id: string, by: string, reason: string) {
    const item = await this.storage.read(sessionRef(id));
    if (!item) throw new LatchkeyError('NOT_FOUND', `no session ${id}`);
    const before = sessionOfItem(id, item);
    const wasState = sessionState(before, this.clock.now());
    const locksReleased = await this.sessions.close(id, before.owner, before.clientId, {
      reason,
      by,
      admin: true,
    });
    return { session: before, wasState, locksReleased, alreadyEnded: before.endedAt !== undefined };
  }
}
