/**
 * Plays API Gateway's WebSocket API on localhost: SigV4 on the opening
 * handshake (IAM authorizes `$connect` only, as on AWS), `$connect`,
 * `$default` and `$disconnect` calling the same handler modules, and the
 * management endpoint (`POST /<stage>/@connections/<id>`, 410 Gone for an
 * unknown connection) that the functions' ApiGatewayManagementApiClient
 * posts to. Limits follow API Gateway: 128 KiB frames, 10 min idle, 2 h
 * per connection.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import { describeError, log } from '../lambdas/shared/log';
import type { WsEvent, WsResult } from '../lambdas/shared/ws';
import { lambdaContext } from './handlers';
import { verifySigV4 } from './sigv4';

type WsHandler = (event: WsEvent, context: ReturnType<typeof lambdaContext>) => Promise<WsResult>;

export interface WsGatewayOptions {
  readonly stage: string;
  readonly handlers: {
    readonly connect: WsHandler;
    readonly disconnect: WsHandler;
    readonly message: WsHandler;
  };
  readonly auth: 'sigv4' | 'none';
  /** @default 600000 (API Gateway: 10 minutes) */
  readonly idleTimeoutMs?: number;
  /** @default 7200000 (API Gateway: 2 hours) */
  readonly maxConnectionMs?: number;
}

export interface WsGateway {
  readonly server: Server;
  readonly connections: ReadonlyMap<string, WebSocket>;
  /** Closes every connection, stops calling handlers and waits for the calls in flight. */
  close(): Promise<void>;
}

const MAX_FRAME_BYTES = 128 * 1024;

function refuseUpgrade(socket: Duplex, status: number, reason: string): void {
  const body = JSON.stringify({ message: reason });
  socket.end(
    `HTTP/1.1 ${status} ${status === 403 ? 'Forbidden' : 'Refused'}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
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

  function management(req: IncomingMessage, res: ServerResponse, id: string, body: Buffer): void {
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

  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const match = path.match(new RegExp(`^/${options.stage}/@connections/([^/]+)$`));
    if (!match) {
      res.writeHead(426, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ message: `open a WebSocket to /${options.stage}` }));
      return;
    }
    management(req, res, decodeURIComponent(match[1] as string), Buffer.concat(chunks));
  });

  server.on('upgrade', async (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== `/${options.stage}` && url.pathname !== `/${options.stage}/`)
      return refuseUpgrade(socket, 404, `no WebSocket API at ${url.pathname}: use /${options.stage}`);
    const headers = headerMap(req);
    if (options.auth === 'sigv4') {
      const verdict = await verifySigV4({
        method: 'GET',
        rawPath: url.pathname,
        rawQuery: url.search.slice(1),
        headers,
        body: new Uint8Array(),
      });
      if (!verdict.ok) return refuseUpgrade(socket, 403, verdict.reason);
    } else if (headers.origin !== undefined) {
      return refuseUpgrade(socket, 403, 'connections from browsers are refused when auth is off');
    }
    const connectionId = `${randomBytes(10).toString('base64url')}=`;
    const query = Object.fromEntries(url.searchParams);
    const connected = await invoke(options.handlers.connect, {
      requestContext: context(connectionId, '$connect', 'CONNECT'),
      queryStringParameters: Object.keys(query).length ? query : null,
    });
    if (connected?.statusCode !== 200)
      return refuseUpgrade(socket, connected?.statusCode ?? 500, 'Forbidden');
    wss.handleUpgrade(req, socket, head, (ws) => {
      connections.set(connectionId, ws);
      const idleMs = options.idleTimeoutMs ?? 600_000;
      let idle = setTimeout(() => ws.close(1001, 'Going away'), idleMs);
      const lifetime = setTimeout(() => ws.close(1001, 'Going away'), options.maxConnectionMs ?? 7_200_000);
      ws.on('message', (data, isBinary) => {
        clearTimeout(idle);
        idle = setTimeout(() => ws.close(1001, 'Going away'), idleMs);
        const body = Buffer.isBuffer(data) ? data : Buffer.concat(data as Buffer[]);
        void invoke(options.handlers.message, {
          requestContext: context(connectionId, '$default', 'MESSAGE'),
          body: isBinary ? body.toString('base64') : body.toString('utf8'),
          isBase64Encoded: isBinary,
        });
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
    connections,
    async close() {
      closing = true;
      for (const ws of connections.values()) ws.terminate();
      await Promise.allSettled([...inFlight]);
    },
  };
}
