/**
 * How a granted HTTP waiter is answered (lock-service.ts awaitGrant, replay): from the lock item
 * its last poll read, when that read shows the grant in force, and from a fresh read otherwise.
 * The real services on the in-memory storage; the storage's reads counted and, where a test
 * says, its poll answered with an older lock item.
 */
import { describe, expect, it } from 'vitest';
import type { Item } from '../../lambdas/core/expr';
import { POLL_LEASE_END_SLACK_MS, POLL_QUEUE_LIMIT } from '../../lambdas/core/http-poll';
import { MAX_RUN } from '../../lambdas/core/queue';
import { LOCK, QueueHarness } from '../support/queue-harness';

/** Counts the storage's reads of the lock item (GetItem; not its Queries). */
function countLockReads(h: QueueHarness): () => number {
  let reads = 0;
  const read = h.memory.read.bind(h.memory);
  h.memory.read = async (ref) => {
    if (ref.kind === 'lock') reads++;
    return read(ref);
  };
  return () => reads;
}

/** Counts the storage's reads of request records made from `from` on (the harness's clock). */
function countRecordReadsFrom(h: QueueHarness, from: number): () => number {
  let reads = 0;
  const read = h.memory.read.bind(h.memory);
  h.memory.read = async (ref) => {
    if (ref.kind === 'request' && h.now >= from) reads++;
    return read(ref);
  };
  return () => reads;
}

/**
 * Runs `during` inside the waiter's next poll, once, and answers that poll with the queue as it
 * is then but the lock item as it was before `during` (`stale`), or as it is (`fresh`).
 */
function onNextPoll(h: QueueHarness, lockAs: 'stale' | 'fresh', during: () => Promise<unknown>): void {
  const queue = h.memory.queue.bind(h.memory);
  let armed = true;
  h.memory.queue = async (lock, limit) => {
    if (!armed || lock !== LOCK || limit !== POLL_QUEUE_LIMIT) return queue(lock, limit);
    armed = false;
    const before = h.item as Item;
    await during();
    const now = await queue(lock, limit);
    return lockAs === 'stale' ? { ...now, lock: before } : now;
  };
}

/**
 * b waits over HTTP behind a's long lease; a releases inside b's next poll, which sees the lock
 * item as `lockAs` says. Answers b's grant and how many times b read the lock item after that.
 */
async function grantedInsidePoll(lockAs: 'stale' | 'fresh') {
  const h = new QueueHarness();
  const first = await h.hold('a', { ttl: 60_000 });
  const reads = countLockReads(h);
  let readsAtGrant = Number.NaN;
  onNextPoll(h, lockAs, async () => {
    await h.release(first);
    readsAtGrant = reads();
  });
  const outcome = await h.services.locks.acquireOverHttp(h.command('b', { requestId: 'rb' }), {
    waitMs: 10_000,
  });
  if (outcome.kind !== 'done' || !outcome.outcome.acquired)
    throw new Error(`b was not granted: ${JSON.stringify(outcome)}`);
  expect(outcome.outcome.grant.clientId).toBe('b');
  expect(outcome.outcome.grant.fencingToken).toBeGreaterThan(first.fencingToken);
  return { lockReadsAfterGrant: reads() - readsAtGrant };
}

describe('a granted HTTP waiter is answered', () => {
  it('from the lock item its poll read, when that shows the grant: no second read of the lock', async () => {
    expect((await grantedInsidePoll('fresh')).lockReadsAfterGrant).toBe(0);
  });

  it('from a fresh read when the poll’s lock item predates the grant (it is not refused as lapsed)', async () => {
    expect((await grantedInsidePoll('stale')).lockReadsAfterGrant).toBe(1);
  });

  it('as lapsed when the grant its poll saw has ended by the time it answers', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 60_000 });
    // b's grant (ttl 1 s) is made inside the poll, and its lease has ended before b answers.
    onNextPoll(h, 'fresh', async () => {
      await h.release(first);
      h.now += 5_000;
    });
    const outcome = h.services.locks.acquireOverHttp(h.command('b', { requestId: 'rb', ttl: 1_000 }), {
      waitMs: 10_000,
    });
    await expect(outcome).rejects.toMatchObject({ code: 'LEASE_EXPIRED' });
  });
});

describe('the head of an HTTP wait behind a lapsed lease', () => {
  it('serves the queue as soon as it sees the lapse, and answers with its own grant: no further read', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 1_000 }); // never released; no timer fires here
    const leaseEnd = h.now + 1_000;
    const recordReadsAfterLapse = countRecordReadsFrom(h, leaseEnd);
    let queueReadsAfterLapse = 0;
    const queue = h.memory.queue.bind(h.memory);
    h.memory.queue = async (lock, limit) => {
      if (h.now >= leaseEnd) queueReadsAfterLapse++;
      return queue(lock, limit);
    };
    const outcome = await h.services.locks.acquireOverHttp(h.command('b', { requestId: 'rb' }), {
      waitMs: 10_000,
    });
    expect(outcome).toMatchObject({ kind: 'done', outcome: { acquired: true } });
    if (outcome.kind === 'done' && outcome.outcome.acquired) {
      expect(outcome.outcome.grant.clientId).toBe('b');
      expect(outcome.outcome.grant.fencingToken).toBeGreaterThan(first.fencingToken);
    }
    // On the virtual clock: woken just after the lease end, served then, answered then.
    expect(h.now - leaseEnd).toBeLessThanOrEqual(POLL_LEASE_END_SLACK_MS);
    expect(recordReadsAfterLapse()).toBe(0);
    // The serve plans on the poll that saw the lapse: one read of the queue after the lease end, not two.
    expect(queueReadsAfterLapse).toBe(1);
    expect(h.record('b', 'rb')?.state).toBe('granted');
  });
});

describe('an HTTP wait whose delivery a retry moved to a WebSocket connection', () => {
  it('is answered with the same grant as the push, claimed (it can no longer be taken back)', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { ttl: 60_000 });
    // Inside b's poll: b retries the same request on connection c1, then a releases to it.
    onNextPoll(h, 'fresh', async () => {
      expect((await h.wait('b', { connection: 'c1', requestId: 'rb' })).kind).toBe('queued');
      await h.release(first);
    });
    const outcome = await h.services.locks.acquireOverHttp(h.command('b', { requestId: 'rb' }), {
      waitMs: 10_000,
    });
    const pushed = h.framesTo('c1', 'granted');
    expect(pushed).toHaveLength(1);
    if (outcome.kind !== 'done' || !outcome.outcome.acquired) throw new Error('b was not granted');
    expect(pushed[0]).toMatchObject({ fencing_token: outcome.outcome.grant.fencingToken });
    expect(h.record('b', 'rb')).toMatchObject({ state: 'granted', claimed: true });
  });
});

describe('the head of an HTTP wait on a semaphore, serving a run longer than one handoff takes', () => {
  it('is granted in the first round and answered from its record, as is everyone behind it', async () => {
    const h = new QueueHarness();
    const wide = { mode: 'shared', maxHolders: 40 } as const;
    await h.hold('x', { ttl: 1_000 }); // exclusive, never released: its lapse is served by the head
    const recordReadsAfterLapse = countRecordReadsFrom(h, h.now + 1_000);
    const behind = Array.from({ length: MAX_RUN + 4 }, (_, i) => `s${i}`);
    // The rest join over WebSocket during b's first poll, so b heads the queue.
    onNextPoll(h, 'fresh', async () => {
      h.now += 1; // after b: the queue's order is by arrival
      for (const s of behind)
        expect((await h.wait(s, { ...wide, connection: `c-${s}`, requestId: `r-${s}` })).kind).toBe('queued');
    });
    const waiting = h.services.locks.acquireOverHttp(h.command('b', { ...wide, requestId: 'rb' }), {
      waitMs: 10_000,
    });
    const outcome = await waiting;
    if (outcome.kind !== 'done' || !outcome.outcome.acquired) throw new Error('b was not granted');
    // Two rounds (MAX_RUN, then the rest): the second's head is not b, so b found its grant by polling.
    expect(recordReadsAfterLapse()).toBeGreaterThan(0);
    expect(h.record('b', 'rb')).toMatchObject({
      state: 'granted',
      fence: outcome.outcome.grant.fencingToken,
    });
    const tokens = behind.map((s) => {
      const record = h.record(s, `r-${s}`);
      expect(record?.state).toBe('granted');
      return record?.state === 'granted' ? record.fence : -1;
    });
    expect(new Set([outcome.outcome.grant.fencingToken, ...tokens]).size).toBe(behind.length + 1);
  });
});
