/** POST /api/v1/sessions/{id}/heartbeat: extends the session and so every lock tied to it. */
import { heartbeatBody, sessionResponse } from '../core/wire';
import { getDeps } from '../shared/deps';
import { httpRoute, json, parseBody } from '../shared/http';
import { sessionIdFrom } from './session-id';

export const handler = httpRoute(async (event) => {
  const body = parseBody(event, heartbeatBody);
  const session = await getDeps().sessions.heartbeat(sessionIdFrom(event), body.client_id);
  return json(200, sessionResponse(session, Date.now()));
});
