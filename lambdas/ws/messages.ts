/**
 * $default: every message gets exactly one answer frame on the same
 * connection (`queued`, `granted`, `busy`, `cancelled`, `pong` or `error`);
 * a queued waiter later gets `granted` or `timeout`, pushed by whoever
 * serves the queue.
 */
import { randomUUID } from 'node:crypto';
import { LatchkeyError } from '../core/errors';
import { SESSION_LOCK_LEASE_MS } from '../core/session';
import {
  busyFrame,
  cancelledFrame,
  errorFrame,
  type Frame,
  grantedFrame,
  MAX_MESSAGE_BYTES,
  pongFrame,
  queuedFrame,
  type WsMessage,
} from '../core/ws-wire';
import { getDeps } from '../shared/deps';
import { asLatchkeyError, parseJsonObject } from '../shared/http';
import { ok, type WsEvent, type WsResult } from '../shared/ws';

async function answer(message: WsMessage, connectionId: string): Promise<Frame> {
  const { service, queue, sessions } = getDeps();
  if (message.action === 'ping') return pongFrame(message.request_id);
  const connection = await queue.getConnection(connectionId);
  if (!connection) throw new LatchkeyError('UNAUTHORIZED', 'this connection is not registered: reconnect');
  if (message.action === 'cancel') {
    const removed = await service.cancel(message.lock, connectionId, message.request_id);
    return cancelledFrame(message.lock, removed, message.request_id);
  }
  const requestId = message.request_id ?? randomUUID();
  const sessionId = message.ephemeral
    ? await sessions.ofConnection(connectionId, connection.clientId, connection.connectedAt)
    : message.session_id;
  const cmd = {
    name: message.lock,
    clientId: connection.clientId,
    ttlMs: message.ttl_ms ?? SESSION_LOCK_LEASE_MS,
    requestId,
    sessionId,
  };
  const wait = { waitMs: message.wait_timeout_ms ?? 0, priority: message.priority, connectionId };
  const result = await service.acquire(cmd, wait);
  if (result.kind === 'queued')
    return queuedFrame(result.waiter.lock, requestId, result.position, result.waiter.deadline);
  const { outcome } = result;
  return outcome.acquired
    ? grantedFrame(outcome.grant, requestId, Date.now())
    : busyFrame(outcome, requestId);
}

/** The request_id of a message, even one that is otherwise invalid, so its error frame can name it. */
function requestIdOf(raw: Buffer): string | undefined {
  if (raw.byteLength > MAX_MESSAGE_BYTES) return undefined;
  try {
    const id = (JSON.parse(raw.toString('utf8')) as { request_id?: unknown })?.request_id;
    return typeof id === 'string' && id.length <= 128 ? id : undefined;
  } catch {
    return undefined;
  }
}

export async function handler(event: WsEvent): Promise<WsResult> {
  const { pusher, schemas } = getDeps();
  const connectionId = event.requestContext.connectionId;
  const raw = Buffer.from(event.body ?? '', event.isBase64Encoded ? 'base64' : 'utf8');
  let frame: Frame;
  const requestId = requestIdOf(raw);
  try {
    const message = parseJsonObject(raw, schemas.wsMessage, 'message', MAX_MESSAGE_BYTES);
    frame = await answer(message, connectionId);
  } catch (error) {
    frame = errorFrame(asLatchkeyError(error), requestId);
  }
  await pusher.push(connectionId, frame);
  return ok;
}
