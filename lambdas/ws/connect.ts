/**
 * $connect: records the connection, the principal that signed its handshake
 * (IAM authorizes $connect), and the client it speaks for (`?client_id=`).
 * Grants are pushed only to a connection of the principal that asked.
 */
import { invalidRequest, LatchkeyError } from '../core/errors';
import { IDENTIFIER_CHARACTERS, IDENTIFIER_MAX_LENGTH } from '../core/names';
import { principalOf } from '../core/principal';
import { connectQuery } from '../core/ws-wire';
import { getDeps } from '../shared/deps';
import { asLatchkeyError, validate } from '../shared/http';
import { instrumented } from '../shared/metrics';
import { wsOutcome } from '../shared/outcomes';
import { withRequestContext } from '../shared/request-context';
import { ok, type WsEvent, type WsResult, wsContext } from '../shared/ws';

const CLIENT_ID_RULE = `1-${IDENTIFIER_MAX_LENGTH} characters of ${IDENTIFIER_CHARACTERS}`;

/** This API's URL with a client_id, as the handshake reached it (wss:// on AWS, ws:// on localhost). */
function example(event: WsEvent): string {
  const { domainName, stage } = event.requestContext;
  if (!domainName || !stage) return 'wss://API_ID.execute-api.REGION.amazonaws.com/v1?client_id=worker-1';
  const local = /^(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$/.test(domainName);
  return `${local ? 'ws' : 'wss'}://${domainName}/${stage}?client_id=worker-1`;
}

/** The `client_id` of the handshake's query: required, and the only parameter it takes. */
function clientIdOf(event: WsEvent): string {
  const query = event.queryStringParameters ?? {};
  if (!query.client_id) {
    const message = `the WebSocket URL needs ?client_id=NAME, the client whose waits this connection delivers (${CLIENT_ID_RULE}), e.g. ${example(event)}`;
    throw invalidRequest(message, [{ path: 'client_id', message: 'client_id is required' }]);
  }
  try {
    return validate(connectQuery, query, "the WebSocket URL's query").client_id;
  } catch (error) {
    if (!(error instanceof LatchkeyError)) throw error;
    throw invalidRequest(
      `${error.message}; the WebSocket URL takes only ?client_id=NAME (${CLIENT_ID_RULE}), e.g. ${example(event)}`,
      error.details,
    );
  }
}

export const handler = (event: WsEvent): Promise<WsResult> =>
  withRequestContext(wsContext(event, 'connect'), () => instrumented(() => handle(event), wsOutcome));

async function handle(event: WsEvent): Promise<WsResult> {
  try {
    const arn = event.requestContext.identity?.userArn;
    if (!arn)
      throw new LatchkeyError('UNAUTHORIZED', 'the handshake carries no IAM identity (sign it with SigV4)');
    const clientId = clientIdOf(event);
    await getDeps().connections.open(event.requestContext.connectionId, principalOf(arn), clientId);
    return ok;
  } catch (error) {
    // A refused $connect fails the handshake with this status. API Gateway may not pass the body on
    // (the local gateway does), so the status is chosen to say it too: 400 a bad URL, 403 unsigned.
    const refusal = asLatchkeyError(error);
    return {
      statusCode: refusal.status,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(refusal.toBody()),
    };
  }
}
