/**
 * $connect: records the connection, the principal that signed its handshake
 * (IAM authorizes $connect), and the client it speaks for (`?client_id=`).
 * Grants are pushed only to a connection of the principal that asked.
 */
import { LatchkeyError } from '../core/errors';
import { principalOf } from '../core/principal';
import { connectQuery } from '../core/ws-wire';
import { getDeps } from '../shared/deps';
import { asLatchkeyError, validate } from '../shared/http';
import { ok, type WsEvent, type WsResult } from '../shared/ws';

export async function handler(event: WsEvent): Promise<WsResult> {
  try {
    const arn = event.requestContext.identity?.userArn;
    if (!arn)
      throw new LatchkeyError('UNAUTHORIZED', 'the handshake carries no IAM identity (sign it with SigV4)');
    const query = validate(connectQuery, event.queryStringParameters ?? {}, 'query string');
    await getDeps().connections.open(event.requestContext.connectionId, principalOf(arn), query.client_id);
    return ok;
  } catch (error) {
    // A refused $connect fails the handshake with this status; API Gateway does not pass the body on.
    const refusal = asLatchkeyError(error);
    return { statusCode: refusal.status, body: JSON.stringify(refusal.toBody()) };
  }
}
