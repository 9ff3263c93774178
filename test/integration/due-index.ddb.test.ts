/**
 * The sessions' due index entries against DynamoDB Local, on a table of their own with no timers
 * (so whatever ends a session here is the sweeper): a heartbeat writes the index only when the
 * entry must move, counted from the write units DynamoDB reports per index; an expired session is
 * still found and ended at its expiry, its lock handed on; and sweeper runs among sessions that
 * heartbeat on time read none of them. Time is a clock the tests move.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockRef, sessionRef } from '../../lambdas/core/items';
import { lease, liveHolder, throughSession } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { sessionOfItem } from '../../lambdas/core/session';
import { MAX_WAIT_MS } from '../../lambdas/core/wire';
import { DUE_INDEX, minuteOf, OWNER_INDEX } from '../../lambdas/store/table';
import { meterIndexWrites } from '../support/capacity';
import { CallCounter, createTestTable, manualClock, testServices } from '../support/dynamo';

let table: Awaited<ReturnType<typeof createTestTable>>;
// The start of a minute, so "within one minute" below is exactly that.
let now = 1_800_000_000_000 - (1_800_000_000_000 % 60_000);
const clock = manualClock(() => now);
const counter = new CallCounter();
let t: ReturnType<typeof testServices>;
let meter: ReturnType<typeof meterIndexWrites>;

beforeAll(async () => {
  table = await createTestTable();
  t = testServices(table.tableName, { clock, counter });
  meter = meterIndexWrites(t.db);
});
afterAll(() => table.drop());

const OWNER = localPrincipal('due-test');
/** The SDK's defaults: ttl 30 s, grace 5 s, a heartbeat every 10 s. */
const DEFAULTS = { ttlMs: 30_000, graceMs: 5_000, lockDelayMs: 0 };

const dueKeys = async (id: string) => {
  const item = await t.storage.read(sessionRef(id));
  return { bucket: item?.[DUE_INDEX.pk], at: item?.[DUE_INDEX.sk] };
};
const holderOf = async (lock: string) => liveHolder(await t.storage.read(lockRef(lock)), now);

describe("a session's due index entry", () => {
  it('stays put through 20 heartbeats within one minute: no index write, 1 GetItem + 1 UpdateItem each', async () => {
    now += 10 * 60_000;
    const start = now;
    const s = await t.services.sessions.create(OWNER, 'steady', DEFAULTS);
    const filed = await dueKeys(s.id);
    expect(filed.at).toBe(start + 35_000);
    counter.reset();
    meter.reset();
    for (let i = 1; i <= 20; i++) {
      now = start + i * 1_000;
      const beat = await t.services.sessions.heartbeat(s.id, OWNER, 'steady');
      expect(beat.expiresAt).toBe(now + 35_000); // the session itself moves every time
      expect(await dueKeys(s.id)).toEqual(filed);
    }
    expect(minuteOf(now)).toBe(minuteOf(start));
    expect(meter.of(DUE_INDEX.name)).toBe(0);
    // The dueKeys reads are GetItems too: 2 per heartbeat round here.
    expect(counter.calls.filter((c) => c === 'UpdateItemCommand')).toHaveLength(20);
    expect(counter.calls.filter((c) => c === 'GetItemCommand')).toHaveLength(40);
  });

  it('the session listing (by_owner): one index write when a session opens, none per heartbeat, one once swept', async () => {
    now += 10 * 60_000;
    meter.reset();
    const s = await t.services.sessions.create(OWNER, 'listed', DEFAULTS);
    expect(meter.of(OWNER_INDEX.name)).toBe(1);
    expect((await t.storage.sessionIds(100, '')).ids).toContain(s.id);
    for (let k = 1; k <= 10; k++) {
      now += 10_000;
      await t.services.sessions.heartbeat(s.id, OWNER, 'listed');
    }
    expect(meter.of(OWNER_INDEX.name)).toBe(1);
    await t.services.sessions.close(s.id, OWNER, 'listed');
    expect(meter.of(OWNER_INDEX.name)).toBe(2);
    expect((await t.storage.sessionIds(100, '')).ids).not.toContain(s.id);
  });

  it('at the defaults moves every 3rd heartbeat: 2 index writes per move, 2/3 per heartbeat (2 before)', async () => {
    now += 10 * 60_000;
    const start = now;
    const s = await t.services.sessions.create(OWNER, 'defaults', DEFAULTS);
    meter.reset();
    let before = await dueKeys(s.id);
    const movedAt: number[] = [];
    for (let k = 1; k <= 30; k++) {
      now = start + k * 10_000;
      await t.services.sessions.heartbeat(s.id, OWNER, 'defaults');
      const after = await dueKeys(s.id);
      if (after.at !== before.at) movedAt.push(k);
      // Never later than the expiry, and never due before the next heartbeat.
      expect(after.at as number).toBeLessThanOrEqual(now + 35_000);
      expect(after.at as number).toBeGreaterThan(now + 10_000);
      before = after;
    }
    expect(movedAt).toEqual([3, 6, 9, 12, 15, 18, 21, 24, 27, 30]);
    expect(meter.of(DUE_INDEX.name)).toBe(2 * movedAt.length); // measured: 20 write units for 30 heartbeats
  });

  it('an expired session is swept at its expiry, not before, and its lock handed on as before', async () => {
    now += 10 * 60_000;
    await t.services.sweeper.sweep(); // the cursor is here
    const s = await t.services.sessions.create(OWNER, 'quits', DEFAULTS);
    const lock = `due/${randomUUID()}`;
    const held = await t.acquire({
      name: lock,
      owner: OWNER,
      clientId: 'quits',
      tenure: throughSession(s.id),
    });
    if (!held.acquired) throw new Error('not acquired');
    const waiter = {
      name: lock,
      owner: OWNER,
      clientId: 'next',
      tenure: lease(30_000),
      requestId: randomUUID(),
    };
    expect((await t.services.locks.acquire(waiter, { waitMs: MAX_WAIT_MS })).kind).toBe('queued');
    // One heartbeat leaves the entry 1 s before the expiry it sets; then the client stops.
    now += 1_000;
    const last = await t.services.sessions.heartbeat(s.id, OWNER, 'quits');
    const early = await dueKeys(s.id);
    expect(early.at).toBe(last.expiresAt - 1_000);
    // A run after the entry's time, before the expiry: the session is read, not ended, and refiled at its expiry.
    now = (early.at as number) + 500;
    expect(await t.services.sweeper.sweep()).toMatchObject({ expired: 0 });
    expect((await holderOf(lock))?.clientId).toBe('quits');
    expect((await dueKeys(s.id)).at).toBe(last.expiresAt);
    // A run at the expiry ends it and hands the lock on, with a larger fencing token.
    now = last.expiresAt;
    expect(await t.services.sweeper.sweep()).toMatchObject({ expired: 1, locksReleased: 1 });
    const next = await holderOf(lock);
    expect(next?.clientId).toBe('next');
    expect(next?.fencingToken).toBeGreaterThan(held.grant.fencingToken);
    const ended = await t.storage.read(sessionRef(s.id));
    expect(ended && sessionOfItem(s.id, ended)).toMatchObject({
      endedAt: last.expiresAt,
      endReason: 'expired',
    });
    expect(ended?.[DUE_INDEX.sk]).toBeUndefined(); // swept: out of the index
  });

  it('sweeper runs every 5 s among 40 sessions heartbeating on time read none of them', async () => {
    now += 10 * 60_000;
    await t.services.sweeper.sweep();
    const start = now;
    const ids = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        now = start; // all opened at once, their heartbeats spread over the 10 s
        return { id: (await t.services.sessions.create(OWNER, `live-${i}`, DEFAULTS)).id, i };
      }),
    );
    counter.reset();
    let runs = 0;
    // A minute: each session heartbeats every 10 s (at its own offset), the sweeper every 5 s.
    for (let ms = 250; ms <= 60_000; ms += 250) {
      now = start + ms;
      for (const { id, i } of ids)
        if (ms % 10_000 === (i * 250) % 10_000) await t.services.sessions.heartbeat(id, OWNER, `live-${i}`);
      if (ms % 5_000 === 0) {
        const before = counter.calls.length;
        expect(await t.services.sweeper.sweep()).toMatchObject({ expired: 0, locksReleased: 0 });
        // Its cursor (a GetItem), its Queries of the due index, maybe moving its cursor: no session read.
        const run = counter.calls.slice(before);
        expect(run.filter((c) => c === 'GetItemCommand')).toHaveLength(1);
        expect(
          run.filter((c) => c !== 'GetItemCommand' && c !== 'QueryCommand' && c !== 'UpdateItemCommand'),
        ).toEqual([]);
        expect(run.filter((c) => c === 'UpdateItemCommand').length).toBeLessThanOrEqual(1);
        runs++;
      }
    }
    expect(runs).toBe(12);
  });
});
