/**
 * $disconnect: the connection's waiters leave their queues and the locks
 * tied to it (`ephemeral`) are released to their next waiters. Best effort:
 * API Gateway may not call it; the sweeper ends the connection's session
 * once its 2-hour limit has passed.
 */
import { getDeps } from '../shared/deps';
import { ok, type WsEvent, type WsResult } from '../shared/ws';

export async function handler(event: WsEvent): Promise<WsResult> {
  const { handoff, sessions } = getDeps();
  const id = event.requestContext.connectionId;
  // The session first: its item keeps the connection's locks findable should this stop midway.
  await sessions.endConnection(id);
  await handoff.forgetConnection(id);
  return ok;
}
