/**
 * Signed HTTP for the SDK: SigV4 (service execute-api) with @smithy/signature-v4
 * and credentials from the AWS default provider chain, keep-alive connections
 * (node:http and node:https), and retries of transient failures (network, 429, 5xx) with
 * jittered exponential backoff. A retried request is the same request (same
 * body, same request_id), so a retry can never produce a second grant.
 */
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { defaultProvider } from '@aws-sdk/credential-provider-node';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { EndpointError, errorFromResponse, LIMIT_CODES, UnavailableError } from './errors';
import { NodeSha256 } from './sha256';

export interface TransportOptions {
  /** The HTTP API's base URL, e.g. https://abc.execute-api.eu-west-1.amazonaws.com or http://127.0.0.1:3000 */
  readonly endpoint: string;
  /** Default: the region in the endpoint's host name, else AWS_REGION, else us-east-1. */
  readonly region?: string;
  /** Default: the AWS default provider chain; for a local endpoint, the local stack's `local`/`local`. */
  readonly credentials?: AwsCredentialIdentity | AwsCredentialIdentityProvider;
  /** Attempts per call, the first included (default 5). */
  readonly maxAttempts?: number;
  /**
   * Told as each retry of a transient failure (a throttle, a 5xx, no answer) is sent: the
   * failure, and which attempt this is of how many. Not for calls sent `quiet` (the SDK's own
   * clean-ups). Default: nothing is said.
   */
  readonly onRetry?: (failure: UnavailableError, next: number, of: number, call: string) => void;
}

/** The local stack's credentials (npm start). */
export const LOCAL_CREDENTIALS = { accessKeyId: 'local', secretAccessKey: 'local' } as const;

export const isLocalEndpoint = (url: string) =>
  /^(https?|wss?):\/\/(127\.0\.0\.1|localhost|\[::1\])(:|\/|$)/.test(url);

export function regionOf(endpoint: string, fallback = process.env.AWS_REGION ?? 'us-east-1'): string {
  return /\.execute-api\.([a-z0-9-]+)\.amazonaws\.com/.exec(endpoint)?.[1] ?? fallback;
}

/** Why a request got no answer, in a few words: `connect ECONNREFUSED 127.0.0.1:3000`, `no answer in time`. */
export function networkReason(error: unknown): string {
  const e = error as
    | { name?: string; message?: string; cause?: { message?: string; code?: string } }
    | undefined;
  if (e?.name === 'TimeoutError') return 'no answer in time';
  return e?.cause?.message ?? e?.cause?.code ?? e?.message ?? String(error);
}

/** Network failures before a request could reach anyone: the connection was refused or never made. */
const NEVER_SENT = /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH/;

/** Sleeps `ms`, or rejects with the signal's reason as soon as it is aborted. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const stop = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', stop);
      resolve();
    }, ms);
    signal?.addEventListener('abort', stop, { once: true });
  });
}
/**
 * A call as people name it: `renew jobs/a` for a lock's route (`inspect jobs/a` for its view),
 * else the method and path.
 */
export function callName(method: string, path: string): string {
  const [route = path] = path.split('?');
  const lock = /^\/api\/v1\/locks\/(.+?)(?:\/(acquire|release|renew|cancel|waits))?$/.exec(route);
  if (lock) return `${lock[2] ?? 'inspect'} ${lock[1]}`;
  return `${method} ${route}`;
}

/** Full-jitter exponential backoff: 50 ms doubling, capped at 2 s. */
export const backoffMs = (attempt: number) => Math.random() * Math.min(2_000, 50 * 2 ** attempt);

export interface Answer {
  readonly status: number;
  // biome-ignore lint/suspicious/noExplicitAny: JSON answers are checked field by field by the caller
  readonly body: any;
}

export class SignedTransport {
  readonly endpoint: URL;
  readonly region: string;
  private readonly signer: SignatureV4;
  private readonly maxAttempts: number;
  private readonly onRetry: TransportOptions['onRetry'];

  constructor(options: TransportOptions) {
    this.endpoint = new URL(options.endpoint);
    this.region = options.region ?? regionOf(options.endpoint);
    const credentials =
      options.credentials ?? (isLocalEndpoint(options.endpoint) ? LOCAL_CREDENTIALS : defaultProvider());
    this.signer = new SignatureV4({
      credentials,
      region: this.region,
      service: 'execute-api',
      sha256: NodeSha256,
    });
    this.maxAttempts = options.maxAttempts ?? 5;
    this.onRetry = options.onRetry;
  }

  /**
   * Sends a request, retrying transient failures; answers any 2xx or 4xx
   * that is not 429 as is. `timeoutMs` bounds each attempt (35 s by default:
   * an HTTP wait lasts up to 25 s), `attempts` the number of tries.
   */
  async send(
    method: string,
    path: string,
    body?: unknown,
    options: { signal?: AbortSignal; timeoutMs?: number; attempts?: number; quiet?: boolean } = {},
  ): Promise<Answer> {
    const { signal } = options;
    const attempts = options.attempts ?? this.maxAttempts;
    let last: unknown;
    // Whether any failed attempt may have reached the service and been applied.
    let reached = false;
    for (let attempt = 0; attempt < attempts; attempt++) {
      if (attempt > 0) await sleep(backoffMs(attempt), signal);
      signal?.throwIfAborted();
      if (attempt > 0 && !options.quiet) this.tellRetry(last, attempt + 1, attempts, callName(method, path));
      try {
        const answer = await this.once(method, path, body, signal, Math.ceil(options.timeoutMs ?? 35_000));
        // A limit's 429 is an answer (the request changed nothing); a throttle's is retried.
        const limit = answer.status === 429 && LIMIT_CODES.has(answer.body?.error?.code);
        if ((answer.status !== 429 && answer.status < 500) || limit) return answer;
        last = errorFromResponse(answer.status, answer.body);
        // A 5xx may follow a write that was made; a throttle's 429 refused the request.
        reached ||= answer.status >= 500;
      } catch (error) {
        // Aborted, or an endpoint that is not the API (a redirect): no retry helps.
        if (signal?.aborted || error instanceof EndpointError) throw error;
        last = error;
        reached ||= !NEVER_SENT.test(networkReason(error));
      }
    }
    const failure = this.unavailable(last);
    failure.mayHaveApplied = reached;
    throw failure;
  }

  /** onRetry, told as the next attempt starts; a listener that throws changes nothing. */
  private tellRetry(failure: unknown, attempt: number, attempts: number, call: string): void {
    try {
      this.onRetry?.(this.unavailable(failure), attempt, attempts, call);
    } catch {
      // A warning's listener failing is no reason to fail the call.
    }
  }

  /** A failed attempt as the typed error: a throttle's or 5xx's as answered, no answer as unreachable. */
  private unavailable(failure: unknown): UnavailableError {
    if (failure instanceof UnavailableError) return failure;
    const reason = networkReason(failure);
    return new UnavailableError(
      `latchkey at ${this.endpoint.origin} is unreachable (${reason}): check the client's endpoint, ${this.endpoint.origin}: it must be the HTTP API's URL (the stack's ApiUrl output; http://127.0.0.1:3000 for the local stack, started with npm start)`,
      undefined,
      { cause: failure, endpoint: this.endpoint.href, reason },
    );
  }

  /** Headers that sign a GET of `url` (a WebSocket handshake). */
  signedHeaders(url: URL): Promise<Record<string, string>> {
    return this.sign('GET', url, { host: url.host });
  }

  /** The headers of `method url` (with `headers` and `body`) signed with SigV4. */
  private async sign(
    method: string,
    url: URL,
    headers: Record<string, string>,
    body?: string,
  ): Promise<Record<string, string>> {
    const signed = await this.signer.sign(
      new HttpRequest({
        method,
        protocol: url.protocol.replace(/^ws/, 'http'),
        hostname: url.hostname,
        ...(url.port ? { port: Number(url.port) } : {}),
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        headers,
        ...(body !== undefined ? { body } : {}),
      }),
    );
    return signed.headers as Record<string, string>;
  }

  private async once(
    method: string,
    path: string,
    body: unknown,
    signal: AbortSignal | undefined,
    timeoutMs: number,
  ): Promise<Answer> {
    const url = new URL(path, this.endpoint);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { host: url.host };
    if (payload !== undefined) headers['content-type'] = 'application/json';
    const signedHeaders = await this.sign(method, url, headers, payload);
    const { status, text, location } = await exchange(url, method, signedHeaders, payload, signal, timeoutMs);
    // fetch followed redirects; a signed request must not (the signature covers the host), and a
    // 3xx taken as an answer would read as success: the endpoint is wrong.
    if (status >= 300 && status < 400)
      throw new EndpointError(
        `${this.endpoint.origin} answered ${status} to ${method} ${url.pathname}${location ? `, redirecting to ${location}` : ''}: the endpoint must be the HTTP API's URL itself (the stack's ApiUrl output; http://127.0.0.1:3000 for the local stack)`,
        'http',
        this.endpoint.href,
        status,
      );
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = { message: text.slice(0, 200) };
    }
    return { status, body: parsed };
  }
}

/**
 * Keep-alive connections for every client in the process, over node:http(s) rather than fetch:
 * on loopback a request costs about a quarter of what undici's fetch does (measured in `npm run
 * bench`'s profile). Idle sockets are unref'd by the agent, so they never hold a process open.
 */
const byProtocol = {
  http: { request: httpRequest, agent: new HttpAgent({ keepAlive: true }) },
  https: { request: httpsRequest, agent: new HttpsAgent({ keepAlive: true }) },
};

/**
 * One HTTP exchange: the status, the `location` header and the whole body as text. Rejects on a
 * network failure, with an error named TimeoutError after `timeoutMs`, or with the signal's reason
 * once it is aborted. Its listener on the signal goes when the exchange ends, so a long-lived
 * signal (a session's, an application's shutdown signal) gathers nothing across requests.
 */
function exchange(
  url: URL,
  method: string,
  headers: Record<string, string>,
  payload: string | undefined,
  signal: AbortSignal | undefined,
  timeoutMs: number,
): Promise<{ status: number; text: string; location: string | undefined }> {
  const { request, agent } = url.protocol === 'https:' ? byProtocol.https : byProtocol.http;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    let settled = false;
    const settle = (end: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      end();
    };
    const req = request(url, {
      method,
      headers: payload === undefined ? headers : { ...headers, 'content-length': Buffer.byteLength(payload) },
      agent,
    });
    const fail = (error: unknown) => {
      settle(() => reject(error));
      req.destroy();
    };
    const onAbort = () => fail(signal?.reason);
    const timer = setTimeout(() => {
      const timedOut = new Error(`no answer in ${timeoutMs} ms`);
      timedOut.name = 'TimeoutError';
      fail(timedOut);
    }, timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', fail);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', fail);
      res.on('aborted', () => fail(new Error('the answer was cut off')));
      res.on('end', () =>
        settle(() =>
          resolve({
            status: res.statusCode ?? 502,
            text: Buffer.concat(chunks).toString('utf8'),
            location: res.headers.location,
          }),
        ),
      );
    });
    req.end(payload);
  });
}
