/**
 * Plays API Gateway's HTTP API (payload format 2.0) on localhost: matches
 * the same route keys, checks SigV4 like an IAM-authorized route, builds the
 * event a Lambda function receives and calls the same handler module.
 *
 * Gateway-level refusals (no route, bad signature) carry API Gateway's own
 * `{message}` body plus latchkey's `{error: {code, message}}`, so a client
 * written against either keeps working.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { type AnyHandler, lambdaContext } from './handlers';
import { type Verification, verifySigV4 } from './sigv4';

export interface GatewayRoute {
  readonly key: string;
  readonly handler: AnyHandler;
}

export interface GatewayOptions {
  readonly routes: readonly GatewayRoute[];
  /** Verify SigV4 (the default) or let every request through (`npm start -- --no-auth`). */
  readonly auth: 'sigv4' | 'none';
}

/** API Gateway's HTTP API refuses payloads over 10 MB before any function runs. */
const MAX_PAYLOAD_BYTES = 10 * 1024 * 1024;

interface CompiledRoute {
  readonly method: string;
  readonly pattern: RegExp;
  readonly params: readonly string[];
  readonly route: GatewayRoute;
}

function compileRoute(route: GatewayRoute): CompiledRoute {
  const [method, template] = route.key.split(' ') as [string, string];
  const params: string[] = [];
  const source = template
    .split('/')
    .map((segment) => {
      const variable = segment.match(/^\{([A-Za-z0-9_]+)(\+?)\}$/);
      if (!variable) return segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      params.push(variable[1] as string);
      return variable[2] ? '(.+)' : '([^/]+)';
    })
    .join('/');
  return { method, pattern: new RegExp(`^${source}$`), params, route };
}

function gatewayRefusal(res: ServerResponse, status: number, message: string, code: string): void {
  res.writeHead(status, { 'content-type': 'application/json', 'apigw-requestid': randomUUID() });
  res.end(JSON.stringify({ message, error: { code, message } }));
}

async function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).byteLength;
    if (size > MAX_PAYLOAD_BYTES) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function headerMap(req: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(',') : value;
  }
  return headers;
}

function queryParameters(rawQuery: string): Record<string, string> | undefined {
  if (!rawQuery) return undefined;
  const query: Record<string, string> = {};
  for (const [key, value] of new URLSearchParams(rawQuery))
    query[key] = key in query ? `${query[key]},${value}` : value;
  return query;
}

export function createHttpGateway(options: GatewayOptions): Server {
  const routes = options.routes.map(compileRoute);

  return createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const rawPath = url.pathname;
      const rawQuery = url.search.slice(1);
      let path: string;
      try {
        path = decodeURIComponent(rawPath);
      } catch {
        return gatewayRefusal(res, 400, 'Bad Request', 'INVALID_REQUEST');
      }
      const method = req.method ?? 'GET';
      const match = routes
        .filter((r) => r.method === method)
        .map((r) => ({ r, m: path.match(r.pattern) }))
        .find((x) => x.m);
      const body = await readBody(req);
      if (body === undefined) return gatewayRefusal(res, 413, 'Request Entity Too Large', 'INVALID_REQUEST');
      if (!match?.m) return gatewayRefusal(res, 404, 'Not Found', 'NOT_FOUND');

      const headers = headerMap(req);
      let verification: Verification = { ok: true, accessKeyId: 'anonymous' };
      if (options.auth === 'none' && headers.origin !== undefined) {
        // Without signatures, a web page could post to localhost; browsers always send Origin, curl and SDKs do not.
        return gatewayRefusal(
          res,
          403,
          'requests from browsers are refused when auth is off',
          'UNAUTHORIZED',
        );
      }
      if (options.auth === 'sigv4') {
        verification = await verifySigV4({ method, rawPath, rawQuery, headers, body });
        if (!verification.ok) return gatewayRefusal(res, 403, verification.reason, 'UNAUTHORIZED');
      }
      const requestId = randomUUID();
      const now = new Date();
      const pathParameters = Object.fromEntries(match.r.params.map((p, i) => [p, match.m?.[i + 1] ?? '']));
      const event: APIGatewayProxyEventV2 = {
        version: '2.0',
        routeKey: match.r.route.key,
        rawPath,
        rawQueryString: rawQuery,
        headers,
        ...(rawQuery ? { queryStringParameters: queryParameters(rawQuery) } : {}),
        ...(match.r.params.length ? { pathParameters } : {}),
        requestContext: {
          accountId: '000000000000',
          apiId: 'local',
          domainName: headers.host ?? 'localhost',
          domainPrefix: 'local',
          http: {
            method,
            path: rawPath,
            protocol: `HTTP/${req.httpVersion}`,
            sourceIp: req.socket.remoteAddress ?? '127.0.0.1',
            userAgent: headers['user-agent'] ?? '',
          },
          requestId,
          routeKey: match.r.route.key,
          stage: '$default',
          time: now.toISOString(),
          timeEpoch: now.getTime(),
          ...(verification.ok ? { authorizer: { iam: { accessKey: verification.accessKeyId } } } : {}),
        } as APIGatewayProxyEventV2['requestContext'],
        body: body.length ? body.toString('utf8') : undefined,
        isBase64Encoded: false,
      };
      const result = await match.r.route.handler(event, lambdaContext(requestId));
      const responseBody = result.isBase64Encoded
        ? Buffer.from(result.body ?? '', 'base64')
        : (result.body ?? '');
      res.writeHead(result.statusCode ?? 200, { ...result.headers, 'apigw-requestid': requestId } as Record<
        string,
        string
      >);
      res.end(responseBody);
    } catch (error) {
      // A handler that throws is a Lambda failure: API Gateway answers 500 Internal Server Error.
      console.error('local gateway: function failed', error);
      if (!res.headersSent) gatewayRefusal(res, 500, 'Internal Server Error', 'INTERNAL');
      else res.end();
    }
  });
}
