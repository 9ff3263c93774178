/** `npm start`'s ports, checked before DynamoDB Local starts: a taken one is named by its flag. */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { checkPorts, portMessage } from '../../local/ports';

const taken = async () => {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
};

it('a port in use is refused naming its flag and what to do; port 0 and free ports pass', async () => {
  const { server, port } = await taken();
  try {
    await expect(checkPorts({ port, wsPort: 0 })).rejects.toThrow(
      `port ${port} (--port, the HTTP API) is in use: is latchkey already running (npm start)? Stop it, or start on other ports: npm start -- --port N --ws-port M (0: any free port)`,
    );
    await expect(checkPorts({ port: 0, wsPort: port })).rejects.toThrow(
      `port ${port} (--ws-port, the WebSocket API) is in use`,
    );
  } finally {
    server.close();
  }
  await expect(checkPorts({ port: 0, wsPort: 0 })).resolves.toBeUndefined();
  await expect(checkPorts({ port: 4100, wsPort: 4100 })).rejects.toThrow(
    '--port and --ws-port are both 4100: the HTTP and WebSocket APIs need a port each',
  );
  expect(portMessage({ port: 80, wsPort: 81 }, 81, Object.assign(new Error('x'), { code: 'EACCES' }))).toBe(
    'port 81 (--ws-port, the WebSocket API) may not be listened on by this user: choose one above 1023',
  );
});

it('npm start on a taken port ends before DynamoDB Local starts', async () => {
  // A java that records being run: it must not be, the port check coming first.
  const bin = mkdtempSync(join(tmpdir(), 'latchkey-no-java-'));
  const ran = join(bin, 'ran');
  writeFileSync(join(bin, 'java'), `#!/bin/sh\ntouch ${ran}\nexit 1\n`);
  chmodSync(join(bin, 'java'), 0o755);
  const { server, port } = await taken();
  try {
    const tsx = createRequire(import.meta.url).resolve('tsx');
    const started = spawnSync(process.execPath, ['--import', tsx, 'bin/local.ts', '--port', String(port)], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, AWS_ENDPOINT_URL_DYNAMODB: '', PATH: `${bin}:${process.env.PATH}` },
    });
    expect(started.status).toBe(1);
    expect(started.stderr).toContain(`latchkey: port ${port} (--port, the HTTP API) is in use`);
    expect(existsSync(ran), 'java was started').toBe(false);
  } finally {
    server.close();
    rmSync(bin, { recursive: true, force: true });
  }
});
