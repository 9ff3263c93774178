/**
 * The local stack's ports, checked before anything starts (DynamoDB Local takes seconds to start
 * and stop): a port in use is most often another `npm start`, and the message says which flag
 * names it and what to do.
 */
import { createServer } from 'node:net';

/** The ports `npm start` listens on, by the flag that names each. */
export interface StackPorts {
  readonly port: number;
  readonly wsPort: number;
}

const NAMED = [
  ['port', '--port', 'the HTTP API'],
  ['wsPort', '--ws-port', 'the WebSocket API'],
] as const;

/** Why `port` cannot be listened on at `host` (undefined: it can, or it is 0: any free port). */
function listenProblem(port: number, host: string): Promise<NodeJS.ErrnoException | undefined> {
  if (port === 0) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', (error: NodeJS.ErrnoException) => resolve(error));
    probe.listen(port, host, () => probe.close(() => resolve(undefined)));
  });
}

/** The message for `port` (one of `ports`) that could not be listened on: `error` says why. */
export function portMessage(ports: StackPorts, port: number, error: NodeJS.ErrnoException): string {
  const [, flag, what] = NAMED.find(([key]) => ports[key] === port) ?? ['', '--port', 'a server'];
  if (error.code === 'EADDRINUSE')
    return `port ${port} (${flag}, ${what}) is in use: is latchkey already running (npm start)? Stop it, or start on other ports: npm start -- --port N --ws-port M (0: any free port)`;
  if (error.code === 'EACCES')
    return `port ${port} (${flag}, ${what}) may not be listened on by this user: choose one above 1023`;
  return `cannot listen on port ${port} (${flag}, ${what}): ${error.message}`;
}

/** Throws, saying which flag to change, unless every port in `ports` can be listened on at `host`. */
export async function checkPorts(ports: StackPorts, host = '127.0.0.1'): Promise<void> {
  if (ports.port === ports.wsPort && ports.port !== 0)
    throw new Error(
      `--port and --ws-port are both ${ports.port}: the HTTP and WebSocket APIs need a port each`,
    );
  for (const [key] of NAMED) {
    const problem = await listenProblem(ports[key], host);
    if (problem) throw new Error(portMessage(ports, ports[key], problem));
  }
}
