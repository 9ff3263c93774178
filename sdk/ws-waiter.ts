/**
 * Waiting for locks over latchkey's WebSocket API: one signed connection per
 * client, opened on first use, kept alive with pings, answers matched to
 * requests by request_id. A connection that drops while a wait is pending
 * reconnects and asks again with the same request_id (the service keeps one
 * place and one grant per request).
 */
import WebSocket from 'ws';
import { errorFromResponse, LockHeldError, UnavailableError, WaitTimeoutError } from './errors';
import type { GrantAnswer } from './lease';
import type { SignedTransport } from './transport';

/** API Gateway closes a connection idle for 10 minutes: ping well before that. */
const PING_EVERY_MS = 4 * 60_000;
/** How long past its wait a request may go without the server's `timeout` before it is given up here. */
const OVERDUE_SLACK_MS = 5_000;
/** A connection with no wait pending closes after this, so that it keeps no process alive. */
const IDLE_CLOSE_MS = 2_000;

export interface WaitRequest {
  readonly lock: string;
  readonly ttlMs: number | undefined;
  readonly waitMs: number;
  readonly priority?: number | undefined;
  readonly requestId: string;
  readonly sessionId?: string | undefined;
}

// biome-ignore lint/suspicious/noExplicitAny: frames are checked field by field
type Frame = Record<string, any>;

interface Pending {
  readonly request: WaitRequest;
  /** When the wait ends, on this process's monotonic clock. */
  readonly until: number;
  resolve(grant: GrantAnswer): void;
  reject(error: unknown): void;
}

export class WsWaiter {
  private socket: Promise<WebSocket> | undefined;
  private readonly pending = new Map<string, Pending>();
  /** Requests given up locally: a grant that still arrives for one is released at once. */
  private readonly abandoned = new Set<string>();
  private idle: NodeJS.Timeout | undefined;
  private ping: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly url: URL,
    private readonly clientId: string,
    private readonly transport: SignedTransport,
    /** Releases a grant nobody will use (its wait was given up); it lapses at its ttl otherwise. */
    private readonly releaseGrant: (grant: GrantAnswer) => Promise<unknown>,
  ) {}

  /** Waits for `request`'s grant; rejects with WaitTimeoutError, LockHeldError (no wait) or a typed error. */
  async wait(request: WaitRequest, signal?: AbortSignal): Promise<GrantAnswer> {
    const socket = await this.connect();
    signal?.throwIfAborted();
    return new Promise<GrantAnswer>((resolve, reject) => {
      // Given up here (aborted, or the server's timeout never came): leave the queue, and release a
      // grant that may already be on its way, since nobody will use it.
      const giveUp = (reason: unknown) => {
        this.abandoned.add(request.requestId);
        this.sendQuietly({ action: 'cancel', lock: request.lock, request_id: request.requestId });
        fail(reason);
      };
      const onAbort = () => giveUp(signal?.reason);
      const overdue = setTimeout(
        () => giveUp(new WaitTimeoutError(request.lock, request.waitMs)),
        request.waitMs + OVERDUE_SLACK_MS,
      );
      overdue.unref();
      signal?.addEventListener('abort', onAbort, { once: true });
      const done =
        <T>(settle: (value: T) => void) =>
        (value: T) => {
          clearTimeout(overdue);
          signal?.removeEventListener('abort', onAbort);
          this.pending.delete(request.requestId);
          settle(value);
          this.closeWhenIdle();
        };
      const fail = done(reject);
      const until = performance.now() + request.waitMs;
      this.pending.set(request.requestId, { request, until, resolve: done(resolve), reject: fail });
      socket.send(JSON.stringify(message(request, request.waitMs)));
    });
  }

  close(): void {
    this.closed = true;
    clearInterval(this.ping);
    void this.socket?.then((s) => s.close()).catch(() => {});
    for (const p of this.pending.values()) p.reject(new UnavailableError('the client was closed'));
    this.pending.clear();
  }

  private closeWhenIdle(): void {
    clearTimeout(this.idle);
    if (this.pending.size > 0 || this.abandoned.size > 0) return;
    this.idle = setTimeout(() => {
      if (this.pending.size > 0) return;
      const socket = this.socket;
      this.socket = undefined;
      clearInterval(this.ping);
      void socket?.then((s) => s.close()).catch(() => {});
    }, IDLE_CLOSE_MS);
    this.idle.unref();
  }

  private connect(): Promise<WebSocket> {
    clearTimeout(this.idle);
    if (this.closed) return Promise.reject(new UnavailableError('the client was closed'));
    this.socket ??= this.open().catch((error: unknown) => {
      this.socket = undefined;
      throw error;
    });
    return this.socket;
  }

  private async open(): Promise<WebSocket> {
    const url = new URL(this.url);
    url.searchParams.set('client_id', this.clientId);
    const ws = new WebSocket(url, { headers: await this.transport.signedHeaders(url) });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) =>
        reject(
          errorFromResponse(res.statusCode ?? 502, {
            message: `WebSocket handshake refused (${res.statusCode})`,
          }),
        ),
      );
      ws.once('error', (error) => reject(new UnavailableError(`WebSocket ${url.origin}: ${error.message}`)));
    });
    ws.on('message', (data) => {
      try {
        this.onFrame(JSON.parse(String(data)) as Frame);
      } catch {
        // not a latchkey frame: ignore it
      }
    });
    ws.on('close', () => this.onClose(ws));
    ws.on('error', () => {}); // 'close' follows
    clearInterval(this.ping);
    this.ping = setInterval(() => this.sendQuietly({ action: 'ping' }), PING_EVERY_MS);
    this.ping.unref();
    return ws;
  }

  private onFrame(frame: Frame): void {
    const id = typeof frame.request_id === 'string' ? frame.request_id : undefined;
    if (id !== undefined && this.abandoned.has(id) && frame.type !== 'queued') {
      this.abandoned.delete(id);
      if (frame.type === 'granted') void this.releaseGrant(frame as unknown as GrantAnswer);
      this.closeWhenIdle();
      return;
    }
    const pending = id === undefined ? undefined : this.pending.get(id);
    if (!pending) return;
    const { request } = pending;
    if (frame.type === 'granted') pending.resolve(frame as unknown as GrantAnswer);
    else if (frame.type === 'timeout') pending.reject(new WaitTimeoutError(request.lock, request.waitMs));
    else if (frame.type === 'busy')
      pending.reject(new LockHeldError(request.lock, frame.holder?.client_id, frame.retry_after_ms ?? 0));
    else if (frame.type === 'error') {
      const code = String(frame.error?.code ?? '');
      const status = code === 'INVALID_REQUEST' ? 400 : code === 'UNAVAILABLE' ? 503 : 409;
      pending.reject(errorFromResponse(status, frame));
    }
    // 'queued': keep waiting.
  }

  /** The connection dropped: ask again on a new one, same request ids (one place, one grant each). */
  private onClose(ws: WebSocket): void {
    clearInterval(this.ping);
    if (this.closed) return;
    void this.socket?.then((current) => {
      if (current !== ws) return;
      this.socket = undefined;
      if (this.pending.size === 0) return;
      this.connect().then(
        (fresh) => {
          for (const p of this.pending.values()) {
            const left = Math.max(0, Math.round(p.until - performance.now()));
            fresh.send(JSON.stringify(message(p.request, left)));
          }
        },
        (error: unknown) => {
          for (const p of this.pending.values()) p.reject(error);
        },
      );
    });
  }

  private sendQuietly(frame: Frame): void {
    void this.socket
      ?.then((s) => s.readyState === WebSocket.OPEN && s.send(JSON.stringify(frame)))
      .catch(() => {});
  }
}

function message(r: WaitRequest, waitMs: number): Frame {
  return {
    action: 'acquire',
    lock: r.lock,
    request_id: r.requestId,
    wait_timeout_ms: waitMs,
    ...(r.ttlMs === undefined ? {} : { ttl_ms: r.ttlMs }),
    ...(r.priority === undefined ? {} : { priority: r.priority }),
    ...(r.sessionId === undefined ? {} : { session_id: r.sessionId }),
  };
}
