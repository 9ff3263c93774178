/** `npm start` as a child process (bin/local.ts under tsx), for tests that kill or signal it. */
import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { freePort } from '../../local/dynamodb-local';

const tsx = createRequire(import.meta.url).resolve('tsx');

export interface ServiceProcess {
  readonly child: ChildProcess;
  readonly url: string;
  output(): string;
}

/** Starts the service and resolves once it prints that it is ready (or throws with its output). */
export async function startServiceProcess(
  extraArgs: readonly string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<ServiceProcess> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    ['--import', tsx, 'bin/local.ts', '--port', String(port), '--ws-port', '0', ...extraArgs],
    { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout?.on('data', (c: Buffer) => (output += c));
  child.stderr?.on('data', (c: Buffer) => (output += c));
  const deadline = Date.now() + 60_000;
  while (!output.includes('latchkey is ready')) {
    if (Date.now() > deadline || child.exitCode !== null)
      throw new Error(`service did not start:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { child, url: `http://127.0.0.1:${port}`, output: () => output };
}
