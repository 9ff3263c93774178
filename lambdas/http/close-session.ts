/** DELETE /api/v1/sessions/{id}?client_id=...: ends the session and releases its locks (to their waiters). */
import { closeSessionQuery } from '../core/wire';
import { httpRoute, json, parseQuery, principalFrom } from '../shared/http';
import { sessionIdFrom } from './session-id';

export const handler = httpRoute(async (event, { sessions }) => {
  const query = parseQuery(event, closeSessionQuery);
  const id = sessionIdFrom(event);
  const released = await sessions.close(id, principalFrom(event), query.client_id);
  return json(200, { session_id: id, state: 'ended', locks_released: released });
});
