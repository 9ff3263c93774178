/**
 * The handoff: how a free lock goes to the head of its queue, run through
 * the real Handoff and LockService on the in-memory storage. One grant per
 * handoff, the token computed from the lock as read and refused if anything
 * was granted since; timed-out waiters leave on the way; a grant is taken
 * back only when its push certainly did not arrive and nothing has touched
 * it since (defect 2d of "Trust I").
 */
import { describe, expect, it } from 'vitest';
import { lockRef, waiterRef } from '../../lambdas/core/items';
import { fenceFloor, grantOf, liveHolder } from '../../lambdas/core/lock';
import {
  handoffSteps,
  leaveSteps,
  PRIORITY,
  planServe,
  resetCountWrite,
  type Waiter,
} from '../../lambdas/core/queue';
import { LOCK, OWNER, QueueHarness, START } from '../support/queue-harness';

const queued = async (h: QueueHarness, client: string, options: Parameters<QueueHarness['wait']>[1] = {}) => {
  const out = await h.wait(client, { waitMs: 60_000, ttl: 10_000, ...options });
  if (out.kind !== 'queued') throw new Error(`${client} expected to queue: ${JSON.stringify(out)}`);
  h.now += 1;
  return h.waiters().find((w) => w.order === out.wait.order) as Waiter;
};

describe('handing a free lock to the head of its queue', () => {
  it('grants the head with the next token, takes it out of the queue, records the grant, and pushes it', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a');
    await queued(h, 'b', { connection: 'cb', requestId: 'rb' });
    await queued(h, 'c', { connection: 'cc' });
    expect(await h.release(a)).toMatchObject({ remaining: 0, queued: 2 });
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'b', fencingToken: a.fencingToken + 1 });
    expect(h.item?.queued).toBe(1);
    expect(h.waiters().map((w) => w.clientId)).toEqual(['c']);
    expect(h.record('b', 'rb')).toMatchObject({ state: 'granted', fence: a.fencingToken + 1 });
    expect(h.framesTo('cb', 'granted')).toEqual([
      expect.objectContaining({ fencing_token: a.fencingToken + 1, request_id: 'rb' }),
    ]);
    expect(h.framesTo('cc')).toEqual([]);
  });

  it('two servers racing: a handoff planned before another grant is refused, even once that grant ends', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a');
    const x = await queued(h, 'x');
    // The holder's lease lapses unseen: free, x queued. Server 1 reads and plans to hand it to x...
    h.now = START + 5_000;
    const snapshot = h.memory.queueNow(LOCK);
    const plan = planServe(snapshot.lock, snapshot.waiters, h.now, snapshot.complete);
    expect(plan.kind === 'grant' && plan.head.order).toBe(x.order);
    const stale = handoffSteps(x, snapshot.lock, h.now, 'stale');
    // ...meanwhile y joins ahead of x, and server 2 serves: y holds.
    await queued(h, 'y', { priority: PRIORITY.max, ttl: 1_000 });
    const served = await h.services.handoff.serve(LOCK);
    expect(served).toMatchObject({
      kind: 'granted',
      grant: { clientId: 'y', fencingToken: a.fencingToken + 1 },
    });
    expect(await h.memory.transact(stale.steps)).toMatchObject({ ok: false });
    // y's lease lapses: free again with x still queued, but the token moved on: the stale plan would reuse it.
    h.now += 2_000;
    const before = structuredClone(h.item);
    expect(await h.memory.transact(stale.steps)).toMatchObject({ ok: false });
    expect(h.item).toEqual(before);
    expect(stale.grant.fencingToken).toBe(a.fencingToken + 1);
    // Served afresh, x gets the next token.
    expect(await h.services.handoff.serve(LOCK)).toMatchObject({
      kind: 'granted',
      grant: { clientId: 'x', fencingToken: a.fencingToken + 2 },
    });
  });

  it('refuses a held lock, a waiter already gone, and a count that does not include the waiter', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a');
    const b = await queued(h, 'b');
    const c = await queued(h, 'c');
    const held = structuredClone(h.item);
    expect((await h.memory.transact(handoffSteps(b, h.item, h.now, 'w1').steps)).ok).toBe(false);
    expect(h.item).toEqual(held);
    // b leaves, then the lock is released (to c): a handoff to b is refused.
    expect((await h.memory.transact(leaveSteps(b, 'cancelled', h.now))).ok).toBe(true);
    await h.release(a);
    expect(liveHolder(h.item, h.now)?.clientId).toBe('c');
    expect((await h.memory.transact(handoffSteps(b, h.item, h.now, 'w2').steps)).ok).toBe(false);
    // A count that drifted to 0 with a waiter item still there: no handoff drives it below zero.
    const d = await queued(h, 'd');
    await h.memory.write(lockRef(LOCK), { update: [{ kind: 'set', attr: 'queued', value: 0 }] });
    const drifted = structuredClone(h.item);
    expect((await h.memory.transact(handoffSteps(d, h.item, h.now, 'w3').steps)).ok).toBe(false);
    expect(h.item).toEqual(drifted);
    void c;
  });

  it('starts the token from the clock floor when the lock item has none', async () => {
    const h = new QueueHarness();
    await h.hold('a');
    const b = await queued(h, 'b');
    // The lock item keeps only its count (its fence and holder were removed by hand).
    await h.memory.write(lockRef(LOCK), {
      update: [
        { kind: 'remove', attr: 'fence' },
        { kind: 'remove', attr: 'holder' },
      ],
    });
    const { steps, grant } = handoffSteps(b, h.item, h.now, 'w');
    expect(grant.fencingToken).toBe(fenceFloor(h.now) + 1);
    expect((await h.memory.transact(steps)).ok).toBe(true);
    expect(grantOf(h.item ?? {})).toEqual(grant);
    expect(h.item?.queued).toBe(0);
  });

  it('drops the timed-out waiters it reads on the way, telling them, and serves the first live one', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a', { ttl: 60_000 });
    await queued(h, 'early', { connection: 'ce', waitMs: 100, requestId: 're' });
    await queued(h, 'late', { connection: 'cl', waitMs: 60_000 });
    h.now += 500;
    await h.release(a);
    expect(liveHolder(h.item, h.now)?.clientId).toBe('late');
    expect(h.framesTo('ce', 'timeout')).toHaveLength(1);
    expect(h.record('early', 're')).toEqual({ state: 'ended', reason: 'timeout' });
    expect(h.waiters()).toEqual([]);
  });

  it('resets a count no waiter item backs, only while it has not moved', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a');
    const b = await queued(h, 'b');
    await h.memory.remove(waiterRef(LOCK, b.order)); // deleted by hand: the count drifted
    await h.release(a); // serving finds the whole queue empty and resets the count
    expect(h.item?.queued).toBe(0);
    expect((await h.hold('c')).clientId).toBe('c');
    // The reset itself is conditional on the count it saw.
    await queued(h, 'd');
    expect((await h.memory.write(lockRef(LOCK), resetCountWrite(0))).ok).toBe(false);
    expect(h.item?.queued).toBe(1);
  });
});

describe('taking back a grant nobody received', () => {
  /** a holds; b waits on connection cb, c after it; a releases while `push` decides the push's fate. */
  async function handoffWith(push: (h: QueueHarness) => QueueHarness['pushOutcome']) {
    const h = new QueueHarness();
    const a = await h.hold('a');
    await queued(h, 'b', { connection: 'cb', requestId: 'rb' });
    await queued(h, 'c', { connection: 'cc' });
    h.pushOutcome = push(h);
    await h.release(a);
    return { h, a };
  }

  it('takes back a grant pushed to a connection that is gone, and serves the next waiter', async () => {
    const { h, a } = await handoffWith(() => (connection) => (connection === 'cb' ? 'gone' : 'sent'));
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'c', fencingToken: a.fencingToken + 2 });
    expect(h.record('b', 'rb')).toEqual({ state: 'ended', reason: 'gone' });
  });

  it('never takes back a grant whose push may have arrived (outcome unknown): it is treated as delivered', async () => {
    const { h, a } = await handoffWith(() => () => 'unknown');
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'b', fencingToken: a.fencingToken + 1 });
    expect(h.record('b', 'rb')).toMatchObject({ state: 'granted' });
    expect(h.waiters().map((w) => w.clientId)).toEqual(['c']);
  });

  it('never takes back a grant its holder has used since (renewed it), even if the push then found it gone', async () => {
    const { h, a } = await handoffWith((h) => async (connection, frame) => {
      if (connection !== 'cb' || frame.type !== 'granted') return 'sent';
      // The grant arrived by another way (a retry's answer), and its holder renewed it at once.
      await h.services.locks.renew({
        name: LOCK,
        owner: OWNER,
        clientId: 'b',
        fencingToken: frame.fencing_token,
        ttlMs: 5_000,
      });
      return 'gone';
    });
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'b', fencingToken: a.fencingToken + 1 });
  });

  it('never takes back a grant a retry from a new connection was answered with', async () => {
    const { h, a } = await handoffWith((h) => async (connection, frame) => {
      if (connection !== 'cb' || frame.type !== 'granted') return 'sent';
      // b's connection dropped; it asks again on a new one and is answered with the grant.
      const retry = await h.wait('b', { connection: 'cb2', requestId: 'rb', waitMs: 60_000, ttl: 10_000 });
      expect(retry).toMatchObject({ kind: 'done', outcome: { acquired: true, replayed: true } });
      return 'gone';
    });
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'b', fencingToken: a.fencingToken + 1 });
    expect(h.record('b', 'rb')).toMatchObject({ state: 'granted', claimed: true });
  });
});

describe('a waiter whose session ended', () => {
  it('is dropped with an error frame when its turn comes, and the next waiter is served', async () => {
    const h = new QueueHarness();
    const s = await h.services.sessions.create(OWNER, 'b', { ttlMs: 1_000, graceMs: 0, lockDelayMs: 0 });
    const a = await h.hold('a', { ttl: 5_000 });
    await queued(h, 'b', { connection: 'cb', session: s.id, requestId: 'rb' });
    await queued(h, 'c', { connection: 'cc' });
    await h.services.sessions.close(s.id, OWNER, 'b');
    await h.release(a);
    expect(liveHolder(h.item, h.now)?.clientId).toBe('c');
    expect(h.framesTo('cb', 'error')).toEqual([
      expect.objectContaining({ error: expect.objectContaining({ code: 'SESSION_EXPIRED' }) }),
    ]);
    expect(h.record('b', 'rb')).toEqual({ state: 'ended', reason: 'session-ended' });
  });
});
