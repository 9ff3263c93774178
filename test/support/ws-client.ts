/** A SigV4-signed WebSocket client for tests: collects frames and waits for the ones asked for. */
import { HttpRequest } from '@smithy/protocol-http';
import WebSocket from 'ws';
import { localSigner } from './signed-fetch';

// biome-ignore lint/suspicious/noExplicitAny: test frames are inspected field by field
export type AnyFrame = Record<string, any>;

export async function signedHeaders(
  url: URL,
  credentials = { accessKeyId: 'local', secretAccessKey: 'local' },
) {
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

export class TestSocket {
  readonly frames: AnyFrame[] = [];
  private waiters: { test: (f: AnyFrame) => boolean; resolve: (f: AnyFrame) => void }[] = [];
  private readonly consumed = new Set<AnyFrame>();

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const frame = { ...JSON.parse(String(data)), receivedAt: Date.now() } as AnyFrame;
      this.frames.push(frame);
      const w = this.waiters.find((x) => x.test(frame));
      if (w) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        this.consumed.add(frame);
        w.resolve(frame);
      }
    });
  }

  static async open(wsUrl: string, clientId: string, options: { sign?: boolean } = {}): Promise<TestSocket> {
    const url = new URL(wsUrl);
    url.searchParams.set('client_id', clientId);
    const headers = options.sign === false ? {} : await signedHeaders(url);
    const ws = new WebSocket(url, { headers });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) =>
        reject(new Error(`handshake refused: ${res.statusCode}`)),
      );
      ws.once('error', reject);
    });
    return new TestSocket(ws);
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
      const timer = setTimeout(
        () => reject(new Error(`no matching frame within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiters.push({
        test,
        resolve: (f) => {
          clearTimeout(timer);
          resolve(f);
        },
      });
    });
  }

  /** Sends an acquire and returns its first answer (queued, granted, busy or error). */
  async acquire(lock: string, options: Record<string, unknown> = {}): Promise<AnyFrame> {
    const request_id =
      (options.request_id as string | undefined) ?? `r-${Math.random().toString(36).slice(2)}`;
    this.send({ action: 'acquire', lock, ttl_ms: 10_000, wait_timeout_ms: 20_000, ...options, request_id });
    return this.next((f) => f.request_id === request_id);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      this.ws.once('close', () => resolve());
      this.ws.close();
    });
  }
}
