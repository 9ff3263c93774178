/**
 * $default: every message gets exactly one answer frame on the same
 * connection (`queued`, `granted`, `busy`, `timeout`, `cancelled`, `pong` or
 * `error`); a queued waiter later gets `granted` or `timeout`, pushed by
 * whoever serves the queue. An `error` frame with a retryable code means the
 * outcome is unknown: send the same request again (same request_id).
 */
import { errorFrame, type Frame, MAX_MESSAGE_BYTES } from '../core/ws-wire';
import { getDeps } from '../shared/deps';
import { asLatchkeyError, parseJsonObject } from '../shared/http';
import { instrumented } from '../shared/metrics';
import { wsOutcome } from '../shared/outcomes';
import { withRequestContext } from '../shared/request-context';
import { ok, type WsEvent, type WsResult, wsContext } from '../shared/ws';
import { answer } from './answer';

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

export const handler = (event: WsEvent): Promise<WsResult> =>
  withRequestContext(wsContext(event, 'message'), () => instrumented(() => handle(event), wsOutcome));

async function handle(event: WsEvent): Promise<WsResult> {
  const deps = getDeps();
  const connectionId = event.requestContext.connectionId;
  const raw = Buffer.from(event.body ?? '', event.isBase64Encoded ? 'base64' : 'utf8');
  let frame: Frame;
  const requestId = requestIdOf(raw);
  try {
    const message = parseJsonObject(raw, deps.schemas.wsMessage, 'message', MAX_MESSAGE_BYTES);
    frame = await answer(message, connectionId, deps);
  } catch (error) {
    frame = errorFrame(asLatchkeyError(error), requestId);
  }
  await deps.pusher.push(connectionId, frame);
  return ok;
}
