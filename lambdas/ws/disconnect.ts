/**
 * $disconnect: the connection's waiters leave their queues and the locks
 * tied to it (`ephemeral`) are released to their next waiters. Best effort:
 * API Gateway may not call it; the sweeper ends the connection's session
 * once its 2-hour limit has passed.
 */
import { getDeps } from '../shared/deps';
import { ok, type WsEvent, type WsResult } from '../shared/ws';

export async function handler(event: WsEvent): Promise<WsResult> {
  const { handoff, queue, sessions } = getDeps();
  const id = event.requestContext.connectionId;
  const connection = await queue.getConnection(id);
  await handoff.forgetConnection(id);
  if (connection) await sessions.endConnection(id, connection.clientId);
  return ok;
}
