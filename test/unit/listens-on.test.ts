/** Whose socket listens on a port, as the DynamoDB Local launcher asks before it trusts an answer. */

import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { expect, it } from 'vitest';
import { listensOn } from '../../local/dynamodb-local';

it.runIf(process.platform === 'linux')(
  'tells a port this process listens on from one it does not',
  async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      expect(listensOn(process.pid, port)).toBe(true);
      // The same port is not listened on by the parent (the test runner's other process).
      expect(listensOn(process.ppid, port)).toBe(false);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    expect(listensOn(process.pid, port)).toBe(false);
    expect(listensOn(2 ** 22 + 1, port), 'no such process').toBeUndefined();
  },
);
