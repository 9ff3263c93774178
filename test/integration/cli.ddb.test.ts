import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalStack } from '../../local/stack';
import { EXIT } from '../../sdk/cli/run';
import { Lease, LockClient } from '../../sdk/index';
import { type CliOptions, type Ran, runCli, stackFlags } from '../support/cli-process';
import { ALICE, startTestStack } from '../support/stack';

let stack: LocalStack;
let dir: string;

/** Process groups of commands the tests started: any left (a failed test) are killed at the end. */
const groups = new Set<number>();

beforeAll(async () => {
  stack = await startTestStack('cli');
  dir = mkdtempSync(join(tmpdir(), 'latchkey-cli-'));
});
afterAll(async () => {
  for (const pgid of groups) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {}
  }
  await stack.stop();
});

/** `latchkey ...args` against the test stack (unless `options.env` says where it is). */
const latchkey = (args: string[], options: CliOptions = {}): Promise<Ran> =>
  runCli([...(options.env ? [] : stackFlags(stack)), ...args], options);

/** A port nothing listens on. */
const closedPort = () =>
  new Promise<number>((resolve) => {
    const probe = createServer();
    probe.listen(0, '127.0.0.1', () => {
      const port = (probe.address() as AddressInfo).port;
      probe.close(() => resolve(port));
    });
  });

/** The processes of process group `pgid` that are alive (not zombies waiting to be reaped), from /proc. */
function liveInGroup(pgid: number): number[] {
  const live: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so after the last ')'.
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === pgid && state !== 'Z' && state !== 'X') live.push(Number(entry));
    } catch {} // gone meanwhile
  }
  return live;
}

const readNumber = (file: string) => {
  try {
    return Number(readFileSync(file, 'utf8').trim()) || 0;
  } catch {
    return 0;
  }
};

const lockName = () => `cli/${randomUUID()}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Polls `test` until true; past `ms`, fails saying what it waited for and what `seen` shows then. */
const until = async (test: () => boolean, ms = 20_000, seen?: () => string) => {
  const deadline = Date.now() + ms;
  while (!test()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms${seen ? `: ${seen()}` : ''}`);
    await sleep(25);
  }
};

describe('latchkey run', () => {
  it('10 concurrent runs on one name never overlap, in fencing-token order', {
    timeout: 120_000,
  }, async () => {
    const name = lockName();
    const marks = join(dir, 'marks.txt');
    writeFileSync(marks, '');
    const script = `echo "start $LATCHKEY_FENCING_TOKEN $LATCHKEY_LOCK" >> ${marks}; sleep 0.1; echo "end $LATCHKEY_FENCING_TOKEN" >> ${marks}`;
    // A ttl longer than the queue takes to drain on a busy machine: a run served after more than its
    // ttl (its lease counts from its first send) must renew at once, and that is not what this is about.
    const runs = await Promise.all(
      Array.from({ length: 10 }, () =>
        latchkey(['run', name, '--ttl', '20s', '--wait', '90s', '--', 'sh', '-c', script]),
      ),
    );
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    const lines = readFileSync(marks, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(20);
    let last = 0;
    for (let i = 0; i < lines.length; i += 2) {
      const [start, token, lock] = (lines[i] as string).split(' ');
      const [end, endToken] = (lines[i + 1] as string).split(' ');
      expect([start, end, lock]).toEqual(['start', 'end', name]);
      expect(endToken).toBe(token); // each start is followed by its own end: no overlap
      expect(Number(token)).toBeGreaterThan(last);
      last = Number(token);
    }
  });

  it("exits with the command's code, and with 3 when the lock is held (-n / --no-wait, or --wait ran out)", async () => {
    const name = lockName();
    expect((await latchkey(['run', name, '--', 'sh', '-c', 'exit 7'])).code).toBe(7);
    const holder = new LockClient({ endpoint: stack.url });
    // Long enough for four CLI runs on a busy machine (each starts a Node process with tsx).
    const lease = await holder.tryAcquire(name, { ttlMs: 120_000 });
    const held = await latchkey(['run', '-n', name, '--', 'true']);
    expect(held.code).toBe(EXIT.NOT_ACQUIRED);
    expect(held.stderr).toMatch(/held by/);
    expect((await latchkey(['run', name, '--no-wait', '--', 'true'])).code).toBe(EXIT.NOT_ACQUIRED);
    const waited = await latchkey(['run', name, '--wait', '300ms', '--', 'true']);
    expect(waited.code).toBe(EXIT.NOT_ACQUIRED);
    expect(waited.stderr).toMatch(/not granted within/);
    // Still waiting after a second, a run says once what for.
    const noted = await latchkey(['run', name, '--wait', '2s', '--', 'true']);
    expect(noted.code).toBe(EXIT.NOT_ACQUIRED);
    expect(noted.stderr).toMatch(
      new RegExp(
        `^latchkey: waiting for ${name}: held by ${holder.clientId} \\(lease ends in [\\d.]+[sm]\\), 1st of 1 in the queue$`,
        'm',
      ),
    );
    await holder.release(lease as Lease);
    const missing = await latchkey(['run', lockName(), '--', '/no/such/command']);
    expect(missing.code).toBe(EXIT.CANNOT_RUN);
    expect(missing.stderr).toContain('latchkey: cannot run /no/such/command: command not found');
  });

  it('waits for the lock by default, as long as it takes', { timeout: 30_000 }, async () => {
    const name = lockName();
    const holder = new LockClient({ endpoint: stack.url });
    const lease = await holder.tryAcquire(name, { ttlMs: 20_000 });
    const running = latchkey(['run', name, '--', 'sh', '-c', 'echo ran with $LATCHKEY_FENCING_TOKEN']);
    await expect.poll(async () => (await holder.inspect(name)).queued, { timeout: 20_000 }).toBe(1);
    await holder.release(lease as Lease);
    const r = await running;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^ran with \d+/);
  });

  it("the command has latchkey's stdin, runs in a process group of its own, and leaves nothing behind", async () => {
    const pidFile = join(dir, `pid-${randomUUID()}`);
    const r = await latchkey(
      ['run', lockName(), '--', 'sh', '-c', `echo $$ > ${pidFile}; read line; echo "read: $line"`],
      { input: 'hello from stdin\n' },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('read: hello from stdin\n');
    const pgid = readNumber(pidFile);
    expect(pgid).toBeGreaterThan(0);
    expect(liveInGroup(pgid)).toEqual([]);
  });

  it('forwards signals to the command and releases the lock after it exits', {
    timeout: 30_000,
  }, async () => {
    const name = lockName();
    const ready = join(dir, `ready-${randomUUID()}`);
    let pid = 0;
    const running = latchkey(
      [
        'run',
        name,
        '--',
        'sh',
        '-c',
        `trap 'echo got TERM; exit 42' TERM; touch ${ready}; while :; do sleep 0.05; done`,
      ],
      { onSpawn: (p) => (pid = p) },
    );
    await until(() => {
      try {
        readFileSync(ready);
        return true;
      } catch {
        return false;
      }
    });
    process.kill(pid, 'SIGTERM');
    const r = await running;
    expect(r.stdout).toContain('got TERM');
    expect(r.code).toBe(42);
    expect((await new LockClient({ endpoint: stack.url }).inspect(name)).state).toBe('free');
  });

  it('stops what the command left running in its group before releasing the lock', {
    timeout: 30_000,
  }, async () => {
    const name = lockName();
    const pidFile = join(dir, `pid-${randomUUID()}`);
    const r = await latchkey([
      'run',
      name,
      '--kill-grace',
      '1s',
      '--',
      'sh',
      '-c',
      `sleep 60 & echo $$ > ${pidFile}; exit 0`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/exited, but processes it started still run: stopping them/);
    expect(liveInGroup(readNumber(pidFile))).toEqual([]);
    expect((await new LockClient({ endpoint: stack.url }).inspect(name)).state).toBe('free');
  });

  it('Ctrl-Z (SIGTSTP) stops the command with latchkey, and SIGCONT resumes both', {
    timeout: 30_000,
  }, async () => {
    const name = lockName();
    const pidFile = join(dir, `pid-${randomUUID()}`);
    let pid = 0;
    const running = latchkey(
      ['run', name, '--', 'sh', '-c', `echo $$ > ${pidFile}; while :; do sleep 0.05; done`],
      { onSpawn: (p) => (pid = p) },
    );
    await until(() => readNumber(pidFile) > 0);
    const command = readNumber(pidFile);
    groups.add(command);
    const state = (p: number) => {
      try {
        const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
        return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
      } catch {
        return 'gone';
      }
    };
    // On a timeout: each process's state, and what latchkey said (a flake under the suite's load once).
    const states = () =>
      `command ${state(command)}, latchkey ${state(pid)}, group ${liveInGroup(command).map((p) => `${p}:${state(p)}`)}`;
    process.kill(pid, 'SIGTSTP');
    await until(() => state(command) === 'T' && state(pid) === 'T', 20_000, states);
    process.kill(pid, 'SIGCONT');
    await until(() => state(command) !== 'T' && state(pid) !== 'T', 20_000, states);
    process.kill(pid, 'SIGTERM');
    const r = await running;
    expect(r.code, r.stderr).toBe(143);
    expect(liveInGroup(command)).toEqual([]);
  });

  it('refuses a --kill-grace that leaves a lost lease no time to stop the command', async () => {
    const r = await latchkey(['run', lockName(), '--ttl', '3s', '--kill-grace', '2s', '--', 'true']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /--kill-grace 2s does not fit in --ttl 3s: .* give a --ttl of at least .* or a shorter --kill-grace/,
    );
  });

  it('a signal while waiting ends latchkey (128 + n) without running the command', {
    timeout: 30_000,
  }, async () => {
    const name = lockName();
    const holder = new LockClient({ endpoint: stack.url });
    await holder.tryAcquire(name, { ttlMs: 20_000 });
    let pid = 0;
    const marker = join(dir, `never-${randomUUID()}`);
    const running = latchkey(['run', name, '--wait', '20s', '--', 'touch', marker], {
      onSpawn: (p) => (pid = p),
    });
    // Started and queued (its signal handlers are in place by then): however long that takes here.
    await expect.poll(async () => (await holder.inspect(name)).queued, { timeout: 20_000 }).toBe(1);
    // USR1 and USR2 (a log rotation's, say) do not end the wait: it is still queued after them.
    process.kill(pid, 'SIGUSR1');
    process.kill(pid, 'SIGUSR2');
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await holder.inspect(name)).queued).toBe(1);
    process.kill(pid, 'SIGTERM');
    const r = await running;
    expect(r.code).toBe(143);
    expect(r.stderr).toMatch(/SIGUSR1 while waiting for .*: ignored \(no command runs yet\)/);
    expect(() => readFileSync(marker)).toThrow();
    expect((await holder.inspect(name)).queued).toBe(0);
  });

  it('signals the command and exits 4 when the lease is lost', { timeout: 30_000 }, async () => {
    const name = lockName();
    const tokenFile = join(dir, `token-${randomUUID()}`);
    const running = latchkey([
      '--client-id',
      'cli-lost',
      'run',
      name,
      '--ttl',
      '1500ms',
      '--kill-grace',
      '500ms',
      '--',
      'sh',
      '-c',
      `trap 'echo stopped by latchkey; exit 0' TERM; echo $LATCHKEY_FENCING_TOKEN > ${tokenFile}; while :; do sleep 0.05; done`,
    ]);
    let token = 0;
    await until(() => {
      try {
        token = Number(readFileSync(tokenFile, 'utf8'));
        return token > 0;
      } catch {
        return false;
      }
    });
    // Someone releases it from under the command (as if its lease had lapsed and passed on).
    const admin = new LockClient({ endpoint: stack.url, clientId: 'cli-lost' });
    await admin.release(
      new Lease(
        {
          lock: name,
          client_id: 'cli-lost',
          fencing_token: token,
          expires_at: '',
          remaining_ms: 0,
          ttl_ms: 1,
        },
        0,
      ),
    );
    const r = await running;
    expect(r.stdout).toContain('stopped by latchkey');
    expect(r.stderr).toMatch(/lease on .* was lost/);
    expect(r.code).toBe(EXIT.LEASE_LOST);
  });

  it('kills the whole group after --kill-grace when the lease is lost and the command ignores SIGTERM', {
    timeout: 30_000,
  }, async () => {
    const name = lockName();
    const pidFile = join(dir, `pid-${randomUUID()}`);
    const tokenFile = join(dir, `token-${randomUUID()}`);
    const running = latchkey([
      '--client-id',
      'cli-deaf',
      'run',
      name,
      '--ttl',
      '3s',
      '--kill-grace',
      '1s',
      '--',
      'sh',
      '-c',
      // A child that ignores SIGTERM too (the ignored disposition is inherited).
      `trap '' TERM; sleep 60 & echo $$ > ${pidFile}; echo $LATCHKEY_FENCING_TOKEN > ${tokenFile}; wait`,
    ]);
    await until(() => readNumber(pidFile) > 0 && readNumber(tokenFile) > 0);
    const pgid = readNumber(pidFile);
    groups.add(pgid);
    await until(() => liveInGroup(pgid).length === 2); // sh and sleep
    const admin = new LockClient({ endpoint: stack.url, clientId: 'cli-deaf' });
    await admin.release(
      new Lease(
        {
          lock: name,
          client_id: 'cli-deaf',
          fencing_token: readNumber(tokenFile),
          expires_at: '',
          remaining_ms: 0,
          ttl_ms: 1,
        },
        0,
      ),
    );
    const released = Date.now();
    const r = await running;
    expect(r.code, r.stderr).toBe(EXIT.LEASE_LOST);
    expect(r.stderr).toMatch(/lease on .* was lost .*: stopping the command: SIGTERM now, SIGKILL in 1s/);
    expect(liveInGroup(pgid)).toEqual([]);
    // Lost at the next renewal (a third of the ttl), then SIGTERM (ignored), then SIGKILL after 1 s.
    const took = Date.now() - released;
    expect(took).toBeGreaterThanOrEqual(1_000);
    expect(took).toBeLessThan(1_000 + 1_000 + 2_000);
  });

  it.each([
    ['a command that ends on SIGTERM', ''],
    ['a command that ignores SIGTERM', "trap '' TERM; "],
  ])(
    'if latchkey is SIGKILLed, a watchdog stops %s within the grace, before the lease ends',
    {
      timeout: 40_000,
    },
    async (_what, trap) => {
      const name = lockName();
      const pidFile = join(dir, `pid-${randomUUID()}`);
      const beats = join(dir, `beats-${randomUUID()}`);
      let pid = 0;
      const running = latchkey(
        [
          'run',
          name,
          '--ttl',
          '10s',
          '--kill-grace',
          '2s',
          '--',
          'sh',
          '-c',
          `${trap}echo $$ > ${pidFile}; while :; do date +%s%N >> ${beats}; sleep 0.1; done`,
        ],
        { onSpawn: (p) => (pid = p) },
      );
      await until(() => readNumber(pidFile) > 0);
      const pgid = readNumber(pidFile);
      groups.add(pgid);
      expect(pgid).not.toBe(pid); // a group of its own
      const client = new LockClient({ endpoint: stack.url });
      expect((await client.inspect(name)).state).toBe('held');

      process.kill(pid, 'SIGKILL');
      const killed = Date.now();
      await until(() => liveInGroup(pgid).length === 0, 2_000 + 1_000);
      const took = Date.now() - killed;
      // Before the lease's end: the lock is still held by the lease latchkey can no longer renew.
      expect((await client.inspect(name)).state).toBe('held');
      if (trap)
        expect(took).toBeGreaterThanOrEqual(2_000); // SIGTERM was ignored: SIGKILL after the grace
      else expect(took).toBeLessThan(2_000); // SIGTERM was enough
      const r = await running;
      expect(r.code).toBeNull(); // latchkey died of SIGKILL
      expect(r.stderr).toMatch(
        /latchkey ended while its command held .*: stopping the command \(process group \d+\): SIGTERM now, SIGKILL in 2s/,
      );
      // Nothing writes heartbeats any more.
      const count = readFileSync(beats, 'utf8').split('\n').length;
      await sleep(300);
      expect(readFileSync(beats, 'utf8').split('\n').length).toBe(count);
    },
  );
});

describe('nested runs', () => {
  const tsx = createRequire(import.meta.url).resolve('tsx');
  /** `latchkey run ...args` as a command of another run. */
  const inner = (...args: string[]) => [
    process.execPath,
    '--import',
    tsx,
    'bin/latchkey.ts',
    ...stackFlags(stack),
    'run',
    ...args,
  ];

  it('a run inside a run holding its lock is refused at once, not left to wait forever', async () => {
    const name = lockName();
    // (--wait bounds the inner wait only so that a regression fails here instead of hanging.)
    const r = await latchkey(['run', name, '--', ...inner('--wait', '20s', name, '--', 'true')]);
    expect(r.code, r.stderr).toBe(EXIT.NOT_ACQUIRED);
    expect(r.stderr).toContain(
      `latchkey: not acquired: ${name} is held by the latchkey run this one runs inside`,
    );
    // With several locks, any of them; a shared run inside an exclusive one too.
    const other = lockName();
    const several = await latchkey([
      'run',
      '--lock',
      name,
      '--lock',
      other,
      '--',
      ...inner('--shared', other, '--', 'true'),
    ]);
    expect(several.code, several.stderr).toBe(EXIT.NOT_ACQUIRED);
    expect(several.stderr).toContain(`not acquired: ${other} is held by the latchkey run`);
  });

  it("two runs that nest each other's locks in opposite orders: one inner wait is refused as a deadlock at once, and the other then runs", {
    timeout: 60_000,
  }, async () => {
    const [x, y] = [lockName(), lockName()];
    const dir = mkdtempSync(join(tmpdir(), 'latchkey-nested-'));
    // Each outer run, holding its lock, says so and waits for the other before its inner run asks.
    const nested = (mine: string, theirs: string, wanted: string) => [
      'sh',
      '-c',
      `touch ${dir}/${mine}; until [ -f ${dir}/${theirs} ]; do sleep 0.05; done; exec ${inner(
        '--wait',
        '20s',
        wanted,
        '--',
        'true',
      )
        .map((a) => `'${a}'`)
        .join(' ')}`,
    ];
    const started = performance.now();
    const [a, b] = await Promise.all([
      latchkey(['run', x, '--', ...nested('a', 'b', y)]),
      latchkey(['run', y, '--', ...nested('b', 'a', x)]),
    ]);
    const refused = a.code === 0 ? b : a;
    expect([a.code, b.code].sort(), `${a.stderr}\n${b.stderr}`).toEqual([0, EXIT.NOT_ACQUIRED]);
    expect(refused.stderr).toContain(
      'would close a cycle of waits (a deadlock), so the service refused this wait',
    );
    // The cycle says which client keeps which run's lock: each inner run is inside the other's outer run.
    expect(refused.stderr).toMatch(
      /latchkey: {3}\S+ \(yours\), inside \S+ \(yours\), which waits for it, waits for cli\//,
    );
    expect(performance.now() - started).toBeLessThan(20_000); // not left to its --wait

    // Three deep on one side: the innermost run keeps the outermost run's lock too.
    const [p, q, m] = [lockName(), lockName(), lockName()];
    const deep = await Promise.all([
      latchkey(['run', p, '--', ...inner(m, '--', ...nested('c', 'd', q))]),
      latchkey(['run', q, '--', ...nested('d', 'c', p)]),
    ]);
    expect(deep.map((r) => r.code).sort(), deep.map((r) => r.stderr).join('\n')).toEqual([
      0,
      EXIT.NOT_ACQUIRED,
    ]);
    expect(deep.map((r) => r.stderr).join('\n')).toContain('would close a cycle of waits (a deadlock)');
  });

  it('shared inside shared runs; a LATCHKEY_LOCKS whose grant is gone (a daemon that outlived its run) counts for nothing', async () => {
    const name = lockName();
    const shared = await latchkey(['run', '--shared', name, '--', ...inner('--shared', name, '--', 'true')]);
    expect(shared.code, shared.stderr).toBe(0);
    // A semaphore of one: its one place is the enclosing run's, so the inner run could never get in.
    const one = ['--shared', '--max-holders', '1'];
    const full = await latchkey([
      'run',
      ...one,
      name,
      '--',
      ...inner('--wait', '20s', ...one, name, '--', 'true'),
    ]);
    expect(full.code, full.stderr).toBe(EXIT.NOT_ACQUIRED);
    expect(full.stderr).toContain(
      `latchkey: not acquired: ${name} is held by the latchkey run this one runs inside`,
    );
    const two = ['--shared', '--max-holders', '2'];
    const room = await latchkey(['run', ...two, name, '--', ...inner(...two, name, '--', 'true')]);
    expect(room.code, room.stderr).toBe(0);
    const stale = await runCli([...stackFlags(stack), 'run', name, '--', 'true'], {
      env: { ...process.env, LATCHKEY_LOCKS: `${name}=1795000000000001`, LATCHKEY_MODE: 'exclusive' },
    });
    expect(stale.code, stale.stderr).toBe(0);
    // Named with a token, but held now under another (a later grant): not the enclosing run's.
    const held = await new LockClient({ endpoint: stack.url, clientId: 'later-holder' }).tryAcquire(name, {
      ttlMs: 60_000,
    });
    expect(held).not.toBeNull();
    const other = await runCli([...stackFlags(stack), 'run', '-n', name, '--', 'true'], {
      env: { ...process.env, LATCHKEY_LOCKS: `${name}=${(held?.fencingToken ?? 0) - 1}` },
    });
    expect(other.code).toBe(EXIT.NOT_ACQUIRED);
    expect(other.stderr).toContain('is held by later-holder');
    expect(other.stderr).not.toContain('runs inside');
  });
});

describe('errors that name the fix', () => {
  it('an unreachable endpoint says where it came from and how to set it', async () => {
    const port = await closedPort();
    const { LATCHKEY_ENDPOINT: _, LATCHKEY_WS_ENDPOINT: __, ...env } = process.env;
    const r = await latchkey(['show', 'cli/x'], {
      env: { ...env, LATCHKEY_ENDPOINT: `http://127.0.0.1:${port}` },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `latchkey at http://127.0.0.1:${port} is unreachable (connect ECONNREFUSED 127.0.0.1:${port}); the HTTP API endpoint came from LATCHKEY_ENDPOINT: check that it is where latchkey runs, or give --endpoint URL`,
    );
    // Each retry said as it goes, before the final error.
    const retries = r.stderr.split('\n').filter((line) => line.includes('trying again'));
    expect(retries).toEqual(
      [2, 3, 4, 5].map(
        (n) =>
          `latchkey: inspect cli/x: latchkey at http://127.0.0.1:${port} is unreachable (connect ECONNREFUSED 127.0.0.1:${port}): trying again (attempt ${n} of 5)`,
      ),
    );
    // Under --json the error is on stdout too; under run --json, stdout is the command's alone.
    const json = await latchkey(['--json', 'show', 'cli/x'], {
      env: { ...env, LATCHKEY_ENDPOINT: `http://127.0.0.1:${port}` },
    });
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { code: 'UNAVAILABLE', retryable: true } });
    const run = await latchkey(['--json', 'run', 'cli/x', '--', 'true'], {
      env: { ...env, LATCHKEY_ENDPOINT: `http://127.0.0.1:${port}` },
    });
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    // A command line that does not parse, under --json: a USAGE error on stdout.
    const usage = await latchkey(['--json', 'renew', 'cli/x', '--token', '1']);
    expect(usage.code).toBe(1);
    expect(JSON.parse(usage.stdout)).toEqual({
      error: { code: 'USAGE', message: "required option '--ttl <duration>' not specified", retryable: false },
    });
  });

  it('a WebSocket endpoint without its stage says to include it', async () => {
    const noStage = stack.wsUrl.replace(/\/v1$/, '');
    const r = await latchkey(['--ws-endpoint', noStage, 'run', lockName(), '--', 'true']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /the WebSocket endpoint ws:\/\/127\.0\.0\.1:\d+\/ answered 404 \(no WebSocket API at \/.*\): it should be the API's WebSocket URL including its stage \(the stack's WebSocketUrl output\), e\.g\. wss:\/\/abc\.execute-api\.eu-west-1\.amazonaws\.com\/v1 \(locally ws:\/\/127\.0\.0\.1:3001\/v1\); the WebSocket endpoint was given with --ws-endpoint: check that URL/,
    );
  });

  it('a duration without a unit is refused, for every duration flag', async () => {
    for (const args of [
      ['run', 'cli/x', '--ttl', '30', '--', 'true'],
      ['run', 'cli/x', '--wait', '30', '--', 'true'],
      ['run', 'cli/x', '--kill-grace', '5', '--', 'true'],
      ['acquire', 'cli/x', '--ttl', '30'],
      ['watch', '--every', '1'],
    ]) {
      const r = await latchkey(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(
        /argument '\d+' is invalid\. '\d+' has no unit: give a unit, e\.g\. 30s or 30000ms/,
      );
      // The error and a hint, not the whole help after it.
      expect(r.stderr).toContain('(add --help for usage)');
      expect(r.stderr).not.toContain('Options:');
    }
  });

  it('renew without --ttl is refused before anything is sent: a default would cut a longer lease', async () => {
    const r = await latchkey(['renew', 'cli/x', '--token', '1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("required option '--ttl <duration>' not specified");
  });
});

describe('the other commands', () => {
  it('acquire, show, ls, renew and release, human and --json', async () => {
    const name = lockName();
    const acquired = await latchkey(['--json', '--client-id', 'ops', 'acquire', name, '--ttl', '1m']);
    expect(acquired.code, acquired.stderr).toBe(0);
    const lease = JSON.parse(acquired.stdout);
    expect(lease).toMatchObject({ lock: name, client_id: 'ops', fencing_token: expect.any(Number) });
    // Not acquired: exit 3, and under --json an answer on stdout all the same.
    const refused = await latchkey(['--json', '--client-id', 'other', 'acquire', name, '--ttl', '1m']);
    expect(refused.code).toBe(3);
    expect(lease).toMatchObject({ acquired: true, remaining_ms: expect.any(Number), reentry: 1 });
    expect(JSON.parse(refused.stdout)).toMatchObject({
      acquired: false,
      lock: name,
      holder: { client_id: 'ops', expires_at: lease.expires_at, held_by: 'lease' },
      retry_after_ms: expect.any(Number),
    });
    // The human message says until when.
    expect(refused.stderr).toMatch(/is held by ops, its lease ends in \d/);
    // An error under --json: the API's error shape on stdout (and the message on stderr).
    const tooShort = await latchkey(['--json', 'acquire', lockName(), '--ttl', '500ms']);
    expect(tooShort.code).toBe(1);
    expect(JSON.parse(tooShort.stdout)).toEqual({
      error: { code: 'INVALID_REQUEST', message: '--ttl must be at least 1s', retryable: false },
    });
    expect(tooShort.stderr).toContain('latchkey: --ttl must be at least 1s [INVALID_REQUEST]');
    // watch --json: one JSON object a line, each a whole frame.
    const watched = await latchkey(['--json', 'watch', 'cli/', '--every', '200ms'], {
      onStdout: (out, pid) => {
        if (out.split('\n').length > 2) process.kill(pid, 'SIGINT');
      },
    });
    const frames = watched.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(frames.length).toBeGreaterThanOrEqual(2);
    expect(frames[0]).toMatchObject({ at: expect.any(String), prefix: 'cli/', queues: expect.any(Array) });
    expect(frames[0].locks).toContainEqual(expect.objectContaining({ lock: name, state: 'held' }));
    const shown = await latchkey(['show', name]);
    expect(shown.stdout).toContain(`${name}: held`);
    expect(shown.stdout).toContain(`holder   ops (yours)  token ${lease.fencing_token}`);
    const listed = await latchkey(['ls', 'cli/']);
    expect(listed.stdout).toMatch(
      new RegExp(`${name}\\s+held\\s+ops \\(yours\\)\\s+${lease.fencing_token}\\s`),
    );
    const renewed = await latchkey([
      '--client-id',
      'ops',
      'renew',
      name,
      '--token',
      String(lease.fencing_token),
      '--ttl',
      '2m',
    ]);
    expect(renewed.code, renewed.stderr).toBe(0);
    const wrong = await latchkey(['--client-id', 'ops', 'release', name, '--token', '1']);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('NOT_HOLDER');
    const released = await latchkey([
      '--client-id',
      'ops',
      'release',
      name,
      '--token',
      String(lease.fencing_token),
    ]);
    expect(released.stdout).toContain(`released ${name}`);
    // A lock another principal holds: shown held, by whom, without its token.
    const theirs = lockName();
    const alice = new LockClient({ endpoint: stack.url, credentials: { ...ALICE }, clientId: 'alice-ops' });
    const aliceLease = await alice.tryAcquire(theirs, { ttlMs: 60_000 });
    expect(aliceLease).not.toBeNull();
    const other = await latchkey(['show', theirs]);
    expect(other.stdout).toContain(`${theirs}: held`);
    expect(other.stdout).toMatch(/holder {3}alice-ops {2}expires in/);
    expect(other.stdout).not.toContain(String(aliceLease?.fencingToken));
    expect((await latchkey(['ls', theirs])).stdout).toMatch(
      new RegExp(`${theirs}\\s+held\\s+alice-ops\\s+-\\s`),
    );
    const notMine = await latchkey([
      '--client-id',
      'alice-ops',
      'release',
      theirs,
      '--token',
      String(aliceLease?.fencingToken),
    ]);
    expect(notMine.code).toBe(1);
    expect(notMine.stderr).toContain('FORBIDDEN');
    await alice.release(aliceLease as Lease);
    const bad = await latchkey(['run', name, '--ttl', 'soon', '--', 'true']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/not a duration/);
  });

  it('a wait that times out says whom it waited for, over WebSocket (one lookup) and over HTTP (the last answer)', async () => {
    const name = lockName();
    const holder = new LockClient({ endpoint: stack.url, clientId: 'slow-holder' });
    await holder.tryAcquire(name, { ttlMs: 120_000 });
    const overWebSocket = await latchkey(['acquire', name, '--wait', '3s', '--json']);
    // Still waiting after a second, it says once whom for, as run does.
    expect(overWebSocket.stderr).toMatch(
      new RegExp(
        `^latchkey: waiting for ${name}: held by slow-holder \\(lease ends in [\\d.]+[sm]\\), 1st of 1 in the queue$`,
        'm',
      ),
    );
    const overHttp = await runCli(['--endpoint', stack.url, 'acquire', name, '--wait', '1s', '--json']);
    for (const r of [overWebSocket, overHttp]) {
      expect(r.code, r.stderr).toBe(EXIT.NOT_ACQUIRED);
      expect(JSON.parse(r.stdout)).toMatchObject({
        acquired: false,
        lock: name,
        wait_timed_out: true,
        holder: { client_id: 'slow-holder', held_by: 'lease' },
      });
      expect(r.stderr).toMatch(
        new RegExp(
          `^latchkey: lock ${name} was not granted within [13]s: it is held by slow-holder, its lease ends in`,
          'm',
        ),
      );
    }
    const run = await latchkey(['run', name, '--wait', '300ms', '--', 'true']);
    expect(run.stderr).toMatch(/was not granted within 300ms: it is held by slow-holder, its lease ends in/);
    // acquire takes -n / --no-wait as run does (its default: it tries once).
    const once = await latchkey(['acquire', name, '-n', '--json']);
    expect(once.code).toBe(EXIT.NOT_ACQUIRED);
    expect(JSON.parse(once.stdout)).toMatchObject({ acquired: false, holder: { client_id: 'slow-holder' } });
  });

  it('release of a re-entered lock counts it down and says how many releases are left; the SDK returns the count', async () => {
    const name = lockName();
    const sdk = new LockClient({ endpoint: stack.url, clientId: 'reentered' });
    const lease = (await sdk.tryAcquire(name, { ttlMs: 60_000, reentrant: true })) as Lease;
    await sdk.tryAcquire(name, { ttlMs: 60_000, reentrant: true });
    await sdk.tryAcquire(name, { ttlMs: 60_000, reentrant: true });
    const release = ['--client-id', 'reentered', 'release', name, '--token', String(lease.fencingToken)];
    const once = await latchkey(release);
    expect(once.stdout.trim()).toBe(
      `counted one re-entry of ${name} down: still held (token ${lease.fencingToken}) until 2 more releases`,
    );
    expect(JSON.parse((await latchkey([...release, '--json'])).stdout)).toEqual({
      released: true,
      lock: name,
      remaining_reentries: 1,
    });
    expect(await sdk.release(lease)).toEqual({ remainingReentries: 0 });
    expect((await sdk.inspect(name)).state).toBe('free');
  });
});
