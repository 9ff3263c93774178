/**
 * HTTP waits with a doorbell (service/relay.ts): the waiter item names the function's relay
 * connection, whoever grants or ends the waiter rings it, and the ring wakes the wait at once.
 * The real services and the real Relay on the in-memory storage; the relay's socket is a fake
 * whose frames are the pushes the services make to its connection id.
 */
import { describe, expect, it } from 'vitest';
import {
  POLL_LEASE_END_SLACK_MS,
  POLL_QUEUE_LIMIT,
  SELF_SERVE_AFTER_LAPSE_BELLED_MS,
} from '../../lambdas/core/http-poll';
import { Relay } from '../../lambdas/service/relay';
import { FakeSocket } from '../support/fake-socket';
import { LOCK, QueueHarness } from '../support/queue-harness';

const BELL = 'relay-conn';

/** A relay whose connection is open as BELL; pushes to BELL reach it. */
function relayOn(h: QueueHarness): Relay {
  const socket = new FakeSocket();
  const relay = new Relay(
    'ws://relay.test/v1',
    () => socket,
    () => ({}),
    () => h.now,
  );
  relay.bell(); // opens
  socket.opens();
  socket.receives({ type: 'welcome', connection_id: BELL });
  const before = h.pushOutcome;
  h.pushOutcome = (connection, frame) => {
    if (connection === BELL) socket.receives(frame);
    return before(connection, frame);
  };
  return relay;
}

/** Counts the polls (Queries of the lock's first waiters), the record reads and the reads of several items. */
function countReads(h: QueueHarness) {
  const counts = { polls: 0, records: 0, batches: 0 };
  const queue = h.memory.queue.bind(h.memory);
  h.memory.queue = async (lock, limit) => {
    if (lock === LOCK && limit === POLL_QUEUE_LIMIT) counts.polls++;
    return queue(lock, limit);
  };
  const read = h.memory.read.bind(h.memory);
  h.memory.read = async (ref) => {
    if (ref.kind === 'request') counts.records++;
    return read(ref);
  };
  const readMany = h.memory.readMany.bind(h.memory);
  h.memory.readMany = async (refs) => {
    counts.batches++;
    return readMany(refs);
  };
  return counts;
}

describe('an HTTP wait with a doorbell', () => {
  it('is woken by the ring of the release that grants it: no poll before, one look after', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 60_000 });
    // The waiting function never wakes by itself: only a ring can end its sleep.
    const sleeps: number[] = [];
    const waiting = h.instance({
      doorbell: relayOn(h),
      sleep: (ms) => {
        sleeps.push(ms);
        return new Promise(() => {});
      },
    });
    const counts = countReads(h);
    const answer = waiting.locks.acquireOverHttp(h.command('b', { requestId: 'rb' }), { waitMs: 10_000 });
    await new Promise((resolve) => setTimeout(resolve, 10));
    const [waiter] = h.waiters();
    expect(waiter?.bell).toBe(BELL);
    expect(sleeps).toHaveLength(1); // asleep, without having polled
    expect(counts.polls).toBe(0);

    await h.release(first);
    expect(h.framesTo(BELL)).toEqual([{ type: 'ring', lock: LOCK, order: waiter?.order }]);
    const outcome = await answer;
    if (outcome.kind !== 'done' || !outcome.outcome.acquired) throw new Error(JSON.stringify(outcome));
    expect(outcome.outcome.grant).toMatchObject({ clientId: 'b', fencingToken: first.fencingToken + 1 });
    // No poll: the record and the lock in one read.
    expect(counts).toEqual({ polls: 0, records: 0, batches: 1 });
  });

  it('frees its HTTP-wait slot beside the read a ring calls for, not after it, and only once', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 60_000 });
    const waiting = h.instance({ doorbell: relayOn(h), sleep: () => new Promise(() => {}) });
    const slotWrites: string[] = [];
    const write = h.memory.write.bind(h.memory);
    h.memory.write = async (ref, w) => {
      if (ref.kind === 'http-wait')
        slotWrites.push(w.update.some((u) => u.kind === 'remove') ? 'free' : 'take');
      return write(ref, w);
    };
    let readStarted = () => {};
    const reading = new Promise<void>((resolve) => (readStarted = resolve));
    let finishRead = () => {};
    const readMany = h.memory.readMany.bind(h.memory);
    h.memory.readMany = async (refs) => {
      readStarted();
      await new Promise<void>((resolve) => (finishRead = resolve));
      return readMany(refs);
    };
    const answer = waiting.httpWaits.during('rb-attempt', h.now + 10_000, (slot) =>
      waiting.locks.acquireOverHttp(h.command('b', { requestId: 'rb' }), { waitMs: 10_000 }, slot),
    );
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(slotWrites).toEqual(['take']);
    await h.release(first);
    await reading;
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(slotWrites).toEqual(['take', 'free']); // freed while the read is still out
    finishRead();
    const outcome = await answer;
    if (outcome.kind !== 'done' || !outcome.outcome.acquired) throw new Error(JSON.stringify(outcome));
    expect(slotWrites).toEqual(['take', 'free']);
  });

  it('heading a lapsed lease, leaves it to the expiry timer for a while, then serves it itself if no ring came', async () => {
    const h = new QueueHarness();
    await h.hold('a', { ttl: 1_000 }); // never released; no timer fires here
    const leaseEnd = h.now + 1_000;
    const waiting = h.instance({ doorbell: relayOn(h) }); // its sleeps pass on the virtual clock
    const outcome = await waiting.locks.acquireOverHttp(h.command('b', { requestId: 'rb' }), {
      waitMs: 10_000,
    });
    if (outcome.kind !== 'done' || !outcome.outcome.acquired) throw new Error(JSON.stringify(outcome));
    expect(outcome.outcome.grant.clientId).toBe('b');
    expect(h.now - leaseEnd).toBeGreaterThanOrEqual(SELF_SERVE_AFTER_LAPSE_BELLED_MS);
    expect(h.now - leaseEnd).toBeLessThanOrEqual(SELF_SERVE_AFTER_LAPSE_BELLED_MS + POLL_LEASE_END_SLACK_MS);
  });

  it('heading a lapsed lease, is granted by the timer within that while: it never serves, so no handoff races', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 1_000 });
    const leaseEnd = h.now + 1_000;
    let timerFired = false;
    const waiting = h.instance({
      doorbell: relayOn(h),
      sleep: async (ms) => {
        // The expiry timer fires 10 ms after the lease end, while the head sleeps out its grace:
        // that sleep then only ends by the ring.
        if (timerFired || h.now + ms < leaseEnd + 10) {
          h.now += Math.max(0, ms);
          return;
        }
        timerFired = true;
        h.now = leaseEnd + 10;
        await h.services.handoff.serve(LOCK, 'required');
        await new Promise(() => {});
      },
    });
    const handoffs: string[] = [];
    const transact = h.memory.transact.bind(h.memory);
    h.memory.transact = async (steps) => {
      const result = await transact(steps);
      if (h.now >= leaseEnd && steps.some((s) => s.ref.kind === 'lock'))
        handoffs.push(result.ok ? 'applied' : 'refused');
      return result;
    };
    const outcome = await waiting.locks.acquireOverHttp(h.command('b', { requestId: 'rb' }), {
      waitMs: 10_000,
    });
    if (outcome.kind !== 'done' || !outcome.outcome.acquired) throw new Error(JSON.stringify(outcome));
    expect(outcome.outcome.grant.fencingToken).toBe(first.fencingToken + 1);
    expect(timerFired).toBe(true);
    expect(h.now - leaseEnd).toBeLessThan(SELF_SERVE_AFTER_LAPSE_BELLED_MS);
    expect(handoffs).toEqual(['applied']); // the timer's, and no refused one of the head's
  });

  it('is rung when it is ended (its deadline passed when the lock was served)', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 60_000 });
    await h.wait('b', { waitMs: 1_000, bell: BELL });
    const [waiter] = h.waiters();
    h.now += 2_000;
    await h.release(first);
    expect(h.record('b', waiter?.requestId as string)?.state).toBe('ended');
    expect(h.framesTo(BELL)).toEqual([{ type: 'ring', lock: LOCK, order: waiter?.order }]);
  });

  it('is never rung once a retry moved it to a WebSocket connection; a WebSocket waiter gets its grant, no ring', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 60_000 });
    await h.wait('b', { bell: BELL, requestId: 'rb' });
    await h.wait('b', { connection: 'ws-b', requestId: 'rb' }); // the same request, retried over WebSocket
    const [waiter] = h.waiters();
    expect(waiter?.connectionId).toBe('ws-b');
    expect(waiter?.bell).toBeUndefined();
    await h.release(first);
    expect(h.framesTo(BELL)).toEqual([]);
    expect(h.framesTo('ws-b', 'granted')).toHaveLength(1);
  });

  it('is granted by a release that does not ring it, at its next poll (a lost ring changes no outcome)', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 60_000 });
    const relay = relayOn(h);
    h.pushOutcome = () => 'unknown'; // the ring never arrives
    const waiting = h.instance({ doorbell: relay });
    const counts = countReads(h);
    let released = false;
    const queue = h.memory.queue.bind(h.memory);
    h.memory.queue = async (lock, limit) => {
      if (!released && counts.polls === 2) {
        released = true;
        await h.release(first);
      }
      return queue(lock, limit);
    };
    const outcome = await waiting.locks.acquireOverHttp(h.command('b', { requestId: 'rb' }), {
      waitMs: 10_000,
    });
    if (outcome.kind !== 'done' || !outcome.outcome.acquired) throw new Error(JSON.stringify(outcome));
    expect(outcome.outcome.grant.clientId).toBe('b');
  });
});
