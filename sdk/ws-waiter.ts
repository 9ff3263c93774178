/**
 * Waiting for locks over latchkey's WebSocket API: one signed connection per
 * client, opened on first use, kept alive with pings, answers matched to
 * requests by request_id. Every attempt of a request has one outcome on the
 * service, and this follows it:
 * - a connection that drops while a wait is pending reconnects and asks
 *   again with the same request_id (the same place in the queue, the same
 *   grant);
 * - an `error` frame with a retryable code means the outcome is unknown:
 *   the same request is sent again;
 * - a wait past its end with no answer is cancelled, and the cancel's
 *   answer is the outcome: `cancelled`, or the grant if it came first;
 * - a grant nobody waits for here (a wait given up, aborted, or unknown) is
 *   this client's: it is released at once; the same grant arriving twice
 *   (pushed, and answering a retry) is not a second one.
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
/** How long a cancel may go unanswered before its request is given up (a grant arriving later is released). */
const CANCEL_ANSWER_MS = 10_000;
/** Request ids answered with a grant, kept to recognise the same grant arriving again. */
const REMEMBERED_GRANTS = 1_000;

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

/** Error codes whose frame means "outcome unknown, ask again". */
const RETRYABLE = new Set(['UNAVAILABLE', 'THROTTLED']);

export class WsWaiter {
  private socket: Promise<WebSocket> | undefined;
  private readonly pending = new Map<string, Pending>();
  /** Requests given up locally: a grant that still arrives for one is released at once. */
  private readonly abandoned = new Set<string>();
  /** Requests answered with their grant (the newest REMEMBERED_GRANTS). */
  private readonly granted = new Set<string>();
  private idle: NodeJS.Timeout | undefined;
  private ping: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly url: URL,
    private readonly clientId: string,
    private readonly transport: SignedTransport,
    /** Releases a grant nobody will use (its wait was given up); it lapses at its ttl otherwise. */
    private readonly releaseGrant: (grant: GrantAnswer) => Promise<unknown>,
    /** How long past its end a wait may go without the server's answer before it is cancelled. */
    private readonly overdueSlackMs = OVERDUE_SLACK_MS,
  ) {}

  /** Waits for `request`'s grant; rejects with WaitTimeoutError, LockHeldError (no wait) or a typed error. */
  async wait(request: WaitRequest, signal?: AbortSignal): Promise<GrantAnswer> {
    const socket = await this.connect();
    signal?.throwIfAborted();
    return new Promise<GrantAnswer>((resolve, reject) => {
      // Aborted: leave the queue; a grant already on its way is released, since nobody will use it.
      const onAbort = () => {
        this.abandoned.add(request.requestId);
        this.sendQuietly({ action: 'cancel', lock: request.lock, request_id: request.requestId });
        fail(signal?.reason);
      };
      // Past its end with no answer (the server's `timeout` was lost, say): cancel, and take the answer.
      let overdue = setTimeout(() => {
        this.sendQuietly({ action: 'cancel', lock: request.lock, request_id: request.requestId });
        overdue = setTimeout(() => {
          this.abandoned.add(request.requestId);
          fail(new WaitTimeoutError(request.lock, request.waitMs));
        }, CANCEL_ANSWER_MS);
        overdue.unref();
      }, request.waitMs + this.overdueSlackMs);
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
    const pending = id === undefined ? undefined : this.pending.get(id);
    if (frame.type === 'granted') {
      this.onGranted(id, pending, frame as unknown as GrantAnswer);
      return;
    }
    if (!pending) {
      // The end of a request given up here: nothing more will come for it.
      if (id !== undefined && frame.type !== 'queued' && this.abandoned.delete(id)) this.closeWhenIdle();
      return;
    }
    const { request } = pending;
    if (frame.type === 'timeout' || frame.type === 'cancelled')
      pending.reject(new WaitTimeoutError(request.lock, request.waitMs));
    else if (frame.type === 'busy')
      pending.reject(new LockHeldError(request.lock, frame.holder?.client_id, frame.retry_after_ms ?? 0));
    else if (frame.type === 'error') {
      const code = String(frame.error?.code ?? '');
      // Outcome unknown: the same request again (one place, one grant), while its wait lasts.
      if (RETRYABLE.has(code) && performance.now() < pending.until) this.askAgain(pending);
      else
        pending.reject(
          errorFromResponse(code === 'INVALID_REQUEST' ? 400 : RETRYABLE.has(code) ? 503 : 409, frame),
        );
    }
    // 'queued': keep waiting.
  }

  /** A grant: the answer to a pending wait; a repeat of one answered already; or this client's to release. */
  private onGranted(id: string | undefined, pending: Pending | undefined, grant: GrantAnswer): void {
    if (id !== undefined && pending) {
      this.remember(id);
      pending.resolve(grant);
      return;
    }
    if (id !== undefined && this.granted.has(id) && !this.abandoned.has(id)) return; // the same grant again
    if (id !== undefined) this.abandoned.delete(id);
    void this.releaseGrant(grant);
    this.closeWhenIdle();
  }

  private remember(id: string): void {
    this.granted.add(id);
    if (this.granted.size > REMEMBERED_GRANTS)
      this.granted.delete(this.granted.values().next().value as string);
  }

  private askAgain(pending: Pending): void {
    const delay = 50 + Math.random() * 200;
    setTimeout(() => {
      if (this.pending.get(pending.request.requestId) !== pending) return;
      const left = Math.max(1, Math.round(pending.until - performance.now()));
      this.sendQuietly(message(pending.request, left));
    }, delay).unref();
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
            // At least 1 ms: a retry of a waiting request must ask to wait, or it would end the wait.
            const left = Math.max(1, Math.round(p.until - performance.now()));
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
