/**
 * $disconnect: the connection's waiters leave their queues and the locks
 * held through it (`ephemeral`) are released to their next waiters. Best
 * effort: API Gateway may not call it; the sweeper closes the connection
 * once its 2-hour limit has passed.
 */
import { getDeps } from '../shared/deps';
import { instrumented } from '../shared/metrics';
import { wsOutcome } from '../shared/outcomes';
import { withRequestContext } from '../shared/request-context';
import { ok, type WsEvent, type WsResult, wsContext } from '../shared/ws';

export const handler = (event: WsEvent): Promise<WsResult> =>
  withRequestContext(wsContext(event, 'disconnect'), () => instrumented(() => handle(event), wsOutcome));

async function handle(event: WsEvent): Promise<WsResult> {
  await getDeps().connections.closed(event.requestContext.connectionId);
  return ok;
}
