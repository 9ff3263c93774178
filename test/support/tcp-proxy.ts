/** A TCP proxy in front of DynamoDB Local that a test can cut, to play an outage. */

import type { AddressInfo } from 'node:net';
import { connect, createServer, type Socket } from 'node:net';

export async function startTcpProxy(target: string) {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  let up = true;
  let responsesToLose = 0;
  let silent = false;
  const server = createServer((client) => {
    if (!up) return client.destroy();
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    if (silent) return; // accept, then never answer
    const upstream = connect(Number(port), hostname);
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => upstream.destroy());
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      if (responsesToLose > 0) {
        // The request reached DynamoDB and was applied; its answer never arrives.
        responsesToLose--;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
    });
    upstream.on('end', () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    /** Drop every connection and refuse new ones. */
    cut() {
      up = false;
      for (const s of sockets) s.destroy();
    },
    restore() {
      up = true;
      silent = false;
    },
    /** Let the next `n` requests through to DynamoDB but drop their responses. */
    loseResponses(n = 1) {
      responsesToLose = n;
    },
    /** Accept connections and never answer (a black hole, not a refusal). */
    blackhole() {
      silent = true;
      for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
