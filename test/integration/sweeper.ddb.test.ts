/**
 * The sweeper against DynamoDB Local, on a table of its own with no stream
 * notifier and no timers, so everything that ends here is the sweeper's
 * doing: expired sessions, sweepers that race or die midway, timed-out
 * waiters nobody removed, connections whose $disconnect never came.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Item, liveHolder } from '../../lambdas/core/lock';
import { enqueueSteps } from '../../lambdas/core/queue';
import { Handoff } from '../../lambdas/service/handoff';
import { LockService, newWaiter } from '../../lambdas/service/lock-service';
import { Sessions } from '../../lambdas/service/sessions';
import { Sweeper } from '../../lambdas/service/sweeper';
import type { LockStore } from '../../lambdas/store/lock-store';
import { QueueStore } from '../../lambdas/store/queue-store';
import { SessionStore } from '../../lambdas/store/session-store';
import { createTestTable, testStore } from '../support/dynamo';

let table: Awaited<ReturnType<typeof createTestTable>>;
let locks: LockStore;
let queue: QueueStore;
let store: SessionStore;
let handoff: Handoff;
let sessions: Sessions;
let service: LockService;
let sweeper: Sweeper;

beforeAll(async () => {
  table = await createTestTable();
  const t = testStore(table.tableName);
  locks = t.store;
  queue = new QueueStore(t.db, t.settings);
  store = new SessionStore(t.db, t.settings);
  handoff = new Handoff(locks, queue, { push: async () => 'sent' });
  sessions = new Sessions(store, locks, handoff, randomUUID);
  service = new LockService(locks, queue, handoff, sessions);
  sweeper = new Sweeper(store, sessions, handoff);
});
afterAll(() => table.drop());

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const lockName = () => `sweep/${randomUUID()}`;
const holderOf = async (lock: string) => liveHolder((await locks.get(lock)) as Item, Date.now());

/** A session holding `n` locks, each with one waiter queued behind it (an HTTP-style waiter). */
async function sessionWithWaitedLocks(client: string, n: number, ttlMs: number) {
  const s = await sessions.create(client, { ttlMs, graceMs: 0, lockDelayMs: 0 });
  const names = Array.from({ length: n }, lockName);
  const tokens: number[] = [];
  for (const name of names) {
    const out = await sessions.acquire({ name, clientId: client, ttlMs: 1, sessionId: s.id });
    if (!out.acquired) throw new Error('not acquired');
    tokens.push(out.grant.fencingToken);
    const result = await service.acquire(
      { name, clientId: `${client}-waiter`, ttlMs: 30_000, requestId: randomUUID() },
      { waitMs: 60_000 },
    );
    expect(result.kind).toBe('queued');
  }
  return { session: s, names, tokens };
}

describe('the sweeper', () => {
  it('ends a session past ttl + grace and hands each of its 3 locks to the head waiter, with a larger token', async () => {
    const { session, names, tokens } = await sessionWithWaitedLocks('dave', 3, 1_000);
    await sleep(500);
    await sessions.heartbeat(session.id, 'dave');
    await sleep(700); // past the first ttl, not past the one the heartbeat gave
    expect(await sweeper.sweep()).toMatchObject({ expired: 0 });
    for (const name of names) expect((await holderOf(name))?.clientId).toBe('dave');
    await sleep(400);
    expect(await sweeper.sweep()).toMatchObject({ expired: 1, locksReleased: 3 });
    for (const [i, name] of names.entries()) {
      const holder = await holderOf(name);
      expect(holder?.clientId).toBe('dave-waiter');
      expect(holder?.fencingToken).toBeGreaterThan(tokens[i] as number);
    }
    await expect(sessions.heartbeat(session.id, 'dave')).rejects.toMatchObject({ code: 'SESSION_EXPIRED' });
    // Nothing is left due: the next run reads the due index and ends nothing.
    expect(await sweeper.sweep()).toMatchObject({ expired: 0, locksReleased: 0 });
  });

  it('two sweepers at once, and one that dies midway then reruns: one grant per lock, nothing stuck', async () => {
    const all = await Promise.all(['e0', 'e1', 'e2', 'e3'].map((c) => sessionWithWaitedLocks(c, 2, 500)));
    await sleep(600);
    // A sweeper that dies after its first lock release.
    let writes = 0;
    const dying = new Proxy(locks, {
      get(target, prop, receiver) {
        if (prop !== 'write') return Reflect.get(target, prop, receiver);
        return async (...args: Parameters<LockStore['write']>) => {
          if (++writes > 1) throw new Error('sweeper killed');
          return target.write(...args);
        };
      },
    });
    const crashing = new Sweeper(store, new Sessions(store, dying, handoff, randomUUID), handoff);
    await expect(crashing.sweep()).rejects.toThrow('sweeper killed');
    // Two at once finish the job.
    await Promise.all([sweeper.sweep(), sweeper.sweep()]);
    for (const { names, tokens, session } of all) {
      for (const [i, name] of names.entries()) {
        const item = await locks.get(name);
        const holder = liveHolder(item, Date.now());
        expect(holder?.clientId).toBe(`${session.clientId}-waiter`);
        // Exactly one grant after the session's: the token moved by one.
        expect(holder?.fencingToken).toBe((tokens[i] as number) + 1);
        expect(item?.queued).toBe(0);
      }
      await expect(sessions.heartbeat(session.id, session.clientId)).rejects.toMatchObject({
        code: 'SESSION_EXPIRED',
      });
    }
    expect(await sweeper.sweep()).toMatchObject({ expired: 0, locksReleased: 0 });
  });

  it('a run that released a lock but died before handing it on: the next run hands it on', async () => {
    const { session, names } = await sessionWithWaitedLocks('fay', 1, 300);
    await sleep(400);
    const failingHandoff = new Proxy(handoff, {
      get(target, prop, receiver) {
        if (prop !== 'serve') return Reflect.get(target, prop, receiver);
        return async () => {
          throw new Error('died before serving');
        };
      },
    });
    const dying = new Sweeper(store, new Sessions(store, locks, failingHandoff, randomUUID), handoff);
    await expect(dying.sweep()).rejects.toThrow('died before serving');
    const name = names[0] as string;
    expect(await holderOf(name)).toBeUndefined(); // released, nobody served
    expect((await locks.get(name))?.queued).toBe(1);
    await sweeper.sweep();
    expect((await holderOf(name))?.clientId).toBe('fay-waiter');
    await expect(sessions.heartbeat(session.id, 'fay')).rejects.toMatchObject({ code: 'SESSION_EXPIRED' });
  });

  it('drops a waiter whose wait ended but whose function died, and a connection past 2 h', async () => {
    const lock = lockName();
    await locks.acquire({ name: lock, clientId: 'holder', ttlMs: 30_000 });
    // An HTTP waiter whose function died: its item stays queued past its deadline.
    const now = Date.now();
    const orphan = newWaiter(
      { name: lock, clientId: 'gone', ttlMs: 5_000, requestId: 'r' },
      { waitMs: 300 },
      now,
    );
    expect((await queue.transact(lock, enqueueSteps(orphan, now), now)).ok).toBe(true);
    // A connection API Gateway closed two hours ago whose $disconnect never came, with a waiter.
    const ghost = `ghost-${randomUUID()}`;
    await queue.putConnection({
      id: ghost,
      clientId: 'ghost',
      connectedAt: Date.now() - 2 * 3_600_000 - 61_000,
    });
    const other = lockName();
    await locks.acquire({ name: other, clientId: 'holder', ttlMs: 30_000 });
    const t = Date.now();
    const haunted = newWaiter(
      { name: other, clientId: 'ghost', ttlMs: 5_000, requestId: 'g' },
      { waitMs: 600_000, connectionId: ghost },
      t,
    );
    expect((await queue.transact(other, enqueueSteps(haunted, t), t)).ok).toBe(true);
    await sleep(400);

    expect(await sweeper.sweep()).toMatchObject({ queuesServed: 1, connectionsClosed: 1 });
    expect((await locks.get(lock))?.queued).toBe(0);
    expect((await locks.get(other))?.queued).toBe(0);
    expect(await queue.getConnection(ghost)).toBeUndefined();
    // Dropping waiters takes nothing from the holder.
    expect((await holderOf(lock))?.clientId).toBe('holder');
    expect((await holderOf(other))?.clientId).toBe('holder');
  });
});
