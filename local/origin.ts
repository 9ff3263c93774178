/**
 * What keeps the local gateways safe on a developer's machine: a web page
 * must not reach them (DNS rebinding, cross-site requests), and no client
 * may hold a socket or memory forever with a slow or endless request.
 *
 * DNS rebinding: a page on evil.example re-points its name to 127.0.0.1, so
 * the browser sends `Host: evil.example` to the local port. Only requests
 * whose Host names this machine (or a name given with --allowed-hosts) are
 * served, and a browser's `Origin` must be a local page too; with auth off,
 * no browser request is served at all.
 */
import type { Server } from 'node:http';

const LOOPBACK = ['localhost', '127.0.0.1', '::1'];

/** The hostname of a Host or Origin value, lower-cased, without port or IPv6 brackets. */
function hostnameOf(value: string): string | undefined {
  const m = /^(?:\[([0-9a-f:.]+)\]|([^:[\]/]+))(?::\d{1,5})?$/i.exec(value.trim());
  return (m?.[1] ?? m?.[2])?.toLowerCase();
}

export class HostCheck {
  private readonly allowed: ReadonlySet<string>;

  /** `bindHost`: the address the gateways listen on (a specific one is also a valid Host). */
  constructor(bindHost: string, extra: readonly string[] = []) {
    const names = [...LOOPBACK, ...extra.map((h) => h.toLowerCase())];
    if (bindHost !== '0.0.0.0' && bindHost !== '::') names.push(bindHost.toLowerCase());
    this.allowed = new Set(names);
  }

  /** Why a request with these headers is refused, or undefined to serve it. */
  refusal(headers: Readonly<Record<string, string>>, authOff: boolean): string | undefined {
    const host = headers.host === undefined ? undefined : hostnameOf(headers.host);
    if (host === undefined || !this.allowed.has(host))
      return `Host '${headers.host ?? ''}' is not served here (add it with --allowed-hosts)`;
    const origin = headers.origin;
    if (origin === undefined) return undefined;
    if (authOff) return 'requests from browsers are refused when auth is off';
    let originHost: string | undefined;
    try {
      originHost = new URL(origin).host;
    } catch {
      return `Origin '${origin}' is not a URL`;
    }
    const name = hostnameOf(originHost);
    return name !== undefined && this.allowed.has(name)
      ? undefined
      : `Origin '${origin}' may not call this API`;
  }
}

/** How long a client may take to send a request's headers, and the whole request. */
export interface RequestTimeouts {
  readonly headersMs: number;
  readonly requestMs: number;
}

export const REQUEST_TIMEOUTS: RequestTimeouts = { headersMs: 10_000, requestMs: 30_000 };

/**
 * Options for every local server: headers over 16 KiB are refused (431; API Gateway's own limit
 * is about 10 KiB), and the timeouts above are checked every second, not Node's default 30 s.
 */
export const SERVER_OPTIONS = { maxHeaderSize: 16 * 1024, connectionsCheckingInterval: 1_000 } as const;

/** Slow or oversized requests end with an error answer; a malformed one never reaches a handler. */
export function hardenServer<S extends Server>(server: S, timeouts: RequestTimeouts = REQUEST_TIMEOUTS): S {
  server.headersTimeout = timeouts.headersMs;
  server.requestTimeout = timeouts.requestMs;
  server.maxHeadersCount = 100;
  server.maxRequestsPerSocket = 10_000;
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    // Node's own parser refusals (bad request line, header flood, timeout): answer and close.
    if (!socket.writable) return socket.destroy();
    const status =
      error.code === 'HPE_HEADER_OVERFLOW' ? 431 : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    socket.end(
      `HTTP/1.1 ${status} ${status === 400 ? 'Bad Request' : 'Refused'}\r\nconnection: close\r\n\r\n`,
    );
  });
  return server;
}
