/**
 * Plays API Gateway's WebSocket API on localhost: SigV4 on the opening
 * handshake (IAM authorizes `$connect` only, as on AWS), `$connect`,
 * `$default` and `$disconnect` calling the same handler modules, and the
 * management endpoint (`POST /<stage>/@connections/<id>`, 410 Gone for an
 * unknown connection) that the functions' ApiGatewayManagementApiClient
 * posts to. Limits follow API Gateway: 128 KiB frames, 10 min idle, 2 h
 * per connection.
 */
import { randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import {
  createServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import { ANONYMOUS, localPrincipal } from '../lambdas/core/principal';
import { describeError, log } from '../lambdas/shared/log';
import type { WsEvent, WsResult } from '../lambdas/shared/ws';
import { lambdaContext } from './handlers';
import { type HostCheck, hardenServer, SERVER_OPTIONS } from './origin';
import { type LocalKeys, verifySigV4 } from './sigv4';

type WsHandler = (event: WsEvent, context: ReturnType<typeof lambdaContext>) => Promise<WsResult>;

export interface WsGatewayOptions {
  readonly stage: string;
  readonly handlers: {
    readonly connect: WsHandler;
    readonly disconnect: WsHandler;
    readonly message: WsHandler;
  };
  readonly auth: 'sigv4' | 'none';
  /** The key pairs SigV4 accepts on the handshake (each access key a principal); default `local:local`. */
  readonly keys?: LocalKeys;
  /** Which Host and Origin headers the handshake may carry (DNS rebinding). */
  readonly hosts: HostCheck;
  /** @default 600000 (API Gateway: 10 minutes) */
  readonly idleTimeoutMs?: number;
  /** @default 7200000 (API Gateway: 2 hours) */
  readonly maxConnectionMs?: number;
}

export interface WsGateway {
  /** Where clients open WebSockets. */
  readonly server: Server;
  /**
   * API Gateway's management API (`@connections`), for the functions only: serve it on a loopback
   * port of its own; every request must start with `managementBase` (a random secret per run).
   */
  readonly management: Server;
  readonly managementBase: string;
  readonly connections: ReadonlyMap<string, WebSocket>;
  /** Closes every connection, stops calling handlers and waits for the calls in flight. */
  close(): Promise<void>;
}

const MAX_FRAME_BYTES = 128 * 1024;
/** Messages of one connection being handled at once; past this a message is answered THROTTLED, unread. */
const MAX_IN_FLIGHT_PER_CONNECTION = 32;
const THROTTLED = {
  type: 'error',
  error: {
    code: 'THROTTLED',
    message: 'too many messages in flight on this connection: wait for their answers',
  },
};

/** The code a refusal of the gateway's own carries, by status. */
const GATEWAY_CODES: Record<number, string> = {
  400: 'INVALID_REQUEST',
  403: 'UNAUTHORIZED',
  404: 'NOT_FOUND',
  500: 'INTERNAL',
};

/**
 * Refuses a handshake with an HTTP answer: API Gateway's `{message}` plus latchkey's
 * `{error: {code, message}}`, as the HTTP gateway answers (a `ws` client shows it on
 * 'unexpected-response'). `error` is what $connect answered, when it refused.
 */
function refuseUpgrade(
  socket: Duplex,
  status: number,
  reason: string,
  error: { code: string; message: string } = {
    code: GATEWAY_CODES[status] ?? 'INVALID_REQUEST',
    message: reason,
  },
): void {
  const body = JSON.stringify({ message: error.message, error });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Refused'}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** The error $connect answered with (its JSON body), if it said one. */
function connectRefusal(result: WsResult | undefined): { code: string; message: string } | undefined {
  try {
    const error = (JSON.parse(result?.body ?? '') as { error?: { code?: unknown; message?: unknown } }).error;
    if (typeof error?.code === 'string' && typeof error.message === 'string')
      return { code: error.code, message: error.message };
  } catch {
    // no JSON body: the status alone
  }
  return undefined;
}

/** Where this server is, as a client should write it: ws://127.0.0.1:3001 */
function origin(req: IncomingMessage): string {
  const address = (req.socket.localAddress ?? '127.0.0.1').replace(/^::ffff:/, '');
  return `ws://${address.includes(':') ? `[${address}]` : address}:${req.socket.localPort}`;
}

function parseUrl(target: string | undefined): URL | undefined {
  try {
    return new URL(target ?? '/', 'http://localhost');
  } catch {
    return undefined;
  }
}

function headerMap(req: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers))
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(',') : value;
  return headers;
}

export function createWsGateway(options: WsGatewayOptions): WsGateway {
  const connections = new Map<string, WebSocket>();
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });
  let closing = false;
  const inFlight = new Set<Promise<unknown>>();

  const context = (connectionId: string, routeKey: string, eventType: string) => ({
    connectionId,
    routeKey,
    eventType,
    requestTimeEpoch: Date.now(),
    requestId: randomUUID(),
    stage: options.stage,
    apiId: 'local',
  });

  function invoke(handler: WsHandler, event: WsEvent): Promise<WsResult | undefined> {
    if (closing) return Promise.resolve(undefined);
    const call = handler(event, lambdaContext(randomUUID())).catch((error: unknown) => {
      log('error', 'local websocket gateway: function failed', describeError(error));
      return { statusCode: 500 };
    });
    inFlight.add(call);
    void call.finally(() => inFlight.delete(call));
    return call;
  }

  function managementCall(req: IncomingMessage, res: ServerResponse, id: string, body: Buffer): void {
    const ws = connections.get(id);
    if (!ws || ws.readyState !== ws.OPEN) {
      res.writeHead(410, { 'content-type': 'application/json', 'x-amzn-errortype': 'GoneException' });
      res.end(JSON.stringify({ message: `connection ${id} is gone` }));
      return;
    }
    if (req.method === 'POST') ws.send(body.toString('utf8'));
    else if (req.method === 'DELETE') ws.close(1000, 'closed by the service');
    res.writeHead(req.method === 'DELETE' ? 204 : 200, { 'content-type': 'application/json' });
    res.end(req.method === 'GET' ? JSON.stringify({ ConnectedAt: new Date().toISOString() }) : undefined);
  }

  const secret = randomBytes(16).toString('hex');
  const managementBase = `/${secret}/${options.stage}`;
  const management = hardenServer(
    createServer(SERVER_OPTIONS, async (req, res) => {
      // The secret first: a request without it gets nothing read.
      const path = req.url ?? '/';
      const prefix = `${managementBase}/@connections/`;
      const known =
        path.length > prefix.length &&
        timingSafeEqual(Buffer.from(path.slice(0, prefix.length)), Buffer.from(prefix));
      if (!known) {
        res.writeHead(403, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ message: 'Forbidden' }));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      try {
        for await (const chunk of req) {
          size += (chunk as Buffer).byteLength;
          if (size > MAX_FRAME_BYTES) break;
          chunks.push(chunk as Buffer);
        }
      } catch {
        res.destroy(); // the caller went away mid-body
        return;
      }
      if (size > MAX_FRAME_BYTES) {
        res.writeHead(413, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ message: 'frame too large' }));
        return;
      }
      let id: string;
      try {
        id = decodeURIComponent(path.slice(prefix.length).split('?')[0] as string);
      } catch {
        res.writeHead(400).end();
        return;
      }
      managementCall(req, res, id, Buffer.concat(chunks));
    }),
  );

  // The public port: WebSocket handshakes only.
  const server = hardenServer(
    createServer(SERVER_OPTIONS, (req, res) => {
      const message = `this port serves WebSockets only: open one to ${origin(req)}/${options.stage}?client_id=NAME`;
      res.writeHead(426, { 'content-type': 'application/json', upgrade: 'websocket' });
      res.end(JSON.stringify({ message, error: { code: 'INVALID_REQUEST', message } }));
    }),
  );

  server.on('upgrade', async (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy()); // a client that vanishes mid-handshake
    const url = parseUrl(req.url);
    if (!url) return refuseUpgrade(socket, 400, 'malformed request target');
    if (url.pathname !== `/${options.stage}` && url.pathname !== `/${options.stage}/`)
      return refuseUpgrade(
        socket,
        404,
        `no WebSocket API at ${url.pathname}: the WebSocket URL is ${origin(req)}/${options.stage}?client_id=NAME`,
      );
    const headers = headerMap(req);
    const refused = options.hosts.refusal(headers, options.auth === 'none');
    if (refused) return refuseUpgrade(socket, 403, refused);
    let identity = { userArn: ANONYMOUS, accessKey: 'anonymous' };
    if (options.auth === 'sigv4') {
      const verdict = await verifySigV4(
        {
          method: 'GET',
          rawPath: url.pathname,
          rawQuery: url.search.slice(1),
          headers,
          body: new Uint8Array(),
        },
        options.keys,
      );
      if (!verdict.ok) return refuseUpgrade(socket, 403, verdict.reason);
      identity = { userArn: localPrincipal(verdict.accessKeyId), accessKey: verdict.accessKeyId };
    }
    const connectionId = `${randomBytes(10).toString('base64url')}=`;
    const query = Object.fromEntries(url.searchParams);
    const connected = await invoke(options.handlers.connect, {
      requestContext: {
        ...context(connectionId, '$connect', 'CONNECT'),
        identity,
        ...(headers.host ? { domainName: headers.host } : {}),
      },
      queryStringParameters: Object.keys(query).length ? query : null,
    });
    if (connected?.statusCode !== 200) {
      // $connect's own answer, passed on: what is wrong with the handshake and how to fix it.
      const status = connected?.statusCode ?? 500;
      const refusal = connectRefusal(connected);
      return refuseUpgrade(socket, status, refusal?.message ?? STATUS_CODES[status] ?? 'Refused', refusal);
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      connections.set(connectionId, ws);
      const idleMs = options.idleTimeoutMs ?? 600_000;
      let idle = setTimeout(() => ws.close(1001, 'Going away'), idleMs);
      const lifetime = setTimeout(() => ws.close(1001, 'Going away'), options.maxConnectionMs ?? 7_200_000);
      let inFlightHere = 0;
      ws.on('message', (data, isBinary) => {
        if (inFlightHere >= MAX_IN_FLIGHT_PER_CONNECTION) {
          // API Gateway throttles a flooding client; here it is refused without calling the function.
          ws.send(JSON.stringify(THROTTLED));
          return;
        }
        inFlightHere++;
        clearTimeout(idle);
        idle = setTimeout(() => ws.close(1001, 'Going away'), idleMs);
        const body = Buffer.isBuffer(data) ? data : Buffer.concat(data as Buffer[]);
        void invoke(options.handlers.message, {
          requestContext: context(connectionId, '$default', 'MESSAGE'),
          body: isBinary ? body.toString('base64') : body.toString('utf8'),
          isBase64Encoded: isBinary,
        }).finally(() => inFlightHere--);
      });
      ws.on('close', () => {
        clearTimeout(idle);
        clearTimeout(lifetime);
        connections.delete(connectionId);
        void invoke(options.handlers.disconnect, {
          requestContext: context(connectionId, '$disconnect', 'DISCONNECT'),
        });
      });
    });
  });

  return {
    server,
    management,
    managementBase,
    connections,
    async close() {
      closing = true;
      for (const ws of connections.values()) ws.terminate();
      await Promise.allSettled([...inFlight]);
    },
  };
}
