/** What the WebSocket handlers share: the event shape API Gateway sends them. */
import { randomUUID } from 'node:crypto';
import { principalOf } from '../core/principal';
import type { RequestContext } from './request-context';

export interface WsEvent {
  readonly requestContext: {
    readonly connectionId: string;
    readonly routeKey: string;
    /** API Gateway's id of this request (one per message, $connect or $disconnect). */
    readonly requestId?: string;
    readonly eventType?: string;
    readonly requestTimeEpoch?: number;
    /** Where the client connected: the API's host name, and the stage (`v1`). */
    readonly domainName?: string;
    readonly stage?: string;
    /** On $connect with IAM authorization: who signed the handshake. */
    readonly identity?: { readonly userArn?: string | null; readonly accessKey?: string | null };
  };
  readonly queryStringParameters?: Record<string, string | undefined> | null;
  readonly body?: string | null;
  readonly isBase64Encoded?: boolean;
}

export interface WsResult {
  readonly statusCode: number;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string;
}

export const ok: WsResult = { statusCode: 200 };

/**
 * The request context of a WebSocket event (shared/request-context.ts): API Gateway's request id,
 * the signer's principal when the event carries it, the operation ("connect", "message",
 * "disconnect") and the connection.
 */
export function wsContext(event: WsEvent, operation: string): RequestContext & { connection_id: string } {
  const arn = event.requestContext.identity?.userArn;
  return {
    request_id: event.requestContext.requestId ?? randomUUID(),
    operation,
    ...(arn ? { principal: principalOf(arn) } : {}),
    connection_id: event.requestContext.connectionId,
  };
}
