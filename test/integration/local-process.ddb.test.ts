/**
 * `npm start` as a process: it prints its URL once ready, serves signed
 * requests, and leaves no java process behind on SIGINT, SIGTERM or SIGKILL.
 */
import { execFileSync } from 'node:child_process';
import { expect, it, onTestFinished } from 'vitest';
import { startServiceProcess } from '../support/service-process';
import { signedClient } from '../support/signed-fetch';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function untilGone(pid: number, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!alive(pid)) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return !alive(pid);
}

/** The java pid: the DynamoDB endpoint port names the listening process. */
function javaPidFor(parent: number): number {
  const out = execFileSync('ps', ['-eo', 'pid,ppid,args'], { encoding: 'utf8' });
  const line = out.split('\n').find((l) => {
    const [, ppid, ...args] = l.trim().split(/\s+/);
    return Number(ppid) === parent && args.join(' ').includes('DynamoDBLocal.jar');
  });
  if (!line) throw new Error(`no DynamoDB Local child of ${parent}:\n${out}`);
  return Number(line.trim().split(/\s+/)[0]);
}

const startService = () => startServiceProcess([], { AWS_ENDPOINT_URL_DYNAMODB: '' });

it.each(['SIGINT', 'SIGTERM', 'SIGKILL'] as const)(
  'serves, then %s leaves no java process',
  async (signal) => {
    const service = await startService();
    // A failed assertion must not leave the service (and its java) running.
    onTestFinished(() => {
      if (service.child.exitCode === null && service.child.signalCode === null) service.child.kill('SIGKILL');
    });
    const pid = service.child.pid as number;
    expect(service.output()).toMatch(new RegExp(`HTTP API +${service.url}/api/v1`));
    const api = signedClient(service.url);
    expect(
      (await api.post('/api/v1/locks/proc/acquire', { client_id: 'a', ttl_ms: 5_000 })).body.acquired,
    ).toBe(true);

    // The JVM runs under setpriv, which execs java: its pid is a child of the service.
    const java = javaPidFor(pid);
    service.child.kill(signal);
    expect(await untilGone(pid)).toBe(true);
    expect(await untilGone(java)).toBe(true);
  },
);
