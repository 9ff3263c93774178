/** Runs the CLI from source (`bin/latchkey.ts`) in a child process, for the tests that use it as users do. */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';

const tsx = createRequire(import.meta.url).resolve('tsx');

/** How a CLI run ended. */
export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  readonly onSpawn?: (pid: number) => void;
  /** Written to latchkey's stdin (else it has none). */
  readonly input?: string;
  /** The environment, instead of this one. */
  readonly env?: NodeJS.ProcessEnv;
  /** Told all of stdout so far, each time more comes. */
  readonly onStdout?: (stdout: string, pid: number) => void;
}

/** `latchkey ...args`: resolves when it exits, with its code and output. */
export function runCli(args: readonly string[], options: CliOptions = {}): Promise<Ran> {
  const child = spawn(process.execPath, ['--import', tsx, 'bin/latchkey.ts', ...args], {
    stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    ...(options.env ? { env: options.env } : {}),
  });
  if (options.input !== undefined) child.stdin?.end(options.input);
  options.onSpawn?.(child.pid as number);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (c: Buffer) => {
    stdout += c;
    options.onStdout?.(stdout, child.pid as number);
  });
  child.stderr?.on('data', (c: Buffer) => (stderr += c));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

/** The flags that point the CLI at a local stack. */
export const stackFlags = (stack: { readonly url: string; readonly wsUrl: string }): string[] => [
  '--endpoint',
  stack.url,
  '--ws-endpoint',
  stack.wsUrl,
];
