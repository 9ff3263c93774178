/**
 * Lock-delay (Chubby): when a session expires (not when it is closed), its
 * locks stay ungrantable for its lock_delay_ms, so a holder that was only
 * cut off cannot overlap the next one. Waiters queue meanwhile and are
 * served when the delay ends. Through the real Sessions, LockService and
 * Handoff on the in-memory storage.
 */
import { describe, expect, it } from 'vitest';
import { LockAttr as A, liveHolder } from '../../lambdas/core/lock';
import { onLockChange, planServe } from '../../lambdas/core/queue';
import { batch, LOCK, OWNER, QueueHarness } from '../support/queue-harness';

const nothing = { serve: false, lookBy: undefined };

/** a holds the lock through a session with a 100 ms lock-delay, and that session expires. */
async function expiredHolder(options: { waitersBefore?: string[] } = {}) {
  const h = new QueueHarness();
  const s = await h.services.sessions.create(OWNER, 'a', { ttlMs: 1_000, graceMs: 0, lockDelayMs: 100 });
  const a = await h.hold('a', { session: s.id });
  for (const client of options.waitersBefore ?? []) {
    h.now += 1;
    expect((await h.wait(client, { waitMs: 60_000 })).kind).toBe('queued');
  }
  const before = h.item;
  h.now = s.expiresAt;
  expect(await h.services.sessions.expire(s.id)).toBe(1);
  return { h, a, s, before };
}

describe('lock-delay after a session expired', () => {
  it('keeps the lock ungrantable until the delay ends: acquires are refused with the time left', async () => {
    const { h, a, s } = await expiredHolder();
    expect(liveHolder(h.item, h.now)).toBeUndefined();
    expect(await h.services.locks.acquire(h.command('c'))).toMatchObject({
      kind: 'done',
      outcome: { acquired: false, holder: undefined, retryAfterMs: 100 },
    });
    h.now = s.expiresAt + 99;
    expect(await h.services.locks.acquire(h.command('c'))).toMatchObject({
      outcome: { acquired: false, retryAfterMs: 1 },
    });
    h.now = s.expiresAt + 100;
    const c = await h.hold('c');
    expect(c.fencingToken).toBe(a.fencingToken + 1);
    expect(h.item?.[A.blockedUntil]).toBeUndefined(); // a grant clears it
    // A normal release leaves no delay behind; neither does closing a session.
    await h.release(c);
    const closing = await h.services.sessions.create(OWNER, 'd', {
      ttlMs: 1_000,
      graceMs: 0,
      lockDelayMs: 100,
    });
    await h.hold('d', { session: closing.id });
    await h.services.sessions.close(closing.id, OWNER, 'd');
    expect((await h.hold('e')).clientId).toBe('e');
  });

  it('looks at the delay’s end when the first waiter joins after the release', async () => {
    const { h, s } = await expiredHolder();
    const released = h.item;
    expect(onLockChange(batch(undefined, released), h.now)).toEqual(nothing); // nobody waits
    h.now += 3;
    expect((await h.wait('b', { waitMs: 60_000 })).kind).toBe('queued');
    expect(onLockChange(batch(released, h.item), h.now)).toEqual({ serve: false, lookBy: s.expiresAt + 100 });
  });

  it('queues waiters meanwhile, arms a timer at its end, and hands over only then', async () => {
    const { h, a, s, before } = await expiredHolder({ waitersBefore: ['b'] });
    // The release's record: nothing to serve yet, a look at the delay's end.
    const atDelayEnd = { serve: false, lookBy: s.expiresAt + 100 };
    expect(onLockChange(batch(before, h.item, before), h.now)).toEqual(atDelayEnd);
    expect(liveHolder(h.item, h.now)).toBeUndefined(); // the expiry released it and served nobody
    const delayed = h.item;
    h.now += 3;
    expect((await h.wait('c', { waitMs: 60_000 })).kind).toBe('queued'); // joining a delayed lock is allowed
    expect(onLockChange(batch(delayed, h.item), h.now)).toEqual(atDelayEnd); // same delay, same look
    const early = h.memory.queueNow(LOCK);
    expect(planServe(early.lock, early.waiters, h.now, true)).toMatchObject({
      kind: 'held',
      expiresAt: s.expiresAt + 100,
      fence: a.fencingToken,
    });
    expect(await h.services.handoff.serve(LOCK)).toMatchObject({ kind: 'held' });
    // The timer fires at the delay's end: b is served, c still waits.
    h.now = s.expiresAt + 100;
    await h.services.timekeeper.fire({ lock: LOCK, due_at: h.now });
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'b', fencingToken: a.fencingToken + 1 });
    expect(h.waiters().map((w) => w.clientId)).toEqual(['c']);
  });
});
