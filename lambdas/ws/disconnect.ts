/** $disconnect: the connection's waiters leave their queues (best effort: API Gateway may not call it). */
import { getDeps } from '../shared/deps';
import { ok, type WsEvent, type WsResult } from '../shared/ws';

export async function handler(event: WsEvent): Promise<WsResult> {
  await getDeps().handoff.forgetConnection(event.requestContext.connectionId);
  return ok;
}
