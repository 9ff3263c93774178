/**
 * GET /api/v1/admin/sessions?limit=&cursor=&principal=&client_id=: every session not yet swept, with
 * its owner, state, expiry and how many locks it holds (operators only: it shows every principal's
 * sessions, ids included). Its own route, so that IAM grants it apart from the client routes
 * (README: "Security model"). The listing reads the session listing in the owner index, never a Scan (service/session-admin.ts).
 */

import * as z from 'zod/mini';
import { principalOf } from '../core/principal';
import '../core/zod-messages';
import { sessionState } from '../core/session';
import { clientId, isoTime, pageFields } from '../core/wire';
import { sessionAdminOf } from '../service/services';
import { httpRoute, json, parseQuery } from '../shared/http';

const DEFAULT_PAGE = 50;

export const adminSessionsQuery = z.strictObject({
  ...pageFields,
  /** Only this principal's sessions (an ARN; an assumed-role session counts as its role). */
  principal: z.optional(
    z
      .string()
      .check(
        z.minLength(1, 'principal must not be empty'),
        z.maxLength(2048, 'principal must be at most 2048 characters'),
      ),
  ),
  client_id: z.optional(clientId),
});

export const handler = httpRoute(async (event, deps) => {
  const { clock } = deps;
  const sessionAdmin = sessionAdminOf(deps);
  const query = parseQuery(event, adminSessionsQuery);
  const page = await sessionAdmin.list(query.limit ?? DEFAULT_PAGE, query.cursor, {
    principal: query.principal === undefined ? undefined : principalOf(query.principal),
    clientId: query.client_id,
  });
  const now = clock.now();
  const sessions = page.sessions.map(({ session: s, locksHeld }) => ({
    session_id: s.id,
    principal: s.owner,
    client_id: s.clientId,
    state: sessionState(s, now),
    ...(s.endReason === undefined ? {} : { end_reason: s.endReason }),
    ttl_ms: s.ttlMs,
    grace_ms: s.graceMs,
    lock_delay_ms: s.lockDelayMs,
    created_at: isoTime(s.createdAt),
    expires_at: isoTime(s.deadline),
    grace_until: isoTime(s.expiresAt),
    locks_held: locksHeld,
    ...(s.id.startsWith('conn-') ? { connection_id: s.id.slice('conn-'.length) } : {}),
  }));
  return json(200, { sessions, next_cursor: page.nextCursor ?? null });
});
