/**
 * `npm start` as a process: it prints its URL once ready, serves signed requests, and stops
 * whole (npm, its shell, node and DynamoDB Local's JVM) on SIGINT, SIGTERM or SIGHUP, whichever
 * of them gets it; if node is SIGKILLed, the JVM dies with it.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { expect, it, onTestFinished } from 'vitest';
import { announcedUrl, startServiceProcess } from '../support/service-process';
import { signedClient } from '../support/signed-fetch';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Waits until none of `pids` runs any more (true), or `ms` pass (false). */
async function untilGone(pids: readonly number[], ms = 15_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!pids.some(alive)) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return !pids.some(alive);
}

interface Proc {
  readonly pid: number;
  readonly ppid: number;
  readonly args: string;
}

function processes(): Proc[] {
  const out = execFileSync('ps', ['-eo', 'pid=,ppid=,args='], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((l) => l.trim().match(/^(\d+)\s+(\d+)\s+(.*)$/))
    .filter((m): m is RegExpMatchArray => m !== null)
    .map((m) => ({ pid: Number(m[1]), ppid: Number(m[2]), args: m[3] as string }));
}

/** `root` and every process under it. */
function tree(root: number): Proc[] {
  const all = processes();
  const found = all.filter((p) => p.pid === root);
  for (let i = 0; i < found.length; i++)
    found.push(...all.filter((p) => p.ppid === (found[i] as Proc).pid && !found.includes(p)));
  return found;
}

/** The DynamoDB Local JVM under `root` (setpriv execs java: it is a child of the node that started it). */
function javaUnder(root: number): Proc {
  const java = tree(root).find((p) => p.args.includes('DynamoDBLocal.jar'));
  if (!java) throw new Error(`no DynamoDB Local under ${root}:\n${JSON.stringify(tree(root), null, 2)}`);
  return java;
}

const stopIfRunning = (child: ChildProcess, pids: () => readonly number[]) =>
  onTestFinished(() => {
    // A failed assertion must not leave the service (and its java) running.
    for (const pid of pids()) if (alive(pid)) process.kill(pid, 'SIGKILL');
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

const startService = () => startServiceProcess([], { AWS_ENDPOINT_URL_DYNAMODB: '' });

it.each(['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGKILL'] as const)(
  'node bin/local.ts serves, then %s leaves no java process',
  async (signal) => {
    const service = await startService();
    const pid = service.child.pid as number;
    const java = javaUnder(pid).pid;
    stopIfRunning(service.child, () => [java]);
    // Started on --port 0: the banner names the port the kernel gave, where the stack serves.
    expect(Number(new URL(service.url).port)).toBeGreaterThan(0);
    const api = signedClient(service.url);
    expect(
      (await api.post('/api/v1/locks/proc/acquire', { client_id: 'a', ttl_ms: 5_000 })).body.acquired,
    ).toBe(true);
    service.child.kill(signal);
    expect(await untilGone([pid, java])).toBe(true);
  },
);

/**
 * The start script: node itself, in place of npm's shell (`exec`), with no tsx CLI in between. npm
 * forwards SIGINT and SIGTERM to its child only, and neither a shell (dash holds SIGINT until its
 * child exits) nor the tsx CLI (orphaned when the shell dies) would pass them on.
 */
const START = 'exec node --import tsx bin/local.ts';

/** `npm start` on free ports, once it says it is ready: npm's pid and every process under it. */
async function npmStart() {
  const npm = spawn('npm', ['start', '--', '--port', '0', '--ws-port', '0'], {
    cwd: fileURLToPath(new URL('../..', import.meta.url)),
    env: { ...process.env, AWS_ENDPOINT_URL_DYNAMODB: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // a process group of its own, as a terminal runs a command: Ctrl-C signals it all
  });
  let output = '';
  npm.stdout?.on('data', (c: Buffer) => (output += c));
  npm.stderr?.on('data', (c: Buffer) => (output += c));
  let pids: number[] = [npm.pid as number];
  stopIfRunning(npm, () => pids);
  const deadline = Date.now() + 60_000;
  while (!output.includes('latchkey is ready')) {
    if (Date.now() > deadline || npm.exitCode !== null)
      throw new Error(`npm start did not start:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const procs = tree(npm.pid as number);
  pids = procs.map((p) => p.pid);
  const java = javaUnder(npm.pid as number);
  const node = procs.find((p) => p.pid === java.ppid) as Proc;
  const api = signedClient(announcedUrl(output));
  expect((await api.get('/api/v1/health')).status).toBe(200);
  return { npm, procs, java, node, output: () => output };
}

it("package.json: npm start runs node as npm's own child", () => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  expect(pkg.scripts.start, `set "start": "${START}" in package.json`).toBe(START);
});

it.each([
  ['SIGTERM', 'npm'],
  ['SIGINT', 'npm'],
  ['SIGTERM', 'node'],
  ['SIGINT', 'node'],
  ['SIGHUP', 'node'],
  // npm cannot pass this one on: node sees its parent gone.
  ['SIGKILL', 'npm'],
  // Ctrl-C: the terminal signals the whole group.
  ['SIGINT', 'group'],
] as const)('npm start: %s to %s stops npm, node and java', async (signal, target) => {
  const started = await npmStart();
  const { npm, procs, node } = started;
  const pid = npm.pid as number;
  process.kill(target === 'group' ? -pid : target === 'npm' ? pid : node.pid, signal);
  const gone = await untilGone(procs.map((p) => p.pid));
  const left = procs.filter((p) => alive(p.pid)).map((p) => `${p.pid} ${p.args}`);
  expect(gone, `still running:\n${left.join('\n')}\n${started.output()}`).toBe(true);
  // Stopped in order: DynamoDB Local last (Ctrl-C does not reach it), so nothing failed on the way.
  expect(started.output()).not.toMatch(/"level":"error"|again: exiting now|did not stop/);
});

it('npm start: SIGKILL to node takes java down with it, and npm ends', async () => {
  const { npm, procs, java, node } = await npmStart();
  process.kill(node.pid, 'SIGKILL');
  expect(await untilGone([java.pid], 5_000)).toBe(true);
  expect(await untilGone(procs.map((p) => p.pid))).toBe(true);
  expect(npm.exitCode ?? npm.signalCode).not.toBeNull();
});

it('without setpriv, a watchdog kills the JVM when node is SIGKILLed', async () => {
  const tsx = createRequire(import.meta.url).resolve('tsx');
  const script = `
    import { startDynamoDbLocal } from ${JSON.stringify(new URL('../../local/dynamodb-local.ts', import.meta.url).pathname)};
    const db = await startDynamoDbLocal({ guard: 'watchdog' });
    console.log('pid', db.pid);
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--import', tsx, '--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (c: Buffer) => (output += c));
  child.stderr?.on('data', (c: Buffer) => (output += c));
  let java = 0;
  stopIfRunning(child, () => (java ? [java] : []));
  const deadline = Date.now() + 60_000;
  while (!/pid (\d+)/.test(output)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`did not start:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  java = Number(/pid (\d+)/.exec(output)?.[1]);
  // Not under setpriv: the JVM is node's own child, and a shell watches a pipe from node.
  expect(processes().find((p) => p.pid === java)?.args).toMatch(/^java /);
  const watchdog = tree(child.pid as number).find((p) => p.args.includes('latchkey-dynamodb-watchdog'));
  expect(watchdog).toBeDefined();
  child.kill('SIGKILL');
  expect(await untilGone([java, watchdog?.pid as number], 5_000)).toBe(true);
});
