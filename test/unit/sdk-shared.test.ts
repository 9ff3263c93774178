/**
 * Shared locks and semaphores in the SDK and CLI: `mode` and `maxHolders` checked before
 * anything is sent and forwarded on every acquire path (one try, HTTP waits, WebSocket waits,
 * sessions, withLock, withLocks); exclusive requests unchanged (no `mode` key); a shared lease says
 * `mode: 'shared'` on every renewal and release; MAX_HOLDERS_MISMATCH is a typed error; the CLI's
 * --shared and --max-holders. No network: the transport is stubbed, as in sdk-errors.test.ts.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { lockModeFlags, program } from '../../sdk/cli/main';
import { errorFromResponse } from '../../sdk/errors';
import {
  InvalidArgumentError,
  LatchkeyClientError,
  Lease,
  LockClient,
  type LockClientOptions,
  LockHeldError,
  lockOrder,
  MaxHoldersMismatchError,
} from '../../sdk/index';
import type { SignedTransport } from '../../sdk/transport';
import { WsWaiter } from '../../sdk/ws-waiter';

// biome-ignore lint/suspicious/noExplicitAny: wire bodies
type Body = Record<string, any>;

interface Sent {
  readonly method: string;
  readonly path: string;
  readonly body: Body | undefined;
}

let tokens = 500;
/** A grant as the service answers it, in the mode (and with the N) it was asked for. */
const grant = (lock: string, asked: Body = {}) => {
  const ttl = asked.ttl_ms ?? 30_000;
  const session = asked.session_id !== undefined;
  return {
    acquired: true,
    lock,
    client_id: 'me',
    fencing_token: ++tokens,
    expires_at: session ? null : new Date(Date.now() + ttl).toISOString(),
    remaining_ms: session ? null : ttl,
    ttl_ms: session ? null : ttl,
    mode: asked.mode ?? 'exclusive',
    ...(asked.max_holders === undefined ? {} : { max_holders: asked.max_holders }),
    ...(session ? { session_id: asked.session_id } : {}),
    reentry: 1,
  };
};

/**
 * A client whose transport answers like latchkey, recording what it was sent. `acquire` may answer
 * an acquire otherwise (an error, held).
 */
function stubbed(
  acquire: (lock: string, body: Body) => { status: number; body: unknown } | undefined = () => undefined,
  options: Partial<LockClientOptions> = {},
) {
  const client = new LockClient({ endpoint: 'http://127.0.0.1:9', clientId: 'me', ...options });
  const sent: Sent[] = [];
  vi.spyOn(client.transport, 'send').mockImplementation(async (method, path, body) => {
    const b = body as Body | undefined;
    sent.push({ method, path, body: b });
    const lock = /\/locks\/(.+)\/(acquire|renew|release)$/.exec(path);
    if (path === '/api/v1/sessions')
      return {
        status: 201,
        body: { session_id: randomUUID(), ttl_ms: b?.ttl_ms, heartbeat_interval_ms: b?.ttl_ms / 3 },
      };
    if (lock?.[2] === 'acquire')
      return acquire(lock[1] as string, b ?? {}) ?? { status: 200, body: grant(lock[1] as string, b) };
    if (lock?.[2] === 'renew')
      return {
        status: 200,
        body: {
          renewed: true,
          lock: lock[1],
          fencing_token: b?.fencing_token,
          expires_at: new Date(Date.now() + b?.ttl_ms).toISOString(),
          remaining_ms: b?.ttl_ms,
          ttl_ms: b?.ttl_ms,
        },
      };
    return { status: 200, body: { released: true } };
  });
  const bodies = (action: string) =>
    sent.filter((s) => s.path.endsWith(`/${action}`)).map((s) => s.body as Body);
  return { client, sent, bodies };
}

/** The error a call fails with (a rejection or a throw). */
async function failure(call: () => unknown): Promise<unknown> {
  try {
    await call();
  } catch (error) {
    return error;
  }
  throw new Error('the call should have failed');
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('what is sent to acquire', () => {
  it('tryAcquire: exclusive asks exactly as before (no mode key); shared and semaphores say so', async () => {
    const { client, bodies } = stubbed();
    await client.tryAcquire('x', { ttlMs: 5_000 });
    await client.tryAcquire('x', { ttlMs: 5_000, mode: 'exclusive' });
    await client.tryAcquire('x', { ttlMs: 5_000, mode: 'shared' });
    await client.tryAcquire('x', { ttlMs: 5_000, mode: 'shared', maxHolders: 3 });
    const [plain, exclusive, shared, semaphore] = bodies('acquire');
    // Byte for byte what an exclusive acquire always sent: the same keys, in the same order.
    expect(Object.keys(plain ?? {})).toEqual(['client_id', 'request_id', 'ttl_ms']);
    expect(Object.keys(exclusive ?? {})).toEqual(['client_id', 'request_id', 'ttl_ms']);
    expect(shared).toMatchObject({ ttl_ms: 5_000, mode: 'shared' });
    expect(shared).not.toHaveProperty('max_holders');
    expect(semaphore).toMatchObject({ ttl_ms: 5_000, mode: 'shared', max_holders: 3 });
  });

  it('acquire over HTTP waits: mode and max_holders in each wait; none for exclusive', async () => {
    const { client, bodies } = stubbed();
    await client.acquire('x', { waitTimeoutMs: 5_000, mode: 'shared', maxHolders: 2 });
    await client.acquire('x', { waitTimeoutMs: 5_000 });
    const [shared, exclusive] = bodies('acquire');
    // The wait left when each was sent (a loaded machine may take a millisecond first).
    expect(shared).toMatchObject({ mode: 'shared', max_holders: 2 });
    for (const body of [shared, exclusive]) {
      expect(body?.wait_timeout_ms).toBeGreaterThan(0);
      expect(body?.wait_timeout_ms).toBeLessThanOrEqual(5_000);
    }
    expect(exclusive).not.toHaveProperty('mode');
    expect(exclusive).not.toHaveProperty('max_holders');
  });

  it('acquire over the WebSocket API hands the waiter the mode and maxHolders', async () => {
    const client = new LockClient({
      endpoint: 'http://127.0.0.1:9',
      wsEndpoint: 'ws://127.0.0.1:9/v1',
      clientId: 'me',
    });
    const asked: Body[] = [];
    vi.spyOn(WsWaiter.prototype, 'wait').mockImplementation(async (request) => {
      asked.push(request);
      return grant(request.lock, {
        ttl_ms: request.ttlMs,
        ...(request.mode === 'shared' ? { mode: 'shared' } : {}),
        ...(request.maxHolders === undefined ? {} : { max_holders: request.maxHolders }),
      });
    });
    const lease = await client.acquire('x', { waitTimeoutMs: 5_000, mode: 'shared', maxHolders: 4 });
    expect(asked[0]).toMatchObject({ lock: 'x', mode: 'shared', maxHolders: 4 });
    expect(lease).toMatchObject({ mode: 'shared', maxHolders: 4 });
    await client.acquire('y', { waitTimeoutMs: 5_000 });
    expect(asked[1]).toMatchObject({ lock: 'y', mode: 'exclusive' });
    expect(asked[1]?.maxHolders).toBeUndefined();
    client.close();
  });

  it("the WebSocket waiter's acquire body: mode and max_holders with connection_id; none for exclusive", async () => {
    const sent: Body[] = [];
    const transport = {
      send: vi.fn(async (_method: string, _path: string, body: unknown) => {
        sent.push(body as Body);
        return { status: 200, body: grant('L', body as Body) };
      }),
    } as unknown as SignedTransport;
    const waiter = new WsWaiter(new URL('ws://127.0.0.1:9/v1'), 'me', transport, async () => {});
    // No real connection: the waiter asks over HTTP naming this one, and the answer is the grant.
    (waiter as unknown as { connect: () => Promise<unknown> }).connect = async () => ({
      ws: {},
      id: 'conn-1',
    });
    const base = { lock: 'L', ttlMs: 5_000, waitMs: 5_000 };
    const shared = await waiter.wait({ ...base, requestId: randomUUID(), mode: 'shared', maxHolders: 2 });
    await waiter.wait({ ...base, requestId: randomUUID(), mode: 'exclusive' });
    await waiter.wait({ ...base, requestId: randomUUID() });
    expect(sent[0]).toMatchObject({ connection_id: 'conn-1', mode: 'shared', max_holders: 2 });
    expect(shared).toMatchObject({ mode: 'shared', max_holders: 2 });
    for (const body of sent.slice(1)) {
      expect(body).toHaveProperty('connection_id', 'conn-1');
      expect(body).not.toHaveProperty('mode');
      expect(body).not.toHaveProperty('max_holders');
    }
    waiter.close();
  });

  it('withLock, tried once or waiting, asks in its mode and releases saying so', async () => {
    const { client, bodies } = stubbed();
    const modes: string[] = [];
    await client.withLock('x', { mode: 'shared', maxHolders: 5 }, (lease) => {
      modes.push(lease.mode);
      expect(lease.maxHolders).toBe(5);
    });
    await client.withLock('y', { mode: 'shared', waitTimeoutMs: 1_000 }, (lease) => {
      modes.push(lease.mode);
    });
    await client.withLock('z', (lease) => {
      modes.push(lease.mode);
    });
    expect(modes).toEqual(['shared', 'shared', 'exclusive']);
    const [x, y, z] = bodies('acquire');
    expect(x).toMatchObject({ mode: 'shared', max_holders: 5 });
    expect(x).not.toHaveProperty('wait_timeout_ms');
    expect(y).toMatchObject({ mode: 'shared', wait_timeout_ms: 1_000 });
    expect(y).not.toHaveProperty('max_holders');
    expect(z).not.toHaveProperty('mode');
    const [rx, ry, rz] = bodies('release');
    expect(rx).toMatchObject({ mode: 'shared' });
    expect(ry).toMatchObject({ mode: 'shared' });
    // Exclusive: no mode (as before); every release names itself for its retries.
    expect(Object.keys(rz ?? {})).toEqual(['client_id', 'fencing_token', 'release_id']);
  });

  it("withLock's keeper renews a shared lease saying so", async () => {
    const { client, bodies } = stubbed();
    await client.withLock('x', { mode: 'shared', ttlMs: 1_000 }, async () => {
      await vi.waitFor(() => expect(bodies('renew').length).toBeGreaterThan(0), { timeout: 10_000 });
    });
    expect(bodies('renew')[0]).toMatchObject({ mode: 'shared', ttl_ms: 1_000 });
  });

  it('sessions: tryAcquire and acquire in a session forward mode and max_holders', async () => {
    const { client, bodies } = stubbed();
    const session = await client.session({ ttlMs: 15_000 });
    try {
      const a = await session.tryAcquire('a', { mode: 'shared', maxHolders: 2 });
      const b = await session.acquire('b', { mode: 'shared', waitTimeoutMs: 1_000 });
      const c = await session.acquire('c', { waitTimeoutMs: 1_000 });
      const d = await session.tryAcquire('d');
      const [ab, bb, cb, db] = bodies('acquire');
      expect(ab).toMatchObject({ session_id: session.id, mode: 'shared', max_holders: 2 });
      expect(bb).toMatchObject({ session_id: session.id, mode: 'shared', wait_timeout_ms: 1_000 });
      for (const body of [cb, db]) {
        expect(body).toHaveProperty('session_id', session.id);
        expect(body).not.toHaveProperty('mode');
      }
      expect([a?.mode, b.mode, c.mode, d?.mode]).toEqual(['shared', 'shared', 'exclusive', 'exclusive']);
      await session.release(b);
      expect(bodies('release')[0]).toMatchObject({ mode: 'shared', fencing_token: b.fencingToken });
    } finally {
      await session.close();
    }
  });

  it('withLocks: each lock in its own mode, in the canonical order; shared releases say so', async () => {
    const { client, bodies, sent } = stubbed();
    const got = await client.withLocks(
      [{ name: 'c', mode: 'shared', maxHolders: 3 }, 'a', { name: 'b', mode: 'shared' }],
      async (leases) => leases.map((l) => [l.name, l.mode, l.maxHolders]),
    );
    expect(got).toEqual([
      ['a', 'exclusive', undefined],
      ['b', 'shared', undefined],
      ['c', 'shared', 3],
    ]);
    const acquires = bodies('acquire');
    expect(acquires[0]).not.toHaveProperty('mode');
    expect(acquires[1]).toMatchObject({ mode: 'shared' });
    expect(acquires[1]).not.toHaveProperty('max_holders');
    expect(acquires[2]).toMatchObject({ mode: 'shared', max_holders: 3 });
    const releases = sent.filter((s) => s.path.endsWith('/release'));
    expect(releases.map((r) => [r.path.split('/')[4], r.body?.mode])).toEqual([
      ['c', 'shared'],
      ['b', 'shared'],
      ['a', undefined],
    ]);
    expect(lockOrder([{ name: 'q', mode: 'shared', maxHolders: 2 }, 'p'])).toEqual([
      { name: 'p', mode: 'exclusive' },
      { name: 'q', mode: 'shared', maxHolders: 2 },
    ]);
  });

  it('withLocks waiting: the wait carries each lock its mode', async () => {
    const { client, bodies } = stubbed();
    await client.withLocks(
      [{ name: 'a', mode: 'shared', maxHolders: 7 }, 'b'],
      { waitTimeoutMs: 2_000 },
      () => {},
    );
    const [a, b] = bodies('acquire');
    expect(a).toMatchObject({ mode: 'shared', max_holders: 7 });
    expect(a).toHaveProperty('wait_timeout_ms');
    expect(b).toHaveProperty('wait_timeout_ms');
    expect(b).not.toHaveProperty('mode');
  });
});

describe('release and renew of a shared lease', () => {
  const lease = (mode?: 'shared' | 'exclusive') =>
    new Lease(
      {
        lock: 'x',
        client_id: 'me',
        fencing_token: 9,
        expires_at: new Date(Date.now() + 30_000).toISOString(),
        remaining_ms: 30_000,
        ttl_ms: 30_000,
        ...(mode ? { mode } : {}),
      },
      performance.now(),
    );

  it("say mode 'shared'; an exclusive lease's requests are as they always were", async () => {
    const { client, bodies } = stubbed();
    await client.renew(lease('shared'));
    await client.release(lease('shared'));
    expect(await client.releaseQuietly(lease('shared'))).toBe(true);
    await client.renew(lease('exclusive'));
    await client.release(lease());
    await client.releaseQuietly(lease());
    expect(bodies('renew')).toEqual([
      { client_id: 'me', fencing_token: 9, ttl_ms: 30_000, mode: 'shared' },
      { client_id: 'me', fencing_token: 9, ttl_ms: 30_000 },
    ]);
    const release_id = expect.any(String);
    expect(bodies('release')).toEqual([
      { client_id: 'me', fencing_token: 9, mode: 'shared', release_id },
      { client_id: 'me', fencing_token: 9, mode: 'shared', release_id },
      { client_id: 'me', fencing_token: 9, release_id },
      { client_id: 'me', fencing_token: 9, release_id },
    ]);
  });

  it("a Lease reads its mode and a semaphore's N from the grant; an answer without mode is exclusive", () => {
    expect(lease()).toMatchObject({ mode: 'exclusive', maxHolders: undefined });
    const semaphore = new Lease({ ...grant('s', { mode: 'shared', max_holders: 3 }) }, 0);
    expect(semaphore).toMatchObject({ mode: 'shared', maxHolders: 3 });
    const plain = new Lease({ ...grant('s', { mode: 'shared' }), max_holders: null }, 0);
    expect(plain).toMatchObject({ mode: 'shared', maxHolders: undefined });
  });
});

describe('mode and maxHolders are checked before anything is sent', () => {
  const bad: [string, Body, string, RegExp][] = [
    [
      'an unknown mode',
      { mode: 'read' },
      'mode',
      /mode must be 'exclusive' \(one holder, the default\) or 'shared'/,
    ],
    [
      'maxHolders without a mode',
      { maxHolders: 3 },
      'maxHolders',
      /takes mode: 'shared' \(got maxHolders 3 with mode 'exclusive', the default\)/,
    ],
    ['maxHolders with exclusive', { mode: 'exclusive', maxHolders: 3 }, 'maxHolders', /takes mode: 'shared'/],
    ['maxHolders 0', { mode: 'shared', maxHolders: 0 }, 'maxHolders', /integer from 1 to 1000.*\(got 0\)/],
    ['maxHolders 1001', { mode: 'shared', maxHolders: 1001 }, 'maxHolders', /integer from 1 to 1000/],
    [
      'fractional maxHolders',
      { mode: 'shared', maxHolders: 2.5 },
      'maxHolders',
      /integer from 1 to 1000.*\(got 2\.5\)/,
    ],
    ['maxHolders as text', { mode: 'shared', maxHolders: '3' }, 'maxHolders', /\(got '3'\)/],
    ['NaN maxHolders', { mode: 'shared', maxHolders: Number.NaN }, 'maxHolders', /\(got NaN\)/],
  ];

  it.each(bad)('%s', async (_, options, argument, says) => {
    const { client, sent } = stubbed();
    const session = await client.session({ ttlMs: 15_000 });
    sent.length = 0;
    try {
      const calls: (() => unknown)[] = [
        () => client.tryAcquire('x', options),
        () => client.acquire('x', { ...options, waitTimeoutMs: 1_000 }),
        () => client.withLock('x', options, () => {}),
        () => client.withLock('x', { ...options, waitTimeoutMs: 1_000 }, () => {}),
        () => session.acquire('x', options),
        () => session.tryAcquire('x', options),
        () => client.withLocks(['a', { name: 'x', ...options }], () => {}),
      ];
      for (const call of calls) {
        const error = await failure(call);
        expect(error).toBeInstanceOf(InvalidArgumentError);
        expect(error).toMatchObject({ argument });
        expect((error as Error).message).toMatch(says);
      }
      expect(sent).toEqual([]);
    } finally {
      await session.close();
    }
  });

  it('withLocks takes a mode with each lock, not in its options', async () => {
    const { client, sent } = stubbed();
    for (const options of [{ mode: 'shared' }, { maxHolders: 2 }]) {
      const error = await failure(() => client.withLocks(['a'], options as object, () => {}));
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect((error as Error).message).toMatch(/goes with each lock, not in the options/);
    }
    const error = await failure(() => client.withLocks([{ name: 'a', maxHolders: 2 }], () => {}));
    expect((error as Error).message).toMatch(/withLocks: locks\[0\] \(a\): maxHolders makes a semaphore/);
    expect(sent).toEqual([]);
  });

  it('the limits themselves are taken: 1 and 1000', async () => {
    const { client, bodies } = stubbed();
    await client.tryAcquire('x', { mode: 'shared', maxHolders: 1 });
    await client.tryAcquire('x', { mode: 'shared', maxHolders: 1_000 });
    expect(bodies('acquire').map((b) => b.max_holders)).toEqual([1, 1_000]);
  });
});

describe('MAX_HOLDERS_MISMATCH', () => {
  const mismatch = (inForce: string, message: string) => ({
    status: 409,
    body: {
      error: {
        code: 'MAX_HOLDERS_MISMATCH',
        message,
        details: [{ path: 'max_holders', message: inForce }],
      },
    },
  });

  it('is a MaxHoldersMismatchError with the N in force (undefined: none), not retryable', () => {
    const three = errorFromResponse(
      409,
      mismatch(
        '3 in force',
        'x is held as a semaphore of max_holders 3: every holder must ask for the same max_holders',
      ).body,
    );
    expect(three).toBeInstanceOf(MaxHoldersMismatchError);
    expect(three).toBeInstanceOf(LatchkeyClientError);
    expect(three).toMatchObject({
      code: 'MAX_HOLDERS_MISMATCH',
      status: 409,
      retryable: false,
      maxHoldersInForce: 3,
      details: [{ path: 'max_holders', message: '3 in force' }],
    });
    const none = errorFromResponse(
      409,
      mismatch('none in force', 'x is held in shared mode without max_holders: ask without it').body,
    );
    expect(none).toBeInstanceOf(MaxHoldersMismatchError);
    expect((none as MaxHoldersMismatchError).maxHoldersInForce).toBeUndefined();
    // Without details, the N is read from the message.
    const bare = errorFromResponse(409, {
      error: { code: 'MAX_HOLDERS_MISMATCH', message: 'held as a semaphore of max_holders 12: ...' },
    });
    expect((bare as MaxHoldersMismatchError).maxHoldersInForce).toBe(12);
  });

  it('an acquire refused so throws it (a try too: it is no "held")', async () => {
    const { client } = stubbed(() => mismatch('2 in force', 'held as a semaphore of max_holders 2'));
    const tried = await failure(() => client.tryAcquire('x', { mode: 'shared', maxHolders: 3 }));
    expect(tried).toBeInstanceOf(MaxHoldersMismatchError);
    expect(tried).not.toBeInstanceOf(LockHeldError);
    expect((tried as MaxHoldersMismatchError).maxHoldersInForce).toBe(2);
    const waited = await failure(() =>
      client.acquire('x', { mode: 'shared', maxHolders: 3, waitTimeoutMs: 1_000 }),
    );
    expect(waited).toBeInstanceOf(MaxHoldersMismatchError);
  });
});

describe('the CLI', () => {
  /** Runs the CLI with these arguments (no network: the client's calls are spied on). */
  const cli = async (...args: string[]) => {
    const out: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((line: string) => void out.push(line));
    const p = program().exitOverride();
    for (const c of [p, ...p.commands]) {
      c.exitOverride();
      c.configureOutput({ writeErr: () => {}, writeOut: () => {} });
    }
    await p.parseAsync(['--endpoint', 'http://127.0.0.1:9', ...args], { from: 'user' });
    return out.join('\n');
  };
  const exitCode = process.exitCode;
  afterEach(() => {
    process.exitCode = exitCode;
  });
  const sharedLease = (name: string, maxHolders?: number) =>
    new Lease(
      grant(name, { mode: 'shared', ...(maxHolders ? { max_holders: maxHolders } : {}) }),
      performance.now(),
    );

  it('--shared and --max-holders: what the SDK is asked; nothing without --shared', () => {
    expect(lockModeFlags({})).toEqual({});
    expect(lockModeFlags({ shared: true })).toEqual({ mode: 'shared' });
    expect(lockModeFlags({ shared: true, maxHolders: 3 })).toEqual({ mode: 'shared', maxHolders: 3 });
    expect(() => lockModeFlags({ maxHolders: 3 })).toThrow(
      /--max-holders 3 makes each lock a semaphore.*give --shared/,
    );
  });

  it('acquire --shared --max-holders takes it shared, and says so', async () => {
    const tried = vi.spyOn(LockClient.prototype, 'acquireNow').mockResolvedValue(sharedLease('x', 3));
    const said = await cli('acquire', 'x', '--shared', '--max-holders', '3');
    expect(tried).toHaveBeenCalledWith('x', { ttlMs: 30_000, mode: 'shared', maxHolders: 3 });
    expect(said).toContain('shared (a semaphore of 3)');
    expect(said).toMatch(/latchkey release x --token \d+ --client-id me --shared/);
    const waited = vi.spyOn(LockClient.prototype, 'acquire').mockResolvedValue(sharedLease('x'));
    const json = JSON.parse(await cli('--json', 'acquire', 'x', '--shared', '--wait', '5s'));
    expect(waited.mock.calls[0]?.[1]).toMatchObject({ waitTimeoutMs: 5_000, mode: 'shared' });
    expect(json).toMatchObject({ lock: 'x', mode: 'shared' });
    tried.mockClear();
    await cli('acquire', 'y');
    expect(tried).toHaveBeenCalledWith('y', { ttlMs: 30_000 }); // exclusive: as before
  });

  it('refuses --max-holders without --shared, and a count out of 1..1000, before anything is asked', async () => {
    const tried = vi.spyOn(LockClient.prototype, 'acquireNow');
    const held = vi.spyOn(LockClient.prototype, 'withLock');
    await expect(cli('acquire', 'x', '--max-holders', '3')).rejects.toThrow(/give --shared with it/);
    await expect(cli('run', 'x', '--max-holders', '3', '--', 'true')).rejects.toThrow(
      /give --shared with it/,
    );
    for (const n of ['0', '1001', '2.5', 'three'])
      await expect(cli('run', 'x', '--shared', '--max-holders', n, '--', 'true')).rejects.toThrow(
        /--max-holders/,
      );
    expect(tried).not.toHaveBeenCalled();
    expect(held).not.toHaveBeenCalled();
  });

  it('run --shared holds the lock shared; with several --lock, every one of them', async () => {
    const one = vi.spyOn(LockClient.prototype, 'withLock').mockResolvedValue(0 as never);
    const several = vi.spyOn(LockClient.prototype, 'withLocks').mockResolvedValue(0 as never);
    await cli('run', 'x', '--shared', '--max-holders', '2', '--', 'true');
    expect(one.mock.calls[0]?.[0]).toBe('x');
    expect(one.mock.calls[0]?.[1]).toMatchObject({ mode: 'shared', maxHolders: 2 });
    await cli('run', '--shared', '--lock', 'b', '--lock', 'a', '--', 'true');
    expect(several.mock.calls[0]?.[0]).toEqual([
      { name: 'a', mode: 'shared' },
      { name: 'b', mode: 'shared' },
    ]);
    await cli('run', 'x', '--', 'true');
    expect(one.mock.calls[1]?.[1]).not.toHaveProperty('mode');
    expect(one.mock.calls[1]?.[1]).not.toHaveProperty('maxHolders');
  });

  it('release --shared and renew --shared name a shared lease (its requests then say so); without it, exclusive', async () => {
    const released = vi.spyOn(LockClient.prototype, 'release').mockResolvedValue({ remainingReentries: 0 });
    const renewed = vi.spyOn(LockClient.prototype, 'renew').mockImplementation(async (lease) => lease);
    await cli('release', 'x', '--token', '9', '--shared');
    await cli('release', 'x', '--token', '9');
    await cli('renew', 'x', '--token', '9', '--shared', '--ttl', '1m');
    expect(released.mock.calls.map(([l]) => [l.name, l.fencingToken, l.mode])).toEqual([
      ['x', 9, 'shared'],
      ['x', 9, 'exclusive'],
    ]);
    expect(renewed.mock.calls[0]?.[0]).toMatchObject({ fencingToken: 9, mode: 'shared' });
  });

  it('show and ls: each holder and waiter with its mode, a semaphore as holders/N', async () => {
    const view = {
      lock: 'pool/gpu',
      state: 'held',
      mode: 'shared',
      max_holders: 3,
      holders: [
        {
          client_id: 'a',
          mine: true,
          fencing_token: 7,
          mode: 'shared',
          expires_at: new Date(Date.now() + 60_000).toISOString(),
        },
        {
          client_id: 'b',
          mine: false,
          mode: 'shared',
          expires_at: new Date(Date.now() + 60_000).toISOString(),
        },
      ],
      queued: 1,
      waiters: [{ client_id: 'w', position: 1, priority: 0, via: 'ws', mode: 'exclusive' }],
      fencing_token: 8,
    };
    const exclusive = {
      lock: 'jobs/x',
      state: 'held',
      mode: 'exclusive',
      max_holders: null,
      holders: [
        {
          client_id: 'c',
          mine: false,
          mode: 'exclusive',
          expires_at: new Date(Date.now() + 60_000).toISOString(),
        },
      ],
      queued: 0,
      waiters: [],
    };
    const free = {
      lock: 'jobs/y',
      state: 'free',
      mode: null,
      max_holders: null,
      holders: [],
      queued: 0,
      waiters: [],
    };
    vi.spyOn(LockClient.prototype, 'inspect').mockResolvedValue(view);
    const shown = await cli('show', 'pool/gpu');
    expect(shown).toContain('pool/gpu: held (shared 2/3)');
    expect(shown).toContain('holder   a (yours)  shared  token 7');
    expect(shown).toMatch(/holder {3}b +shared +expires in/);
    vi.spyOn(LockClient.prototype, 'list').mockResolvedValue([view, exclusive, free]);
    const listed = (await cli('ls')).split('\n');
    expect(listed[0]).toMatch(/^LOCK\s+STATE\s+HOLDER\s+TOKEN\s+QUEUED\s+MODE$/);
    expect(listed[1]).toMatch(/^pool\/gpu\s+held\s+a \(yours\) \(\+1\)\s+7\s+1\s+shared 2\/3$/);
    expect(listed[2]).toMatch(/^jobs\/x\s+held\s+c\s+-\s+0\s+exclusive$/);
    expect(listed[3]).toMatch(/^jobs\/y\s+free\s+-\s+-\s+0\s+-$/);
    const plain = { ...view, max_holders: null };
    vi.spyOn(LockClient.prototype, 'inspect').mockResolvedValue(plain);
    expect(await cli('show', 'pool/gpu')).toContain('pool/gpu: held (shared)');
  });
});
