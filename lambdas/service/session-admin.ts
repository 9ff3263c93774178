/**
 * What an operator does with sessions (GET and DELETE /api/v1/admin/sessions): list the live ones
 * and end any of them, whoever owns it.
 *
 * Listing never Scans, and its cost does not grow with time or with the table: every session not
 * yet swept is in the owner index's session listing (store/table.ts), by id. A page reads the
 * listing's shards after the cursor (one Query each, side by side), then each session it lists (a
 * read, and a Query of its locks). Filters are applied to what was read, so a page may hold fewer
 * sessions than asked, even none, and still have a next cursor: follow it until it is null. The
 * index is eventually consistent: a session opened a moment ago may be missing, and one swept a
 * moment ago is read and left out.
 */
import { invalidRequest, LatchkeyError } from '../core/errors';
import { lockRef, sessionRef } from '../core/items';
import { holdsThroughSession } from '../core/lock';
import { type Session, sessionOfItem, sessionState } from '../core/session';
import { anySessionId } from '../core/wire';
import type { Clock } from './clock';
import type { Sessions } from './sessions';
import type { Storage } from './storage';

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

/** Sessions read side by side (each a GetItem and a Query of its locks). */
const READS_AT_ONCE = 16;

/** A page's cursor: the id of the last session it read. */
const encodeCursor = (after: string) => Buffer.from(JSON.stringify({ after })).toString('base64url');

function decodeCursor(cursor: string): string {
  try {
    const parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as { after?: unknown };
    if (anySessionId.safeParse(parsed.after).success) return parsed.after as string;
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
    const after = cursor === undefined ? '' : decodeCursor(cursor);
    const page = await this.storage.sessionIds(limit, after);
    const read: (ListedSession | undefined)[] = [];
    for (let i = 0; i < page.ids.length; i += READS_AT_ONCE)
      read.push(
        ...(await Promise.all(page.ids.slice(i, i + READS_AT_ONCE).map((id) => this.listed(id, filter)))),
      );
    const last = page.ids.at(-1);
    return {
      sessions: read.filter((s): s is ListedSession => s !== undefined),
      nextCursor: page.more && last !== undefined ? encodeCursor(last) : undefined,
    };
  }

  /** Session `id` with its lock count, unless it is gone, swept meanwhile, or not what `filter` asks. */
  private async listed(id: string, filter: SessionFilter): Promise<ListedSession | undefined> {
    const item = await this.storage.read(sessionRef(id));
    if (!item) return undefined;
    const session = sessionOfItem(id, item);
    if (session.sweptAt !== undefined) return undefined;
    if (filter.principal !== undefined && session.owner !== filter.principal) return undefined;
    if (filter.clientId !== undefined && session.clientId !== filter.clientId) return undefined;
    return { session, locksHeld: await this.heldThrough(id, await this.storage.sessionLocks(id)) };
  }

  /**
   * How many of the locks session `id` took it holds now: its lock records stay until it ends
   * (whoever ends it releases what they name), so each lock is read to see whether it still
   * holds it there.
   */
  private async heldThrough(id: string, names: readonly string[]): Promise<number> {
    const items = await this.storage.readMany(names.map(lockRef));
    const now = this.clock.now();
    return items.filter((item) => holdsThroughSession(item, id, now)).length;
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
