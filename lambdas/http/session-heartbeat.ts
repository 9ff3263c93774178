/** POST /api/v1/sessions/{id}/heartbeat: extends the session and so every lock held through it. */
import { heartbeatBody, sessionResponse } from '../core/wire';
import { httpRoute, json, parseBody, principalFrom } from '../shared/http';
import { sessionIdFrom } from './session-id';

export const handler = httpRoute(async (event, { sessions, clock }) => {
  const body = parseBody(event, heartbeatBody);
  const session = await sessions.heartbeat(sessionIdFrom(event), principalFrom(event), body.client_id);
  return json(200, sessionResponse(session, clock.now()));
});
