/** The `latchkey` CLI as processes, against the local stack. */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalStack } from '../../local/stack';
import { Lease, LockClient } from '../../sdk';
import { EXIT } from '../../sdk/cli/run';
import { ALICE, startTestStack } from '../support/stack';

const tsx = createRequire(import.meta.url).resolve('tsx');
let stack: LocalStack;
let dir: string;

beforeAll(async () => {
  stack = await startTestStack('cli');
  dir = mkdtempSync(join(tmpdir(), 'latchkey-cli-'));
});
afterAll(() => stack.stop());

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function latchkey(args: string[], options: { onSpawn?: (pid: number) => void } = {}): Promise<Ran> {
  const child = spawn(
    process.execPath,
    ['--import', tsx, 'bin/latchkey.ts', '--endpoint', stack.url, '--ws-endpoint', stack.wsUrl, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  options.onSpawn?.(child.pid as number);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c));
  child.stderr.on('data', (c: Buffer) => (stderr += c));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

const lockName = () => `cli/${randomUUID()}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const until = async (test: () => boolean, ms = 20_000) => {
  const deadline = Date.now() + ms;
  while (!test()) {
    if (Date.now() > deadline) throw new Error('timed out');
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

  it("exits with the command's code, and with 3 when the lock is held", async () => {
    const name = lockName();
    expect((await latchkey(['run', name, '--', 'sh', '-c', 'exit 7'])).code).toBe(7);
    const holder = new LockClient({ endpoint: stack.url });
    await holder.tryAcquire(name, { ttlMs: 10_000 });
    const held = await latchkey(['run', name, '--', 'true']);
    expect(held.code).toBe(EXIT.NOT_ACQUIRED);
    expect(held.stderr).toMatch(/held by/);
    const waited = await latchkey(['run', name, '--wait', '300ms', '--', 'true']);
    expect(waited.code).toBe(EXIT.NOT_ACQUIRED);
    expect(waited.stderr).toMatch(/not granted within/);
    expect((await latchkey(['run', lockName(), '--', '/no/such/command'])).code).toBe(EXIT.CANNOT_RUN);
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
    process.kill(pid, 'SIGTERM');
    const r = await running;
    expect(r.code).toBe(143);
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
});

describe('the other commands', () => {
  it('acquire, show, ls, renew and release, human and --json', async () => {
    const name = lockName();
    const acquired = await latchkey(['--json', '--client-id', 'ops', 'acquire', name, '--ttl', '1m']);
    expect(acquired.code, acquired.stderr).toBe(0);
    const lease = JSON.parse(acquired.stdout);
    expect(lease).toMatchObject({ lock: name, client_id: 'ops', fencing_token: expect.any(Number) });
    const shown = await latchkey(['show', name]);
    expect(shown.stdout).toContain(`${name}: held`);
    expect(shown.stdout).toContain(`holder   ops (yours)  token ${lease.fencing_token}`);
    const listed = await latchkey(['ls', 'cli/']);
    expect(listed.stdout).toMatch(new RegExp(`${name}\\s+held\\s+ops\\s+${lease.fencing_token}\\s`));
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
});
