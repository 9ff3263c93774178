/** $connect: records the connection and the client it speaks for (`?client_id=`). */
import { connectQuery } from '../core/ws-wire';
import { getDeps } from '../shared/deps';
import { asLatchkeyError, validate } from '../shared/http';
import { ok, type WsEvent, type WsResult } from '../shared/ws';

export async function handler(event: WsEvent): Promise<WsResult> {
  try {
    const query = validate(connectQuery, event.queryStringParameters ?? {}, 'query string');
    await getDeps().connections.open(event.requestContext.connectionId, query.client_id);
    return ok;
  } catch (error) {
    // A refused $connect fails the handshake with this status; API Gateway does not pass the body on.
    const refusal = asLatchkeyError(error);
    return { statusCode: refusal.status, body: JSON.stringify(refusal.toBody()) };
  }
}
