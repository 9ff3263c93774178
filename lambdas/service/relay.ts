/**
 * A push channel into a function that waits for an HTTP waiter. The function
 * instance keeps one WebSocket connection of its own to the stack's WebSocket
 * API (its relay, opened with its role's SigV4 signature) and names that
 * connection as the waiter's doorbell (core/queue.ts WaitAttr.bell). Whoever
 * grants or ends the waiter then pushes `ring` there (service/handoff.ts), and
 * the waiting function learns its outcome at once instead of at its next
 * poll.
 *
 * A ring names the waiter's lock and place. One that follows a grant also
 * carries that grant, as the granter's committed write made it, for the request
 * it was made for: the wait answers with it and reads nothing (the answer
 * pushed by whoever performs the handoff, no read on the way). Only the
 * stack's functions may push to a connection (IAM
 * execute-api:ManageConnections), as for a WebSocket waiter's `granted` frame,
 * which its SDK takes as its grant just the same. Any other ring is a hint:
 * the wait reads its record, so a ring lost, late or doubled changes no
 * outcome, only when the wait looks. A wait without a doorbell (the relay not
 * open yet, or gone stale) polls as before.
 *
 * One connection serves every wait of the instance (a Lambda instance runs one
 * request at a time; the local stack runs many). API Gateway closes a
 * connection idle for 10 minutes and any after 2 hours, and a Lambda instance
 * may sleep through either: a connection is offered as a doorbell only while
 * it is surely open (FRESH_FOR_MS since the last frame sent, MAX_AGE_MS since
 * it opened); otherwise it is replaced, and that one wait polls.
 */
import { type RungGrant, rungGrantOf } from '../core/ws-wire';
import { log } from '../shared/log';
import { Recent } from './recent';

/** The WHATWG WebSocket as far as the relay uses it: Node's global WebSocket, or the ws package's. */
export interface RelaySocket {
  readonly readyState: number;
  send(data: string): void;
  close(): void;
  addEventListener(type: 'open' | 'close' | 'error', listener: () => void): void;
  addEventListener(type: 'message', listener: (event: { readonly data: unknown }) => void): void;
}

/** Opens a WebSocket to `url` with these handshake headers. */
export type OpenSocket = (url: string, headers: Record<string, string>) => RelaySocket;

/** The handshake headers that sign a GET of `url` (SigV4, execute-api), at `now`. */
export type SignHandshake = (url: URL, now: Date) => Record<string, string>;

/** What a wait learns from its doorbell. */
export interface Listener {
  /** Resolves when `sleep` does, or sooner on a ring; true if rung since the last call. */
  wait(sleep: Promise<void>): Promise<boolean>;
  /** The grant the last ring carried, if it did (then forgotten): the wait's answer, pushed by its granter. */
  takeGranted(): RungGrant | undefined;
  /** Stops listening (the wait is over). */
  stop(): void;
}

/** The service side of the relay: a doorbell to name when a wait joins, and its rings. */
export interface Doorbell {
  /** This instance's doorbell for a wait that joins now; undefined if none is open (one is opened for later waits). */
  bell(): string | undefined;
  /** Rings for the waiter `order` of `lock`. */
  listen(lock: string, order: string): Listener;
}

/** The client id the relay's connection speaks for. */
export const RELAY_CLIENT_ID = 'latchkey-relay';
/** A connection is offered while a frame was sent on it this recently (API Gateway's idle timeout: 10 minutes). */
export const FRESH_FOR_MS = 9 * 60_000;
/** After this long without a frame sent, offering it sends a ping first, to keep it open. */
export const PING_AFTER_MS = 5 * 60_000;
/** A connection is offered until this old (API Gateway closes every connection after 2 hours). */
export const MAX_AGE_MS = 110 * 60_000;
/** How long a new connection has to say who it is before it is dropped. */
const WELCOME_TIMEOUT_MS = 5_000;
/** After a connection failed to open, the next try waits this long. */
const RETRY_AFTER_MS = 30_000;

/** A ring that came before its wait listened is kept this long (the wait joined a moment ago)... */
const UNHEARD_FOR_MS = 10_000;
/** ...and at most this many. */
const UNHEARD_CAPACITY = 1_000;

const OPEN = 1;
const key = (lock: string, order: string) => `${lock}\n${order}`;

interface Connection {
  readonly socket: RelaySocket;
  readonly openedAt: number;
  id?: string;
  sentAt: number;
}

class Ringable implements Listener {
  private rang = false;
  private carried: RungGrant | undefined;
  private wake: (() => void) | undefined;

  constructor(private readonly onStop: () => void) {}

  ring(granted: RungGrant | undefined): void {
    this.rang = true;
    if (granted) this.carried = granted;
    this.wake?.();
  }

  takeGranted(): RungGrant | undefined {
    const carried = this.carried;
    this.carried = undefined;
    return carried;
  }

  async wait(sleep: Promise<void>): Promise<boolean> {
    if (!this.rang) await Promise.race([sleep, new Promise<void>((resolve) => (this.wake = resolve))]);
    this.wake = undefined;
    const rang = this.rang;
    this.rang = false;
    return rang;
  }

  stop(): void {
    this.onStop();
  }
}

export class Relay implements Doorbell {
  private connection: Connection | undefined;
  private failedAt = Number.NEGATIVE_INFINITY;
  private readonly listeners = new Map<string, Set<Ringable>>();
  /** Rings nobody listened for yet (a wait may be granted before its function starts listening), with any grant they carried. */
  private readonly unheard: Recent<{ granted: RungGrant | undefined }>;

  constructor(
    private readonly url: string,
    private readonly open: OpenSocket,
    private readonly sign: SignHandshake,
    private readonly now: () => number = Date.now,
  ) {
    this.unheard = new Recent({ now }, UNHEARD_FOR_MS, UNHEARD_CAPACITY);
  }

  bell(): string | undefined {
    const c = this.connection;
    const now = this.now();
    const usable =
      c?.id !== undefined &&
      c.socket.readyState === OPEN &&
      now - c.sentAt < FRESH_FOR_MS &&
      now - c.openedAt < MAX_AGE_MS;
    if (usable) {
      if (now - c.sentAt >= PING_AFTER_MS) this.send(c, { action: 'ping' });
      return c.id;
    }
    // Still opening, or still to be welcomed: this wait polls, and a later one gets it (one that
    // never is gives up by itself, after WELCOME_TIMEOUT_MS).
    if (c && c.id === undefined && c.socket.readyState <= OPEN) return undefined;
    this.replace(now);
    return undefined;
  }

  listen(lock: string, order: string): Listener {
    const k = key(lock, order);
    const listener: Ringable = new Ringable(() => {
      const set = this.listeners.get(k);
      set?.delete(listener);
      if (set?.size === 0) this.listeners.delete(k);
    });
    const set = this.listeners.get(k) ?? new Set();
    set.add(listener);
    this.listeners.set(k, set);
    const unheard = this.unheard.get(k);
    if (unheard) {
      this.unheard.delete(k);
      listener.ring(unheard.granted);
    }
    return listener;
  }

  /** Drops the connection (a process that ends, a test). */
  close(): void {
    const c = this.connection;
    this.connection = undefined; // first: its close event is then not taken for a failure
    c?.socket.close();
  }

  private replace(now: number): void {
    this.close();
    if (now - this.failedAt < RETRY_AFTER_MS) return;
    const url = new URL(this.url);
    url.searchParams.set('client_id', RELAY_CLIENT_ID);
    let socket: RelaySocket;
    try {
      socket = this.open(url.toString(), this.sign(url, new Date(now)));
    } catch (error) {
      this.failed(undefined, error instanceof Error ? error.message : String(error));
      return;
    }
    const c: Connection = { socket, openedAt: now, sentAt: now };
    this.connection = c;
    // Events of a socket already replaced (closing one that is still opening ends in 'error') are
    // not this connection's; rings that still reach it are passed on all the same.
    const current = () => this.connection === c;
    socket.addEventListener('open', () => {
      if (current()) this.send(c, { action: 'hello' });
    });
    socket.addEventListener('message', (event) => this.received(c, event.data));
    socket.addEventListener('error', () => {
      if (current() && c.id === undefined) this.failed(c, 'the connection did not open');
    });
    socket.addEventListener('close', () => {
      if (!current()) return;
      if (c.id === undefined) this.failed(c, 'the connection closed before it said who it is');
      else this.connection = undefined;
    });
    // No welcome in time: give up on it. Checked after the I/O the timer's turn of the event loop
    // brings, so that a welcome that waited in the socket while a Lambda instance was frozen is
    // read first (a timer that was due during a freeze fires before the socket is read).
    const welcomeDue = setTimeout(
      () =>
        setImmediate(() => {
          if (current() && c.id === undefined) this.failed(c, 'no welcome within 5 s of hello');
        }),
      WELCOME_TIMEOUT_MS,
    );
    welcomeDue.unref?.();
  }

  private send(c: Connection, message: object): void {
    c.sentAt = this.now();
    try {
      c.socket.send(JSON.stringify(message));
    } catch {
      // Closed meanwhile: the next bell() opens another.
    }
  }

  private received(c: Connection, data: unknown): void {
    let frame: {
      type?: unknown;
      connection_id?: unknown;
      lock?: unknown;
      order?: unknown;
      request_id?: unknown;
      grant?: unknown;
      frees_slot?: unknown;
    };
    try {
      frame = JSON.parse(String(data));
    } catch {
      return;
    }
    if (frame.type === 'welcome' && typeof frame.connection_id === 'string') c.id = frame.connection_id;
    else if (frame.type === 'ring' && typeof frame.lock === 'string' && typeof frame.order === 'string') {
      const k = key(frame.lock, frame.order);
      const granted = rungGrantOf(frame);
      const listening = this.listeners.get(k);
      if (!listening) this.unheard.set(k, { granted });
      for (const listener of listening ?? []) listener.ring(granted);
    }
  }

  /** Gives up on `c` (undefined: none was made) and waits RETRY_AFTER_MS before the next try. */
  private failed(c: Connection | undefined, reason: string): void {
    this.failedAt = this.now();
    if (c) {
      this.connection = undefined;
      c.socket.close();
    }
    log('warn', 'the relay connection did not open: HTTP waits poll until it does', {
      url: this.url,
      reason,
      retry_in_ms: RETRY_AFTER_MS,
    });
  }
}
