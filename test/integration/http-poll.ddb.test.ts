/**
 * HTTP waits poll (core/http-poll.ts): what they cost and that they still end in a grant. The
 * services on DynamoDB Local, the waiters' calls counted on a client of their own. Bounds are
 * counts, never times: a slow machine only polls less.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nextPoll, type PollSight, track } from '../../lambdas/core/http-poll';
import { type AcquireCommand, lease } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import type { AcquireResult } from '../../lambdas/service/lock-service';
import { CallCounter, createTestTable, testServices } from '../support/dynamo';

const OWNER = localPrincipal('poller');
const READS = new Set(['GetItemCommand', 'QueryCommand', 'BatchGetItemCommand']);

let table: Awaited<ReturnType<typeof createTestTable>>;
/** The holder's side (release, serve): not counted. */
let holder: ReturnType<typeof testServices>;
/** The waiters' side: every DynamoDB call counted. */
let waiters: ReturnType<typeof testServices>;
const counter = new CallCounter();
const reads = () => counter.calls.filter((c) => READS.has(c)).length;

beforeAll(async () => {
  table = await createTestTable();
  holder = testServices(table.tableName);
  // Timers go nowhere here: nothing but the waiters themselves serves a lapsed lease.
  waiters = testServices(table.tableName, { counter });
});
afterAll(async () => table.drop());

const lockName = () => `poll/${randomUUID()}`;
const cmd = (name: string, clientId: string, ttlMs = 30_000): AcquireCommand => ({
  name,
  owner: OWNER,
  clientId,
  tenure: lease(ttlMs),
  requestId: randomUUID(),
});
const outcomeOf = (result: AcquireResult) => {
  if (result.kind !== 'done') throw new Error('an HTTP wait must end with an outcome');
  return result.outcome;
};
async function hold(name: string, ttlMs: number) {
  const outcome = outcomeOf(await holder.services.locks.acquire(cmd(name, 'holder', ttlMs)));
  if (!outcome.acquired) throw new Error('the holder did not get the lock');
  return outcome.grant;
}

/**
 * The most polls the schedule allows a waiter at `position` over `waitMs` behind a lease that
 * outlasts the wait, if every read took no time at all (real reads take time: fewer polls).
 */
function mostPolls(position: number, waitMs: number): number {
  const sight: PollSight = {
    fence: 1,
    holderUntil: 10 * waitMs,
    lapsedAt: undefined,
    blockedUntil: undefined,
    position,
    present: true,
  };
  const memory = track(undefined, sight, 0);
  let polls = 0;
  for (let now = 0; ; ) {
    polls++;
    if (now >= waitMs) return polls;
    now += nextPoll(sight, memory, now, waitMs).delayMs;
  }
}

describe('HTTP waits behind a long lease', () => {
  it('read a bounded number of times, fewer the further back they are, and end not acquired', async () => {
    const name = lockName();
    await hold(name, 60_000);
    const waitMs = 3_000;
    counter.reset();
    // Queued one after the other, so their places are 1..4.
    const started: Promise<AcquireResult>[] = [];
    for (let i = 0; i < 4; i++) {
      started.push(waiters.services.locks.acquireOverHttp(cmd(name, `w${i}`), { waitMs }));
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const outcomes = (await Promise.all(started)).map(outcomeOf);
    expect(outcomes.map((o) => o.acquired)).toEqual([false, false, false, false]);
    // Per waiter: its polls, then the end (its record, the lock for the answer) and its join.
    const bound = [1, 2, 3, 4].reduce((n, p) => n + mostPolls(p, waitMs) + 3, 0);
    expect(reads()).toBeLessThanOrEqual(bound);
    // The schedule's budget for 8 waiters behind a 20 s hold: under 5 reads per waiting second.
    const eight = [1, 2, 3, 4, 5, 6, 7, 8].reduce((n, p) => n + mostPolls(p, 20_000) + 3, 0);
    expect(eight / (8 * 20)).toBeLessThan(5);
    // Far waiters cost less than the head.
    expect(mostPolls(4, 20_000)).toBeLessThan(mostPolls(1, 20_000));
    expect(mostPolls(1, 20_000)).toBeLessThanOrEqual(100); // 20 s at the head: 5 a second at most
  });
});

describe('HTTP waits still end in a grant', () => {
  it('after a release, with a larger token', async () => {
    const name = lockName();
    const grant = await hold(name, 60_000);
    const waiting = waiters.services.locks.acquireOverHttp(cmd(name, 'next'), { waitMs: 10_000 });
    await expect.poll(async () => (await holder.storage.queue(name, 5)).waiters.length).toBe(1);
    await holder.services.locks.release({
      name,
      owner: OWNER,
      clientId: 'holder',
      fencingToken: grant.fencingToken,
    });
    const outcome = outcomeOf(await waiting);
    expect(outcome.acquired).toBe(true);
    if (outcome.acquired) expect(outcome.grant.fencingToken).toBeGreaterThan(grant.fencingToken);
  });

  it('after a crashed holder’s lease ends, with no timer at all: the head waiter serves the queue', async () => {
    const name = lockName();
    const grant = await hold(name, 1_000); // never released
    counter.reset();
    const waitMs = 8_000;
    const outcome = outcomeOf(
      await waiters.services.locks.acquireOverHttp(cmd(name, 'survivor'), { waitMs }),
    );
    expect(outcome.acquired).toBe(true);
    if (outcome.acquired) {
      expect(outcome.grant.clientId).toBe('survivor');
      expect(outcome.grant.fencingToken).toBeGreaterThan(grant.fencingToken);
    }
    // Polls over at most the whole wait, its serve (one Query), and its answer.
    expect(reads()).toBeLessThanOrEqual(mostPolls(1, waitMs) + 4);
  });

  it('two waiters behind a crashed holder are both served in order, one after the other', async () => {
    const name = lockName();
    await hold(name, 800);
    const first = waiters.services.locks.acquireOverHttp(cmd(name, 'first', 3_000), { waitMs: 15_000 });
    await expect.poll(async () => (await holder.storage.queue(name, 5)).waiters.length).toBe(1);
    const second = waiters.services.locks.acquireOverHttp(cmd(name, 'second'), { waitMs: 15_000 });
    // `first` never releases either: its lease lapses in turn, and `second` serves itself.
    const [a, b] = (await Promise.all([first, second])).map(outcomeOf);
    expect(a?.acquired && b?.acquired).toBe(true);
    if (a?.acquired && b?.acquired) expect(b.grant.fencingToken).toBeGreaterThan(a.grant.fencingToken);
  });
});
