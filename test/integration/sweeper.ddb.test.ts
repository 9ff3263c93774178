/**
 * The sweeper against DynamoDB Local, on a table of its own with no stream
 * notifier and no timers, so everything that ends here is the sweeper's
 * doing: expired sessions, sweepers that race or die midway, timed-out
 * waiters nobody removed, connections whose $disconnect never came, and
 * items that keep failing. Time is a clock the tests move.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockRef, quotaRef, requestRef, sessionRef } from '../../lambdas/core/items';
import { lease, liveHolder, requestKey, throughSession } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { connectionQuotaScope, principalQuotaScope } from '../../lambdas/core/queue';
import { requestOf } from '../../lambdas/core/request';
import { sessionOfItem } from '../../lambdas/core/session';
import { MAX_WAIT_MS } from '../../lambdas/core/wire';
import { SERVE_READS } from '../../lambdas/service/handoff';
import { wireServices } from '../../lambdas/service/services';
import type { Storage } from '../../lambdas/service/storage';
import { createTestTable, manualClock, testServices } from '../support/dynamo';

let table: Awaited<ReturnType<typeof createTestTable>>;
let now = 1_800_000_000_000;
const clock = manualClock(() => now);
let t: ReturnType<typeof testServices>;

beforeAll(async () => {
  table = await createTestTable();
  t = testServices(table.tableName, { clock });
});
afterAll(() => table.drop());

/** The principal the clients here act as; a ghost connection's is its own. */
const OWNER = localPrincipal('sweeper-test');
const GHOST = localPrincipal('ghost');

const lockName = () => `sweep/${randomUUID()}`;
const holderOf = async (lock: string) => liveHolder(await t.storage.read(lockRef(lock)), now);
const queuedOn = async (lock: string) => (await t.storage.read(lockRef(lock)))?.queued;

/** The same services, on storage that fails every call `fails` says should fail (a broken partition, a crash). */
function servicesOn(fails: (call: string, args: unknown[]) => boolean) {
  const storage = new Proxy(t.storage, {
    get(target, prop, receiver) {
      const member = Reflect.get(target, prop, receiver);
      if (typeof member !== 'function') return member;
      return async (...args: unknown[]) => {
        if (fails(String(prop), args))
          throw Object.assign(new Error(`storage failed in ${String(prop)}`), {
            name: 'ThrottlingException',
          });
        return member.apply(target, args);
      };
    },
  }) as Storage;
  const { pusher, timers } = t.services;
  return wireServices({ storage, pusher, timers, clock, ids: randomUUID });
}

/** A session holding `n` locks, each with one waiter queued behind it (an HTTP-style waiter). */
async function sessionWithWaitedLocks(client: string, n: number, ttlMs: number) {
  const s = await t.services.sessions.create(OWNER, client, { ttlMs, graceMs: 0, lockDelayMs: 0 });
  const names = Array.from({ length: n }, lockName);
  const tokens: number[] = [];
  for (const name of names) {
    const out = await t.acquire({ name, owner: OWNER, clientId: client, tenure: throughSession(s.id) });
    if (!out.acquired) throw new Error('not acquired');
    tokens.push(out.grant.fencingToken);
    const waiter = {
      name,
      owner: OWNER,
      clientId: `${client}-waiter`,
      tenure: lease(30_000),
      requestId: randomUUID(),
    };
    expect((await t.services.locks.acquire(waiter, { waitMs: MAX_WAIT_MS })).kind).toBe('queued');
  }
  return { session: s, names, tokens };
}

describe('the sweeper', () => {
  it('ends a session past ttl + grace and hands each of its 3 locks to the head waiter, with a larger token', async () => {
    now += 600_000;
    const { session, names, tokens } = await sessionWithWaitedLocks('dave', 3, 1_000);
    now += 500;
    await t.services.sessions.heartbeat(session.id, OWNER, 'dave');
    now += 700; // past the first ttl, not past the one the heartbeat gave
    expect(await t.services.sweeper.sweep()).toMatchObject({ expired: 0 });
    for (const name of names) expect((await holderOf(name))?.clientId).toBe('dave');
    now += 400;
    expect(await t.services.sweeper.sweep()).toMatchObject({ expired: 1, locksReleased: 3 });
    for (const [i, name] of names.entries()) {
      const holder = await holderOf(name);
      expect(holder?.clientId).toBe('dave-waiter');
      expect(holder?.fencingToken).toBeGreaterThan(tokens[i] as number);
    }
    await expect(t.services.sessions.heartbeat(session.id, OWNER, 'dave')).rejects.toMatchObject({
      code: 'SESSION_EXPIRED',
    });
    // Nothing is left due: the next run reads the due index and ends nothing.
    expect(await t.services.sweeper.sweep()).toMatchObject({ expired: 0, locksReleased: 0 });
  });

  it('two sweepers at once, and one that dies midway then reruns: one grant per lock, nothing stuck', async () => {
    now += 600_000;
    const all = await Promise.all(['e0', 'e1', 'e2', 'e3'].map((c) => sessionWithWaitedLocks(c, 2, 500)));
    now += 600;
    // A sweeper whose storage dies after its first lock release: it can neither finish nor reschedule.
    let writes = 0;
    const dying = servicesOn((call) => call === 'write' && ++writes > 1);
    await expect(dying.sweeper.sweep()).rejects.toThrow('storage failed');
    // Two at once finish the job.
    await Promise.all([t.services.sweeper.sweep(), t.services.sweeper.sweep()]);
    for (const { names, tokens, session } of all) {
      for (const [i, name] of names.entries()) {
        const holder = await holderOf(name);
        expect(holder?.clientId).toBe(`${session.clientId}-waiter`);
        // Exactly one grant after the session's: the token moved by one.
        expect(holder?.fencingToken).toBe((tokens[i] as number) + 1);
        expect(await queuedOn(name)).toBe(0);
      }
      await expect(t.services.sessions.heartbeat(session.id, OWNER, session.clientId)).rejects.toMatchObject({
        code: 'SESSION_EXPIRED',
      });
    }
    expect(await t.services.sweeper.sweep()).toMatchObject({ expired: 0, locksReleased: 0, behind: false });
  });

  it('a run that released a lock but died before handing it on: the item is retried and handed on', async () => {
    now += 600_000;
    const { session, names } = await sessionWithWaitedLocks('fay', 1, 300);
    const name = names[0] as string;
    now += 400;
    // Serving the queue fails (its Query), after the release landed.
    const failing = servicesOn((call) => call === 'queue');
    const report = await failing.sweeper.sweep();
    expect(report).toMatchObject({ retried: 1 });
    expect(await holderOf(name)).toBeUndefined(); // released, nobody served
    expect(await queuedOn(name)).toBe(1);
    // Moved a minute on, not left behind: the next run after that finishes it.
    expect(await t.services.sweeper.sweep()).toMatchObject({ expired: 0 });
    now += 61_000;
    await t.services.sweeper.sweep();
    expect((await holderOf(name))?.clientId).toBe('fay-waiter');
    await expect(t.services.sessions.heartbeat(session.id, OWNER, 'fay')).rejects.toMatchObject({
      code: 'SESSION_EXPIRED',
    });
  });

  // Many sweeper runs over virtual hours: seconds here, a minute or more on a loaded machine.
  it('retries an item that keeps failing for over an hour, with backoff, and never skips it', {
    timeout: 180_000,
  }, async () => {
    now += 600_000;
    const { session, names } = await sessionWithWaitedLocks('gil', 1, 300);
    const lock = names[0] as string;
    // Every call about the session's lock fails for 90 minutes, so ending the session fails.
    const broken = servicesOn((call, args) => call !== 'dueIn' && JSON.stringify(args).includes(lock));
    now += 400;
    const tries: number[] = [];
    // A run every 2 minutes (every minute would only read more empty minutes).
    for (let minute = 0; minute < 90; minute += 2) {
      if ((await broken.sweeper.sweep()).retried) tries.push(minute);
      now += 2 * 60_000;
    }
    // Tried again and again, further apart each time (1, 2, 4 ... minutes, seen here to the 2
    // minutes between runs), up to an hour apart.
    expect(tries.length).toBeGreaterThanOrEqual(6);
    const gaps = tries.slice(1).map((m, i) => m - (tries[i] as number));
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]).toBeGreaterThanOrEqual(gaps[i - 1] as number);
    expect((await t.storage.read(sessionRef(session.id)))?.sweep_failures).toBe(tries.length);
    // The partition heals: within the longest backoff, the session ends and its lock is released (its
    // waiter, whose own wait ran out meanwhile, is gone too).
    for (let minute = 0; minute <= 60 && (await holderOf(lock))?.clientId === 'gil'; minute += 5) {
      await t.services.sweeper.sweep();
      now += 5 * 60_000;
    }
    expect((await holderOf(lock))?.clientId).not.toBe('gil');
    const ended = await t.storage.read(sessionRef(session.id));
    expect(ended && sessionOfItem(session.id, ended)).toMatchObject({ endReason: 'expired' });
    expect(ended?.swept_at).toBeDefined();
  });

  it('holds its cursor on an item it cannot even reschedule, for as long as that lasts', {
    timeout: 180_000,
  }, async () => {
    now += 600_000;
    const { session, names } = await sessionWithWaitedLocks('hal', 1, 300);
    // The session's own partition fails every call for 20 minutes.
    const broken = servicesOn((call, args) => call !== 'dueIn' && JSON.stringify(args).includes(session.id));
    now += 400;
    for (let minute = 0; minute < 20; minute += 5) {
      expect(await broken.sweeper.sweep()).toMatchObject({ behind: true });
      now += 5 * 60_000;
    }
    // Healed: the next run reads back to the held minute and finishes the session.
    expect(await t.services.sweeper.sweep()).toMatchObject({ expired: 1, locksReleased: 1 });
    expect((await holderOf(names[0] as string))?.clientId).toBe('hal-waiter');
  });

  it('drops a waiter whose wait ended but whose function died, and a connection past 2 h', async () => {
    now += 600_000;
    const lock = lockName();
    await t.acquire({ name: lock, owner: OWNER, clientId: 'holder', tenure: lease(3_600_000) });
    // An HTTP waiter whose function died: its item stays queued past its deadline.
    const orphan = { name: lock, owner: OWNER, clientId: 'gone', tenure: lease(5_000), requestId: 'r' };
    expect((await t.services.locks.acquire(orphan, { waitMs: 300 })).kind).toBe('queued');
    // A connection API Gateway closed two hours ago whose $disconnect never came, with a waiter.
    const ghost = `ghost-${randomUUID()}`;
    const opened = now;
    now -= 2 * 3_600_000 + 61_000;
    await t.services.connections.open(ghost, GHOST, 'ghost');
    now = opened;
    const other = lockName();
    await t.acquire({ name: other, owner: OWNER, clientId: 'holder', tenure: lease(3_600_000) });
    const haunted = { name: other, owner: GHOST, clientId: 'ghost', tenure: lease(5_000), requestId: 'g' };
    expect((await t.services.locks.acquire(haunted, { waitMs: 600_000, connectionId: ghost })).kind).toBe(
      'queued',
    );
    now += 400;

    expect(await t.services.sweeper.sweep()).toMatchObject({ queuesServed: 1, connectionsClosed: 1 });
    expect(await queuedOn(lock)).toBe(0);
    expect(await queuedOn(other)).toBe(0);
    expect(await t.services.connections.get(ghost)).toBeUndefined();
    // Their waiter counters (limits) went down with them: neither principal nor the connection keeps a slot.
    const waiting = async (scope: string) => (await t.storage.read(quotaRef(scope)))?.waiting ?? 0;
    expect(await waiting(principalQuotaScope(requestKey(OWNER, 'gone', 'r')))).toBe(0);
    expect(await waiting(principalQuotaScope(requestKey(GHOST, 'ghost', 'g')))).toBe(0);
    expect(await waiting(connectionQuotaScope(ghost))).toBe(0);
    // Dropping waiters takes nothing from the holder.
    expect((await holderOf(lock))?.clientId).toBe('holder');
    expect((await holderOf(other))?.clientId).toBe('holder');
  });

  it('ends timed-out waiters further back than a serve reads, after the serve, and only those', async () => {
    now += 600_000;
    const lock = lockName();
    await t.acquire({ name: lock, owner: OWNER, clientId: 'holder', tenure: lease(3_600_000) });
    const join = async (clientId: string, waitMs: number) => {
      now += 1; // a millisecond apart: the queue's order is by arrival
      const cmd = { name: lock, owner: OWNER, clientId, tenure: lease(5_000), requestId: `r-${clientId}` };
      expect((await t.services.locks.acquire(cmd, { waitMs })).kind).toBe('queued');
    };
    // Waiters that wait long, then three whose functions died before their end: the last of the
    // serve's SERVE_READS (the serve ends it) and two behind it (the sweeper ends them).
    const long = Array.from({ length: SERVE_READS - 1 }, (_, i) => `w${i}`);
    for (const w of long) await join(w, MAX_WAIT_MS);
    for (const w of ['near', 'deep1', 'deep2']) await join(w, 300);
    now += 400;

    expect(await t.services.sweeper.sweep()).toMatchObject({ queuesServed: 1, waitsEnded: 2 });
    expect(await queuedOn(lock)).toBe(long.length);
    for (const w of ['near', 'deep1', 'deep2']) {
      const record = requestOf(await t.storage.read(requestRef(lock, requestKey(OWNER, w, `r-${w}`))));
      expect(record).toMatchObject({ state: 'ended', reason: 'timeout' });
    }
    expect((await t.storage.queue(lock, SERVE_READS + 5)).waiters.map((w) => w.clientId)).toEqual(long);
    expect((await holderOf(lock))?.clientId).toBe('holder');
  });
});
