import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalStack } from '../../local/stack';
import { EXIT } from '../../sdk/cli/run';
import { Lease, LockClient, LockHeldError, WaitTimeoutError } from '../../sdk/index';
import { type Ran, runCli, stackFlags } from '../support/cli-process';
import { startTestStack } from '../support/stack';

let stack: LocalStack;
let dir: string;
const clients: LockClient[] = [];

beforeAll(async () => {
  stack = await startTestStack('multi');
  dir = mkdtempSync(join(tmpdir(), 'latchkey-multi-'));
});
afterAll(async () => {
  for (const c of clients) c.close();
  await stack.stop();
});

const client = (ws = true) => {
  const c = new LockClient({ endpoint: stack.url, ...(ws ? { wsEndpoint: stack.wsUrl } : {}) });
  clients.push(c);
  return c;
};
const lockName = (what: string) => `multi/${randomUUID()}/${what}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('withLocks', () => {
  it('callers naming the same two locks in opposite orders never deadlock and never overlap', {
    timeout: 180_000,
  }, async () => {
    const a = lockName('a');
    const b = lockName('b');
    let inside = 0;
    let overlaps = 0;
    /** [token of a, token of b] per time fn ran. */
    const held: [number, number][] = [];
    const worker = async (c: LockClient, order: string[], rounds: number) => {
      for (let i = 0; i < rounds; i++)
        await c.withLocks(
          order,
          { ttlMs: 15_000, waitTimeoutMs: 120_000 },
          async (leases, signal, byName) => {
            inside++;
            if (inside > 1) overlaps++;
            expect(leases.map((l) => l.name)).toEqual([a, b].sort()); // canonical order, whatever was given
            held.push([byName.get(a)?.fencingToken ?? 0, byName.get(b)?.fencingToken ?? 0]);
            await sleep(5);
            expect(signal.aborted).toBe(false);
            inside--;
          },
        );
    };
    const rounds = 8;
    await Promise.all([
      worker(client(), [a, b], rounds),
      worker(client(), [b, a], rounds),
      worker(client(), [b, a], rounds),
      worker(client(false), [a, b], rounds), // one waits over HTTP
    ]);
    expect(overlaps).toBe(0);
    expect(held).toHaveLength(4 * rounds);
    // Every grant of a came with a grant of b, in the same order: the set was always held as one.
    for (let i = 1; i < held.length; i++) {
      const [prevA, prevB] = held[i - 1] as [number, number];
      const [nextA, nextB] = held[i] as [number, number];
      expect(nextA).toBeGreaterThan(prevA);
      expect(nextB).toBeGreaterThan(prevB);
    }
    const c = client();
    for (const name of [a, b]) expect((await c.inspect(name)).state).toBe('free');
  });

  it('when a later lock is held by someone else, the wait runs out and the earlier lock is free again', {
    timeout: 60_000,
  }, async () => {
    const first = lockName('1');
    const second = lockName('2');
    const other = client();
    const blocker = await other.tryAcquire(second, { ttlMs: 30_000 });
    expect(blocker).not.toBeNull();
    const c = client();
    let ran = false;
    // Given in the other order: first is still acquired first (canonical order), then the wait for second runs out.
    const waited = c.withLocks([second, first], { ttlMs: 10_000, waitTimeoutMs: 500 }, async () => {
      ran = true;
    });
    await expect(waited).rejects.toBeInstanceOf(WaitTimeoutError);
    await expect(waited).rejects.toMatchObject({ lock: second });
    expect(ran).toBe(false);
    expect((await c.inspect(first)).state).toBe('free');
    expect((await c.inspect(first)).holders ?? []).toEqual([]);
    // Without a wait: LockHeldError, and again nothing left held.
    await expect(c.withLocks([first, second], async () => {})).rejects.toBeInstanceOf(LockHeldError);
    expect((await c.inspect(first)).state).toBe('free');
    // The blocker's lock is untouched, and once it is released the set can be had.
    expect((await c.inspect(second)).holders[0].fencing_token).toBe(blocker?.fencingToken);
    if (blocker) await other.release(blocker);
    expect(await c.withLocks([first, second], async (leases) => leases.length)).toBe(2);
  });
});

const latchkey = (args: string[]): Promise<Ran> => runCli([...stackFlags(stack), ...args]);

const until = async (test: () => boolean, ms = 60_000) => {
  const deadline = Date.now() + ms;
  while (!test()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(25);
  }
};

describe('latchkey run --lock A --lock B', () => {
  it('runs the command holding both (LATCHKEY_LOCKS), and frees both when it exits', {
    timeout: 120_000,
  }, async () => {
    const a = lockName('a');
    const b = lockName('b');
    const envFile = join(dir, `${randomUUID()}.env`);
    const go = join(dir, `${randomUUID()}.go`);
    const script = `printf '%s|%s|%s\\n' "$LATCHKEY_LOCKS" "\${LATCHKEY_LOCK-unset}" "\${LATCHKEY_FENCING_TOKEN-unset}" > ${envFile}.tmp && mv ${envFile}.tmp ${envFile}; while [ ! -f ${go} ]; do sleep 0.05; done; exit 5`;
    const running = latchkey([
      'run',
      '--lock',
      b,
      '--lock',
      a,
      '--ttl',
      '20s',
      '--wait',
      '60s',
      '--',
      'sh',
      '-c',
      script,
    ]);
    await until(() => existsSync(envFile));
    const [locks, lock, token] = readFileSync(envFile, 'utf8').trim().split('|');
    expect(lock).toBe('unset'); // holding several: LATCHKEY_LOCKS only
    expect(token).toBe('unset');
    const pairs = (locks as string).split(',').map((p) => p.split('='));
    expect(pairs.map(([name]) => name)).toEqual([a, b].sort());
    const c = client();
    for (const [name, t] of pairs) {
      const view = await c.inspect(name as string);
      expect(view.state).not.toBe('free');
      expect(view.holders[0].fencing_token).toBe(Number(t)); // held, under the token the command got
    }
    writeFileSync(go, '');
    const r = await running;
    expect(r.code, r.stderr).toBe(5); // the command's code
    for (const name of [a, b]) expect((await c.inspect(name)).state).toBe('free');
  });

  it('NAME and --lock together; one lock held elsewhere: exit 3 without running, and nothing left held', {
    timeout: 120_000,
  }, async () => {
    const a = lockName('a');
    const b = lockName('b');
    const c = client();
    const blocker = await c.tryAcquire(b, { ttlMs: 30_000 });
    expect(blocker).not.toBeNull();
    const marker = join(dir, `${randomUUID()}.ran`);
    const held = await latchkey(['run', a, '--lock', b, '-n', '--', 'touch', marker]);
    expect(held.code, held.stderr).toBe(EXIT.NOT_ACQUIRED);
    expect(held.stderr).toMatch(/is held/);
    expect(existsSync(marker)).toBe(false);
    expect((await c.inspect(a)).state).toBe('free');
    const waited = await latchkey(['run', a, '--lock', b, '--wait', '300ms', '--', 'touch', marker]);
    expect(waited.code, waited.stderr).toBe(EXIT.NOT_ACQUIRED);
    expect(existsSync(marker)).toBe(false);
    expect((await c.inspect(a)).state).toBe('free');
    if (blocker) await c.release(blocker);
    const ran = await latchkey(['run', a, '--lock', b, '--', 'sh', '-c', 'echo "$LATCHKEY_LOCKS"']);
    expect(ran.code, ran.stderr).toBe(0);
    expect(
      ran.stdout
        .trim()
        .split(',')
        .map((p) => p.split('=')[0]),
    ).toEqual([a, b].sort());
  });

  it('losing either lease stops the command and exits 4; the other lock is released', {
    timeout: 60_000,
  }, async () => {
    const a = lockName('a');
    const b = lockName('b');
    const envFile = join(dir, `${randomUUID()}.env`);
    const clientId = `multi-lost-${randomUUID().slice(0, 8)}`;
    const running = latchkey([
      '--client-id',
      clientId,
      'run',
      '--lock',
      a,
      '--lock',
      b,
      '--ttl',
      '3s',
      '--kill-grace',
      '500ms',
      '--',
      'sh',
      '-c',
      `trap 'echo stopped by latchkey; exit 0' TERM; echo "$LATCHKEY_LOCKS" > ${envFile}.tmp && mv ${envFile}.tmp ${envFile}; while :; do sleep 0.05; done`,
    ]);
    await until(() => existsSync(envFile));
    const tokens = new Map(
      readFileSync(envFile, 'utf8')
        .trim()
        .split(',')
        .map((p) => p.split('=') as [string, string]),
    );
    // Someone releases b from under the command (as if its lease had lapsed and passed on).
    const other = new LockClient({ endpoint: stack.url, clientId });
    clients.push(other);
    await other.release(
      new Lease(
        {
          lock: b,
          client_id: clientId,
          fencing_token: Number(tokens.get(b)),
          expires_at: '',
          remaining_ms: 0,
          ttl_ms: 1,
        },
        0,
      ),
    );
    const r = await running;
    expect(r.code, r.stderr).toBe(EXIT.LEASE_LOST);
    expect(r.stdout).toMatch(/stopped by latchkey/);
    expect(r.stderr).toMatch(/a lease \(one of .*\) was lost/);
    for (const name of [a, b]) expect((await other.inspect(name)).state).toBe('free');
  });

  it('with --lock, a command not after -- is refused before anything is taken', async () => {
    const a = lockName('a');
    const r = await latchkey(['run', '--lock', a, 'true']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/with --lock, the command goes after --/);
    expect((await client().inspect(a)).state).toBe('free');
  });
});
