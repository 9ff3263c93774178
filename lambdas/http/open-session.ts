/** POST /api/v1/sessions: a session for a client, kept alive by heartbeats. */
import { DEFAULT_GRACE_MS, sessionResponse } from '../core/wire';
import { httpRoute, json, parseBody, principalFrom } from '../shared/http';

export const handler = httpRoute(async (event, { sessions, schemas, clock }) => {
  const body = parseBody(event, schemas.session);
  const session = await sessions.create(principalFrom(event), body.client_id, {
    ttlMs: body.ttl_ms,
    graceMs: body.grace_ms ?? DEFAULT_GRACE_MS,
    lockDelayMs: body.lock_delay_ms ?? 0,
  });
  return json(201, sessionResponse(session, clock.now()));
});
