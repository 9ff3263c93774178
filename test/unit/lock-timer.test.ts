/**
 * One expiry timer per contended lock (core/lock-timer.ts, service/lock-timers.ts): the write that
 * records a timer holds exactly when the lock is uncovered, a busy lock's handoffs arm no timer, and
 * a timer that fires serves the queue and arms the next look only where none covers it.
 */
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { LatchkeyError } from '../../lambdas/core/errors';
import { applyUpdate, evaluate, type Item } from '../../lambdas/core/expr';
import { LockAttr as A, type Grant, leaseEnd, liveHolder } from '../../lambdas/core/lock';
import {
  armTimerWrite,
  earliest,
  TIMER_AT,
  TIMER_MARGIN_MS,
  timerAt,
  timerCovers,
} from '../../lambdas/core/lock-timer';
import { LockTimers } from '../../lambdas/service/lock-timers';
import type { StreamRecord } from '../../lambdas/service/stream-changes';
import { timerMessage } from '../../lambdas/service/timers';
import { LOCK, OWNER, QueueHarness, START } from '../support/queue-harness';

describe('the lock item’s timer (pure)', () => {
  const time = fc.integer({ min: START - 5_000, max: START + 5_000 });
  const lockItem = fc.record({
    queued: fc.option(fc.integer({ min: -1, max: 3 }), { nil: undefined }),
    timerAt: fc.option(time, { nil: undefined }),
  });
  const asItem = (l: { queued: number | undefined; timerAt: number | undefined }): Item => ({
    [A.name]: LOCK,
    [A.queued]: l.queued,
    [TIMER_AT]: l.timerAt,
  });

  it('records a timer exactly when somebody waits and the recorded one does not cover the look', () => {
    fc.assert(
      fc.property(lockItem, time, time, (l, by, now) => {
        const item = asItem(l);
        const write = armTimerWrite(by, now);
        const waiting = (l.queued ?? 0) > 0;
        expect(evaluate(write.condition ?? { kind: 'and', all: [] }, item)).toBe(
          waiting && !timerCovers(item, by, now),
        );
        // Once recorded, it covers the look, unless that look is too close to now for any timer to.
        const after = applyUpdate(item, write.update);
        expect(timerAt(after)).toBe(by);
        expect(timerCovers(after, by, now)).toBe(by > now + TIMER_MARGIN_MS);
      }),
    );
  });

  it('covers a look only with a timer due by then and far enough ahead not to have read the lock yet', () => {
    const now = START;
    const at = (t: number | undefined) => ({ [TIMER_AT]: t });
    expect(timerCovers(undefined, now + 10_000, now)).toBe(false);
    expect(timerCovers(at(undefined), now + 10_000, now)).toBe(false);
    expect(timerCovers(at(now + 5_000), now + 10_000, now)).toBe(true);
    expect(timerCovers(at(now + 10_000), now + 10_000, now)).toBe(true);
    expect(timerCovers(at(now + 10_001), now + 10_000, now)).toBe(false); // too late
    expect(timerCovers(at(now + TIMER_MARGIN_MS), now + 10_000, now)).toBe(false); // may have fired
    expect(earliest(undefined, 3, 1, undefined)).toBe(1);
    expect(earliest()).toBeUndefined();
  });
});

/** A harness whose lock item changes reach the notifier as stream records, when the test says. */
function streamed() {
  const h = new QueueHarness();
  const records: StreamRecord[] = [];
  h.memory.onRecord = (record) => records.push(record as unknown as StreamRecord);
  const notify = () => h.services.notifier.handle(records.splice(0));
  const timersFor = () => h.timers.filter((t) => 'lock' in t);
  return { h, notify, timersFor };
}

const end = (g: Grant) => leaseEnd(g) as number;

describe('one timer per contended lock', () => {
  it('a busy lock’s handoffs and joins arm no timer after the first; its timer fires about once a lease', async () => {
    const { h, notify, timersFor } = streamed();
    let holder = await h.hold('w0', { ttl: 10_000 });
    for (let i = 1; i <= 4; i++) {
      h.now += 1;
      expect((await h.wait(`w${i}`, { ttl: 10_000, waitMs: 60_000 })).kind).toBe('queued');
    }
    await notify();
    expect(timersFor()).toEqual([{ lock: LOCK, due_at: end(holder) }]);
    expect(timerAt(h.item)).toBe(end(holder));
    // 40 handoffs (each a release that grants the next waiter, who then queues again), 50 ms apart.
    for (let i = 0; i < 40; i++) {
      h.now += 50;
      await h.release(holder);
      holder = liveHolder(h.item, h.now) as Grant;
      expect(holder.clientId).not.toBe('w0');
      expect((await h.wait(`again-${i}`, { ttl: 10_000, waitMs: 60_000 })).kind).toBe('queued');
      await notify();
    }
    expect(timersFor()).toHaveLength(1);
    // The timer fires at the first holder's lease end: the lock moved on, so it arms the next look
    // (the current lease's end) and nothing else.
    h.now = timersFor()[0]?.due_at as number;
    await h.services.timekeeper.fire({ lock: LOCK, due_at: h.now });
    expect(timersFor()).toHaveLength(2);
    expect(timersFor()[1]).toEqual({ lock: LOCK, due_at: h.item?.[A.expiresAt] });
    await notify(); // its own record (the timer's time moved) arms nothing
    expect(timersFor()).toHaveLength(2);
  });

  it('a crashed holder: its timer hands the lock on at the lease end, and looks again at the next one', async () => {
    const { h, notify, timersFor } = streamed();
    const a = await h.hold('a', { ttl: 1_000 });
    h.now += 1;
    expect((await h.wait('b', { ttl: 2_000, connection: 'cb' })).kind).toBe('queued');
    h.now += 1;
    expect((await h.wait('c', { ttl: 2_000, connection: 'cc' })).kind).toBe('queued');
    await notify();
    expect(timersFor()).toEqual([{ lock: LOCK, due_at: end(a) }]);
    h.now = end(a);
    await h.services.timekeeper.fire({ lock: LOCK, due_at: end(a) });
    expect(h.item?.[A.holder]).toBe('b');
    expect(h.framesTo('cb', 'granted')).toHaveLength(1);
    await notify(); // b's grant: the timer that just fired covers nothing, so the notifier arms b's
    const bEnd = h.item?.[A.expiresAt] as number;
    expect(timersFor().slice(1)).toEqual([{ lock: LOCK, due_at: bEnd }]);
    h.now = bEnd;
    await h.services.timekeeper.fire({ lock: LOCK, due_at: bEnd });
    expect(h.item?.[A.holder]).toBe('c');
  });

  it('a renewal keeps the lock held: the timer looks again at the new lease end', async () => {
    const { h, notify, timersFor } = streamed();
    const a = await h.hold('a', { ttl: 1_000 });
    h.now += 1;
    expect((await h.wait('b', { waitMs: 60_000 })).kind).toBe('queued');
    await notify();
    h.now += 500;
    const renewed = await h.services.locks.renew({
      name: LOCK,
      owner: OWNER,
      clientId: 'a',
      fencingToken: a.fencingToken,
      ttlMs: 1_000,
    });
    await notify(); // the renewal's record: the armed timer (due earlier) covers its end too
    expect(timersFor()).toHaveLength(1);
    h.now = end(a);
    await h.services.timekeeper.fire({ lock: LOCK, due_at: end(a) });
    expect(h.item?.[A.holder]).toBe('a');
    expect(timersFor().slice(1)).toEqual([{ lock: LOCK, due_at: end(renewed.grant) }]);
    // A duplicate of the same message, and a late one: they serve, find the next look covered, arm nothing.
    await h.services.timekeeper.fire({ lock: LOCK, due_at: end(a) });
    h.now += 100;
    await h.services.timekeeper.fire({ lock: LOCK, due_at: end(a) });
    expect(timersFor()).toHaveLength(2);
  });

  it('a waiter whose deadline comes before the lease end moves the timer earlier; its wait ends then', async () => {
    const { h, notify, timersFor } = streamed();
    const a = await h.hold('a', { ttl: 60_000 });
    h.now += 1;
    expect((await h.wait('b', { waitMs: 30_000, connection: 'cb' })).kind).toBe('queued');
    await notify();
    const bDeadline = h.now + 30_000;
    expect(timersFor()).toEqual([{ lock: LOCK, due_at: bDeadline }]);
    h.now += 1;
    expect((await h.wait('c', { waitMs: 2_000, connection: 'cc' })).kind).toBe('queued');
    await notify();
    const cDeadline = h.now + 2_000;
    expect(timersFor().slice(1)).toEqual([{ lock: LOCK, due_at: cDeadline }]);
    expect(timerAt(h.item)).toBe(cDeadline);
    h.now = cDeadline;
    await h.services.timekeeper.fire({ lock: LOCK, due_at: cDeadline });
    expect(h.framesTo('cc', 'timeout')).toHaveLength(1);
    expect(h.waiters().map((w) => w.clientId)).toEqual(['b']);
    // The next look, at b's deadline (before a's lease end): the lock records the timer that just
    // fired, so it arms one (the first message, for the same time, is still on its way: both serve).
    expect(timersFor().slice(2)).toEqual([{ lock: LOCK, due_at: bDeadline }]);
    expect(end(a)).toBeGreaterThan(bDeadline);
  });

  it('a handoff by a timer looks on to the first deadline of the waiters left, not only the new lease end', async () => {
    const { h, notify, timersFor } = streamed();
    const a = await h.hold('a', { ttl: 10_000 });
    h.now += 1;
    expect((await h.wait('b', { ttl: 30_000, waitMs: 60_000 })).kind).toBe('queued');
    h.now += 1;
    expect((await h.wait('c', { waitMs: 20_000, connection: 'cc' })).kind).toBe('queued');
    const cDeadline = h.now + 20_000;
    await notify();
    expect(timersFor()).toEqual([{ lock: LOCK, due_at: end(a) }]);
    // a crashed: its timer hands the lock to b (lease 30 s), and looks on at c's deadline.
    h.now = end(a);
    await h.services.timekeeper.fire({ lock: LOCK, due_at: end(a) });
    expect(h.item?.[A.holder]).toBe('b');
    expect(timersFor().slice(1)).toEqual([{ lock: LOCK, due_at: cDeadline }]);
    await notify(); // b's grant: covered by the timer at c's deadline
    expect(timersFor()).toHaveLength(2);
    h.now = cDeadline;
    await h.services.timekeeper.fire({ lock: LOCK, due_at: cDeadline });
    expect(h.framesTo('cc', 'timeout')).toHaveLength(1);
    expect(h.waiters()).toEqual([]);
  });

  it('a waiter’s record in a batch before its lock’s: its deadline is still looked at', async () => {
    const { h, timersFor } = streamed();
    await h.hold('a', { ttl: 60_000 });
    const records: StreamRecord[] = [];
    h.memory.onRecord = (record) => records.push(record as unknown as StreamRecord);
    h.now += 1;
    expect((await h.wait('b', { waitMs: 5_000, connection: 'cb' })).kind).toBe('queued');
    const isLock = (r: StreamRecord) => JSON.stringify(r.dynamodb?.Keys).includes('{"S":"LOCK"}');
    const lockRecords = records.filter(isLock);
    expect(lockRecords).toHaveLength(1);
    // The waiter's record alone, with an older record of its lock that shows nobody queued.
    const older = {
      ...lockRecords[0],
      dynamodb: { ...lockRecords[0]?.dynamodb, NewImage: lockRecords[0]?.dynamodb?.OldImage },
    };
    await h.services.notifier.handle([older, ...records.filter((r) => !isLock(r))]);
    expect(timersFor()).toEqual([{ lock: LOCK, due_at: h.now + 5_000 }]);
    expect(timerAt(h.item)).toBe(h.now + 5_000);
  });

  it('of two that find the lock uncovered at once, both send, only one records; the other’s timer arms nothing', async () => {
    const { h, timersFor } = streamed();
    const a = await h.hold('a', { ttl: 1_000 });
    h.now += 1;
    expect((await h.wait('b', { waitMs: 60_000 })).kind).toBe('queued');
    const seen = h.item;
    await Promise.all([
      h.services.lockTimers.lookBy(LOCK, seen, end(a)),
      h.instance().lockTimers.lookBy(LOCK, seen, end(a)),
    ]);
    expect(timersFor()).toHaveLength(2);
    expect(timerAt(h.item)).toBe(end(a));
    // A later look is covered; an earlier one moves it.
    await h.services.lockTimers.lookBy(LOCK, h.item, end(a) + 5_000);
    expect(timersFor()).toHaveLength(2);
    await h.services.lockTimers.lookBy(LOCK, h.item, end(a) - 500);
    expect(timerAt(h.item)).toBe(end(a) - 500);
  });

  it('a handoff that leaves nobody waiting arms nothing', async () => {
    const { h, notify, timersFor } = streamed();
    const a = await h.hold('a', { ttl: 1_000 });
    h.now += 1;
    expect((await h.wait('b', { waitMs: 60_000, connection: 'cb' })).kind).toBe('queued');
    await notify();
    h.now = end(a);
    await h.services.timekeeper.fire({ lock: LOCK, due_at: end(a) });
    expect(h.item?.[A.holder]).toBe('b');
    await notify();
    expect(timersFor()).toHaveLength(1);
  });

  it('a request whose serve cannot arm the timer still gets its answer; a timer’s serve fails, to be retried', async () => {
    const { h } = streamed();
    const a = await h.hold('a', { ttl: 1_000 });
    h.now += 1;
    expect((await h.wait('b', { waitMs: 60_000, connection: 'cb' })).kind).toBe('queued');
    h.now += 1;
    expect((await h.wait('c', { waitMs: 30_000, connection: 'cc' })).kind).toBe('queued');
    h.now += 1;
    expect((await h.wait('d', { waitMs: 30_000, connection: 'cd' })).kind).toBe('queued');
    const down = () => Promise.reject(new LatchkeyError('UNAVAILABLE', 'SQS is down', undefined, 100));
    const spy = vi.spyOn(LockTimers.prototype, 'lookBy').mockImplementation(down);
    // An instance that never saw the lock contended: a plain release, then the queue is served.
    const released = await h.instance().locks.release({
      name: LOCK,
      owner: a.owner,
      clientId: a.clientId,
      fencingToken: a.fencingToken,
      mode: a.mode,
    });
    expect(released).toMatchObject({ lock: LOCK, remaining: 0 });
    expect(h.item?.[A.holder]).toBe('b');
    expect(spy).toHaveBeenCalled();
    const b = liveHolder(h.item, h.now) as Grant;
    h.now = end(b);
    await expect(h.services.timekeeper.fire({ lock: LOCK, due_at: end(b) })).rejects.toThrow('SQS is down');
    expect(h.item?.[A.holder]).toBe('c'); // served all the same; SQS retries the message
    spy.mockRestore();
  });

  it('a timer sent by an earlier version (one per grant, with its `fence`) still serves the queue', async () => {
    const { h } = streamed();
    const a = await h.hold('a', { ttl: 1_000 });
    h.now += 1;
    expect((await h.wait('b', { waitMs: 60_000, connection: 'cb' })).kind).toBe('queued');
    const legacy = timerMessage.parse({ lock: LOCK, due_at: end(a), fence: a.fencingToken + 7 });
    h.now = end(a);
    await h.services.timekeeper.fire(legacy);
    expect(h.item?.[A.holder]).toBe('b');
  });

  it('records nothing once nobody waits: the message sent serves and stops', async () => {
    const { h, timersFor } = streamed();
    const a = await h.hold('a', { ttl: 1_000 });
    await h.services.lockTimers.lookBy(LOCK, h.item, end(a));
    expect(timersFor()).toHaveLength(1); // the caller believed someone waited
    expect(timerAt(h.item)).toBeUndefined();
    h.now = end(a);
    await h.services.timekeeper.fire({ lock: LOCK, due_at: end(a) });
    expect(timersFor()).toHaveLength(1);
  });
});
