/**
 * `latchkey run NAME -- cmd args...`: holds the lock while the command runs
 * (like `etcdctl lock`, `consul lock`, `flock`). The lease is renewed in
 * the background; the command gets LATCHKEY_LOCK and LATCHKEY_FENCING_TOKEN;
 * signals sent to latchkey are forwarded to it; the lock is released when it
 * exits, and latchkey exits with its code. If the lease is lost, the command
 * gets `onLost` (SIGTERM by default, SIGKILL after `killAfterMs`) and
 * latchkey exits with EXIT.LEASE_LOST.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { constants } from 'node:os';
import type { LockClient } from '../client';
import { LockHeldError, WaitTimeoutError } from '../errors';

export const EXIT = {
  /** The lock was not acquired: held (no wait) or the wait ran out. */
  NOT_ACQUIRED: 3,
  /** The lease was lost while the command ran. */
  LEASE_LOST: 4,
  /** The command could not be started. */
  CANNOT_RUN: 127,
} as const;

const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];

export interface RunOptions {
  readonly ttlMs: number;
  readonly waitMs: number;
  readonly priority?: number;
  /** Sent to the command when the lease is lost; 'none' lets it run on. */
  readonly onLost: NodeJS.Signals | 'none';
  readonly killAfterMs: number;
  readonly say: (line: string) => void;
}

export async function runLocked(
  client: LockClient,
  name: string,
  command: readonly string[],
  options: RunOptions,
): Promise<number> {
  const [file, ...args] = command;
  if (!file) throw new Error('no command given: latchkey run NAME -- command [args...]');
  // Signals go to the command once it runs; before that, they end the wait (and latchkey).
  const waiting = new AbortController();
  let child: ChildProcess | undefined;
  let signalled: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (child) child.kill(sig);
    else {
      signalled = sig;
      waiting.abort(new Error(`${sig} while waiting for ${name}`));
    }
  };
  for (const sig of FORWARDED) process.on(sig, onSignal);
  try {
    return await client.withLock(
      name,
      {
        ttlMs: options.ttlMs,
        waitTimeoutMs: options.waitMs,
        signal: waiting.signal,
        ...(options.priority === undefined ? {} : { priority: options.priority }),
      },
      (lease, signal) =>
        new Promise<number>((resolve) => {
          if (signalled) return resolve(128 + (constants.signals[signalled] ?? 0));
          child = spawn(file, args, {
            stdio: 'inherit',
            env: { ...process.env, LATCHKEY_LOCK: name, LATCHKEY_FENCING_TOKEN: String(lease.fencingToken) },
          });
          let lost = false;
          signal.addEventListener('abort', () => {
            lost = true;
            const why = (signal.reason as Error | undefined)?.message ?? String(signal.reason);
            options.say(`latchkey: the lease on ${name} was lost (${why})`);
            if (options.onLost === 'none') return;
            child?.kill(options.onLost);
            setTimeout(() => child?.kill('SIGKILL'), options.killAfterMs).unref();
          });
          child.on('error', (error) => {
            options.say(`latchkey: cannot run ${file}: ${error.message}`);
            resolve(EXIT.CANNOT_RUN);
          });
          child.on('exit', (code, sig) => {
            if (lost) return resolve(EXIT.LEASE_LOST);
            resolve(code ?? 128 + (sig ? (constants.signals[sig] ?? 0) : 0));
          });
        }),
    );
  } catch (error) {
    if (signalled) return 128 + (constants.signals[signalled] ?? 0);
    if (error instanceof LockHeldError || error instanceof WaitTimeoutError) {
      options.say(`latchkey: ${error.message}`);
      return EXIT.NOT_ACQUIRED;
    }
    throw error;
  } finally {
    for (const sig of FORWARDED) process.off(sig, onSignal);
  }
}
