/**
 * How the functions open their relay's WebSocket (service/relay.ts): with the
 * runtime's own WebSocket (Node.js 22 and later, so every Lambda runtime the
 * stack deploys), which takes handshake headers. Node.js 20 has none: the
 * local stack, which runs the functions there, hands in the ws package's (the
 * same interface) rather than bundling 48 KiB of it into every function.
 */
import type { OpenSocket, RelaySocket } from '../service/relay';

type SocketConstructor = new (url: string, init: { headers: Record<string, string> }) => RelaySocket;

const builtIn = (globalThis as { WebSocket?: SocketConstructor }).WebSocket;

let opener: OpenSocket | undefined = builtIn ? (url, headers) => new builtIn(url, { headers }) : undefined;

/** The relay's way to open a WebSocket, if this runtime has one. */
export const relaySocketOpener = (): OpenSocket | undefined => opener;

/** Where the runtime has no WebSocket (Node.js 20), the local stack provides one before the functions load. */
export function provideRelaySocket(open: OpenSocket): void {
  opener ??= open;
}
