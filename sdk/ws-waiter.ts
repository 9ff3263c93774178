/**
 * Waiting for locks with grants pushed over latchkey's WebSocket API. The
 * WebSocket only delivers: a wait is asked for over HTTP, where IAM
 * authorizes the lock name, naming this client's connection
 * (`connection_id`, learnt with `hello`); the grant comes as a `granted`
 * frame, or at once in the HTTP answer. Every request has one outcome on the
 * service, and this follows it:
 * - a connection that drops while a wait is pending reconnects and asks
 *   again with the same request_id and the new connection (the same place
 *   in the queue, the same grant);
 * - an HTTP answer that never came (after the transport's retries) is asked
 *   again, same request, while the wait lasts;
 * - a wait past its end with no answer is cancelled, and the cancel's
 *   answer is the outcome: cancelled, or the grant if it came first;
 * - a grant nobody waits for here (a wait given up, aborted, or unknown) is
 *   this client's: it is released at once; the same grant arriving twice
 *   (pushed, and answering a retry) is not a second one.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import {
  EndpointError,
  errorFromResponse,
  heldWhenRefused,
  InvalidRequestError,
  type LatchkeyClientError,
  UnauthorizedError,
  UnavailableError,
  WaitTimeoutError,
} from './errors';
import { type EnclosingHolds, keptBody } from './held-locks';
import type { GrantAnswer } from './lease';
import { cancelRequest, lockPath } from './lock-api';
import { type LockMode, wantBody } from './multi-lock';
import { isOwnHold, OwnHoldError, ownHoldRetryAfterMs } from './own-holds';
import { networkReason, type SignedTransport } from './transport';

/** API Gateway closes a connection idle for 10 minutes: ping well before that. */
const PING_EVERY_MS = 4 * 60_000;
/** How long past its wait a request may go without the server's `timeout` before it is given up here. */
const OVERDUE_SLACK_MS = 5_000;
/** A connection with no wait pending closes after this, so that it keeps no process alive. */
const IDLE_CLOSE_MS = 2_000;
/** How long the service may take to answer `hello`. */
const WELCOME_MS = 10_000;
/** A wait answered "not acquired" with more than this left ended early (its connection dropped). */
const ENDED_EARLY_MS = 1_000;
/** Request ids answered with a grant, kept to recognise the same grant arriving again. */
const REMEMBERED_GRANTS = 1_000;

export interface WaitRequest {
  readonly lock: string;
  readonly ttlMs: number | undefined;
  readonly waitMs: number;
  readonly priority?: number | undefined;
  readonly requestId: string;
  readonly sessionId?: string | undefined;
  /** Sent only when not exclusive (the service's default). */
  readonly mode?: LockMode | undefined;
  /** A semaphore's N (shared only). */
  readonly maxHolders?: number | undefined;
  /** The locks the waiting task keeps while it waits (deadlock detection); sent when not empty. */
  readonly holding?: readonly string[] | undefined;
  /** Locks enclosing clients keep while this one waits (LockClientOptions.enclosing). */
  readonly enclosing?: readonly EnclosingHolds[] | undefined;
}

// biome-ignore lint/suspicious/noExplicitAny: frames and answers are checked field by field
type Json = Record<string, any>;

interface Connection {
  readonly ws: WebSocket;
  readonly id: string;
  /** The connection's TCP socket (from the handshake's answer), to ref and unref. */
  readonly socket: Socket | undefined;
}

interface Pending {
  /** The request asked for now: a new request id once an earlier one ended with its connection. */
  request: WaitRequest;
  /** When the wait ends, on this process's monotonic clock. */
  readonly until: number;
  resolve(grant: GrantAnswer): void;
  reject(error: unknown): void;
}

const WS_URL_HINT =
  "it should be the API's WebSocket URL including its stage (the stack's WebSocketUrl output), e.g. wss://abc.execute-api.eu-west-1.amazonaws.com/v1 (locally ws://127.0.0.1:3001/v1)";

/** The message of a refused handshake's body (latchkey's JSON, API Gateway's, or text), if any. */
async function refusalText(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  await new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(done, 1_000);
    res.on('data', (chunk: Buffer) => {
      size += chunk.byteLength;
      if (size <= 4_096) chunks.push(chunk);
    });
    res.once('end', done);
    res.once('error', done);
    res.once('close', done);
  });
  const text = Buffer.concat(chunks).toString('utf8').trim();
  try {
    const body = JSON.parse(text) as { message?: string; error?: { message?: string } };
    return body.error?.message ?? body.message ?? text;
  } catch {
    return text.slice(0, 300);
  }
}

/**
 * The typed error of a refused WebSocket handshake, saying what to fix: a 404 (or a 403 for a URL
 * without a stage) is the wrong URL; a 403 otherwise, credentials not allowed to connect; a 400, a
 * client id the service refuses; 429 and 5xx, unavailability (waits go over HTTP meanwhile).
 */
export function handshakeRefusal(
  url: URL,
  status: number,
  said: string,
  clientId: string,
): LatchkeyClientError {
  const shownUrl = `${url.origin}${url.pathname}`;
  const because = said ? ` (${said})` : '';
  const noStage = url.pathname === '/' || url.pathname === '';
  if (status === 404 || (status === 403 && noStage))
    return new EndpointError(
      `the WebSocket endpoint ${shownUrl} answered ${status}${because}: ${WS_URL_HINT}`,
      'websocket',
      shownUrl,
      status,
    );
  if (status === 403) {
    const error = new UnauthorizedError(
      `the WebSocket endpoint ${shownUrl} refused the handshake with 403${because}: sign with credentials allowed to connect (IAM execute-api:Invoke on the WebSocket API's $connect route), and check that ${WS_URL_HINT}`,
    );
    error.endpoint = shownUrl;
    return error;
  }
  if (status === 400) {
    const error = new InvalidRequestError(
      `the WebSocket endpoint ${shownUrl} refused the handshake with 400${because}: it takes ?client_id= (sent: ${clientId}), 1 to 128 characters of A-Z a-z 0-9 . _ - : @ / + =`,
    );
    error.endpoint = shownUrl;
    return error;
  }
  if (status === 429 || status >= 500)
    return new UnavailableError(
      `the WebSocket endpoint ${shownUrl} answered ${status}${because}: try again later`,
      status,
      { endpoint: shownUrl, reason: `handshake answered ${status}` },
    );
  const error = errorFromResponse(status, {
    message: `the WebSocket endpoint ${shownUrl} refused the handshake with ${status}${because}: ${WS_URL_HINT}`,
  });
  error.endpoint = shownUrl;
  return error;
}

export class WsWaiter {
  private connection: Promise<Connection> | undefined;
  private readonly pending = new Map<string, Pending>();
  /** Requests given up locally: a grant that still arrives for one is released at once. */
  private readonly abandoned = new Set<string>();
  /** Requests answered with their grant (the newest REMEMBERED_GRANTS). */
  private readonly granted = new Set<string>();
  private idle: NodeJS.Timeout | undefined;
  private ping: NodeJS.Timeout | undefined;
  private closed = false;
  /** Whether the connection's socket should keep the process alive: while a wait needs it. */
  private alive = false;

  constructor(
    private readonly url: URL,
    private readonly clientId: string,
    private readonly transport: SignedTransport,
    /** Releases a grant nobody will use (its wait was given up); it lapses at its ttl otherwise. */
    private readonly releaseGrant: (grant: GrantAnswer) => Promise<unknown>,
    /** How long past its end a wait may go without the server's answer before it is cancelled. */
    private readonly overdueSlackMs = OVERDUE_SLACK_MS,
  ) {}

  /** Waits for `request`'s grant; rejects with WaitTimeoutError or a typed error. */
  async wait(request: WaitRequest, signal?: AbortSignal): Promise<GrantAnswer> {
    const connection = await this.connect();
    if (signal?.aborted) {
      // Given up while connecting: nothing waits, so the connection must not hold the process open.
      this.closeWhenIdle();
      signal.throwIfAborted();
    }
    return new Promise<GrantAnswer>((resolve, reject) => {
      // Aborted: leave the queue; a grant already on its way is released, since nobody will use it.
      const onAbort = () => {
        this.abandoned.add(pending.request.requestId);
        void this.cancel(pending.request);
        fail(signal?.reason);
      };
      // Past its end with no answer (the server's `timeout` was lost, say): cancel, and take the answer.
      const overdue = setTimeout(() => {
        const asked = pending.request;
        void this.cancel(asked).then((answered) => {
          if (answered) return;
          this.abandoned.add(asked.requestId); // a grant that still comes is released
          fail(new WaitTimeoutError(request.lock, request.waitMs));
        });
      }, request.waitMs + this.overdueSlackMs);
      overdue.unref();
      signal?.addEventListener('abort', onAbort, { once: true });
      const done =
        <T>(settle: (value: T) => void) =>
        (value: T) => {
          clearTimeout(overdue);
          signal?.removeEventListener('abort', onAbort);
          const id = pending.request.requestId;
          if (this.pending.get(id) !== pending) return;
          this.pending.delete(id);
          settle(value);
          this.closeWhenIdle();
        };
      const fail = done(reject);
      const pending: Pending = {
        request,
        until: performance.now() + request.waitMs,
        resolve: done(resolve),
        reject: fail,
      };
      this.pending.set(request.requestId, pending);
      void this.ask(pending, connection);
    });
  }

  close(): void {
    this.closed = true;
    clearInterval(this.ping);
    void this.connection?.then((c) => c.ws.close()).catch(() => {});
    for (const p of [...this.pending.values()]) p.reject(new UnavailableError('the client was closed'));
    this.pending.clear();
  }

  /** POSTs the acquire of a pending wait, naming `connection`; the answer may already be its outcome. */
  private async ask(pending: Pending, connection: Connection): Promise<void> {
    const { request } = pending;
    // At least 1 ms: a retry of a waiting request must ask to wait, or it would end the wait.
    const left = Math.max(1, Math.round(pending.until - performance.now()));
    const body = {
      client_id: this.clientId,
      request_id: request.requestId,
      wait_timeout_ms: left,
      connection_id: connection.id,
      ...(request.ttlMs === undefined ? {} : { ttl_ms: request.ttlMs }),
      ...(request.priority === undefined ? {} : { priority: request.priority }),
      ...(request.sessionId === undefined ? {} : { session_id: request.sessionId }),
      ...wantBody(
        request.mode === undefined ? undefined : { mode: request.mode, maxHolders: request.maxHolders },
      ),
      ...keptBody(request.holding, request.enclosing ?? []),
    };
    let answer: Json;
    try {
      const sent = await this.transport.send('POST', lockPath(request.lock, 'acquire'), body, {
        timeoutMs: 10_000,
      });
      if (sent.status >= 400) {
        // The connection named went away meanwhile: the re-ask on the new one (onClose) decides.
        if (sent.status === 404 && !(await this.isCurrent(connection))) return;
        pending.reject(errorFromResponse(sent.status, sent.body));
        return;
      }
      answer = sent.body as Json;
    } catch (error) {
      // No answer after the transport's retries: the outcome is unknown, so the same request again.
      if (this.pending.get(request.requestId) !== pending) return;
      if (performance.now() >= pending.until) pending.reject(error);
      else setTimeout(() => void this.askOn(pending), 250 + Math.random() * 500).unref();
      return;
    }
    if (answer.acquired === true) this.onGranted(request.requestId, answer as unknown as GrantAnswer);
    else if (answer.queued !== true) {
      if (this.pending.get(request.requestId) !== pending) return;
      // Not queued behind this client's own hold: the client pauses on it (own-holds.ts).
      if (isOwnHold(answer)) {
        pending.reject(new OwnHoldError(request.lock, ownHoldRetryAfterMs(answer), heldWhenRefused(answer)));
      } else if (performance.now() < pending.until - ENDED_EARLY_MS) {
        // The request ended before its time (its connection's $disconnect took it out of the queue):
        // its outcome is final, so what is left of the wait is a new request.
        this.pending.delete(request.requestId);
        pending.request = { ...request, requestId: randomUUID() };
        this.pending.set(pending.request.requestId, pending);
        setTimeout(() => void this.askOn(pending), 100 + Math.random() * 200).unref();
      } else pending.reject(new WaitTimeoutError(request.lock, request.waitMs));
    }
    // queued: the grant (or the timeout) will be pushed.
  }

  /** Whether `connection` is still the one grants are pushed to. */
  private async isCurrent(connection: Connection): Promise<boolean> {
    const current = await this.connection?.catch(() => undefined);
    return current === connection && connection.ws.readyState === WebSocket.OPEN;
  }

  private async askOn(pending: Pending): Promise<void> {
    if (this.pending.get(pending.request.requestId) !== pending) return;
    try {
      await this.ask(pending, await this.connect());
    } catch (error) {
      pending.reject(error);
    }
  }

  /**
   * Cancels a request over HTTP and follows the answer: cancelled (the wait ends as a timeout), or
   * granted first (the grant is handled as if pushed). False if no answer came.
   */
  private async cancel(request: WaitRequest): Promise<boolean> {
    try {
      const connection = await this.connection?.catch(() => undefined);
      const answer = await cancelRequest(this.transport, request.lock, {
        clientId: this.clientId,
        requestId: request.requestId,
        connectionId: connection?.id,
      });
      if (answer.status >= 400) return false;
      const body = answer.body as Json;
      if (body.acquired === true) this.onGranted(request.requestId, body as unknown as GrantAnswer);
      else {
        this.abandoned.delete(request.requestId);
        this.pending.get(request.requestId)?.reject(new WaitTimeoutError(request.lock, request.waitMs));
        this.closeWhenIdle();
      }
      return true;
    } catch {
      return false;
    }
  }

  private closeWhenIdle(): void {
    clearTimeout(this.idle);
    if (this.pending.size > 0 || this.abandoned.size > 0) return;
    // Idle, the connection keeps no process alive in its last seconds either (a script that is done exits).
    this.keepProcessAlive(false);
    this.idle = setTimeout(() => {
      if (this.pending.size > 0) return;
      const connection = this.connection;
      this.connection = undefined;
      clearInterval(this.ping);
      void connection?.then((c) => c.ws.close()).catch(() => {});
    }, IDLE_CLOSE_MS);
    this.idle.unref();
  }

  private connect(): Promise<Connection> {
    clearTimeout(this.idle);
    if (this.closed) return Promise.reject(new UnavailableError('the client was closed'));
    this.connection ??= this.open().catch((error: unknown) => {
      this.connection = undefined;
      throw error;
    });
    this.keepProcessAlive(true);
    return this.connection;
  }

  /**
   * Whether the connection's socket keeps the process alive: only while a wait needs it. The
   * latest call wins, whenever the connection opens (not the order callbacks happen to run in).
   */
  private keepProcessAlive(keep: boolean): void {
    this.alive = keep;
    this.connection
      ?.then(({ socket }) => {
        if (this.alive) socket?.ref();
        else socket?.unref();
      })
      .catch(() => {});
  }

  /** Opens a signed connection and learns its id (`hello`, answered `welcome`). */
  private async open(): Promise<Connection> {
    const url = new URL(this.url);
    url.searchParams.set('client_id', this.clientId);
    const ws = new WebSocket(url, { headers: await this.transport.signedHeaders(url) });
    const shownUrl = `${url.origin}${url.pathname}`;
    let socket: Socket | undefined;
    ws.once('upgrade', (answer) => {
      socket = answer.socket as Socket;
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (req, res) => {
        ws.on('error', () => {}); // the refusal below is the error
        void refusalText(res).then((said) => {
          req.destroy();
          reject(handshakeRefusal(url, res.statusCode ?? 502, said, this.clientId));
        });
      });
      ws.once('error', (error) => {
        const reason = networkReason(error);
        reject(
          new UnavailableError(`the WebSocket API at ${shownUrl} is unreachable (${reason})`, undefined, {
            cause: error,
            endpoint: shownUrl,
            reason,
          }),
        );
      });
    });
    const id = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.close();
        reject(
          new UnavailableError(`WebSocket ${shownUrl}: no answer to hello`, undefined, {
            endpoint: shownUrl,
            reason: 'no answer to hello',
          }),
        );
      }, WELCOME_MS);
      ws.on('message', (data) => {
        let frame: Json;
        try {
          frame = JSON.parse(String(data)) as Json;
        } catch {
          return; // not a latchkey frame: ignore it
        }
        if (frame.type === 'welcome' && typeof frame.connection_id === 'string') {
          clearTimeout(timer);
          resolve(frame.connection_id);
        } else this.onFrame(frame);
      });
      ws.once('close', () => {
        clearTimeout(timer);
        reject(
          new UnavailableError(`WebSocket ${shownUrl}: closed before its welcome`, undefined, {
            endpoint: shownUrl,
            reason: 'closed before its welcome',
          }),
        );
      });
      ws.send(JSON.stringify({ action: 'hello' }));
    });
    const connection = { ws, id, socket };
    ws.on('close', () => this.onClose(connection));
    ws.on('error', () => {}); // 'close' follows
    clearInterval(this.ping);
    this.ping = setInterval(() => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ action: 'ping' }));
    }, PING_EVERY_MS);
    this.ping.unref();
    return connection;
  }

  /** A pushed frame: a grant, or the end of a wait (`timeout`, or an `error` frame naming it). */
  private onFrame(frame: Json): void {
    const id = typeof frame.request_id === 'string' ? frame.request_id : undefined;
    if (id === undefined) return;
    if (frame.type === 'granted') {
      this.onGranted(id, frame as unknown as GrantAnswer);
      return;
    }
    const pending = this.pending.get(id);
    if (!pending) {
      // The end of a request given up here: nothing more will come for it.
      if (this.abandoned.delete(id)) this.closeWhenIdle();
      return;
    }
    if (frame.type === 'timeout')
      pending.reject(new WaitTimeoutError(pending.request.lock, pending.request.waitMs));
    else if (frame.type === 'error') pending.reject(errorFromResponse(409, frame));
  }

  /** A grant: the answer to a pending wait; a repeat of one answered already; or this client's to release. */
  private onGranted(id: string, grant: GrantAnswer): void {
    const pending = this.pending.get(id);
    if (pending && !this.abandoned.has(id)) {
      this.remember(id);
      pending.resolve(grant);
      return;
    }
    if (this.granted.has(id) && !this.abandoned.has(id)) return; // the same grant again
    this.abandoned.delete(id);
    pending?.reject(new WaitTimeoutError(grant.lock, pending.request.waitMs));
    void this.releaseGrant(grant);
    this.closeWhenIdle();
  }

  private remember(id: string): void {
    this.granted.add(id);
    if (this.granted.size > REMEMBERED_GRANTS)
      this.granted.delete(this.granted.values().next().value as string);
  }

  /** The connection dropped: ask again on a new one, same request ids (one place, one grant each). */
  private onClose(connection: Connection): void {
    clearInterval(this.ping);
    if (this.closed) return;
    void this.connection?.then((current) => {
      if (current !== connection) return;
      this.connection = undefined;
      if (this.pending.size === 0) return;
      this.connect().then(
        (fresh) => {
          for (const p of this.pending.values()) void this.ask(p, fresh);
        },
        (error: unknown) => {
          for (const p of [...this.pending.values()]) p.reject(error);
        },
      );
    });
  }
}
