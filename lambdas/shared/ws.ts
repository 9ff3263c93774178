/** What the WebSocket handlers share: the event shape API Gateway sends them. */
export interface WsEvent {
  readonly requestContext: {
    readonly connectionId: string;
    readonly routeKey: string;
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
