/** `npm start` as a child process (bin/local.ts under tsx), for tests that kill or signal it. */
import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';

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
  const child = spawn(
    process.execPath,
    ['--import', tsx, 'bin/local.ts', '--port', '0', '--ws-port', '0', ...extraArgs],
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
  return { child, url: announcedUrl(output), output: () => output };
}

/**
 * The HTTP address a started stack announces. Tests start it on port 0 and read the port it bound:
 * a port picked free beforehand may be taken by then (by any socket's ephemeral port) and fail.
 */
export function announcedUrl(banner: string): string {
  const url = /HTTP API\s+(http:\/\/\S+?)\/api\/v1/.exec(banner)?.[1];
  if (!url) throw new Error(`no HTTP address in:\n${banner}`);
  return url;
}
