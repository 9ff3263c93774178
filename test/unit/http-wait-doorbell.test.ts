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
import { httpWaitRef } from '../../lambdas/core/items';
import { DEFAULT_LIMITS } from '../../lambdas/core/wire';
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
  it('is answered by the ring of the release that grants it, which carries the grant: no poll before, no read after', async () => {
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
    const outcome = await answer;
    if (outcome.kind !== 'done' || !outcome.outcome.acquired) throw new Error(JSON.stringify(outcome));
    expect(outcome.outcome.grant).toMatchObject({ clientId: 'b', fencingToken: first.fencingToken + 1 });
    expect(h.framesTo(BELL)).toEqual([
      { type: 'ring', lock: LOCK, order: waiter?.order, request_id: 'rb', grant: outcome.outcome.grant },
    ]);
    // Nothing read: the ring's grant is the answer.
    expect(counts).toEqual({ polls: 0, records: 0, batches: 0 });
    // The same answer as the record and the lock give a retry of the request.
    const retried = await h.services.locks.acquireOverHttp(h.command('b', { requestId: 'rb' }), {
      waitMs: 1,
    });
    expect(retried).toEqual(outcome);
  });

  /** A slot-holding wait (as the lock-commands handler runs one), recording the slot writes by who made them. */
  function slottedWait(h: QueueHarness, waiting: ReturnType<QueueHarness['instance']>) {
    const slotWrites: string[] = [];
    const write = h.memory.write.bind(h.memory);
    h.memory.write = async (ref, w) => {
      const result = await write(ref, w);
      if (ref.kind === 'http-wait')
        slotWrites.push(
          `${w.update.some((u) => u.kind === 'remove') ? 'free' : 'take'}${result.ok ? '' : ' (refused)'}`,
        );
      return result;
    };
    const answer = waiting.httpWaits.during('rb-attempt', h.now + 10_000, (slot) =>
      waiting.locks.acquireOverHttp(h.command('b', { requestId: 'rb' }), { waitMs: 10_000 }, slot),
    );
    return { slotWrites, answer };
  }
  const slotHolders = (h: QueueHarness) =>
    Array.from(
      { length: DEFAULT_LIMITS.maxHttpWaits },
      (_, i) => h.memory.readNow(httpWaitRef(i))?.holder,
    ).filter((holder) => holder !== undefined);

  it('has its HTTP-wait slot freed by its granter, beside the ring: it answers without a write of its own', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 60_000 });
    const waiting = h.instance({ doorbell: relayOn(h), sleep: () => new Promise(() => {}) });
    const { slotWrites, answer } = slottedWait(h, waiting);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(slotWrites).toEqual(['take']);
    expect(slotHolders(h)).toEqual(['rb-attempt']);
    expect(h.waiters()[0]?.slot).toMatchObject({ holder: 'rb-attempt' });
    await h.release(first); // the release's handoff grants, rings and frees the slot before it answers
    expect(slotWrites).toEqual(['take', 'free']);
    expect(slotHolders(h)).toEqual([]);
    expect(h.framesTo(BELL)).toEqual([expect.objectContaining({ type: 'ring', frees_slot: true })]);
    const outcome = await answer;
    if (outcome.kind !== 'done' || !outcome.outcome.acquired) throw new Error(JSON.stringify(outcome));
    expect(slotWrites).toEqual(['take', 'free']); // the waiting function wrote nothing more
  });

  it('keeps its slot when its relay is gone (no ring came): it frees it itself once it has its answer', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 60_000 });
    const relay = relayOn(h);
    const deliver = h.pushOutcome;
    h.pushOutcome = (connection, frame) => (connection === BELL ? 'gone' : deliver(connection, frame));
    let wakeUp = () => {};
    const waiting = h.instance({
      doorbell: relay,
      sleep: () => new Promise<void>((resolve) => (wakeUp = resolve)),
    });
    const { slotWrites, answer } = slottedWait(h, waiting);
    await new Promise((resolve) => setTimeout(resolve, 10));
    await h.release(first);
    // The granter did not free it: the function still waits (until its next poll) within its slot.
    expect(slotWrites).toEqual(['take']);
    expect(slotHolders(h)).toEqual(['rb-attempt']);
    wakeUp();
    const outcome = await answer;
    if (outcome.kind !== 'done' || !outcome.outcome.acquired) throw new Error(JSON.stringify(outcome));
    expect(slotWrites).toEqual(['take', 'free']);
    expect(slotHolders(h)).toEqual([]);
  });

  it('is answered and has its slot freed the same way when the expiry timer grants it, and each reader of a run gets its own grant', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 1_000 }); // never released: the timer serves the queue
    const waiting = h.instance({ doorbell: relayOn(h), sleep: () => new Promise(() => {}) });
    const answers = ['r1', 'r2'].map((client, i) =>
      waiting.httpWaits.during(`${client}-attempt`, h.now + 10_000, (slot) =>
        waiting.locks.acquireOverHttp(
          h.command(client, { requestId: `req-${i}`, mode: 'shared', maxHolders: 2 }),
          { waitMs: 10_000 },
          slot,
        ),
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(h.waiters().map((w) => w.slot?.holder)).toEqual(['r1-attempt', 'r2-attempt']);
    h.now += 1_000;
    await h.services.handoff.serve(LOCK, 'required'); // the expiry timer's serve
    const outcomes = await Promise.all(answers);
    const grants = outcomes.map((o) => {
      if (o.kind !== 'done' || !o.outcome.acquired) throw new Error(JSON.stringify(o));
      return o.outcome.grant;
    });
    expect(grants.map((g) => g.clientId)).toEqual(['r1', 'r2']);
    // Each answer is its own request's grant, as its record says; both above the lapsed holder's token.
    for (const [i, g] of grants.entries()) {
      expect(h.record(g.clientId, `req-${i}`)).toMatchObject({ state: 'granted', fence: g.fencingToken });
      expect(g.fencingToken).toBeGreaterThan(first.fencingToken);
    }
    expect(grants[0]?.fencingToken).not.toBe(grants[1]?.fencingToken);
    expect(h.framesTo(BELL).every((f) => 'frees_slot' in f && f.frees_slot === true)).toBe(true);
    expect(slotHolders(h)).toEqual([]);
  });

  it('after a ring without a grant (an older granter’s), frees its slot beside the read the ring calls for', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 60_000 });
    const relay = relayOn(h);
    const deliver = h.pushOutcome;
    // A granter from before rings carried grants: its ring names the waiter's place only.
    h.pushOutcome = (connection, frame) =>
      deliver(
        connection,
        frame.type === 'ring' ? { type: 'ring', lock: frame.lock, order: frame.order } : frame,
      );
    const waiting = h.instance({ doorbell: relay, sleep: () => new Promise(() => {}) });
    let readStarted = () => {};
    const reading = new Promise<void>((resolve) => (readStarted = resolve));
    let finishRead = () => {};
    const readMany = h.memory.readMany.bind(h.memory);
    h.memory.readMany = async (refs) => {
      readStarted();
      await new Promise<void>((resolve) => (finishRead = resolve));
      return readMany(refs);
    };
    const { slotWrites, answer } = slottedWait(h, waiting);
    await new Promise((resolve) => setTimeout(resolve, 10));
    await h.release(first);
    await reading;
    await new Promise((resolve) => setTimeout(resolve, 0));
    // This granter freed it too; the wait's own free, beside its read, is then refused: harmless.
    expect(slotWrites).toEqual(['take', 'free', 'free (refused)']);
    finishRead();
    const outcome = await answer;
    if (outcome.kind !== 'done' || !outcome.outcome.acquired) throw new Error(JSON.stringify(outcome));
    expect(slotWrites).toEqual(['take', 'free', 'free (refused)']);
  });

  it('takes a ring’s grant only if it is for this very request and in force: any other is a hint, and the record decides', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 60_000 });
    const relay = relayOn(h);
    const waiting = h.instance({ doorbell: relay, sleep: () => new Promise(() => {}) });
    const counts = countReads(h);
    const answer = waiting.locks.acquireOverHttp(h.command('b', { requestId: 'rb' }), { waitMs: 10_000 });
    await new Promise((resolve) => setTimeout(resolve, 10));
    const [waiter] = h.waiters();
    const forged = {
      lock: LOCK,
      owner: waiter?.owner,
      clientId: 'b',
      fencingToken: 999,
      held: { kind: 'lease', ttlMs: 30_000, expiresAt: h.now + 30_000 },
      mode: 'exclusive',
      acquiredAt: h.now,
      reentry: 1,
    };
    const ring = (frame: object) =>
      h.pushOutcome(BELL, { type: 'ring', lock: LOCK, order: waiter?.order, ...frame } as never);
    let answered = false;
    void answer.then(() => (answered = true));
    // Another request's grant, a lease already over, a grant of another lock, a malformed one: one
    // at a time, each wakes it to read its record, still queued, and it waits on.
    const unfit = [
      { request_id: 'another', grant: forged },
      { request_id: 'rb', grant: { ...forged, held: { kind: 'lease', ttlMs: 30_000, expiresAt: h.now } } },
      { request_id: 'rb', grant: { ...forged, lock: 'jobs/other' } },
      { request_id: 'rb', grant: { ...forged, fencingToken: '999' } },
    ];
    for (const [i, frame] of unfit.entries()) {
      ring(frame);
      await new Promise((resolve) => setTimeout(resolve, 10));
      expect(counts.batches).toBe(i + 1);
      expect(answered).toBe(false);
    }
    expect(h.record('b', 'rb')?.state).toBe('queued');
    await h.release(first);
    const outcome = await answer;
    if (outcome.kind !== 'done' || !outcome.outcome.acquired) throw new Error(JSON.stringify(outcome));
    expect(outcome.outcome.grant.fencingToken).toBe(first.fencingToken + 1);
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
    await h.wait('b', { bell: BELL, slot: { index: 3, holder: 'rb-attempt' }, requestId: 'rb' });
    expect(h.waiters()[0]?.slot).toEqual({ index: 3, holder: 'rb-attempt' });
    await h.wait('b', { connection: 'ws-b', requestId: 'rb' }); // the same request, retried over WebSocket
    const [waiter] = h.waiters();
    expect(waiter?.connectionId).toBe('ws-b');
    expect(waiter?.bell).toBeUndefined();
    expect(waiter?.slot).toBeUndefined(); // its HTTP attempt frees its own slot as it ends
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
