/**
 * A waiter of the WebSocket protocol as it is now: the socket only delivers. It learns its
 * connection id (`hello`, answered `welcome`), asks for a lock over HTTP naming that connection
 * (answered at once: granted, queued or busy), and receives a later grant (`granted`) or the end
 * of its wait (`timeout`) as a pushed frame.
 */
import type { SignedResponse, signedClient } from './signed-fetch';
import { type AnyFrame, TestSocket } from './ws-client';

type Api = ReturnType<typeof signedClient>;

export class PushClient {
  private constructor(
    readonly socket: TestSocket,
    readonly connectionId: string,
    readonly clientId: string,
    private readonly api: Api,
  ) {}

  /** Connects as `clientId` (signed with the local credentials) and says hello; `api` must sign as the same principal. */
  static async open(wsUrl: string, api: Api, clientId: string): Promise<PushClient> {
    const socket = await TestSocket.open(wsUrl, clientId);
    socket.send({ action: 'hello' });
    const welcome = await socket.next((f) => f.type === 'welcome');
    if (typeof welcome.connection_id !== 'string' || welcome.client_id !== clientId)
      throw new Error(`unexpected welcome ${JSON.stringify(welcome)}`);
    return new PushClient(socket, welcome.connection_id, clientId, api);
  }

  get frames(): AnyFrame[] {
    return this.socket.frames;
  }

  /**
   * POST .../acquire with this connection (a lease of 10 s, waiting up to 20 s unless `body`
   * says otherwise; `ttl_ms: undefined` drops it): the HTTP answer, given at once.
   */
  acquire(lock: string, body: Record<string, unknown> = {}): Promise<SignedResponse> {
    return this.api.post(`/api/v1/locks/${lock}/acquire`, {
      client_id: this.clientId,
      connection_id: this.connectionId,
      ttl_ms: 10_000,
      wait_timeout_ms: 20_000,
      request_id: `r-${Math.random().toString(36).slice(2)}`,
      ...body,
    });
  }

  /** acquire(), expecting to be queued; resolves with the answer's body. */
  async queue(lock: string, body: Record<string, unknown> = {}): Promise<AnyFrame> {
    const answer = await this.acquire(lock, body);
    if (answer.status !== 200 || answer.body?.queued !== true)
      throw new Error(`${this.clientId} expected to queue for ${lock}: ${answer.status} ${answer.text}`);
    return answer.body;
  }

  /** POST .../cancel for this client (one request, or every wait of the client for the lock). */
  cancel(lock: string, body: Record<string, unknown> = {}): Promise<SignedResponse> {
    return this.api.post(`/api/v1/locks/${lock}/cancel`, {
      client_id: this.clientId,
      connection_id: this.connectionId,
      ...body,
    });
  }

  /** The next pushed frame (not returned before) that matches. */
  next(test: (f: AnyFrame) => boolean = () => true, timeoutMs = 10_000): Promise<AnyFrame> {
    return this.socket.next(test, timeoutMs);
  }

  /** The next `granted` frame, of request `requestId` if given. */
  granted(requestId?: string, timeoutMs = 10_000): Promise<AnyFrame> {
    return this.next(
      (f) => f.type === 'granted' && (requestId === undefined || f.request_id === requestId),
      timeoutMs,
    );
  }

  close(): Promise<void> {
    return this.socket.close();
  }
}
