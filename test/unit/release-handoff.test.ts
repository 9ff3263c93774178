/**
 * A release of a contended lock hands it to the next waiter in the same transaction (one read of
 * the queue, one write), on a function instance that has seen the lock contended; another
 * instance releases in one write and then serves the queue. Both end in the same state: the head
 * holds the lock with the next token, its wait ended as granted, and it was told once. The pure
 * rule (planRelease) declines every case the plain path must handle, and the combined write's
 * condition refuses anything but the releaser's own live, un-re-entered grant.
 */
import { describe, expect, it, vi } from 'vitest';
import { LatchkeyError } from '../../lambdas/core/errors';
import { evaluate } from '../../lambdas/core/expr';
import {
  knownAfterHandoff,
  knownAfterRead,
  knownHandoffSteps,
  knownHead,
} from '../../lambdas/core/known-queue';
import { liveHolder, RELEASED_SLOTS, releasedSlot, throughSession } from '../../lambdas/core/lock';
import { handoffSteps, planRelease } from '../../lambdas/core/queue';
import type { Services } from '../../lambdas/service/services';
import { LOCK, OWNER, QueueHarness } from '../support/queue-harness';

/** Counts the storage calls made while `run` runs, by method. */
async function callsDuring(h: QueueHarness, run: () => Promise<unknown>): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  const spies = (['read', 'write', 'transact', 'queue', 'position'] as const).map((method) => {
    const original = h.memory[method].bind(h.memory) as (...args: unknown[]) => Promise<unknown>;
    return vi.spyOn(h.memory, method).mockImplementation(((...args: unknown[]) => {
      counts[method] = (counts[method] ?? 0) + 1;
      return original(...args);
    }) as never);
  });
  try {
    await run();
  } finally {
    for (const spy of spies) spy.mockRestore();
  }
  return counts;
}

/** a holds; b and c wait over WebSocket (through `services`, so that instance saw the lock contended). */
async function contended(h: QueueHarness, services: Services = h.services) {
  const a = await h.hold('a', { ttl: 5_000 });
  h.now += 1;
  for (const client of ['b', 'c']) {
    await h.services.connections.open(`conn-${client}`, OWNER, client);
    const queued = await services.locks.acquire(h.command(client, { requestId: `r${client}`, ttl: 5_000 }), {
      waitMs: 10_000,
      connectionId: `conn-${client}`,
    });
    expect(queued.kind).toBe('queued');
    h.now += 1;
  }
  // What the notifier does when the first waiter joins: the lock's timer looks at a's lease end.
  await h.services.lockTimers.lookBy(LOCK, h.item, a.held.kind === 'lease' ? a.held.expiresAt : h.now);
  return a;
}

/** The state a release of `a` must leave, whichever path it took. */
function expectHandedToB(h: QueueHarness, aToken: number) {
  const holder = liveHolder(h.item, h.now);
  expect(holder).toMatchObject({ clientId: 'b', fencingToken: aToken + 1 });
  expect(h.item?.queued).toBe(1);
  expect(h.waiters().map((w) => w.clientId)).toEqual(['c']);
  expect(h.record('b', 'rb')).toMatchObject({ state: 'granted', fence: aToken + 1 });
  expect(h.framesTo('conn-b', 'granted')).toHaveLength(1);
  expect(h.framesTo('conn-c', 'granted')).toHaveLength(0);
}

describe('a release with waiters', () => {
  it('on an instance that saw the lock contended: one read and one transaction, the head granted', async () => {
    const h = new QueueHarness();
    const a = await contended(h);
    const calls = await callsDuring(h, () => h.release(a));
    expect(calls).toEqual({ queue: 1, transact: 1 });
    expectHandedToB(h, a.fencingToken);
    // The item says when the grant before was given up (what the stream's metrics read).
    expect(h.item?.released_at).toBe(h.now);
  });

  it('on an instance that did not: one write releases, then the queue is served; the same state', async () => {
    const h = new QueueHarness();
    const a = await contended(h, h.instance());
    const calls = await callsDuring(h, () => h.release(a));
    expect(calls).toEqual({ write: 1, queue: 1, transact: 1 });
    expectHandedToB(h, a.fencingToken);
  });

  it('falls back to the plain release when the transaction is refused (the queue changed after its read)', async () => {
    const h = new QueueHarness();
    const a = await contended(h);
    // b leaves between the release's read and its write.
    const queue = h.memory.queue.bind(h.memory);
    vi.spyOn(h.memory, 'queue').mockImplementationOnce(async (lock, limit) => {
      const snapshot = await queue(lock, limit);
      await h.services.locks.cancel({ lock: LOCK, owner: OWNER, clientId: 'b', requestId: 'rb' });
      return snapshot;
    });
    await h.release(a);
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'c', fencingToken: a.fencingToken + 1 });
    expect(h.record('b', 'rb')).toMatchObject({ state: 'ended', reason: 'cancelled' });
    expect(h.framesTo('conn-b', 'granted')).toHaveLength(0);
  });

  it('falls back to the plain release when the transaction fails unapplied (a conflict, a throttle)', async () => {
    const h = new QueueHarness();
    const a = await contended(h);
    vi.spyOn(h.memory, 'transact').mockImplementationOnce(async () => {
      throw new LatchkeyError('UNAVAILABLE', 'TransactionConflict', undefined, 50);
    });
    await h.release(a);
    expectHandedToB(h, a.fencingToken);
  });

  it('a handoff applied whose answer was lost still counts: the releaser succeeds, the head is told', async () => {
    const h = new QueueHarness();
    const a = await contended(h);
    const transact = h.memory.transact.bind(h.memory);
    vi.spyOn(h.memory, 'transact').mockImplementationOnce(async (steps) => {
      await transact(steps);
      throw new LatchkeyError('UNAVAILABLE', 'the answer never came', undefined, 50);
    });
    await expect(h.release(a)).resolves.toMatchObject({ lock: LOCK, remaining: 0 });
    expectHandedToB(h, a.fencingToken);
  });

  it('a handoff still running when its resend failed (TransactionInProgress) is read once it lands: the head is told', async () => {
    const h = new QueueHarness();
    let landing: (() => Promise<unknown>) | undefined;
    // The first attempt lands only after the service has waited a little: as DynamoDB finishes it.
    const services = h.instance({
      sleep: async (ms) => {
        h.now += Math.max(0, ms);
        await landing?.();
        landing = undefined;
      },
    });
    const a = await contended(h, services);
    const transact = h.memory.transact.bind(h.memory);
    vi.spyOn(h.memory, 'transact').mockImplementationOnce(async (steps) => {
      landing = () => transact(steps);
      throw new LatchkeyError('UNAVAILABLE', 'in progress', undefined, 200, {
        cause: Object.assign(new Error('in progress'), { name: 'TransactionInProgressException' }),
      });
    });
    // Read at once, it would find the lock as before, and the attempt would land just after.
    const read = h.memory.read.bind(h.memory);
    vi.spyOn(h.memory, 'read').mockImplementation(async (ref) => {
      const item = await read(ref);
      await landing?.();
      landing = undefined;
      return item;
    });
    await expect(
      services.locks.release({ name: LOCK, owner: OWNER, clientId: 'a', fencingToken: a.fencingToken }),
    ).resolves.toMatchObject({ lock: LOCK, remaining: 0 });
    expectHandedToB(h, a.fencingToken);
  });

  it('a handoff applied whose retry was refused (a second delivery) still counts', async () => {
    const h = new QueueHarness();
    const a = await contended(h);
    const transact = h.memory.transact.bind(h.memory);
    // The first delivery applies; the SDK's retry of it (its answer lost) is refused by its conditions.
    vi.spyOn(h.memory, 'transact').mockImplementationOnce(async (steps) => {
      await transact(steps);
      return transact(steps);
    });
    await expect(h.release(a)).resolves.toMatchObject({ lock: LOCK, remaining: 0 });
    expectHandedToB(h, a.fencingToken);
  });

  it('takes a grant back from a vanished connection and serves the next waiter', async () => {
    const h = new QueueHarness();
    const a = await contended(h);
    h.pushOutcome = (connection) => (connection === 'conn-b' ? 'gone' : 'sent');
    await h.release(a);
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'c', fencingToken: a.fencingToken + 2 });
    expect(h.framesTo('conn-c', 'granted')).toHaveLength(1);
  });

  it('refuses a release that is not the holder’s, on either instance, and changes nothing', async () => {
    const h = new QueueHarness();
    const a = await contended(h);
    const before = structuredClone(h.item);
    for (const services of [h.services, h.instance()])
      await expect(
        services.locks.release({ name: LOCK, owner: OWNER, clientId: 'a', fencingToken: a.fencingToken - 1 }),
      ).rejects.toMatchObject({ code: 'NOT_HOLDER' });
    expect(h.item).toEqual(before);
  });
});

describe('a full release sent again after it applied (its answer lost, or a 503)', () => {
  const releaseOf = (a: { owner: string; clientId: string; fencingToken: number }, releaseId = 'r1') => ({
    name: LOCK,
    owner: a.owner,
    clientId: a.clientId,
    fencingToken: a.fencingToken,
    releaseId,
  });

  it('whose serving of the queue failed (503): the retry is answered released and serves the queue', async () => {
    const h = new QueueHarness();
    const a = await contended(h, h.instance());
    const other = h.instance();
    const queue = h.memory.queue.bind(h.memory);
    vi.spyOn(h.memory, 'queue').mockImplementationOnce(async () => {
      throw new LatchkeyError('UNAVAILABLE', 'throttled', undefined, 100);
    });
    await expect(other.locks.release(releaseOf(a))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(liveHolder(h.item, h.now)).toBeUndefined(); // applied: free, its queue not served
    vi.spyOn(h.memory, 'queue').mockImplementation(queue);
    await expect(other.locks.release(releaseOf(a))).resolves.toMatchObject({ lock: LOCK, remaining: 0 });
    expectHandedToB(h, a.fencingToken);
  });

  it('handed on in one transaction, then sent again: released, on either instance, and nothing changes', async () => {
    const h = new QueueHarness();
    const a = await contended(h);
    await h.services.locks.release(releaseOf(a));
    expectHandedToB(h, a.fencingToken);
    const after = structuredClone(h.item);
    for (const services of [h.services, h.instance()])
      await expect(services.locks.release(releaseOf(a))).resolves.toMatchObject({ lock: LOCK, remaining: 0 });
    expect(h.item).toEqual(after);
    expectHandedToB(h, a.fencingToken);
  });

  it('only that very release: another release_id, another token or another principal is still refused', async () => {
    const h = new QueueHarness();
    const a = await contended(h);
    await h.services.locks.release(releaseOf(a));
    const after = structuredClone(h.item);
    await expect(h.services.locks.release(releaseOf(a, 'r2'))).rejects.toMatchObject({ code: 'NOT_HOLDER' });
    await expect(
      h.services.locks.release({ ...releaseOf(a), fencingToken: a.fencingToken - 1 }),
    ).rejects.toMatchObject({ code: 'NOT_HOLDER' });
    // Another principal naming the same token and release_id: refused as ever (b's principal holds it).
    await expect(
      h.services.locks.release({ ...releaseOf(a), owner: 'arn:aws:iam::111111111111:user/mallory' }),
    ).rejects.toMatchObject({ code: 'FORBIDDEN' });
    // Without a release_id (an older client) nothing is remembered: refused as before.
    await expect(h.services.locks.release({ ...releaseOf(a), releaseId: undefined })).rejects.toMatchObject({
      code: 'NOT_HOLDER',
    });
    expect(h.item).toEqual(after);
  });

  it('after later grants of the lock were released too: grants fenced from the clock each keep a slot of their own', async () => {
    const h = new QueueHarness();
    // A waiting acquire that finds the lock free is granted a token fenced from the clock, in one
    // transaction with nothing read: the millisecond × 1000 + 1 (always 1 mod 8 by itself).
    const fromTheClock = async (client: string) => {
      h.now += 1;
      const taken = await h.wait(client, { requestId: `q-${client}`, waitMs: 1_000, ttl: 5_000 });
      if (taken.kind !== 'done' || !taken.outcome.acquired) throw new Error(`expected ${client} granted`);
      expect(taken.outcome.grant.fencingToken % 1_000).toBe(1);
      return taken.outcome.grant;
    };
    const a = await fromTheClock('a');
    await h.services.locks.release(releaseOf(a));
    for (const client of ['b', 'c', 'd']) {
      const later = await fromTheClock(client);
      await h.services.locks.release(releaseOf(later, `r-${client}`));
    }
    await expect(h.services.locks.release(releaseOf(a))).resolves.toMatchObject({ remaining: 0 });
  });

  it('tokens that follow one another never share a slot in a run of 8', () => {
    for (const start of [1, 7, 1_800_000_000_000_001, 1_800_000_000_000_995]) {
      const slots = Array.from({ length: RELEASED_SLOTS }, (_, i) => releasedSlot(start + i));
      expect(new Set(slots).size, `from ${start}`).toBeGreaterThanOrEqual(RELEASED_SLOTS - 1);
      if (start % 1_000 < 990) expect(new Set(slots).size, `from ${start}`).toBe(RELEASED_SLOTS);
    }
  });

  it('a free lock without waiters, and a shared grant: the same', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a', { ttl: 5_000 });
    await h.services.locks.release(releaseOf(a));
    await expect(h.services.locks.release(releaseOf(a))).resolves.toMatchObject({ remaining: 0, queued: 0 });
    const s = await h.hold('s', { ttl: 5_000, mode: 'shared' });
    await h.services.locks.release({ ...releaseOf(s), mode: 'shared' });
    await expect(h.services.locks.release({ ...releaseOf(s), mode: 'shared' })).resolves.toMatchObject({
      remaining: 0,
    });
    await expect(h.services.locks.release({ ...releaseOf(s, 'r9'), mode: 'shared' })).rejects.toMatchObject({
      code: 'NOT_HOLDER',
    });
    // A shared grant held through a session (released as its session's end would): the same.
    const session = await h.services.sessions.create(OWNER, 't', {
      ttlMs: 60_000,
      graceMs: 0,
      lockDelayMs: 0,
    });
    const t = await h.hold('t', { mode: 'shared', session: session.id });
    await h.services.locks.release({ ...releaseOf(t), mode: 'shared' });
    await expect(h.services.locks.release({ ...releaseOf(t), mode: 'shared' })).resolves.toMatchObject({
      remaining: 0,
    });
  });
});

describe('a retried release of a re-entered grant, with waiters (its answer lost)', () => {
  it('is answered as applied on an instance that saw the lock contended: the outer scope keeps the lock', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a', { ttl: 5_000, reentrant: true });
    expect((await h.hold('a', { ttl: 5_000, reentrant: true })).reentry).toBe(2);
    h.now += 1;
    await h.services.connections.open('conn-b', OWNER, 'b');
    // Queued through h.services: this instance has seen the lock contended (release hands over).
    const queued = await h.services.locks.acquire(h.command('b', { requestId: 'rb', ttl: 5_000 }), {
      waitMs: 10_000,
      connectionId: 'conn-b',
    });
    expect(queued.kind).toBe('queued');
    const inner = {
      name: LOCK,
      owner: OWNER,
      clientId: 'a',
      fencingToken: a.fencingToken,
      releaseId: 'inner',
    };
    expect(await h.services.locks.release(inner)).toMatchObject({ remaining: 1 });
    // The SDK sends it again: answered as applied, and neither freed nor handed to b.
    expect(await h.services.locks.release(inner)).toMatchObject({ remaining: 1 });
    expect(liveHolder(h.item, h.now)).toMatchObject({
      clientId: 'a',
      fencingToken: a.fencingToken,
      reentry: 1,
    });
    expect(h.framesTo('conn-b', 'granted')).toHaveLength(0);
    // The outer scope's own release hands it on.
    expect(await h.services.locks.release({ ...inner, releaseId: 'outer' })).toMatchObject({ remaining: 0 });
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'b' });
    expect(h.framesTo('conn-b', 'granted')).toHaveLength(1);
  });
});

describe('planRelease', () => {
  const release = (token: number) => ({ name: LOCK, owner: OWNER, clientId: 'a', fencingToken: token });

  it('declines what the plain path must handle: a passed deadline, a session grantee, re-entry, another holder', async () => {
    const h = new QueueHarness();
    const a = await contended(h);
    const { lock, waiters } = h.memory.queueNow(LOCK);
    const b = waiters[0];
    if (!b) throw new Error('b should be queued');
    expect(planRelease(release(a.fencingToken), lock, waiters, h.now)).toBe(b);
    expect(planRelease(release(a.fencingToken - 1), lock, waiters, h.now)).toBeUndefined();
    expect(planRelease({ ...release(a.fencingToken), clientId: 'x' }, lock, waiters, h.now)).toBeUndefined();
    expect(planRelease(release(a.fencingToken), lock, [], h.now)).toBeUndefined();
    expect(planRelease(release(a.fencingToken), lock, waiters, b.deadline)).toBeUndefined();
    const viaSession = { ...b, tenure: throughSession('s-1') };
    expect(planRelease(release(a.fencingToken), lock, [viaSession], h.now)).toBeUndefined();
    expect(planRelease(release(a.fencingToken), { ...lock, reentry: 2 }, waiters, h.now)).toBeUndefined();
    // A lapsed lease is not the caller's to release.
    const lapsed = h.now + 10_000;
    expect(planRelease(release(a.fencingToken), lock, waiters, lapsed)).toBeUndefined();
  });

  it('the combined write holds only over the releaser’s own live grant with waiters', async () => {
    const h = new QueueHarness();
    const a = await contended(h);
    const { lock, waiters } = h.memory.queueNow(LOCK);
    const b = waiters[0];
    if (!b || !lock) throw new Error('b should be queued');
    const lockStep = (token: number, now = h.now) => {
      const step = handoffSteps(b, lock, now, 'w', release(token)).steps[0];
      if (step?.kind !== 'update' || !step.condition) throw new Error('expected a conditional update');
      return step.condition;
    };
    expect(evaluate(lockStep(a.fencingToken), lock)).toBe(true);
    expect(evaluate(lockStep(a.fencingToken + 1), lock)).toBe(false);
    expect(evaluate(lockStep(a.fencingToken), { ...lock, queued: 0 })).toBe(false);
    expect(evaluate(lockStep(a.fencingToken), { ...lock, reentry: 2 })).toBe(false);
    expect(evaluate(lockStep(a.fencingToken, h.now + 10_000), lock)).toBe(false); // lapsed by then
    expect(evaluate(lockStep(a.fencingToken), { ...lock, holder: 'b' })).toBe(false);
  });
});

describe('the release of a grant a handoff on release made here (core/known-queue.ts)', () => {
  /** a holds; b, c and d wait; a's release hands to b (reading the queue). Returns b's grant. */
  async function handedToB(h: QueueHarness) {
    const a = await contended(h);
    await h.services.connections.open('conn-d', OWNER, 'd');
    await waitFor(h, 'd');
    await h.release(a);
    const b = liveHolder(h.item, h.now);
    if (b?.clientId !== 'b') throw new Error('b should hold');
    return b;
  }

  async function waitFor(h: QueueHarness, client: string, priority = 0) {
    h.now += 1;
    const queued = await h.services.locks.acquire(
      h.command(client, { requestId: `r${client}`, ttl: 5_000 }),
      { waitMs: 10_000, connectionId: `conn-${client}`, priority },
    );
    expect(queued.kind).toBe('queued');
  }

  it('hands on to the next waiter that read found, in one transaction and no read', async () => {
    const h = new QueueHarness();
    const b = await handedToB(h);
    expect(await callsDuring(h, () => h.release(b))).toEqual({ transact: 1 });
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'c', fencingToken: b.fencingToken + 1 });
    expect(h.record('c', 'rc')).toMatchObject({ state: 'granted', fence: b.fencingToken + 1 });
    expect(h.framesTo('conn-c', 'granted')).toHaveLength(1);
    expect(h.item?.queued).toBe(1);
    // And on again, to the last one read.
    const c = liveHolder(h.item, h.now);
    if (!c) throw new Error('c should hold');
    expect(await callsDuring(h, () => h.release(c))).toEqual({ transact: 1 });
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'd', fencingToken: b.fencingToken + 2 });
    expect(h.waiters()).toEqual([]);
  });

  it('a waiter that joined since at the default priority stays behind them, and costs no read', async () => {
    const h = new QueueHarness();
    const b = await handedToB(h);
    await h.services.connections.open('conn-e', OWNER, 'e');
    await waitFor(h, 'e');
    expect(await callsDuring(h, () => h.release(b))).toEqual({ transact: 1 });
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'c' });
    expect(h.waiters().map((w) => w.clientId)).toEqual(['d', 'e']);
  });

  it('a waiter that joined since above the default priority goes first: the queue is read again', async () => {
    const h = new QueueHarness();
    const b = await handedToB(h);
    await h.services.connections.open('conn-e', OWNER, 'e');
    await waitFor(h, 'e', 5);
    expect(await callsDuring(h, () => h.release(b))).toEqual({ transact: 2, queue: 1 });
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'e', fencingToken: b.fencingToken + 1 });
    expect(h.framesTo('conn-c', 'granted')).toHaveLength(0);
    expect(h.waiters().map((w) => w.clientId)).toEqual(['c', 'd']);
  });

  it('a waiter read that left since is passed over: the queue is read again', async () => {
    const h = new QueueHarness();
    const b = await handedToB(h);
    await h.services.locks.cancel({ lock: LOCK, owner: OWNER, clientId: 'c', requestId: 'rc' });
    await h.release(b);
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'd', fencingToken: b.fencingToken + 1 });
    expect(h.record('c', 'rc')).toMatchObject({ state: 'ended', reason: 'cancelled' });
  });

  it('only the release of that very grant uses it: another instance’s handoff in between means a read', async () => {
    const h = new QueueHarness();
    const b = await handedToB(h);
    // b's release goes to another instance (it reads the queue: it has seen nothing), so c's to this one.
    const other = h.instance();
    await other.locks.release({ name: LOCK, owner: OWNER, clientId: 'b', fencingToken: b.fencingToken });
    const c = liveHolder(h.item, h.now);
    if (c?.clientId !== 'c') throw new Error('c should hold');
    expect(await callsDuring(h, () => h.release(c))).toEqual({ queue: 1, transact: 1 });
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'd', fencingToken: b.fencingToken + 2 });
  });

  it('a lapsed grant is not released: the release is refused and the queue stays for the timer', async () => {
    const h = new QueueHarness();
    const b = await handedToB(h);
    h.now += 6_000;
    await expect(h.release(b)).rejects.toMatchObject({ code: 'LEASE_EXPIRED' });
    expect(h.framesTo('conn-c', 'granted')).toHaveLength(0);
  });
});

describe('a lock handed on by its releases stays known as contended', () => {
  it('past the minute after the last join seen: each release still hands on in one transaction', async () => {
    const h = new QueueHarness();
    const long = { ttl: 100_000 };
    const a = await h.hold('a', long);
    for (const client of ['b', 'c']) {
      h.now += 1;
      await h.services.connections.open(`conn-${client}`, OWNER, client);
      const queued = await h.services.locks.acquire(h.command(client, { requestId: `r${client}`, ...long }), {
        waitMs: 300_000,
        connectionId: `conn-${client}`,
      });
      expect(queued.kind).toBe('queued');
    }
    h.now += 50_000;
    expect(await callsDuring(h, () => h.release(a))).toEqual({ queue: 1, transact: 1 });
    const b = liveHolder(h.item, h.now);
    if (b?.clientId !== 'b') throw new Error('b should hold');
    h.now += 50_000; // 100 s after the last join this instance saw
    expect(await callsDuring(h, () => h.release(b))).toEqual({ transact: 1 });
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'c' });
  });
});

describe('knownHead and knownHandoffSteps', () => {
  const release = (token: number) => ({ name: LOCK, owner: OWNER, clientId: 'b', fencingToken: token });

  it('take the next waiter read only for the release of the grant it was kept for, and only one a handoff on release may take', async () => {
    const h = new QueueHarness();
    const a = await contended(h);
    const { lock, waiters } = h.memory.queueNow(LOCK);
    const [b, c] = waiters;
    if (!b || !c) throw new Error('b and c should be queued');
    const grant = { ...a, clientId: 'b', fencingToken: a.fencingToken + 1 };
    const known = knownAfterRead(lock, [{ ...c, holding: ['other/lock'] }], grant);
    // Kept without the locks it holds (deadlock detection's list: a grant does not need it).
    expect(knownHead(known, release(grant.fencingToken), h.now)).toEqual({ ...c, holding: undefined });
    expect(knownHead(known, release(grant.fencingToken - 1), h.now)).toBeUndefined();
    expect(knownHead(known, { ...release(grant.fencingToken), mode: 'shared' }, h.now)).toBeUndefined();
    expect(knownHead(undefined, release(grant.fencingToken), h.now)).toBeUndefined();
    expect(knownHead(knownAfterHandoff(known, grant), release(grant.fencingToken), h.now)).toBeUndefined();
    const only = (w: typeof c) => knownHead({ ...known, next: [w] }, release(grant.fencingToken), h.now);
    expect(only({ ...c, deadline: h.now })).toBeUndefined();
    expect(only({ ...c, mode: 'shared' })).toBeUndefined();
    expect(only({ ...c, tenure: throughSession('s-1') })).toBeUndefined();
    // Below the default priority a default join would sort ahead of it.
    expect(only({ ...c, priority: -1 })).toBeUndefined();
    const higher = { ...c, priority: 3 };
    expect(only(higher)).toBe(higher);
  });

  it('the write holds only over that grant, live, with nothing joined ahead since the read', async () => {
    const h = new QueueHarness();
    const a = await contended(h);
    const { lock, waiters } = h.memory.queueNow(LOCK);
    const c = waiters[1];
    if (!c || !lock) throw new Error('c should be queued');
    // The lock as b's grant (a's token + 1) leaves it.
    const held = { ...lock, holder: 'b', fence: a.fencingToken + 1 };
    const known = knownAfterRead(lock, [c], { ...a, fencingToken: a.fencingToken + 1 });
    const lockStep = (token: number, now = h.now) => {
      const { steps, grant } = knownHandoffSteps(c, known, { ...release(token) }, now, 'w');
      expect(grant.fencingToken).toBe(token + 1);
      const step = steps[0];
      if (step?.kind !== 'update' || !step.condition) throw new Error('expected a conditional update');
      return step.condition;
    };
    const t = a.fencingToken + 1;
    expect(evaluate(lockStep(t), held)).toBe(true);
    expect(evaluate(lockStep(t), { ...held, reordered: 1 })).toBe(false);
    expect(evaluate(lockStep(t), { ...held, queued: 0 })).toBe(false);
    expect(evaluate(lockStep(t), { ...held, reentry: 2 })).toBe(false);
    expect(evaluate(lockStep(t), { ...held, holder: 'c' })).toBe(false);
    expect(evaluate(lockStep(t, h.now + 10_000), held)).toBe(false); // lapsed by then
    expect(evaluate(lockStep(t - 1), held)).toBe(false); // not b's token
    const counted = knownAfterRead({ ...lock, reordered: 4 }, [c], { ...a, fencingToken: t });
    const step = knownHandoffSteps(c, counted, release(t), h.now, 'w').steps[0];
    if (step?.kind !== 'update' || !step.condition) throw new Error('expected a conditional update');
    expect(evaluate(step.condition, { ...held, reordered: 4 })).toBe(true);
    expect(evaluate(step.condition, { ...held, reordered: 5 })).toBe(false);
  });

  it('a join above the default priority counts itself in `reordered`; one at the default does not', async () => {
    const h = new QueueHarness();
    await contended(h);
    expect(h.item?.reordered).toBeUndefined();
    await h.services.connections.open('conn-e', OWNER, 'e');
    await h.services.locks.acquire(h.command('e', { requestId: 're', ttl: 5_000 }), {
      waitMs: 10_000,
      connectionId: 'conn-e',
      priority: 1,
    });
    expect(h.item?.reordered).toBe(1);
  });
});
