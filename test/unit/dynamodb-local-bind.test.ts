/**
 * The DynamoDB Local launcher never takes another server on its port for the JVM: here a stand-in
 * `java` that, like the JVM, says it starts, then fails to bind and exits while the other server's
 * answer is still on its way (the race a cold review reproduced).
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { PortInUseError, startDynamoDbLocal } from '../../local/dynamodb-local';

it.runIf(process.platform === 'linux')(
  'a JVM that cannot bind while another server answers slowly is PortInUseError, not "started"',
  async () => {
    const bin = mkdtempSync(join(tmpdir(), 'latchkey-fake-java-'));
    writeFileSync(
      join(bin, 'java'),
      `#!/bin/sh
echo "Initializing DynamoDB Local with the following configuration:"
sleep 0.3
echo "Caused by: java.net.BindException: Address already in use" >&2
exit 1
`,
    );
    chmodSync(join(bin, 'java'), 0o755);
    // Answers every request, 600 ms late: the stand-in exits while the first answer is on its way.
    const other = createServer((_, response) => setTimeout(() => response.writeHead(400).end(), 600));
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    const { port } = other.address() as AddressInfo;
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      await expect(startDynamoDbLocal({ port, inMemory: true, guard: 'watchdog' })).rejects.toThrow(
        PortInUseError,
      );
    } finally {
      process.env.PATH = path;
      other.closeAllConnections();
      other.close();
      rmSync(bin, { recursive: true, force: true });
    }
  },
);
