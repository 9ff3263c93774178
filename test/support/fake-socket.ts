/**
 * A WebSocket as the relay sees it (lambdas/service/relay.ts RelaySocket), driven by hand from the
 * server's side: the relay's unit tests, the doorbell tests and the simulation's function instances.
 */
import type { RelaySocket } from '../../lambdas/service/relay';

type Listener = (event: { data: unknown }) => void;

export interface FakeSocketHooks {
  /** Each frame the client sends, parsed. */
  readonly onSend?: (message: { action?: string }) => void;
  /** The client closed it. */
  readonly onClose?: () => void;
}

export class FakeSocket implements RelaySocket {
  readyState = 0;
  readonly sent: unknown[] = [];
  private readonly listeners = new Map<string, Listener[]>();

  constructor(
    readonly url = '',
    readonly headers: Record<string, string> = {},
    private readonly hooks: FakeSocketHooks = {},
  ) {}

  addEventListener(type: string, listener: Listener): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('not open');
    const message = JSON.parse(data);
    this.sent.push(message);
    this.hooks.onSend?.(message);
  }

  close(): void {
    if (this.readyState === 3) return;
    const connecting = this.readyState === 0;
    this.readyState = 3;
    this.hooks.onClose?.();
    // As the ws package does: closing a socket still opening aborts the handshake with an error.
    if (connecting) this.emit('error');
    this.emit('close');
  }

  emit(type: string, data?: unknown): void {
    for (const listener of this.listeners.get(type) ?? []) listener({ data });
  }

  /** The server side: the handshake succeeds. */
  opens(): void {
    this.readyState = 1;
    this.emit('open');
  }

  /** The server side: the handshake is refused. */
  refused(): void {
    this.readyState = 3;
    this.emit('error');
    this.emit('close');
  }

  /** The server side: a frame arrives. */
  receives(frame: object): void {
    this.emit('message', JSON.stringify(frame));
  }
}
