/**
 * The `Outcome` a request is counted under (the `Requests` metric, shared/metrics.ts), read from
 * its answer: `granted`, `refused`, `queued`, `timeout` (an acquire), `cancelled` (a cancel),
 * `ok` (anything else that succeeded), or the error code of a refusal.
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';

interface Answer {
  readonly acquired?: unknown;
  readonly queued?: unknown;
  readonly cancelled?: unknown;
  readonly released?: unknown;
  readonly error?: { readonly code?: unknown };
}

function parse(body: string | undefined): Answer {
  if (!body) return {};
  try {
    const value: unknown = JSON.parse(body);
    return typeof value === 'object' && value !== null ? (value as Answer) : {};
  } catch {
    return {};
  }
}

/** Whether the request asked to wait (an acquire answered "not acquired" at its deadline timed out). */
function askedToWait(event: APIGatewayProxyEventV2): boolean {
  if (!event.body) return false;
  try {
    const raw = event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : event.body;
    const wait = (JSON.parse(raw) as { wait_timeout_ms?: unknown }).wait_timeout_ms;
    return typeof wait === 'number' && wait > 0;
  } catch {
    return false;
  }
}

/** The outcome of an HTTP request, from its answer (and, for an acquire not granted, its body). */
export function httpOutcome(
  event: APIGatewayProxyEventV2,
  result: APIGatewayProxyStructuredResultV2,
): string {
  const answer = parse(result.body);
  const status = result.statusCode ?? 200;
  if (status >= 400) return typeof answer.error?.code === 'string' ? answer.error.code : `HTTP_${status}`;
  if (answer.acquired === true) return 'granted';
  if (answer.queued === true) return 'queued';
  if (answer.cancelled === true) return 'cancelled';
  if (answer.acquired === false) return askedToWait(event) ? 'timeout' : 'refused';
  if (answer.released === false) return 'refused';
  return 'ok';
}

/** The outcome of a WebSocket event: its status's error code, or `ok`. */
export function wsOutcome(result: { readonly statusCode: number; readonly body?: string }): string {
  if (result.statusCode < 400) return 'ok';
  const code = parse(result.body).error?.code;
  return typeof code === 'string' ? code : `HTTP_${result.statusCode}`;
}
