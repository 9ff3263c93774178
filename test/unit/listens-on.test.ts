/** Whose socket listens on a port, as the DynamoDB Local launcher asks before it trusts an answer. */

import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { expect, it } from 'vitest';
import { listensOn } from '../../local/dynamodb-local';

it.runIf(process.platform === 'linux').each(['127.0.0.1', '::'])(
  'tells a port this process listens on (%s) from one another process listens on, or nobody',
  async (host) => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    const { port } = server.address() as AddressInfo;
    try {
      expect(listensOn(process.pid, port)).toBe(true);
      // Listened on, but not by the parent (the test runner's other process), nor by a pid that is gone.
      expect(listensOn(process.ppid, port)).toBe(false);
      expect(listensOn(2 ** 22 + 1, port)).toBe(false);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    expect(listensOn(process.pid, port), 'nobody listens').toBeUndefined();
  },
);
