/**
 * The sweeper and waiters past their deadline further back than a serve reads (SERVE_READS):
 * the real services on the in-memory storage, the serve's read of the queue slowed down so that
 * anything the sweeper did beside it, rather than after it, would show.
 */
import { describe, expect, it } from 'vitest';
import { MAX_WAIT_MS } from '../../lambdas/core/wire';
import { SERVE_READS } from '../../lambdas/service/handoff';
import { QueueHarness } from '../support/queue-harness';

describe('the sweeper, with timed-out waiters deep in a queue', () => {
  it('serves the queue first, then reads and ends only the timed-out waiters the serve did not read', async () => {
    const h = new QueueHarness();
    await h.hold('holder', { ttl: 3_600_000 });
    const long = Array.from({ length: SERVE_READS - 1 }, (_, i) => `w${i}`);
    for (const w of long) {
      h.now += 1; // the queue's order is by arrival
      expect((await h.wait(w, { waitMs: MAX_WAIT_MS, requestId: `r-${w}` })).kind).toBe('queued');
    }
    // Their functions died: the last waiter the serve reads, and two behind it whose deadlines
    // come first (so the sweeper finds those first, and the serve is theirs).
    for (const [w, waitMs] of [
      ['near', 350],
      ['deep1', 300],
      ['deep2', 300],
    ] as const) {
      h.now += 1;
      expect((await h.wait(w, { waitMs, requestId: `r-${w}` })).kind).toBe('queued');
    }
    h.now += 400;
    // The serve's read takes 20 ms; a transaction meanwhile would be the sweeper racing its serve.
    let serveReading = false;
    let writesBesideServe = 0;
    const queue = h.memory.queue.bind(h.memory);
    h.memory.queue = async (lock, limit) => {
      if (limit !== SERVE_READS) return queue(lock, limit);
      serveReading = true;
      await new Promise((resolve) => setTimeout(resolve, 20));
      serveReading = false;
      return queue(lock, limit);
    };
    // A waiter the serve read costs the sweeper no read of its own.
    const waitersRead: string[] = [];
    const read = h.memory.read.bind(h.memory);
    h.memory.read = async (ref) => {
      if (ref.kind === 'waiter') waitersRead.push(ref.order);
      return read(ref);
    };
    const transact = h.memory.transact.bind(h.memory);
    h.memory.transact = async (steps) => {
      if (serveReading) writesBesideServe++;
      return transact(steps);
    };

    // 'near' is the serve's to end: the sweeper ends the two behind it, after the serve.
    expect(await h.services.sweeper.sweep()).toMatchObject({ queuesServed: 1, waitsEnded: 2 });
    expect(writesBesideServe).toBe(0);
    expect(waitersRead).toHaveLength(2); // deep1 and deep2; not near
    expect(h.waiters().map((w) => w.clientId)).toEqual(long);
    for (const w of ['near', 'deep1', 'deep2'])
      expect(h.record(w, `r-${w}`)).toMatchObject({ state: 'ended', reason: 'timeout' });
  });
});
