/**
 * The answer to one WebSocket message, from the services: what $default
 * sends back on the same connection. Kept apart from the handler so the
 * simulation runs exactly this.
 */
import { randomUUID } from 'node:crypto';
import { LatchkeyError } from '../core/errors';
import { type AcquireCommand, lease, throughSession } from '../core/lock';
import {
  busyFrame,
  cancelledFrame,
  type Frame,
  grantedFrame,
  pongFrame,
  queuedFrame,
  timeoutFrame,
  type WsMessage,
} from '../core/ws-wire';
import type { Services } from '../service/services';

export async function answer(
  message: WsMessage,
  connectionId: string,
  services: Pick<Services, 'locks' | 'sessions' | 'connections' | 'clock'>,
  newId: () => string = randomUUID,
): Promise<Frame> {
  const { locks, sessions, connections, clock } = services;
  if (message.action === 'ping') return pongFrame(message.request_id);
  const connection = await connections.get(connectionId);
  if (!connection) throw new LatchkeyError('UNAUTHORIZED', 'this connection is not registered: reconnect');
  if (message.action === 'cancel') {
    const cancelled = await locks.cancel(message.lock, connection.clientId, connectionId, message.request_id);
    if (cancelled.granted?.acquired)
      return grantedFrame(cancelled.granted.grant, message.request_id ?? '', clock.now());
    return cancelledFrame(message.lock, cancelled.removed, message.request_id);
  }
  const requestId = message.request_id ?? newId();
  const sessionId = message.ephemeral
    ? await sessions.ofConnection(connectionId, connection.clientId, connection.connectedAt)
    : message.session_id;
  const cmd: AcquireCommand = {
    name: message.lock,
    clientId: connection.clientId,
    // The schema requires ttl_ms unless the lock is held through a session.
    tenure: sessionId !== undefined ? throughSession(sessionId) : lease(message.ttl_ms ?? 0),
    requestId,
  };
  const wait = { waitMs: message.wait_timeout_ms ?? 0, priority: message.priority, connectionId };
  const result = await locks.acquire(cmd, wait);
  if (result.kind === 'queued')
    return queuedFrame(result.wait.lock, requestId, result.position, result.wait.deadline);
  const { outcome } = result;
  if (outcome.acquired) return grantedFrame(outcome.grant, requestId, clock.now());
  return 'ended' in outcome && outcome.ended
    ? timeoutFrame(message.lock, requestId)
    : busyFrame(outcome, requestId);
}
