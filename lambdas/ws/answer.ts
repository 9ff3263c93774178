/**
 * The answer to one WebSocket message: what $default sends back on the same
 * connection. The connection only delivers grants (waits are asked for over
 * HTTP, where IAM authorizes the lock name), so a client says `hello` to
 * learn its connection id and `ping` to keep the connection alive.
 */
import { LatchkeyError } from '../core/errors';
import { type Frame, pongFrame, type WsMessage, welcomeFrame } from '../core/ws-wire';
import type { Services } from '../service/services';

export async function answer(
  message: WsMessage,
  connectionId: string,
  services: Pick<Services, 'connections'>,
): Promise<Frame> {
  if (message.action === 'ping') return pongFrame(message.request_id);
  const connection = await services.connections.get(connectionId);
  if (!connection) throw new LatchkeyError('UNAUTHORIZED', 'this connection is not registered: reconnect');
  return welcomeFrame(connectionId, connection.clientId, message.request_id);
}
