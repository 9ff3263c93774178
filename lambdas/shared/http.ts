/**
 * The HTTP plumbing every route shares: body and query parsing with the wire
 * schemas, JSON responses, and one error mapping (middy onError), so a
 * handler is only "parse, call the store, answer".
 */
import { randomUUID } from 'node:crypto';
import middy from '@middy/core';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import type * as z from 'zod/mini';
import { type ErrorDetail, invalidRequest, LatchkeyError } from '../core/errors';
import { principalOf } from '../core/principal';
import { MAX_BODY_BYTES } from '../core/wire';
import { type Deps, getDeps } from './deps';
import { describeError, log } from './log';
import { instrumented } from './metrics';
import { httpOutcome } from './outcomes';
import { type RequestContext, withRequestContext } from './request-context';

export type HttpEvent = APIGatewayProxyEventV2;
export type HttpResult = APIGatewayProxyStructuredResultV2;

const JSON_HEADERS = { 'content-type': 'application/json', 'cache-control': 'no-store' };

export function json(statusCode: number, body: unknown, headers: Record<string, string> = {}): HttpResult {
  return { statusCode, headers: { ...JSON_HEADERS, ...headers }, body: JSON.stringify(body) };
}

export function errorResponse(error: LatchkeyError, extra: Record<string, unknown> = {}): HttpResult {
  const retryAfter: Record<string, string> =
    error.retryAfterMs === undefined
      ? {}
      : { 'retry-after': String(Math.max(1, Math.ceil(error.retryAfterMs / 1000))) };
  return json(error.status, { ...extra, ...error.toBody() }, retryAfter);
}

/** What `input` holds at `path` (undefined where it holds nothing). */
function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let at = input;
  for (const key of path) {
    if (at === null || typeof at !== 'object' || !Object.hasOwn(at, key)) return undefined;
    at = (at as Record<PropertyKey, unknown>)[key];
  }
  return at;
}

function issuesToDetails(issues: readonly z.core.$ZodIssue[], input: unknown, what: string): ErrorDetail[] {
  return issues.map((issue) => {
    const path = issue.path.map(String).join('.') || what;
    if (issue.code === 'unrecognized_keys')
      return { path, message: `unknown field(s): ${issue.keys.join(', ')}` };
    if (issue.code === 'invalid_type') {
      if (valueAt(input, issue.path) === undefined) return { path, message: `${path} is required` };
      // The schema's own words when it has them ("an integer number of milliseconds"), else zod's type.
      if (!/^Invalid input/.test(issue.message)) return { path, message: issue.message };
      return {
        path,
        message: `${path} must be ${article(issue.expected === 'int' ? 'integer' : issue.expected)}`,
      };
    }
    return { path, message: issue.message };
  });
}

const article = (type: string) => (/^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`);

/** Validates `value` with `schema` or throws INVALID_REQUEST naming every problem. */
export function validate<S extends z.ZodMiniType>(schema: S, value: unknown, what: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const details = issuesToDetails(result.error.issues, value, what);
  throw invalidRequest(
    `${what} is invalid: ${details.map((d) => `${d.path}: ${d.message}`).join('; ')}`,
    details,
  );
}

/** The JSON body of a request, checked against `schema`. */
export function parseBody<S extends z.ZodMiniType>(event: HttpEvent, schema: S): z.output<S> {
  if (event.body === undefined || event.body === null || event.body === '') {
    throw invalidRequest('request body is missing: send a JSON object');
  }
  const raw = event.isBase64Encoded ? Buffer.from(event.body, 'base64') : Buffer.from(event.body, 'utf8');
  return parseJsonObject(raw, schema, 'request body', MAX_BODY_BYTES);
}

/** A JSON object of at most `maxBytes`, checked against `schema` (HTTP bodies, WebSocket messages). */
export function parseJsonObject<S extends z.ZodMiniType>(
  raw: Buffer,
  schema: S,
  what: string,
  maxBytes: number,
): z.output<S> {
  if (raw.byteLength > maxBytes) {
    throw invalidRequest(`${what} is ${raw.byteLength} bytes; the limit is ${maxBytes}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch (error) {
    throw invalidRequest(`${what} is not valid JSON (${(error as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw invalidRequest(`${what} must be a JSON object`);
  }
  return validate(schema, parsed, what);
}

/** Query string parameters (API Gateway joins repeated ones with ','), checked against `schema`. */
export function parseQuery<S extends z.ZodMiniType>(event: HttpEvent, schema: S): z.output<S> {
  return validate(schema, event.queryStringParameters ?? {}, 'query string');
}

/**
 * The caller's principal: the IAM identity API Gateway verified (payload 2.0, IAM authorizer). A
 * request without one is refused: every route is IAM-authorized, so that is a misconfiguration.
 */
export function principalFrom(event: HttpEvent): string {
  const context = event.requestContext as HttpEvent['requestContext'] & {
    authorizer?: { iam?: { userArn?: string } };
  };
  const arn = context.authorizer?.iam?.userArn;
  if (!arn)
    throw new LatchkeyError('UNAUTHORIZED', 'the request carries no IAM identity (sign it with SigV4)');
  return principalOf(arn);
}

/** A LatchkeyError as is; anything else is logged and becomes INTERNAL (never shown to clients in detail). */
export function asLatchkeyError(error: unknown): LatchkeyError {
  if (error instanceof LatchkeyError) {
    if (error.status >= 500) log('error', 'request failed', { code: error.code, ...describeError(error) });
    return error;
  }
  log('error', 'unexpected failure', describeError(error));
  return new LatchkeyError('INTERNAL', 'internal error; see the service logs');
}

/**
 * Operations by route key (a lock command's is its action), as the metric catalog names them: the
 * `operation` of every log line and the `Operation` dimension of every metric.
 */
const OPERATIONS: Record<string, string> = {
  'GET /api/v1/locks/{proxy+}': 'inspect',
  'GET /api/v1/list/{proxy+}': 'list',
  'GET /api/v1/list': 'list',
  'POST /api/v1/sessions': 'open',
  'POST /api/v1/sessions/{id}/heartbeat': 'heartbeat',
  'DELETE /api/v1/sessions/{id}': 'close',
  'POST /api/v1/admin/locks/{proxy+}': 'force-release',
  'GET /api/v1/admin/sessions': 'admin-list-sessions',
  'DELETE /api/v1/admin/sessions/{id}': 'admin-end-session',
  'GET /api/v1/health': 'health',
};
const LOCK_ACTIONS = new Set(['acquire', 'release', 'renew', 'cancel']);

/** What a request does: "acquire", "inspect", "force-release"… (the route key if unknown). */
export function operationOf(event: Pick<HttpEvent, 'routeKey' | 'rawPath'>): string {
  if (event.routeKey === 'POST /api/v1/locks/{proxy+}') {
    const action = (event.rawPath ?? '').split('/').pop() ?? '';
    return LOCK_ACTIONS.has(action) ? action : 'lock-command';
  }
  return OPERATIONS[event.routeKey] ?? event.routeKey;
}

/** The request context of an HTTP request: API Gateway's request id, the caller, the operation. */
export function httpContext(event: HttpEvent): RequestContext {
  let principal: string | undefined;
  try {
    principal = principalFrom(event);
  } catch {
    principal = undefined; // unsigned: the route refuses it itself
  }
  return {
    request_id: event.requestContext?.requestId ?? randomUUID(),
    operation: operationOf(event),
    ...(principal === undefined ? {} : { principal }),
  };
}

/**
 * How long before the function's timeout a request still running is answered 503 UNAVAILABLE
 * (DynamoDB answering slowly: each of a wait's last calls may take its whole 6 s budget). Past
 * the timeout the caller would get API Gateway's bare 500 instead. The work left runs on, or
 * not, like a request whose answer was lost: a retry with the same request_id finds its outcome.
 */
export const ANSWER_EARLY_MS = 1_000;

const outOfTime = () =>
  new LatchkeyError(
    'UNAVAILABLE',
    'the request ran out of time (DynamoDB is answering slowly); retry it with the same request_id, which finds its outcome',
    undefined,
    1_000,
  );

/**
 * Wraps a route: it gets the event and the services (the composition root, or what a test hands
 * in); any LatchkeyError becomes its JSON answer; anything else is logged and answered 500.
 */
export function httpRoute(
  run: (event: HttpEvent, deps: Deps) => Promise<HttpResult>,
  deps: () => Deps = getDeps,
) {
  const route = middy<HttpEvent, HttpResult>({
    timeoutEarlyInMillis: ANSWER_EARLY_MS,
    timeoutEarlyResponse: () => {
      throw outOfTime();
    },
  })
    .handler((event) => run(event, deps()))
    .use({
      onError: async (request) => {
        request.response = errorResponse(asLatchkeyError(request.error));
      },
    });
  // The whole invocation (middlewares and error mapping included) runs in the request's context.
  return (event: HttpEvent, context: Context): Promise<HttpResult> =>
    withRequestContext(httpContext(event), () =>
      // Counted (Requests by operation and outcome, Latency) and its metrics flushed once.
      instrumented(
        () => route(event, context),
        (result) => httpOutcome(event, result),
      ),
    );
}
