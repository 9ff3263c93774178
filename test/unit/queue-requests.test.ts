/**
 * One request, one outcome: every attempt of a waiting request (the same
 * client and request_id) follows the request's record, so a request is
 * granted at most once, and one answered "not acquired" is never granted
 * afterwards and leaves nothing queued. Run through the real LockService
 * and Handoff on the in-memory storage.
 */
import { describe, expect, it } from 'vitest';
import { liveHolder, throughSession } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { connectionSessionId } from '../../lambdas/service/sessions';
import { LOCK, OWNER, QueueHarness, START } from '../support/queue-harness';

/** Another principal, which happens to use the same client and request ids as OWNER's clients. */
const MALLORY = localPrincipal('mallory');

/** a holds; b waits with request `rb` (over WebSocket on cb). */
async function waiting(options: { waitMs?: number; connection?: string } = {}) {
  const h = new QueueHarness();
  const a = await h.hold('a', { ttl: 5_000 });
  h.now += 1;
  const first = await h.wait('b', {
    requestId: 'rb',
    waitMs: options.waitMs ?? 10_000,
    connection: options.connection,
  });
  if (first.kind !== 'queued') throw new Error('expected b to queue');
  return { h, a, first };
}

describe('a retry of a waiting request', () => {
  it('waits on the original place: one waiter item, one count, the same position', async () => {
    const { h, first } = await waiting();
    h.now += 100;
    const retry = await h.wait('b', { requestId: 'rb', waitMs: 10_000 });
    expect(retry).toMatchObject({ kind: 'queued', wait: { order: first.wait.order } });
    if (retry.kind === 'queued') expect(await h.services.locks.position(retry.wait)).toBe(1);
    expect(h.waiters()).toHaveLength(1);
    expect(h.item?.queued).toBe(1);
  });

  it('in the same millisecond, lands on the same place and follows it', async () => {
    const { h, first } = await waiting();
    const retry = await h.wait('b', { requestId: 'rb', waitMs: 10_000 });
    expect(retry).toMatchObject({ kind: 'queued', wait: { order: first.wait.order } });
    expect(h.waiters()).toHaveLength(1);
  });

  it('after it was served, is answered with that grant; once the grant ended, LEASE_EXPIRED', async () => {
    const { h, a } = await waiting();
    await h.release(a);
    const token = liveHolder(h.item, h.now)?.fencingToken;
    const retry = await h.wait('b', { requestId: 'rb', waitMs: 10_000 });
    expect(retry).toMatchObject({
      kind: 'done',
      outcome: { acquired: true, replayed: true, grant: { fencingToken: token } },
    });
    await h.services.locks.release({
      name: LOCK,
      owner: OWNER,
      clientId: 'b',
      fencingToken: token as number,
    });
    await expect(h.wait('b', { requestId: 'rb', waitMs: 10_000 })).rejects.toMatchObject({
      code: 'LEASE_EXPIRED',
    });
    // A retry without a wait is answered the same way, never "not acquired".
    await h.hold('c');
    await expect(h.services.locks.acquire(h.command('b', { requestId: 'rb' }))).rejects.toMatchObject({
      code: 'LEASE_EXPIRED',
    });
  });

  it('after its wait ended, is told "not acquired" again and never queues again', async () => {
    const { h, a } = await waiting({ waitMs: 100 });
    h.now += 200;
    await h.services.handoff.serve(LOCK); // drops b (timed out)
    expect(h.record('b', 'rb')).toEqual({ state: 'ended', reason: 'timeout' });
    const retry = await h.wait('b', { requestId: 'rb', waitMs: 10_000 });
    expect(retry).toMatchObject({ kind: 'done', outcome: { acquired: false, ended: 'timeout' } });
    expect(h.waiters()).toEqual([]);
    await h.release(a);
    expect(h.item?.holder).toBeUndefined();
  });

  it('from another connection, moves the push there (the first connection dropped)', async () => {
    const { h, a } = await waiting({ connection: 'c1' });
    const retry = await h.wait('b', { requestId: 'rb', waitMs: 10_000, connection: 'c2' });
    expect(retry).toMatchObject({ kind: 'queued' });
    await h.release(a);
    expect(h.framesTo('c2', 'granted')).toHaveLength(1);
    expect(h.framesTo('c1', 'granted')).toHaveLength(0);
  });
});

describe('a request answered "not acquired" is never granted afterwards (the ghost grant of "Trust I")', () => {
  it('a retry without a wait ends the wait it finds queued, and the lock never goes to that request', async () => {
    // c02-11: the first attempt queued and its answer was lost; the retry asks without waiting.
    const { h, a } = await waiting();
    const retry = await h.services.locks.acquire(h.command('b', { requestId: 'rb' }));
    expect(retry).toMatchObject({ kind: 'done', outcome: { acquired: false } });
    expect(h.waiters()).toEqual([]);
    expect(h.record('b', 'rb')).toEqual({ state: 'ended', reason: 'cancelled' });
    await h.release(a);
    expect(h.item?.holder).toBeUndefined();
    expect(h.item?.queued).toBe(0);
  });

  it('an HTTP attempt whose request a retry moved to a WebSocket connection ends it there as its wait runs out', async () => {
    const { h, a, first } = await waiting(); // over HTTP: no connection
    const moved = await h.wait('b', { requestId: 'rb', waitMs: 10_000, connection: 'c2' });
    expect(moved).toMatchObject({ kind: 'queued' });
    h.now += 1_000; // the HTTP attempt's own wait runs out (as poll() concludes it at its end)
    const answer = await h.services.locks.conclude(first.wait, 'timeout');
    expect(answer).toMatchObject({ acquired: false, ended: 'timeout' });
    // Answered "not acquired": nothing of the request is left to grant, and the connection is told.
    expect(h.record('b', 'rb')).toMatchObject({ state: 'ended', reason: 'timeout' });
    expect(h.waiters()).toEqual([]);
    expect(h.framesTo('c2', 'timeout')).toHaveLength(1);
    await h.release(a);
    expect(h.item?.holder).toBeUndefined();
    expect(h.framesTo('c2', 'granted')).toHaveLength(0);
  });

  it('an attempt that finds its request still queued under another attempt is told to ask again, never "not acquired"', async () => {
    const { h, a, first } = await waiting({ connection: 'c1' });
    // Every leave is refused as if a retry kept moving it: the outcome is unknown, so 503.
    const leave = h.services.handoff.leave.bind(h.services.handoff);
    h.services.handoff.leave = async () => false;
    await expect(h.services.locks.conclude(first.wait, 'cancelled')).rejects.toMatchObject({
      code: 'UNAVAILABLE',
    });
    h.services.handoff.leave = leave;
    expect(h.record('b', 'rb')).toMatchObject({ state: 'queued' });
    await h.release(a);
    expect(h.framesTo('c1', 'granted')).toHaveLength(1);
  });

  it('a WebSocket wait ended from elsewhere (a cancel over HTTP, a try) is told on its connection; from itself, not', async () => {
    for (const how of ['cancel over HTTP', 'try', 'cancel from its connection'] as const) {
      const { h } = await waiting({ connection: 'c1' });
      if (how === 'try') await h.services.locks.acquire(h.command('b', { requestId: 'rb' }));
      else
        await h.services.locks.cancel({
          lock: LOCK,
          owner: OWNER,
          clientId: 'b',
          requestId: 'rb',
          connectionId: how === 'cancel from its connection' ? 'c1' : undefined,
        });
      expect(h.record('b', 'rb'), how).toEqual({ state: 'ended', reason: 'cancelled' });
      expect(h.framesTo('c1', 'timeout'), how).toHaveLength(how === 'cancel from its connection' ? 0 : 1);
    }
  });

  it('a wait that ends just after a grant slipped in is answered with that grant', async () => {
    const { h, a, first } = await waiting();
    await h.release(a); // b is granted...
    const answer = await h.services.locks.conclude(first.wait, 'timeout'); // ...as its wait ends
    expect(answer).toMatchObject({ acquired: true, grant: { clientId: 'b' } });
  });

  it.each([
    ['shared', 'y', 2_000],
    ['exclusive', 'x', 5_000],
  ] as const)(
    'a %s wait that ends is told whose hold to wait out for its own mode',
    async (mode, holder, end) => {
      // A semaphore of 2, full: y's lease ends first, x's last. A shared request needs one slot (y's
      // end); an exclusive one needs both (x's end).
      const h = new QueueHarness();
      await h.hold('x', { mode: 'shared', maxHolders: 2, ttl: 5_000 });
      await h.hold('y', { mode: 'shared', maxHolders: 2, ttl: 2_000 });
      const waiting = await h.wait('s', {
        mode,
        ...(mode === 'shared' ? { maxHolders: 2 } : {}),
        requestId: 'rs',
        waitMs: 100,
      });
      if (waiting.kind !== 'queued') throw new Error(`expected s to queue: ${JSON.stringify(waiting)}`);
      h.now += 200;
      const answer = await h.services.locks.conclude(waiting.wait, 'timeout');
      expect(answer).toMatchObject({
        acquired: false,
        ended: 'timeout',
        holder: { clientId: holder, expiresAt: START + end },
        shared: { holders: 2, maxHolders: 2 },
        retryAfterMs: end - 200,
      });
      // A retry of the ended request (its record has no mode) is explained the same way, waiting or not.
      const want = { mode, ...(mode === 'shared' ? { maxHolders: 2 } : {}), requestId: 'rs' };
      const retry = await h.wait('s', want);
      expect(retry).toMatchObject({ kind: 'done', outcome: { holder: { clientId: holder } } });
      const tried = await h.services.locks.acquire(h.command('s', want));
      expect(tried).toMatchObject({
        kind: 'done',
        outcome: { holder: { clientId: holder }, retryAfterMs: end - 200 },
      });
    },
  );

  it('a cancel that finds no record yet ends the request first, so an acquire still on its way never queues', async () => {
    const h = new QueueHarness();
    await h.hold('a');
    await h.services.connections.open('cb', OWNER, 'b');
    expect(
      await h.services.locks.cancel({
        lock: LOCK,
        owner: OWNER,
        clientId: 'b',
        requestId: 'rb',
        connectionId: 'cb',
      }),
    ).toEqual({ removed: 0 });
    const late = await h.wait('b', { requestId: 'rb', connection: 'cb' });
    expect(late).toMatchObject({ kind: 'done', outcome: { acquired: false, ended: 'cancelled' } });
    expect(h.waiters()).toEqual([]);
  });

  it('a cancel of a request granted meanwhile is answered with the grant (the caller owns it)', async () => {
    const { h, a } = await waiting({ connection: 'cb' });
    await h.services.connections.open('cb', OWNER, 'b');
    await h.release(a);
    const cancelled = await h.services.locks.cancel({
      lock: LOCK,
      owner: OWNER,
      clientId: 'b',
      requestId: 'rb',
      connectionId: 'cb',
    });
    expect(cancelled).toMatchObject({ removed: 0, granted: { acquired: true, grant: { clientId: 'b' } } });
  });
});

describe('a request belongs to the principal that sent it', () => {
  it('another principal with the same client and request id does not follow it: it is a request of its own', async () => {
    const { h, first } = await waiting();
    const stranger = await h.wait('b', { requestId: 'rb', waitMs: 10_000, owner: MALLORY });
    expect(stranger.kind).toBe('queued');
    if (stranger.kind !== 'queued') return;
    expect(stranger.wait.order).not.toBe(first.wait.order);
    expect(h.waiters().map((w) => [w.owner, w.clientId, w.requestId])).toEqual([
      [OWNER, 'b', 'rb'],
      [MALLORY, 'b', 'rb'],
    ]);
    expect(h.item?.queued).toBe(2);
  });

  it('another principal cannot cancel it, by request id or by client', async () => {
    const { h } = await waiting();
    const before = h.record('b', 'rb');
    expect(before).toMatchObject({ state: 'queued' });
    expect(
      await h.services.locks.cancel({ lock: LOCK, owner: MALLORY, clientId: 'b', requestId: 'rb' }),
    ).toEqual({ removed: 0 });
    expect(await h.services.locks.cancel({ lock: LOCK, owner: MALLORY, clientId: 'b' })).toEqual({
      removed: 0,
    });
    expect(h.record('b', 'rb')).toEqual(before);
    expect(h.waiters().map((w) => w.requestId)).toEqual(['rb']);
    expect(h.item?.queued).toBe(1);
    // Its own principal can.
    expect(await h.services.locks.cancel({ lock: LOCK, owner: OWNER, clientId: 'b' })).toEqual({
      removed: 1,
    });
    expect(h.waiters()).toEqual([]);
    expect(h.record('b', 'rb')).toEqual({ state: 'ended', reason: 'cancelled' });
  });

  it('a cancel naming another principal’s connection is refused FORBIDDEN, and an unknown one NOT_FOUND', async () => {
    const { h } = await waiting({ connection: 'cb' });
    await h.services.connections.open('cb', OWNER, 'b');
    const cancel = { lock: LOCK, clientId: 'b', requestId: 'rb', connectionId: 'cb' };
    await expect(h.services.locks.cancel({ ...cancel, owner: MALLORY })).rejects.toMatchObject({
      code: 'FORBIDDEN',
      status: 403,
    });
    await expect(
      h.services.locks.cancel({ ...cancel, owner: OWNER, connectionId: 'nope' }),
    ).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(h.record('b', 'rb')).toMatchObject({ state: 'queued', connectionId: 'cb' });
    expect(h.waiters()).toHaveLength(1);
  });

  it('is served to its own principal: the grant is its, and only it may release it', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a', { ttl: 5_000 });
    h.now += 1;
    expect((await h.wait('b', { requestId: 'rb', owner: MALLORY })).kind).toBe('queued');
    await h.release(a);
    const holder = liveHolder(h.item, h.now);
    expect(holder).toMatchObject({ owner: MALLORY, clientId: 'b' });
    const token = holder?.fencingToken as number;
    await expect(
      h.services.locks.release({ name: LOCK, owner: OWNER, clientId: 'b', fencingToken: token }),
    ).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect(liveHolder(h.item, h.now)).toEqual(holder);
    await h.services.locks.release({ name: LOCK, owner: MALLORY, clientId: 'b', fencingToken: token });
    expect(liveHolder(h.item, h.now)).toBeUndefined();
  });
});

describe('a lock held through a WebSocket connection', () => {
  it('is not handed to a retry on another connection: it ends with the first one', async () => {
    const h = new QueueHarness();
    const c1 = await h.services.sessions.ofConnection(await h.services.connections.open('c1', OWNER, 'b'));
    expect(c1).toBe(connectionSessionId('c1'));
    await h.hold('b', { session: c1, requestId: 'rb' });
    const c2 = await h.services.sessions.ofConnection(await h.services.connections.open('c2', OWNER, 'b'));
    const retry = { ...h.command('b', { requestId: 'rb' }), tenure: throughSession(c2) };
    await expect(h.services.locks.acquire(retry)).rejects.toMatchObject({ code: 'LEASE_EXPIRED' });
    await expect(
      h.services.locks.acquire(retry, { waitMs: 1_000, connectionId: 'c2' }),
    ).rejects.toMatchObject({
      code: 'LEASE_EXPIRED',
    });
  });
});
