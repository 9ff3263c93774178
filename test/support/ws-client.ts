/**
 * A SigV4-signed WebSocket client for tests: collects frames and waits for the ones asked for.
 *
 * The WebSocket only delivers: `hello` tells the connection's id, a wait is an HTTP acquire
 * naming it (`connection_id`), signed with the same credentials as the handshake (the connection
 * must be the caller's), and the grant or the end of the wait comes back as a frame.
 */
import { randomUUID } from 'node:crypto';
import { HttpRequest } from '@smithy/protocol-http';
import WebSocket from 'ws';
import { localSigner, type SignedResponse, signedClient } from './signed-fetch';

// biome-ignore lint/suspicious/noExplicitAny: test frames are inspected field by field
export type AnyFrame = Record<string, any>;

export interface Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

const LOCAL_CREDENTIALS: Credentials = { accessKeyId: 'local', secretAccessKey: 'local' };

export async function signedHeaders(url: URL, credentials: Credentials = LOCAL_CREDENTIALS) {
  const signed = await localSigner(credentials).sign(
    new HttpRequest({
      method: 'GET',
      protocol: 'http:',
      hostname: url.hostname,
      port: Number(url.port),
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: { host: url.host },
    }),
  );
  return signed.headers as Record<string, string>;
}

/** Where a test socket connects: the stack's WebSocket URL, or the stack (its HTTP URL too, for acquires). */
export type SocketTarget = string | { readonly url: string; readonly wsUrl: string };

export interface OpenOptions {
  /** false: an unsigned handshake (refused). */
  readonly sign?: boolean;
  /** The principal of the connection and of its HTTP calls (default local:local). */
  readonly credentials?: Credentials;
  /** The HTTP API, when `target` is only the WebSocket URL. */
  readonly httpUrl?: string;
}

/** An HTTP answer to an acquire, with the request id it was sent with. */
export type AcquireAnswer = SignedResponse & { readonly requestId: string };

const newRequestId = () => `r-${randomUUID()}`;
const ended = (f: AnyFrame) => f.type === 'granted' || f.type === 'timeout' || f.type === 'error';

export class TestSocket {
  readonly frames: AnyFrame[] = [];
  private waiters: { test: (f: AnyFrame) => boolean; resolve: (f: AnyFrame) => void }[] = [];
  private readonly consumed = new Set<AnyFrame>();
  private welcome: Promise<string> | undefined;
  private readonly api: ReturnType<typeof signedClient> | undefined;

  private constructor(
    readonly ws: WebSocket,
    readonly clientId: string,
    httpUrl: string | undefined,
    readonly credentials: Credentials,
  ) {
    this.api = httpUrl === undefined ? undefined : signedClient(httpUrl, { ...credentials });
    ws.on('message', (data) => {
      let parsed: AnyFrame;
      try {
        parsed = JSON.parse(String(data)) as AnyFrame;
      } catch {
        parsed = { type: 'unparsable', text: String(data) };
      }
      const frame = { ...parsed, receivedAt: Date.now() } as AnyFrame;
      this.frames.push(frame);
      const w = this.waiters.find((x) => x.test(frame));
      if (w) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        this.consumed.add(frame);
        w.resolve(frame);
      }
    });
  }

  static async open(target: SocketTarget, clientId: string, options: OpenOptions = {}): Promise<TestSocket> {
    const wsUrl = typeof target === 'string' ? target : target.wsUrl;
    const httpUrl = options.httpUrl ?? (typeof target === 'string' ? undefined : target.url);
    const credentials = options.credentials ?? LOCAL_CREDENTIALS;
    const url = new URL(wsUrl);
    url.searchParams.set('client_id', clientId);
    const headers = options.sign === false ? {} : await signedHeaders(url, credentials);
    const ws = new WebSocket(url, { headers });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) =>
        reject(new Error(`handshake refused: ${res.statusCode}`)),
      );
      ws.once('error', reject);
    });
    return new TestSocket(ws, clientId, httpUrl, credentials);
  }

  send(message: Record<string, unknown>): void {
    this.ws.send(JSON.stringify(message));
  }

  /** The first frame not returned before that matches `test`, waiting for it if need be. */
  next(test: (f: AnyFrame) => boolean = () => true, timeoutMs = 10_000): Promise<AnyFrame> {
    const seen = this.frames.find((f) => !this.consumed.has(f) && test(f));
    if (seen) {
      this.consumed.add(seen);
      return Promise.resolve(seen);
    }
    return new Promise((resolve, reject) => {
      const entry = {
        test,
        resolve: (f: AnyFrame) => {
          clearTimeout(timer);
          resolve(f);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(entry), 1);
        reject(new Error(`no matching frame within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(entry);
    });
  }

  /** This connection's id, from the `welcome` answering `hello` (asked once). */
  hello(): Promise<string> {
    this.welcome ??= (async () => {
      const request_id = `hello-${randomUUID()}`;
      this.send({ action: 'hello', request_id });
      const frame = await this.next((f) => f.request_id === request_id);
      if (frame.type !== 'welcome' || typeof frame.connection_id !== 'string')
        throw new Error(`hello answered ${JSON.stringify(frame)}`);
      return frame.connection_id;
    })();
    return this.welcome;
  }

  private http(): ReturnType<typeof signedClient> {
    if (!this.api) throw new Error('this TestSocket has no HTTP API: open it with the stack, or httpUrl');
    return this.api;
  }

  /**
   * A wait whose grant is pushed here: POST /api/v1/locks/{lock}/acquire, signed as this socket's
   * principal, naming this connection (ttl 10 s, wait 20 s unless `options` says otherwise; an
   * option set to undefined is left out). The answer: `{queued: true, position, …}`, a grant, or
   * not acquired; later frames for it carry its request id (`answer.requestId`).
   */
  async acquire(lock: string, options: Record<string, unknown> = {}): Promise<AcquireAnswer> {
    const requestId = (options.request_id as string | undefined) ?? newRequestId();
    const body = {
      client_id: this.clientId,
      ttl_ms: 10_000,
      wait_timeout_ms: 20_000,
      connection_id: await this.hello(),
      ...options,
      request_id: requestId,
    };
    const answer = await this.http().post(`/api/v1/locks/${lock}/acquire`, body);
    return { ...answer, requestId };
  }

  /** The grant of an acquire: its HTTP answer if granted at once, else the frame that ends its wait. */
  async outcome(answer: AcquireAnswer, timeoutMs = 10_000): Promise<AnyFrame> {
    if (answer.status !== 200) throw new Error(`acquire answered ${answer.status}: ${answer.text}`);
    if (answer.body.acquired === true)
      return { type: 'granted', request_id: answer.requestId, ...answer.body };
    if (answer.body.queued !== true) return { type: 'not-acquired', ...answer.body };
    return this.next((f) => f.request_id === answer.requestId && ended(f), timeoutMs);
  }

  /** POST /api/v1/locks/{lock}/cancel as this socket's principal and client (and connection). */
  async cancel(lock: string, body: Record<string, unknown> = {}): Promise<SignedResponse> {
    return this.http().post(`/api/v1/locks/${lock}/cancel`, {
      client_id: this.clientId,
      connection_id: await this.hello(),
      ...body,
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      this.ws.once('close', () => resolve());
      this.ws.close();
    });
  }
}
