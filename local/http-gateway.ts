/**
 * Plays API Gateway's HTTP API (payload format 2.0) on localhost: matches
 * the same route keys, checks SigV4 like an IAM-authorized route, builds the
 * event a Lambda function receives and calls the same handler module.
 *
 * Gateway-level refusals (no route, bad signature) carry API Gateway's own
 * `{message}` body plus latchkey's `{error: {code, message}}`, so a client
 * written against either keeps working.
 *
 * One difference from AWS, on purpose: a lock name or prefix the function would
 * refuse (400 INVALID_NAME) is refused before the signature is checked, with the
 * function's own answer. API Gateway checks SigV4 first, against the canonical
 * path SigV4 defines for services other than S3 (empty and dot segments removed,
 * each segment URI-encoded twice); a signer that canonicalizes otherwise (curl's
 * --aws-sigv4, for one) is then told "signature does not match" for what is
 * really a bad name. A valid name has no escape, no empty and no dot level, so
 * such signers agree with SigV4 on its canonical path (but for ':', which SigV4
 * escapes: test/unit/names.test.ts).
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { LatchkeyError } from '../lambdas/core/errors';
import { ANONYMOUS, LOCAL_ACCOUNT, localPrincipal } from '../lambdas/core/principal';
import type { PathEvent } from '../lambdas/http/lock-path';
import { errorResponse, type HttpResult } from '../lambdas/shared/http';
import { type AnyHandler, lambdaContext } from './handlers';
import { type HostCheck, hardenServer, type RequestTimeouts, SERVER_OPTIONS } from './origin';
import { PROMETHEUS_CONTENT_TYPE } from './prometheus';
import { type LocalKeys, verifySigV4 } from './sigv4';

export interface GatewayRoute {
  readonly key: string;
  readonly handler: AnyHandler;
  /**
   * What the function reads from the path (a lock name or prefix: lambdas/http/lock-path.ts), run
   * before the signature is checked: a bad name gets the function's own 400, never a signature
   * error (a client's signer may canonicalize "a b", "café" or "a//b" otherwise than this one).
   */
  readonly readPath?: (event: PathEvent) => unknown;
  /** The function's timeout (its spec's timeoutSeconds, in ms; default 10 s): an HTTP wait needs 29 s. */
  readonly timeoutMs?: number;
}

export interface GatewayOptions {
  readonly routes: readonly GatewayRoute[];
  /** Verify SigV4 (the default) or let every request through (`npm start -- --no-auth`). */
  readonly auth: 'sigv4' | 'none';
  /** The key pairs SigV4 accepts (each access key a principal); default `local:local`. */
  readonly keys?: LocalKeys;
  /** Which Host and Origin headers are accepted (DNS rebinding). */
  readonly hosts: HostCheck;
  /** How long a client may take to send a request (default REQUEST_TIMEOUTS). */
  readonly timeouts?: RequestTimeouts;
  /**
   * Serves `GET /metrics` (outside /api/v1, like a scrape endpoint: unsigned, but behind the Host
   * and Origin checks): the functions' metrics in Prometheus' text format (local/prometheus.ts).
   */
  readonly metrics?: () => string;
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

/** A 400 from what the route reads from its path, or undefined (the rest is the function's to answer). */
function pathRefusal(route: GatewayRoute, event: PathEvent): HttpResult | undefined {
  try {
    route.readPath?.(event);
  } catch (error) {
    if (error instanceof LatchkeyError && error.status === 400) return errorResponse(error);
  }
  return undefined;
}

function send(res: ServerResponse, result: HttpResult, requestId: string): void {
  const body = result.isBase64Encoded ? Buffer.from(result.body ?? '', 'base64') : (result.body ?? '');
  res.writeHead(result.statusCode ?? 200, { ...result.headers, 'apigw-requestid': requestId } as Record<
    string,
    string
  >);
  res.end(body);
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

  const server = createServer(SERVER_OPTIONS, async (req, res) => {
    try {
      let url: URL;
      try {
        url = new URL(req.url ?? '/', 'http://localhost');
      } catch {
        return gatewayRefusal(res, 400, 'Bad Request', 'INVALID_REQUEST');
      }
      const rawPath = url.pathname;
      const rawQuery = url.search.slice(1);
      let path: string | undefined;
      try {
        path = decodeURIComponent(rawPath);
      } catch {
        path = undefined;
      }
      const method = req.method ?? 'GET';
      const match = routes
        .filter((r) => r.method === method)
        .map((r) => ({ r, m: (path ?? rawPath).match(r.pattern) }))
        .find((x) => x.m);
      // A bad escape: the lock routes say what is wrong with the name (below); any other route, this.
      if (path === undefined && !match?.r.route.readPath)
        return gatewayRefusal(res, 400, 'Bad Request', 'INVALID_REQUEST');
      // Addressed to another name, or from another site's page: refused before anything is read.
      const headers = headerMap(req);
      const refused = options.hosts.refusal(headers, options.auth === 'none');
      if (refused) {
        res.shouldKeepAlive = false;
        return gatewayRefusal(res, 403, refused, 'FORBIDDEN');
      }
      if (options.metrics && rawPath === '/metrics' && (method === 'GET' || method === 'HEAD')) {
        res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'cache-control': 'no-store' });
        res.end(method === 'HEAD' ? undefined : options.metrics());
        return;
      }
      let body: Buffer | undefined;
      try {
        body = await readBody(req);
      } catch {
        // The client went away (or timed out) mid-body: nobody to answer.
        res.destroy();
        return;
      }
      if (body === undefined) {
        res.shouldKeepAlive = false; // the rest of the body is not read: this connection is done
        return gatewayRefusal(res, 413, 'Request Entity Too Large', 'INVALID_REQUEST');
      }
      if (!match?.m) return gatewayRefusal(res, 404, 'Not Found', 'NOT_FOUND');
      const pathParameters = Object.fromEntries(match.r.params.map((p, i) => [p, match.m?.[i + 1] ?? '']));
      const badPath = pathRefusal(match.r.route, { rawPath, pathParameters });
      if (badPath) return send(res, badPath, randomUUID());
      if (path === undefined) return gatewayRefusal(res, 400, 'Bad Request', 'INVALID_REQUEST');

      let accessKey = 'anonymous';
      if (options.auth === 'sigv4') {
        const verification = await verifySigV4({ method, rawPath, rawQuery, headers, body }, options.keys);
        if (!verification.ok) return gatewayRefusal(res, 403, verification.reason, 'UNAUTHORIZED');
        accessKey = verification.accessKeyId;
      }
      // What API Gateway's IAM authorizer puts in the context: the caller's identity.
      const userArn = options.auth === 'sigv4' ? localPrincipal(accessKey) : ANONYMOUS;
      const iam = { accessKey, accountId: LOCAL_ACCOUNT, callerId: accessKey, userArn, userId: accessKey };
      const requestId = randomUUID();
      const now = new Date();
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
          authorizer: { iam },
        } as APIGatewayProxyEventV2['requestContext'],
        body: body.length ? body.toString('utf8') : undefined,
        isBase64Encoded: false,
      };
      send(
        res,
        await match.r.route.handler(event, lambdaContext(requestId, match.r.route.timeoutMs)),
        requestId,
      );
    } catch (error) {
      // A handler that throws is a Lambda failure: API Gateway answers 500 Internal Server Error.
      console.error('local gateway: function failed', error);
      if (!res.headersSent) gatewayRefusal(res, 500, 'Internal Server Error', 'INTERNAL');
      else res.end();
    }
  });
  return hardenServer(server, options.timeouts);
}
