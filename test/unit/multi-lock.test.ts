/**
 * Several locks at once (LockClient.withLocks, `latchkey run --lock A --lock B`): one canonical
 * order, the argument checks, one wait deadline for the set, one signal for all leases, and
 * everything already held released on any failure. No network: the client's transport is stubbed
 * (as in sdk-errors.test.ts), or holdLocks is given a fake LockTaker.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it, vi } from 'vitest';
import { runTargets } from '../../sdk/cli/main';
import { enclosingRun, groupRuns, lockEnv } from '../../sdk/cli/run';
import {
  compareLockNames,
  InvalidArgumentError,
  InvalidRequestError,
  Lease,
  LeaseLostError,
  LockClient,
  LockHeldError,
  lockOrder,
  WaitTimeoutError,
} from '../../sdk/index';
import { type CheckedOptions, holdLocks, type LockTaker } from '../../sdk/multi-lock';

// biome-ignore lint/suspicious/noExplicitAny: wire bodies
type Body = Record<string, any>;

interface Sent {
  readonly path: string;
  readonly body: Body;
}

let tokens = 100;
const grant = (lock: string, ttl = 30_000) => ({
  acquired: true,
  lock,
  client_id: 'me',
  fencing_token: ++tokens,
  expires_at: new Date(Date.now() + ttl).toISOString(),
  remaining_ms: ttl,
  ttl_ms: ttl,
});

/**
 * A client whose transport answers like latchkey without a network, recording what it was sent.
 * `answer(lock, body)` may answer an acquire differently (held, an error); releases answer 200
 * unless `releaseStatus` says otherwise.
 */
function stubbed(
  answer: (lock: string, body: Body) => { status: number; body: unknown } | undefined = () => undefined,
  releaseStatus = 200,
) {
  const client = new LockClient({ endpoint: 'http://127.0.0.1:9', clientId: 'me' });
  const sent: Sent[] = [];
  vi.spyOn(client.transport, 'send').mockImplementation(async (_method, path, body) => {
    const b = (body ?? {}) as Body;
    sent.push({ path, body: b });
    const lock = /\/locks\/(.+)\/(acquire|renew|release)$/.exec(path);
    const name = lock?.[1] as string;
    if (lock?.[2] === 'acquire') return answer(name, b) ?? { status: 200, body: grant(name, b.ttl_ms) };
    if (lock?.[2] === 'renew')
      return {
        status: 200,
        body: { expires_at: new Date().toISOString(), remaining_ms: b.ttl_ms, ttl_ms: b.ttl_ms },
      };
    if (lock?.[2] === 'release') return { status: releaseStatus, body: {} };
    return { status: 200, body: {} };
  });
  const calls = (action: string) =>
    sent.filter((s) => s.path.endsWith(`/${action}`)).map((s) => /\/locks\/(.+)\//.exec(s.path)?.[1]);
  return { client, sent, calls };
}

const held = (lock: string) => ({
  status: 200,
  body: { acquired: false, lock, holder: { client_id: 'someone-else' }, retry_after_ms: 0 },
});

/** The error a call fails with (a rejection or a throw). */
async function failure(call: () => unknown): Promise<unknown> {
  try {
    await call();
  } catch (error) {
    return error;
  }
  throw new Error('the call should have failed');
}

describe('the canonical order', () => {
  it('is plain code-unit order of the names, whatever order they were given in', () => {
    expect(['b', 'a', 'B', 'a-b', 'a/b', 'a0', 'a.b'].sort(compareLockNames)).toEqual([
      'B',
      'a',
      'a-b',
      'a.b',
      'a/b',
      'a0',
      'b',
    ]);
    expect(compareLockNames('x', 'x')).toBe(0);
    expect(lockOrder(['jobs/b', { name: 'jobs/a' }, { name: 'jobs/c', mode: 'exclusive' }])).toEqual([
      { name: 'jobs/a', mode: 'exclusive' },
      { name: 'jobs/b', mode: 'exclusive' },
      { name: 'jobs/c', mode: 'exclusive' },
    ]);
    // Both orders of one set give one order.
    expect(lockOrder(['q', 'p'])).toEqual(lockOrder(['p', 'q']));
  });
});

describe('withLocks refuses a bad set before anything is sent', () => {
  const cases: [string, unknown, string, RegExp][] = [
    ['not an array', 'jobs/a', 'locks', /must be an array of lock names/],
    ['an empty list', [], 'locks', /at least one lock/],
    [
      'an element that is neither a name nor { name }',
      ['jobs/a', 7],
      'locks',
      /locks\[1\] must be a lock name/,
    ],
    ['a name that is not one', ['jobs/a', 'jobs//b'], 'name', /locks\[1\].*empty level/],
    ['a reserved last level', [{ name: 'jobs/acquire' }], 'name', /reserved word/],
    ['a name that is not a string', [{ name: 3 }], 'name', /must be the lock's name/],
    ['a bad mode', [{ name: 'jobs/a', mode: 'read' }], 'mode', /mode must be 'exclusive' .* or 'shared'/],
    // A semaphore is shared: maxHolders without mode 'shared' is refused (sdk-shared.test.ts has more).
    [
      'maxHolders without shared',
      ['jobs/a', { name: 'jobs/b', maxHolders: 3 }],
      'maxHolders',
      /locks\[1\] \(jobs\/b\): maxHolders makes a semaphore of shared holders: it takes mode: 'shared'/,
    ],
    [
      'a name twice',
      ['jobs/a', 'jobs/b', { name: 'jobs/a', mode: 'exclusive' }],
      'locks',
      /jobs\/a is named twice/,
    ],
  ];
  it.each(cases)('%s', async (_, locks, argument, says) => {
    const { client, sent } = stubbed();
    const fn = vi.fn();
    const error = await failure(() => client.withLocks(locks as string[], fn));
    expect(error).toBeInstanceOf(InvalidArgumentError);
    expect(error).toBeInstanceOf(InvalidRequestError);
    expect(error).toMatchObject({ argument });
    expect((error as Error).message).toMatch(says);
    expect(sent).toEqual([]);
    expect(fn).not.toHaveBeenCalled();
  });

  it('bad options and a missing fn, like withLock', async () => {
    const { client, sent } = stubbed();
    const cases: [() => unknown, string][] = [
      [() => client.withLocks(['a', 'b'], { ttlMs: Number.NaN }, async () => {}), 'ttlMs'],
      [() => client.withLocks(['a', 'b'], { waitTimeoutMs: -1 }, async () => {}), 'waitTimeoutMs'],
      [() => client.withLocks(['a', 'b'], { priority: 1.5 }, async () => {}), 'priority'],
      [
        () => client.withLocks(['a', 'b'], { stopMarginMs: Number.POSITIVE_INFINITY }, async () => {}),
        'stopMarginMs',
      ],
      [
        () => client.withLocks(['a', 'b'], { signal: 'stop' as unknown as AbortSignal }, async () => {}),
        'signal',
      ],
      [() => client.withLocks(['a', 'b'], 30_000 as unknown as object, async () => {}), 'options'],
      [() => client.withLocks(['a', 'b'], {}, undefined as unknown as () => void), 'fn'],
    ];
    for (const [call, argument] of cases) {
      const error = await failure(call);
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect(error).toMatchObject({ argument });
    }
    expect(sent).toEqual([]);
  });
});

describe('withLocks over a stubbed transport', () => {
  it('acquires in canonical order, each by its own path, gives fn the leases in that order and by name, and releases in reverse', async () => {
    const { client, sent, calls } = stubbed();
    const result = await client.withLocks(
      ['jobs/c', 'jobs/a', { name: 'jobs/b' }],
      { ttlMs: 10_000 },
      async (leases, signal, byName) => {
        expect(leases.map((l) => l.name)).toEqual(['jobs/a', 'jobs/b', 'jobs/c']);
        expect([...byName.keys()]).toEqual(['jobs/a', 'jobs/b', 'jobs/c']);
        expect(byName.get('jobs/b')).toBe(leases[1]);
        expect(signal.aborted).toBe(false);
        expect(calls('release')).toEqual([]); // nothing released while fn runs
        return leases.map((l) => l.fencingToken);
      },
    );
    expect(result).toHaveLength(3);
    expect(calls('acquire')).toEqual(['jobs/a', 'jobs/b', 'jobs/c']);
    expect(calls('release')).toEqual(['jobs/c', 'jobs/b', 'jobs/a']);
    for (const s of sent.filter((x) => x.path.endsWith('/acquire'))) {
      expect(s.body).toMatchObject({ ttl_ms: 10_000, client_id: 'me' });
      expect(s.body).not.toHaveProperty('mode'); // exclusive is the service's default: not sent
      expect(s.body).not.toHaveProperty('wait_timeout_ms'); // default: each tried once
    }
  });

  it('withLocks(locks, fn) takes every default: a 30 s lease, tried once', async () => {
    const { client, sent } = stubbed();
    expect(await client.withLocks(['x'], async (leases) => leases.length)).toBe(1);
    expect(sent[0]?.body).toMatchObject({ ttl_ms: 30_000 });
    expect(sent[0]?.body).not.toHaveProperty('wait_timeout_ms');
  });

  it('a held lock: LockHeldError, and what was already held is released, in reverse', async () => {
    const { client, calls } = stubbed((lock) => (lock === 'c' ? held(lock) : undefined));
    const fn = vi.fn();
    const error = await failure(() => client.withLocks(['d', 'c', 'b', 'a'], fn));
    expect(error).toBeInstanceOf(LockHeldError);
    expect(error).toMatchObject({ lock: 'c', holder: 'someone-else' });
    expect(calls('acquire')).toEqual(['a', 'b', 'c']); // d is never asked for
    expect(calls('release')).toEqual(['b', 'a']);
    expect(fn).not.toHaveBeenCalled();
  });

  it('an error answer while acquiring is rethrown as is, after releasing what was held', async () => {
    const refusal = { status: 400, body: { error: { code: 'INVALID_REQUEST', message: 'no thanks' } } };
    const { client, calls } = stubbed((lock) => (lock === 'b' ? refusal : undefined));
    const error = await failure(() => client.withLocks(['a', 'b', 'c'], async () => {}));
    expect(error).toBeInstanceOf(InvalidRequestError);
    expect((error as Error).message).toBe('no thanks');
    expect(calls('release')).toEqual(['a']);
  });

  it("what fn throws is thrown, and a failing release replaces neither fn's error nor its value", async () => {
    const { client, calls } = stubbed(undefined, 409);
    await expect(
      client.withLocks(['a', 'b'], async () => {
        throw new Error('fn failed');
      }),
    ).rejects.toThrow('fn failed');
    expect(calls('release')).toEqual(['b', 'a']);
    expect(await client.withLocks(['a', 'b'], () => 'value')).toBe('value');
  });

  it("names locks held outside the set (holding) in each wait, besides the set's own", async () => {
    const { client, sent } = stubbed();
    expect(await client.withLocks(['a', 'b'], { waitTimeoutMs: 1_000, holding: ['x'] }, () => 'ok')).toBe(
      'ok',
    );
    const waits = sent
      .filter((s) => s.path.endsWith('/acquire'))
      .map((s) => [...(s.body.holding ?? [])].sort());
    expect(waits).toEqual([['x'], ['a', 'x']]);
  });

  it('a signal aborted before anything is acquired ends it with its reason', async () => {
    const { client, sent } = stubbed();
    const stop = new AbortController();
    stop.abort(new Error('stopped'));
    await expect(
      client.withLocks(['a', 'b'], { signal: stop.signal, waitTimeoutMs: 1_000 }, async () => {}),
    ).rejects.toThrow('stopped');
    expect(sent).toEqual([]);
  });
});

/** A fake LockTaker: leases granted at once, keepers whose loss the test decides. */
function fakeTaker(options: { wait?: LockTaker['wait'] } = {}) {
  const log: string[] = [];
  const keepers = new Map<string, AbortController>();
  const stopped: string[] = [];
  const leaseOf = (name: string) => new Lease(grant(name), performance.now());
  const taker: LockTaker = {
    tryOnce: async (name) => {
      log.push(`try ${name}`);
      return leaseOf(name);
    },
    wait:
      options.wait ??
      (async (name, _mode, o) => {
        log.push(`wait ${name} ${o.waitTimeoutMs}`);
        return leaseOf(name);
      }),
    keep: (lease) => {
      const controller = new AbortController();
      keepers.set(lease.name, controller);
      return { signal: controller.signal, stop: () => stopped.push(lease.name) };
    },
    releaseQuietly: async (lease) => {
      log.push(`release ${lease.name}`);
      return true;
    },
  };
  return { taker, log, keepers, stopped };
}

const checked = (o: Partial<CheckedOptions> = {}): CheckedOptions => ({
  ttlMs: 30_000,
  waitTimeoutMs: 0,
  priority: undefined,
  signal: undefined,
  stopMarginMs: undefined,
  holding: undefined,
  ...o,
});

describe('holdLocks', () => {
  it('waitTimeoutMs is one deadline for the set: each wait gets what is left of it', async () => {
    const asked: number[] = [];
    const { taker } = fakeTaker({
      wait: async (name, _mode, o) => {
        asked.push(o.waitTimeoutMs);
        await new Promise((resolve) => setTimeout(resolve, 20)); // a wait that takes a while
        return new Lease(grant(name), performance.now());
      },
    });
    await holdLocks(taker, lockOrder(['a', 'b', 'c']), checked({ waitTimeoutMs: 60_000 }), () => {});
    expect(asked).toHaveLength(3);
    expect(asked[0]).toBeLessThanOrEqual(60_000);
    for (let i = 1; i < asked.length; i++) expect(asked[i]).toBeLessThan(asked[i - 1] as number);
    asked.length = 0;
    await holdLocks(
      taker,
      lockOrder(['a', 'b']),
      checked({ waitTimeoutMs: Number.POSITIVE_INFINITY }),
      () => {},
    );
    expect(asked).toEqual([Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY]);
  });

  it('a deadline that runs out on a later lock: its WaitTimeoutError, the earlier ones released', async () => {
    const { taker, log, stopped } = fakeTaker({
      wait: async (name, _mode, o) => {
        log.push(`wait ${name}`);
        if (name === 'b') throw new WaitTimeoutError(name, o.waitTimeoutMs);
        return new Lease(grant(name), performance.now());
      },
    });
    const error = await failure(() =>
      holdLocks(taker, lockOrder(['c', 'b', 'a']), checked({ waitTimeoutMs: 500 }), () => {}),
    );
    expect(error).toBeInstanceOf(WaitTimeoutError);
    expect(error).toMatchObject({ lock: 'b' });
    expect(log).toEqual(['wait a', 'wait b', 'release a']);
    expect(stopped).toEqual(['a']);
  });

  it('a lease lost while waiting for the next lock ends the wait with its LeaseLostError, and releases', async () => {
    const fake: ReturnType<typeof fakeTaker> = fakeTaker({
      wait: async (name, _mode, o) => {
        if (name === 'a') return new Lease(grant(name), performance.now());
        // b is contended: this wait ends only when its signal aborts (a's keeper says a is lost).
        setTimeout(() => fake.keepers.get('a')?.abort(new LeaseLostError('lease on a lost')), 10);
        return new Promise<Lease>((_, reject) => {
          o.signal?.throwIfAborted();
          o.signal?.addEventListener('abort', () => reject(o.signal?.reason), { once: true });
        });
      },
    });
    const fn = vi.fn();
    const error = await failure(() =>
      holdLocks(fake.taker, lockOrder(['a', 'b']), checked({ waitTimeoutMs: 60_000 }), fn),
    );
    expect(error).toBeInstanceOf(LeaseLostError);
    expect((error as Error).message).toBe('lease on a lost');
    expect(fake.log).toEqual(['release a']);
    expect(fn).not.toHaveBeenCalled();
  });

  it("fn's one signal aborts when any lease is lost, with the first lost lease's reason, which is thrown instead of fn's result", async () => {
    const { taker, keepers, log, stopped } = fakeTaker();
    let reason: unknown;
    const error = await failure(() =>
      holdLocks(taker, lockOrder(['a', 'b', 'c']), checked(), async (leases, signal) => {
        expect(leases.map((l) => l.name)).toEqual(['a', 'b', 'c']);
        expect(signal.aborted).toBe(false);
        const first = new LeaseLostError('lease on b lost');
        keepers.get('b')?.abort(first);
        keepers.get('c')?.abort(new LeaseLostError('lease on c lost'));
        expect(signal.aborted).toBe(true);
        reason = signal.reason;
        return 'done, but not under the locks';
      }),
    );
    expect((reason as Error).message).toBe('lease on b lost');
    expect(error).toBe(reason);
    expect(stopped.sort()).toEqual(['a', 'b', 'c']); // every keeper stopped
    expect(log.filter((l) => l.startsWith('release'))).toEqual(['release c', 'release b', 'release a']);
  });

  it('a lease past its deadline when fn returns is lost even if its keeper never said so (a blocked event loop)', async () => {
    const { taker, log } = fakeTaker();
    const error = await failure(() =>
      holdLocks(taker, lockOrder(['a', 'b']), checked(), async (leases) => {
        (leases[1] as Lease).deadline = performance.now() - 1; // b's keeper's timers could not run
        return 'late';
      }),
    );
    expect(error).toBeInstanceOf(LeaseLostError);
    expect((error as Error).message).toMatch(/lease on b passed its deadline before the callback settled/);
    expect(log.filter((l) => l.startsWith('release'))).toEqual(['release b', 'release a']);
  });

  it("what fn throws is thrown as it is, lease lost or not; fn's result with every lease kept is returned", async () => {
    const { taker, keepers } = fakeTaker();
    const own = new Error('fn failed');
    const thrown = await failure(() =>
      holdLocks(taker, lockOrder(['a']), checked(), async () => {
        keepers.get('a')?.abort(new LeaseLostError('lease on a lost'));
        throw own;
      }),
    );
    expect(thrown).toBe(own);
    expect(await holdLocks(fakeTaker().taker, lockOrder(['a', 'b']), checked(), async () => 42)).toBe(42);
  });

  it('with one lock, fn gets that keeper signal, and waitTimeoutMs 0 tries each once', async () => {
    const { taker, keepers, log } = fakeTaker();
    await holdLocks(taker, lockOrder(['z']), checked(), (_leases, signal) => {
      expect(signal).toBe(keepers.get('z')?.signal);
    });
    expect(log).toEqual(['try z', 'release z']);
  });
});

describe('latchkey run with several locks', () => {
  const argv = (...args: string[]) => ['node', 'latchkey', ...args];

  it('without --lock: NAME then the command, as always', () => {
    expect(runTargets(['jobs/a', 'sh', '-c', 'x'], [], argv('run', 'jobs/a', '--', 'sh', '-c', 'x'))).toEqual(
      {
        names: ['jobs/a'],
        command: ['sh', '-c', 'x'],
      },
    );
    expect(() => runTargets([], [], argv('run'))).toThrow(/missing the lock name/);
    expect(() => runTargets(['jobs/a'], [], argv('run', 'jobs/a'))).toThrow(/missing the command/);
    // Without a NAME before --, the command's first word is not taken for the lock's name.
    expect(() => runTargets(['echo', 'hi'], [], argv('run', '--', 'echo', 'hi'))).toThrow(
      /missing the lock name before --/,
    );
    expect(() => runTargets(['echo', 'hi'], [], argv('run', '--ttl', '30s', '--', 'echo', 'hi'))).toThrow(
      /missing the lock name before --/,
    );
    expect(runTargets(['jobs/a', 'sh'], [], argv('run', 'jobs/a', 'sh'))).toEqual({
      names: ['jobs/a'],
      command: ['sh'],
    });
  });

  it('with --lock: the command is what follows --, NAME (if any) joins the set, each name once', () => {
    expect(
      runTargets(
        ['env', '-0'],
        ['b', 'a'],
        argv('--endpoint', 'http://x', 'run', '--lock', 'b', '--lock', 'a', '--', 'env', '-0'),
      ),
    ).toEqual({ names: ['b', 'a'], command: ['env', '-0'] });
    expect(
      runTargets(['c', 'true'], ['b', 'c'], argv('run', 'c', '--lock', 'b', '--lock', 'c', '--', 'true')),
    ).toEqual({ names: ['c', 'b'], command: ['true'] });
    // A `--` inside the command is the command's.
    expect(
      runTargets(
        ['git', 'diff', '--', 'f'],
        ['a'],
        argv('run', '--lock', 'a', '--', 'git', 'diff', '--', 'f'),
      ),
    ).toEqual({ names: ['a'], command: ['git', 'diff', '--', 'f'] });
    expect(() => runTargets(['sh', 'x'], ['a'], argv('run', '--lock', 'a', 'sh', 'x'))).toThrow(
      /with --lock, the command goes after --/,
    );
    expect(() =>
      runTargets(['x', 'y', 'true'], ['a'], argv('run', 'x', 'y', '--lock', 'a', '--', 'true')),
    ).toThrow(/at most one NAME/);
    expect(() => runTargets([], ['a'], argv('run', '--lock', 'a', '--'))).toThrow(/missing the command/);
  });

  it('the environment: one lock as always (plus LATCHKEY_LOCKS); several as LATCHKEY_LOCKS only', () => {
    const l = (name: string, token: number) => new Lease({ ...grant(name), fencing_token: token }, 0);
    const base = {
      PATH: '/bin',
      LATCHKEY_LOCK: 'outer',
      LATCHKEY_FENCING_TOKEN: '1',
      LATCHKEY_MODE: 'shared',
    };
    expect(lockEnv([l('jobs/a', 12)], base)).toEqual({
      PATH: '/bin',
      LATCHKEY_LOCK: 'jobs/a',
      LATCHKEY_FENCING_TOKEN: '12',
      LATCHKEY_LOCKS: 'jobs/a=12',
      LATCHKEY_LOCKS_CLIENT_ID: 'me',
      LATCHKEY_MODE: 'exclusive',
    });
    const env = lockEnv([l('jobs/b', 5), l('jobs/a', 7)], base);
    expect(env).toEqual({
      PATH: '/bin',
      LATCHKEY_LOCKS: 'jobs/a=7,jobs/b=5',
      LATCHKEY_LOCKS_CLIENT_ID: 'me',
      LATCHKEY_MODE: 'exclusive',
    });
    // Held shared (run --shared): the command is told so.
    const shared = (name: string, token: number) =>
      new Lease({ ...grant(name), fencing_token: token, mode: 'shared' } as never, 0);
    expect(lockEnv([shared('jobs/r', 3)], base)).toMatchObject({
      LATCHKEY_MODE: 'shared',
      LATCHKEY_LOCK: 'jobs/r',
    });
    expect(lockEnv([shared('jobs/r', 3), l('jobs/w', 4)], base)).not.toHaveProperty('LATCHKEY_MODE');
    // Parseable: split on ',' then on the last '='.
    const parsed = Object.fromEntries(
      (env.LATCHKEY_LOCKS as string)
        .split(',')
        .map((p) => [p.slice(0, p.lastIndexOf('=')), p.slice(p.lastIndexOf('=') + 1)]),
    );
    expect(parsed).toEqual({ 'jobs/a': '7', 'jobs/b': '5' });
  });

  it("a latchkey inside a run's command keeps the locks of every run around it, nearest last (from the environment)", () => {
    expect(enclosingRun({ LATCHKEY_LOCKS: 'jobs/a=7,jobs/b=5', LATCHKEY_LOCKS_CLIENT_ID: 'run-1' })).toEqual([
      { clientId: 'run-1', holding: ['jobs/a', 'jobs/b'] },
    ]);
    // Outside a run, or variables that are not a run's: nothing is claimed.
    expect(enclosingRun({})).toEqual([]);
    expect(enclosingRun({ LATCHKEY_LOCKS: 'jobs/a=7' })).toEqual([]);
    expect(enclosingRun({ LATCHKEY_LOCKS: 'jobs/a=7', LATCHKEY_LOCKS_CLIENT_ID: 'has space' })).toEqual([]);
    expect(enclosingRun({ LATCHKEY_LOCKS: 'garbage', LATCHKEY_LOCKS_CLIENT_ID: 'run-1' })).toEqual([]);
    expect(enclosingRun({ LATCHKEY_LOCKS: '/bad=3,jobs/a=7', LATCHKEY_LOCKS_CLIENT_ID: 'run-1' })).toEqual([
      { clientId: 'run-1', holding: ['jobs/a'] },
    ]);
    // Three deep: a run inside a run passes on the chain around it, and its own locks after it.
    const l = (name: string, token: number, clientId: string) =>
      new Lease({ ...grant(name), fencing_token: token, client_id: clientId }, 0);
    const outer = lockEnv([l('jobs/a', 1, 'run-1')], { PATH: '/bin' });
    expect(outer).not.toHaveProperty('LATCHKEY_ENCLOSING');
    const middle = lockEnv([l('jobs/b', 2, 'run-2'), l('jobs/c', 3, 'run-2')], outer);
    expect(middle.LATCHKEY_ENCLOSING).toBe('run-1 jobs/a');
    const inner = lockEnv([l('jobs/d', 4, 'run-3')], middle);
    expect(inner.LATCHKEY_ENCLOSING).toBe('run-1 jobs/a;run-2 jobs/b,jobs/c');
    expect(enclosingRun(inner)).toEqual([
      { clientId: 'run-1', holding: ['jobs/a'] },
      { clientId: 'run-2', holding: ['jobs/b', 'jobs/c'] },
      { clientId: 'run-3', holding: ['jobs/d'] },
    ]);
    // Garbled entries are left out; beyond the service's limits the outermost runs go first.
    expect(enclosingRun({ ...inner, LATCHKEY_ENCLOSING: 'x y z;run-1 jobs/a;bad! jobs/x;run-2 /x' })).toEqual(
      [
        { clientId: 'run-1', holding: ['jobs/a'] },
        { clientId: 'run-3', holding: ['jobs/d'] },
      ],
    );
    const deep = Array.from({ length: 10 }, (_, i) => `run-${i} jobs/l${i}`).join(';');
    const kept = enclosingRun({ ...inner, LATCHKEY_ENCLOSING: deep });
    expect(kept).toHaveLength(8);
    expect(kept.map((r) => r.clientId).slice(-2)).toEqual(['run-9', 'run-3']);
    const wide = `run-x ${Array.from({ length: 32 }, (_, i) => `w/${i}`).join(',')}`;
    // A run holding more than fits is named by its first locks, the nearest runs whole.
    expect(enclosingRun({ ...inner, LATCHKEY_ENCLOSING: wide })).toEqual([
      { clientId: 'run-x', holding: Array.from({ length: 31 }, (_, i) => `w/${i}`) },
      { clientId: 'run-3', holding: ['jobs/d'] },
    ]);
  });
});

describe('deadlock detection: a wait names the locks its task holds (holding)', () => {
  const holdingOf = (sent: Sent[], lock: string) =>
    sent.find((s) => s.path.endsWith(`/locks/${lock}/acquire`))?.body.holding as string[] | undefined;

  it('withLocks: each wait names the locks of the set already held', async () => {
    const { client, sent } = stubbed();
    await client.withLocks(['set/c', 'set/a', 'set/b'], { waitTimeoutMs: 5_000 }, async () => {});
    expect(holdingOf(sent, 'set/a')).toBeUndefined();
    expect(holdingOf(sent, 'set/b')).toEqual(['set/a']);
    expect(holdingOf(sent, 'set/c')).toEqual(['set/a', 'set/b']);
  });

  it('a wait inside withLock (or withLocks) names the enclosing locks, and an explicit holding too', async () => {
    const { client, sent } = stubbed();
    await client.withLock('outer', { waitTimeoutMs: 1_000 }, async () => {
      await client.withLocks(['mid/a'], { waitTimeoutMs: 1_000 }, async () => {
        const lease = await client.acquire('inner', { waitTimeoutMs: 1_000, holding: ['by-hand'] });
        await client.release(lease);
      });
    });
    expect(holdingOf(sent, 'mid/a')).toEqual(['outer']);
    expect(holdingOf(sent, 'inner')).toEqual(['outer', 'mid/a', 'by-hand']);
  });

  it("concurrent tasks of one client never name each other's locks", async () => {
    const { client, sent } = stubbed();
    let inside!: () => void;
    const entered = new Promise<void>((resolve) => {
      inside = resolve;
    });
    let leave!: () => void;
    const left = new Promise<void>((resolve) => {
      leave = resolve;
    });
    const first = client.withLock('task1/lock', { waitTimeoutMs: 1_000 }, async () => {
      inside();
      await left;
    });
    await entered;
    const lease = await client.acquire('task2/lock', { waitTimeoutMs: 1_000 });
    leave();
    await first;
    await client.release(lease);
    expect(holdingOf(sent, 'task2/lock')).toBeUndefined();
  });

  it('a try names nothing, and a bad holding is refused before anything is sent', async () => {
    const { client, sent } = stubbed();
    await client.withLock('outer', async () => {
      await client.release((await client.tryAcquire('tried')) as Lease);
    });
    expect(holdingOf(sent, 'tried')).toBeUndefined();
    const before = sent.length;
    for (const holding of ['a', [42], ['bad name']])
      expect(
        await failure(() => client.acquire('x', { waitTimeoutMs: 10, holding } as unknown as object)),
      ).toBeInstanceOf(InvalidArgumentError);
    expect(sent.length).toBe(before);
  });
});

describe("run's process group", () => {
  const hasSetsid = spawnSync('sh', ['-c', 'command -v setsid']).status === 0;

  it.skipIf(!existsSync('/proc/self/stat') || !hasSetsid)(
    'a group left with only a zombie (exited, never reaped) counts as gone, though the kernel still lists it',
    async () => {
      // setsid gives the background sleep a group of its own; its parent then becomes a sleep that
      // never reaps it, so once it is killed it stays a zombie, alone in its group.
      const parent = spawn('sh', ['-c', 'setsid sleep 1000 & echo $!; exec sleep 1000'], {
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      try {
        const pgid = await new Promise<number>((resolve) =>
          parent.stdout.once('data', (c: Buffer) => resolve(Number(String(c).trim()))),
        );
        // Once setsid has made the group (it runs after $! is known), the sleep runs in it.
        await vi.waitFor(() => expect(groupRuns(pgid)).toBe(true), { timeout: 10_000, interval: 10 });
        process.kill(pgid, 'SIGKILL');
        await vi.waitFor(() => expect(groupRuns(pgid)).toBe(false), { timeout: 10_000, interval: 20 });
        // The kernel still lists it: signalling the group succeeds (what run's check was before).
        expect(() => process.kill(-pgid, 0)).not.toThrow();
      } finally {
        parent.kill('SIGKILL');
      }
    },
  );

  it.skipIf(!existsSync('/proc/self/stat'))(
    'a group /proc shows no member of is left to the kernel to judge',
    () => {
      // No process has this group (pids stay far below it): /proc cannot say it is gone.
      expect(groupRuns(2 ** 30)).toBeUndefined();
    },
  );
});
