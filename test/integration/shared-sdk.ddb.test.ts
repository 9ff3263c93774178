import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalStack } from '../../local/stack';
import { EXIT } from '../../sdk/cli/run';
import { type Lease, LockClient, LockHeldError, MaxHoldersMismatchError } from '../../sdk/index';
import { type Ran, runCli, stackFlags } from '../support/cli-process';
import { startTestStack } from '../support/stack';

let stack: LocalStack;
const clients: LockClient[] = [];

beforeAll(async () => {
  stack = await startTestStack('shared-sdk');
});
afterAll(async () => {
  for (const c of clients) c.close();
  await stack.stop();
});

const client = (clientId: string, ws = true) => {
  const c = new LockClient({
    endpoint: stack.url,
    ...(ws ? { wsEndpoint: stack.wsUrl } : {}),
    clientId: `${clientId}-${randomUUID().slice(0, 8)}`,
  });
  clients.push(c);
  return c;
};
const lockName = () => `shared/${randomUUID()}`;

/** A promise and its resolve. */
function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe('readers and a writer', () => {
  it.each([
    ['over WebSocket', true],
    ['over HTTP', false],
  ])(
    'two withLock({mode: shared}) hold at once; a writer waits for both, then gets a larger token (%s)',
    async (_, ws) => {
      const name = lockName();
      const readers = [client('reader-a', ws), client('reader-b', ws)];
      const writer = client('writer', ws);
      const inside = [deferred<Lease>(), deferred<Lease>()];
      const leave = [deferred(), deferred()];
      const reading = readers.map((r, i) =>
        r.withLock(name, { mode: 'shared', ttlMs: 10_000, waitTimeoutMs: 30_000 }, async (lease) => {
          inside[i]?.resolve(lease);
          await leave[i]?.promise; // each stays until told: both inside means both at once
          return lease.fencingToken;
        }),
      );
      const [a, b] = await Promise.all(inside.map((d) => d.promise));
      expect(a?.mode).toBe('shared');
      expect(b?.mode).toBe('shared');
      expect(a?.fencingToken).not.toBe(b?.fencingToken);
      const view = await writer.inspect(name);
      expect(view).toMatchObject({ state: 'held', mode: 'shared' });
      expect(view.holders).toHaveLength(2);
      expect(view.holders.every((h: { mode: string }) => h.mode === 'shared')).toBe(true);

      let writing = false;
      const written = writer.withLock(name, { ttlMs: 10_000, waitTimeoutMs: 60_000 }, (lease) => {
        writing = true;
        expect(lease.mode).toBe('exclusive');
        return lease.fencingToken;
      });
      await vi.waitFor(async () => expect((await writer.inspect(name)).queued).toBe(1), { timeout: 20_000 });
      leave[0]?.resolve();
      await reading[0];
      const between = await writer.inspect(name);
      expect(between.holders).toHaveLength(1); // the other reader still holds it
      expect(writing).toBe(false);
      leave[1]?.resolve();
      const tokens = await Promise.all(reading);
      const token = await written;
      expect(token).toBeGreaterThan(Math.max(...tokens));
    },
  );
});

describe('a semaphore', () => {
  it('of 2 admits two of three; the third waits for a slot; another N is refused', async () => {
    const name = lockName();
    const [one, two, three] = [client('one'), client('two'), client('three')];
    const opts = { mode: 'shared', maxHolders: 2, ttlMs: 10_000 } as const;
    const first = await one.tryAcquire(name, opts);
    const second = await two.tryAcquire(name, opts);
    expect(first).toMatchObject({ mode: 'shared', maxHolders: 2 });
    expect(second).toMatchObject({ mode: 'shared', maxHolders: 2 });
    expect(await three.tryAcquire(name, opts)).toBeNull();
    // The refusal says the semaphore is full, and how full.
    const full = await three.acquireNow(name, opts);
    expect(full).toBeInstanceOf(LockHeldError);
    expect((full as LockHeldError).shared).toEqual({ holders: 2, maxHolders: 2 });
    expect((full as LockHeldError).message).toMatch(
      new RegExp(`^lock ${name} is full: 2 of 2 holders \\((one|two)-\\S+ among them\\)$`),
    );
    const mismatch = await three.tryAcquire(name, { ...opts, maxHolders: 3 }).catch((e: unknown) => e);
    expect(mismatch).toBeInstanceOf(MaxHoldersMismatchError);
    expect((mismatch as MaxHoldersMismatchError).maxHoldersInForce).toBe(2);
    const view = await three.inspect(name);
    expect(view).toMatchObject({ mode: 'shared', max_holders: 2 });

    const third = three.acquire(name, { ...opts, waitTimeoutMs: 60_000 });
    await vi.waitFor(async () => expect((await three.inspect(name)).queued).toBe(1), { timeout: 20_000 });
    await one.release(first as Lease);
    const got = await third;
    expect(got).toMatchObject({ mode: 'shared', maxHolders: 2 });
    expect(got.fencingToken).toBeGreaterThan(Math.max(first?.fencingToken ?? 0, second?.fencingToken ?? 0));
    await two.renew(second as Lease); // a renewal of a shared lease (with its mode hint)
    await two.release(second as Lease);
    await three.release(got);
    expect((await three.inspect(name)).state).toBe('free');
  });
});

describe('latchkey run --shared', () => {
  const latchkey = (args: string[]): Promise<Ran> => runCli([...stackFlags(stack), ...args]);

  it('two shared runs hold at once (each waits, inside, for the other); an exclusive one is refused meanwhile', async () => {
    const name = lockName();
    const dir = mkdtempSync(join(tmpdir(), 'latchkey-shared-'));
    // Each marks itself inside, then waits (up to 60 s) for the other's mark: both exit 0 only if
    // both held the lock at once.
    // Both then stay inside until the test has tried an exclusive run (the file `go`).
    const script = (me: string, other: string) =>
      `touch ${join(dir, me)}; i=0; while [ ! -e ${join(dir, other)} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; [ -e ${join(dir, other)} ] && [ -n "$LATCHKEY_FENCING_TOKEN" ] || exit 1; i=0; while [ ! -e ${join(dir, 'go')} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done`;
    const runs = [
      latchkey(['run', name, '--shared', '--wait', '60s', '--', 'sh', '-c', script('a', 'b')]),
      latchkey(['run', name, '--shared', '--wait', '60s', '--', 'sh', '-c', script('b', 'a')]),
    ];
    const c = client('cli-check');
    await vi.waitFor(async () => expect((await c.inspect(name)).holders?.length).toBe(2), {
      timeout: 30_000,
    });
    const exclusive = await latchkey(['run', '-n', name, '--', 'true']);
    expect(exclusive.code).toBe(EXIT.NOT_ACQUIRED);
    expect(exclusive.stderr).toMatch(/is held shared by 2 holders \(\S+ among them\), \S+'s lease ends in /);
    const shown = await latchkey(['show', name]);
    expect(shown.stdout).toContain(`${name}: held (shared)`);
    writeFileSync(join(dir, 'go'), '');
    const done = await Promise.all(runs);
    for (const r of done) expect(r.code, r.stderr).toBe(0);
    const refused = await latchkey(['run', name, '--max-holders', '2', '--', 'true']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('--shared');
  });

  it('--shared --max-holders 1: a semaphore of one admits one run at a time', async () => {
    const name = lockName();
    const first = await latchkey([
      '--json',
      'acquire',
      name,
      '--shared',
      '--max-holders',
      '1',
      '--ttl',
      '1m',
    ]);
    expect(first.code, first.stderr).toBe(0);
    const lease = JSON.parse(first.stdout);
    expect(lease).toMatchObject({ mode: 'shared', max_holders: 1 });
    const held = await latchkey(['run', '-n', name, '--shared', '--max-holders', '1', '--', 'true']);
    expect(held.code).toBe(EXIT.NOT_ACQUIRED);
    const released = await latchkey([
      '--client-id',
      lease.client_id,
      'release',
      name,
      '--token',
      String(lease.fencing_token),
      '--shared',
    ]);
    expect(released.code, released.stderr).toBe(0);
    const ran = await latchkey(['run', '-n', name, '--shared', '--max-holders', '1', '--', 'true']);
    expect(ran.code, ran.stderr).toBe(0);
  });
});
