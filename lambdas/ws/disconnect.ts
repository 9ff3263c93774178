/**
 * $disconnect: the connection's waiters leave their queues and the locks
 * held through it (`ephemeral`) are released to their next waiters. Best
 * effort: API Gateway may not call it; the sweeper closes the connection
 * once its 2-hour limit has passed.
 */
import { getDeps } from '../shared/deps';
import { ok, type WsEvent, type WsResult } from '../shared/ws';

export async function handler(event: WsEvent): Promise<WsResult> {
  await getDeps().connections.closed(event.requestContext.connectionId);
  return ok;
}
