/**
 * DELETE /api/v1/admin/sessions/{id} {reason}: an operator ends any session, whoever owns it, and
 * its locks go to their next waiters (as when its client closes it: no lock-delay). Audited
 * (`audit: "session-end"` with `by` and the `reason`, then a `release` per lock). Its own route, so
 * that IAM grants it apart from the client's DELETE /api/v1/sessions/{id}.
 */

import * as z from 'zod/mini';
import '../core/zod-messages';
import { anySessionId, forceReleaseBody, isoTime } from '../core/wire';
import { sessionAdminOf } from '../service/services';
import { httpRoute, json, parseBody, principalFrom, validate } from '../shared/http';

const endSessionBody = z.strictObject({ reason: forceReleaseBody.shape.reason });

export const handler = httpRoute(async (event, deps) => {
  const { clock } = deps;
  const sessionAdmin = sessionAdminOf(deps);
  const id = validate(anySessionId, event.pathParameters?.id ?? '', 'session id');
  const { reason } = parseBody(event, endSessionBody);
  const by = principalFrom(event);
  const ended = await sessionAdmin.end(id, by, reason);
  return json(200, {
    session_id: id,
    principal: ended.session.owner,
    client_id: ended.session.clientId,
    state: 'ended',
    was: ended.wasState,
    locks_released: ended.locksReleased,
    by,
    reason,
    at: isoTime(clock.now()),
  });
});
