/**
 * A lock held through a session is held exactly as long as the session
 * lives (guarantee 5): no lease lapses under it however long it lasts, no
 * write schedules it for collection, renewing it is refused, and its
 * session's end releases it. Through the real services on the in-memory
 * storage (which keeps the same TTL attribute DynamoDB would).
 */
import { describe, expect, it, vi } from 'vitest';
import { sessionRef } from '../../lambdas/core/items';
import { liveHolder } from '../../lambdas/core/lock';
import { endWrite } from '../../lambdas/core/session';
import { GC_ATTRIBUTE } from '../../lambdas/store/table';
import { LOCK, OWNER, QueueHarness } from '../support/queue-harness';

const DAY = 86_400_000;

async function leader(ttlMs = 60 * DAY) {
  const h = new QueueHarness();
  const s = await h.services.sessions.create(OWNER, 'leader', { ttlMs, graceMs: 0, lockDelayMs: 0 });
  const grant = await h.hold('leader', { session: s.id });
  return { h, s, grant };
}

describe('a lock held through a session', () => {
  it('is still held after 31 days of heartbeats (no backstop lease lapses under it)', async () => {
    const { h, s, grant } = await leader(2 * DAY);
    for (let day = 0; day < 31; day++) {
      h.now += DAY;
      await h.services.sessions.heartbeat(s.id, OWNER, 'leader');
    }
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'leader', fencingToken: grant.fencingToken });
    expect(await h.services.locks.acquire(h.command('other'))).toMatchObject({
      kind: 'done',
      outcome: { acquired: false, holder: { clientId: 'leader', session: true } },
    });
  });

  it('has no gc_at, whatever the queue writes around it; its release gives it one', async () => {
    const { h, s } = await leader();
    expect(h.item?.[GC_ATTRIBUTE]).toBeUndefined();
    for (let i = 0; i < 3; i++) {
      h.now += 1;
      const queued = await h.wait(`standby-${i}`, {
        waitMs: 60_000,
        connection: `c${i}`,
        requestId: `r${i}`,
      });
      expect(queued.kind).toBe('queued');
      await h.services.locks.cancel({
        lock: LOCK,
        owner: OWNER,
        clientId: `standby-${i}`,
        requestId: `r${i}`,
      });
      expect(h.item?.[GC_ATTRIBUTE]).toBeUndefined();
    }
    await h.services.sessions.close(s.id, OWNER, 'leader');
    expect(h.item?.holder).toBeUndefined();
    expect(h.item?.[GC_ATTRIBUTE]).toBe(Math.ceil(h.now / 1000) + 86_400);
  });

  it('refuses a renew with HELD_BY_SESSION and keeps its tenure', async () => {
    const { h, grant } = await leader();
    await expect(
      h.services.locks.renew({
        name: LOCK,
        owner: OWNER,
        clientId: 'leader',
        fencingToken: grant.fencingToken,
        ttlMs: 1_000,
      }),
    ).rejects.toMatchObject({ code: 'HELD_BY_SESSION', status: 409 });
    h.now += 10_000;
    expect(liveHolder(h.item, h.now)?.held).toEqual(grant.held);
  });

  it('ends with its session: released to the next waiter as the session expires', async () => {
    const { h, s, grant } = await leader(5_000);
    h.now += 1;
    expect((await h.wait('standby', { waitMs: 60_000 })).kind).toBe('queued');
    h.now = s.expiresAt;
    expect(await h.services.sessions.expire(s.id)).toBe(1);
    expect(liveHolder(h.item, h.now)).toMatchObject({
      clientId: 'standby',
      fencingToken: grant.fencingToken + 1,
    });
  });

  it('is not re-entered through its session once that ended, before its locks were released', async () => {
    const { h, s, grant } = await leader(1_000);
    const reentry = () =>
      h.services.locks.acquire({ ...h.command('leader', { session: s.id }), reentrant: true });
    // While it lives, a re-entry through it counts up.
    expect(await reentry()).toMatchObject({
      kind: 'done',
      outcome: { acquired: true, grant: { reentry: 2 } },
    });
    // It expires, and its end is written; the release of its locks is a write of its own, after.
    h.now += 1_000;
    expect(
      (
        await h.memory.write(
          sessionRef(s.id),
          endWrite({ owner: OWNER, clientId: 'leader' }, 'expired', h.now),
        )
      ).ok,
    ).toBe(true);
    await expect(reentry()).rejects.toMatchObject({ code: 'SESSION_EXPIRED' });
    // The release that follows frees the lock whole, whatever was counted.
    await h.services.sessions.expire(s.id, h.now);
    expect(liveHolder(h.item, h.now)).toBeUndefined();
    expect(h.item?.fence).toBe(grant.fencingToken);
  });

  it('is not re-entered by a waiting acquire whose session ended between its first write and the re-entry', async () => {
    const { h, s } = await leader(60_000);
    // The wait's first transaction is refused by the lock (the caller holds it); the session's end
    // lands just after, before the re-entry's write.
    const transact = h.memory.transact.bind(h.memory);
    vi.spyOn(h.memory, 'transact').mockImplementationOnce(async (steps) => {
      const result = await transact(steps);
      await h.memory.write(sessionRef(s.id), endWrite({ owner: OWNER, clientId: 'leader' }, 'closed', h.now));
      return result;
    });
    const cmd = { ...h.command('leader', { session: s.id, requestId: 'w1' }), reentrant: true };
    await expect(h.services.locks.acquire(cmd, { waitMs: 5_000 })).rejects.toMatchObject({
      code: 'SESSION_EXPIRED',
    });
  });
});
