/** The lock rules on the DynamoDB adapter, against the real DynamoDB Local: contention, fencing, expiry, refusals, call counts. */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DeleteCommand, GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LatchkeyError } from '../../lambdas/core/errors';
import { lockRef } from '../../lambdas/core/items';
import { type AcquireOutcome, LockAttr, lease } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { tableKey } from '../../lambdas/store/requests';
import { LIST_SHARDS, lockListing } from '../../lambdas/store/table';
import { CallCounter, createTestTable, dynamoEndpoint, manualClock, testServices } from '../support/dynamo';
import { startTcpProxy } from '../support/tcp-proxy';

/** The principal every client here acts as, unless a test names another. */
const OWNER = localPrincipal('test');
const MALLORY = localPrincipal('mallory');

let table: Awaited<ReturnType<typeof createTestTable>>;
let clockMs = 1_800_000_000_000;
const counter = new CallCounter();
let ctx: ReturnType<typeof testServices>;
/** The same table, judged by a clock the test moves. */
let manual: ReturnType<typeof testServices>;

beforeAll(async () => {
  table = await createTestTable();
  ctx = testServices(table.tableName, { counter });
  manual = testServices(table.tableName, { clock: manualClock(() => clockMs) });
});
afterAll(async () => table.drop());

const rawItem = async (name: string) =>
  (
    await ctx.db.send(
      new GetCommand({ TableName: table.tableName, Key: tableKey(lockRef(name)), ConsistentRead: true }),
    )
  ).Item;

function tokenOf(outcome: AcquireOutcome): number {
  if (!outcome.acquired) throw new Error(`expected a grant, got ${JSON.stringify(outcome)}`);
  return outcome.grant.fencingToken;
}

describe('mutual exclusion under contention', () => {
  it('50 concurrent acquirers on one lock: exactly one wins, 20 times over', async () => {
    for (let round = 0; round < 20; round++) {
      const name = `contended/${round}`;
      const outcomes = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          ctx.acquire({ name, owner: OWNER, clientId: `client-${i}`, tenure: lease(30_000) }),
        ),
      );
      const winners = outcomes.filter((o) => o.acquired);
      expect(winners).toHaveLength(1);
      const winner = winners[0]?.acquired ? winners[0].grant.clientId : '';
      for (const loser of outcomes.filter((o) => !o.acquired)) {
        expect(loser).toMatchObject({ acquired: false, holder: { clientId: winner } });
      }
      expect((await rawItem(name))?.holder).toBe(winner);
    }
  });
});

describe('fencing tokens', () => {
  it('strictly increase across release and re-acquire, and after the item is deleted', async () => {
    const name = 'fenced';
    const tokens: number[] = [];
    for (let i = 0; i < 5; i++) {
      const token = tokenOf(
        await ctx.acquire({ name, owner: OWNER, clientId: `c${i}`, tenure: lease(10_000) }),
      );
      tokens.push(token);
      await ctx.services.locks.release({ name, owner: OWNER, clientId: `c${i}`, fencingToken: token });
    }
    await ctx.db.send(new DeleteCommand({ TableName: table.tableName, Key: tableKey(lockRef(name)) }));
    expect(await rawItem(name)).toBeUndefined();
    await new Promise((resolve) => setTimeout(resolve, 2)); // the clock floor needs a millisecond to pass
    tokens.push(
      tokenOf(await ctx.acquire({ name, owner: OWNER, clientId: 'after-delete', tenure: lease(10_000) })),
    );
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]).toBeGreaterThan(tokens[i - 1] as number);
    for (const token of tokens) expect(Number.isSafeInteger(token)).toBe(true);
  });

  it('survive deletion of a lock granted a thousand times within one millisecond', async () => {
    const name = 'busy-then-deleted';
    clockMs += 10_000;
    const first = tokenOf(await manual.acquire({ name, owner: OWNER, clientId: 'a', tenure: lease(1_000) }));
    expect(first).toBe(clockMs * 1000 + 1);
    // More grants in one millisecond than DynamoDB's per-item write limit allows.
    const busiest = clockMs * 1000 + 999;
    await ctx.db.send(
      new UpdateCommand({
        TableName: table.tableName,
        Key: tableKey(lockRef(name)),
        UpdateExpression: 'SET fence = :busiest',
        ExpressionAttributeValues: { ':busiest': busiest },
      }),
    );
    await ctx.db.send(new DeleteCommand({ TableName: table.tableName, Key: tableKey(lockRef(name)) }));
    clockMs += 1;
    expect(
      tokenOf(await manual.acquire({ name, owner: OWNER, clientId: 'next', tenure: lease(1_000) })),
    ).toBeGreaterThan(busiest);
  });
});

describe('leases', () => {
  it('an expired lease is taken over at once by another client, with a larger token', async () => {
    const name = 'expiring';
    clockMs += 10_000;
    const first = tokenOf(await manual.acquire({ name, owner: OWNER, clientId: 'a', tenure: lease(1_000) }));
    clockMs += 999;
    expect((await manual.acquire({ name, owner: OWNER, clientId: 'b', tenure: lease(1_000) })).acquired).toBe(
      false,
    );
    clockMs += 1;
    const second = tokenOf(await manual.acquire({ name, owner: OWNER, clientId: 'b', tenure: lease(1_000) }));
    expect(second).toBeGreaterThan(first);
    await expect(
      manual.services.locks.renew({ name, owner: OWNER, clientId: 'a', fencingToken: first, ttlMs: 1_000 }),
    ).rejects.toMatchObject({
      code: 'NOT_HOLDER',
    });
  });

  it('expiry is judged by the clock at request time, in real time too', async () => {
    const name = 'real-time-expiry';
    tokenOf(await ctx.acquire({ name, owner: OWNER, clientId: 'a', tenure: lease(1_000) }));
    await new Promise((resolve) => setTimeout(resolve, 1_050));
    expect(
      tokenOf(await ctx.acquire({ name, owner: OWNER, clientId: 'b', tenure: lease(1_000) })),
    ).toBeGreaterThan(0);
  });

  it('release or renew with a stale token or another client_id is refused, and the holder is unchanged', async () => {
    const name = 'owned';
    const token = tokenOf(
      await ctx.acquire({ name, owner: OWNER, clientId: 'owner', tenure: lease(30_000) }),
    );
    const before = await rawItem(name);
    const attempts = [
      () => ctx.services.locks.release({ name, owner: OWNER, clientId: 'stranger', fencingToken: token }),
      () => ctx.services.locks.release({ name, owner: OWNER, clientId: 'owner', fencingToken: token - 1 }),
      () =>
        ctx.services.locks.renew({
          name,
          owner: OWNER,
          clientId: 'stranger',
          fencingToken: token,
          ttlMs: 5_000,
        }),
      () =>
        ctx.services.locks.renew({
          name,
          owner: OWNER,
          clientId: 'owner',
          fencingToken: token + 1,
          ttlMs: 5_000,
        }),
    ];
    for (const attempt of attempts) {
      await expect(attempt()).rejects.toMatchObject({ code: 'NOT_HOLDER', status: 409 });
    }
    expect(await rawItem(name)).toEqual(before);
  });

  it('renewing a lapsed lease is refused with LEASE_EXPIRED, even if nobody took the lock', async () => {
    const name = 'lapsed';
    clockMs += 10_000;
    const token = tokenOf(await manual.acquire({ name, owner: OWNER, clientId: 'a', tenure: lease(1_000) }));
    clockMs += 1_000;
    await expect(
      manual.services.locks.renew({ name, owner: OWNER, clientId: 'a', fencingToken: token, ttlMs: 1_000 }),
    ).rejects.toMatchObject({
      code: 'LEASE_EXPIRED',
    });
    await expect(
      manual.services.locks.release({ name, owner: OWNER, clientId: 'a', fencingToken: token }),
    ).rejects.toMatchObject({
      code: 'LEASE_EXPIRED',
    });
  });
});

describe('ownership is bound to the principal', () => {
  it("another principal is refused FORBIDDEN on release and renew, even with the holder's client_id and token", async () => {
    const name = 'owned-by-principal';
    const token = tokenOf(
      await ctx.acquire({ name, owner: OWNER, clientId: 'worker', tenure: lease(30_000), requestId: 'r1' }),
    );
    const before = await rawItem(name);
    expect(before).toMatchObject({ [LockAttr.owner]: OWNER, holder: 'worker', fence: token });
    const release = (clientId: string, fencingToken: number) =>
      ctx.services.locks.release({ name, owner: MALLORY, clientId, fencingToken });
    const renew = (clientId: string, fencingToken: number) =>
      ctx.services.locks.renew({ name, owner: MALLORY, clientId, fencingToken, ttlMs: 60_000 });
    // The holder's own label and token, or any others: the principal decides, and the answer is the
    // same whichever were sent, so it tells nothing about the holder's token.
    const attempts = [
      () => release('worker', token),
      () => renew('worker', token),
      () => release('worker', token + 1),
      () => release('other', token),
      () => renew('other', token - 1),
    ];
    const messages = new Set<string>();
    for (const attempt of attempts) {
      const error = await attempt().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LatchkeyError);
      expect(error).toMatchObject({ code: 'FORBIDDEN', status: 403, retryable: false });
      messages.add((error as Error).message.replace(/renew|release/g, ''));
      expect((error as Error).message).not.toContain(String(token));
    }
    expect(messages.size).toBe(1);
    expect(await rawItem(name)).toEqual(before);
  });

  it("another principal's retry of the same client_id and request_id is not the holder's request, nor a re-entry", async () => {
    const name = 'owned-request';
    const cmd = { name, clientId: 'worker', tenure: lease(30_000), requestId: 'shared-id', reentrant: true };
    const token = tokenOf(await ctx.acquire({ ...cmd, owner: OWNER }));
    const before = await rawItem(name);
    expect(await ctx.acquire({ ...cmd, owner: MALLORY })).toMatchObject({
      acquired: false,
      holder: { clientId: 'worker' },
    });
    expect(await rawItem(name)).toEqual(before);
    // The holder's own retry is still answered with its grant.
    expect(await ctx.acquire({ ...cmd, owner: OWNER })).toMatchObject({
      acquired: true,
      replayed: true,
      grant: { fencingToken: token, owner: OWNER },
    });
  });

  it("another principal's client that shares the holder's label waits in the queue like anyone, and is served", async () => {
    const name = 'same-label-other-principal';
    const token = tokenOf(
      await ctx.acquire({ name, owner: OWNER, clientId: 'worker', tenure: lease(30_000) }),
    );
    // Labels are chosen by clients: the same client_id under another principal is another client.
    const waiting = await ctx.services.locks.acquire(
      { name, owner: MALLORY, clientId: 'worker', tenure: lease(30_000), requestId: 'w-1' },
      { waitMs: 10_000 },
    );
    expect(waiting).toMatchObject({ kind: 'queued' });
    expect((await rawItem(name))?.queued).toBe(1);
    await ctx.services.locks.release({ name, owner: OWNER, clientId: 'worker', fencingToken: token });
    // The release hands the lock to the head of the queue: Mallory's worker, with a larger token.
    expect(await rawItem(name)).toMatchObject({ [LockAttr.owner]: MALLORY, holder: 'worker', queued: 0 });
    expect((await rawItem(name))?.fence).toBeGreaterThan(token);
  });

  it('the holder itself still releases after the refusals', async () => {
    const name = 'owned-then-released';
    const token = tokenOf(
      await ctx.acquire({ name, owner: OWNER, clientId: 'worker', tenure: lease(30_000) }),
    );
    await expect(
      ctx.services.locks.release({ name, owner: MALLORY, clientId: 'worker', fencingToken: token }),
    ).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect(
      await ctx.services.locks.release({ name, owner: OWNER, clientId: 'worker', fencingToken: token }),
    ).toMatchObject({ remaining: 0 });
    expect(await rawItem(name)).not.toHaveProperty(LockAttr.owner);
  });
});

describe('idempotent retries and reentrancy', () => {
  it('a retried acquire with the same request_id returns the same grant, never a refusal or a second grant', async () => {
    const name = 'retried';
    const cmd = { name, owner: OWNER, clientId: 'a', tenure: lease(30_000), requestId: 'req-1' };
    const first = await ctx.acquire(cmd);
    const retries = await Promise.all([ctx.acquire(cmd), ctx.acquire(cmd), ctx.acquire(cmd)]);
    for (const retry of retries) {
      expect(retry).toMatchObject({
        acquired: true,
        replayed: true,
        grant: { fencingToken: tokenOf(first) },
      });
    }
    expect((await rawItem(name))?.fence).toBe(tokenOf(first));
  });

  it('reentrant acquisition keeps the token and counts down to free', async () => {
    const name = 'reentrant';
    const token = tokenOf(
      await ctx.acquire({ name, owner: OWNER, clientId: 'a', tenure: lease(30_000), reentrant: true }),
    );
    expect(
      await ctx.acquire({ name, owner: OWNER, clientId: 'a', tenure: lease(30_000), reentrant: true }),
    ).toMatchObject({
      acquired: true,
      grant: { fencingToken: token, reentry: 2 },
    });
    expect(
      await ctx.services.locks.release({ name, owner: OWNER, clientId: 'a', fencingToken: token }),
    ).toMatchObject({
      remaining: 1,
    });
    expect((await ctx.acquire({ name, owner: OWNER, clientId: 'b', tenure: lease(30_000) })).acquired).toBe(
      false,
    );
    expect(
      await ctx.services.locks.release({ name, owner: OWNER, clientId: 'a', fencingToken: token }),
    ).toMatchObject({
      remaining: 0,
    });
    expect((await ctx.acquire({ name, owner: OWNER, clientId: 'b', tenure: lease(30_000) })).acquired).toBe(
      true,
    );
  });

  it('a release sent again with its release_id (its answer lost) never counts a re-entry down twice, in either mode', async () => {
    for (const mode of ['exclusive', 'shared'] as const) {
      const name = `reentrant-retried-${mode}`;
      const take = () =>
        ctx.acquire({ name, owner: OWNER, clientId: 'a', tenure: lease(30_000), reentrant: true, mode });
      const token = tokenOf(await take());
      expect(await take()).toMatchObject({ grant: { fencingToken: token, reentry: 2 } });
      const release = { name, owner: OWNER, clientId: 'a', fencingToken: token, mode, releaseId: 'rel-1' };
      expect(await ctx.services.locks.release(release)).toMatchObject({ remaining: 1 });
      // The same release again: answered as applied, and the outer scope still holds the lock.
      expect(await ctx.services.locks.release(release)).toMatchObject({ remaining: 1 });
      expect(await ctx.services.locks.release(release)).toMatchObject({ remaining: 1 });
      expect((await ctx.acquire({ name, owner: OWNER, clientId: 'b', tenure: lease(30_000) })).acquired).toBe(
        false,
      );
      // The outer scope's own release frees it; a retry of that is answered as applied too, before
      // and after the next grant, and another release_id is refused.
      const last = { ...release, releaseId: 'rel-2' };
      expect(await ctx.services.locks.release(last)).toMatchObject({ remaining: 0 });
      expect(await ctx.services.locks.release(last)).toMatchObject({ remaining: 0 });
      expect((await ctx.acquire({ name, owner: OWNER, clientId: 'b', tenure: lease(30_000) })).acquired).toBe(
        true,
      );
      expect(await ctx.services.locks.release(last)).toMatchObject({ remaining: 0 });
      await expect(ctx.services.locks.release({ ...last, releaseId: 'rel-3' })).rejects.toMatchObject({
        code: 'NOT_HOLDER',
      });
    }
  });
});

describe('DynamoDB calls per operation', () => {
  it('uncontended acquire, release and renew are one call each; a refused acquire is one call too', async () => {
    const name = 'counted';
    counter.reset();
    const token = tokenOf(
      await ctx.acquire({ name, owner: OWNER, clientId: 'a', tenure: lease(30_000), requestId: 'x' }),
    );
    expect(counter.calls).toEqual(['UpdateItemCommand']);
    counter.reset();
    await ctx.services.locks.renew({ name, owner: OWNER, clientId: 'a', fencingToken: token, ttlMs: 30_000 });
    expect(counter.total).toBe(1);
    counter.reset();
    expect((await ctx.acquire({ name, owner: OWNER, clientId: 'b', tenure: lease(30_000) })).acquired).toBe(
      false,
    );
    expect(counter.total).toBe(1);
    counter.reset();
    await ctx.acquire({ name, owner: OWNER, clientId: 'a', tenure: lease(30_000), requestId: 'x' }); // replay answered from ALL_OLD
    expect(counter.total).toBe(1);
    counter.reset();
    await ctx.services.locks.release({ name, owner: OWNER, clientId: 'a', fencingToken: token });
    expect(counter.total).toBe(1);
  });

  it('a waiting acquire of a free lock is one transaction, with a token above the last; held, it queues', async () => {
    const name = 'counted-waiting';
    const first = tokenOf(await ctx.acquire({ name, owner: OWNER, clientId: 'a', tenure: lease(30_000) }));
    await ctx.services.locks.release({ name, owner: OWNER, clientId: 'a', fencingToken: first });
    await new Promise((resolve) => setTimeout(resolve, 2)); // the clock's floor moves past the counter
    const ask = (clientId: string, requestId: string) =>
      ctx.services.locks.acquire(
        { name, owner: OWNER, clientId, tenure: lease(30_000), requestId },
        { waitMs: 5_000 },
      );
    counter.reset();
    const granted = await ask('b', 'rb');
    expect(counter.calls).toEqual(['TransactWriteItemsCommand']);
    if (granted.kind !== 'done' || !granted.outcome.acquired) throw new Error('not granted at once');
    expect(granted.outcome.grant.fencingToken).toBeGreaterThan(first);
    expect((await rawItem(name))?.[LockAttr.fence]).toBe(granted.outcome.grant.fencingToken);
    // The answer lost, the request asked again: its record answers with the same grant.
    const again = await ask('b', 'rb');
    expect(again.kind === 'done' && again.outcome.acquired && again.outcome.grant.fencingToken).toBe(
      granted.outcome.grant.fencingToken,
    );
    // Held: the grant is refused and the request joins the queue (one refused write, then the join).
    counter.reset();
    expect((await ask('c', 'rc')).kind).toBe('queued');
    expect(counter.calls).toEqual(['TransactWriteItemsCommand', 'TransactWriteItemsCommand']);
  });
});

describe('DynamoDB calls per contended release', () => {
  const name = 'counted-queue';
  /** Every push is delivered (the default pusher finds every connection gone). */
  let pushing: ReturnType<typeof testServices>;
  beforeAll(() => {
    pushing = testServices(table.tableName, { counter, pusher: { push: async () => 'sent' } });
  });
  const release = (clientId: string, fencingToken: number) =>
    pushing.services.locks.release({ name, owner: OWNER, clientId, fencingToken });
  const join = async (clientId: string, priority = 0) => {
    await pushing.services.connections.open(`${name}-${clientId}`, OWNER, clientId);
    const queued = await pushing.services.locks.acquire(
      { name, owner: OWNER, clientId, tenure: lease(30_000), requestId: `r-${clientId}` },
      { waitMs: 60_000, connectionId: `${name}-${clientId}`, priority },
    );
    expect(queued.kind).toBe('queued');
  };
  /** Releases the holder's grant; answers the calls it made and who holds the lock then. */
  const handOn = async () => {
    const held = await rawItem(name);
    counter.reset();
    await release(String(held?.holder), Number(held?.fence));
    const calls = [...counter.calls];
    const after = await rawItem(name);
    return { calls, holder: after?.holder, fence: after?.fence };
  };

  it('reads the queue once, then hands on in one transaction each while nothing joined ahead', async () => {
    const first = tokenOf(
      await pushing.acquire({ name, owner: OWNER, clientId: 'a', tenure: lease(30_000) }),
    );
    for (const client of ['b', 'c', 'd']) await join(client);
    expect(await handOn()).toEqual({
      calls: ['QueryCommand', 'TransactWriteItemsCommand'],
      holder: 'b',
      fence: first + 1,
    });
    await join('e'); // at the default priority: behind c and d
    expect(await handOn()).toEqual({ calls: ['TransactWriteItemsCommand'], holder: 'c', fence: first + 2 });
    await join('f', 5); // ahead of d: the transaction from the queue as read is refused, and it is read again
    expect(await handOn()).toEqual({
      calls: ['TransactWriteItemsCommand', 'QueryCommand', 'TransactWriteItemsCommand'],
      holder: 'f',
      fence: first + 3,
    });
    expect(await handOn()).toEqual({ calls: ['TransactWriteItemsCommand'], holder: 'd', fence: first + 4 });
    expect(await handOn()).toEqual({ calls: ['TransactWriteItemsCommand'], holder: 'e', fence: first + 5 });
    expect((await rawItem(name))?.queued).toBe(0);
  });
});

describe('listing', () => {
  it('lists by prefix in name order, page by page, with Queries', async () => {
    const names = ['list/a', 'list/b', 'list/c', 'list/d', 'list/e', 'listing-other'];
    for (const name of names) await ctx.acquire({ name, owner: OWNER, clientId: 'a', tenure: lease(30_000) });
    const seen: string[] = [];
    let cursor: string | undefined;
    counter.reset();
    do {
      const page = await ctx.storage.listLocks('list/', 2, cursor);
      seen.push(...page.locks.map((lock) => lock.name));
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen).toEqual(['list/a', 'list/b', 'list/c', 'list/d', 'list/e']);
    expect(counter.calls.filter((c) => c === 'ScanCommand')).toHaveLength(0);
  });

  /** Every page of a listing, following its cursors (each one round-trips through the API's encoding). */
  async function allPages(prefix: string, limit: number) {
    const pages: string[][] = [];
    let cursor: string | undefined;
    do {
      const page = await ctx.storage.listLocks(prefix, limit, cursor);
      pages.push(page.locks.map((lock) => lock.name));
      if (page.nextCursor !== undefined) {
        // A cursor is opaque to clients: base64url JSON naming the last lock of the page.
        expect(page.nextCursor).toMatch(/^[A-Za-z0-9_-]+$/);
        expect(JSON.parse(Buffer.from(page.nextCursor, 'base64url').toString('utf8'))).toEqual({
          after: page.locks.at(-1)?.name,
        });
      }
      cursor = page.nextCursor;
      expect(pages.length).toBeLessThan(1_000); // a cursor that never ends would loop here
    } while (cursor);
    return pages;
  }

  it(`over ${LIST_SHARDS} shards: pages in name order, complete, without duplicates, for several prefixes and page sizes`, async () => {
    // 150 locks over 3 subtrees, plus neighbours that sort right next to the prefix and must not show.
    const inside = [
      ...Array.from({ length: 60 }, (_, i) => `shard-list/jobs/${String(i).padStart(3, '0')}`),
      ...Array.from({ length: 50 }, (_, i) => `shard-list/leaders/l-${i}`),
      ...Array.from({ length: 40 }, (_, i) => `shard-list/x.${i}:${i % 7}`),
    ];
    const outside = [
      'shard-list',
      'shard-lis',
      'shard-list-',
      'shard-list0/a',
      'shard-listz',
      'shard-lisu/a',
    ];
    const names = [...inside, ...outside];
    for (let i = 0; i < names.length; i += 16) {
      const outcomes = await Promise.all(
        names
          .slice(i, i + 16)
          .map((name) => ctx.acquire({ name, owner: OWNER, clientId: 'lister', tenure: lease(60_000) })),
      );
      for (const outcome of outcomes) expect(outcome.acquired).toBe(true);
    }
    // The names spread over every listing shard, so every page merges several shards' answers.
    const shards = new Set(inside.map((name) => lockListing(name).list_pk));
    expect(shards.size).toBe(LIST_SHARDS);

    const sorted = (names: readonly string[]) => [...names].sort();
    for (const [prefix, expected] of [
      ['shard-list/', sorted(inside)],
      ['shard-list/jobs/', sorted(inside.filter((n) => n.startsWith('shard-list/jobs/')))],
      ['shard-list/leaders/l-1', sorted(inside.filter((n) => n.startsWith('shard-list/leaders/l-1')))],
      ['shard-list/x.', sorted(inside.filter((n) => n.startsWith('shard-list/x.')))],
      ['shard-list/nothing/', []],
    ] as const) {
      // Pages of one name only where that stays quick (each page is one Query per shard).
      for (const limit of expected.length <= 20 ? [1, 7, 100] : [7, 50, 100]) {
        const pages = await allPages(prefix, limit);
        for (const page of pages) expect(page.length).toBeLessThanOrEqual(limit);
        // Every page but the last is full: a short page is the end.
        for (const page of pages.slice(0, -1)) expect(page).toHaveLength(limit);
        const all = pages.flat();
        expect(all, `prefix ${prefix}, limit ${limit}`).toEqual(expected);
        expect(new Set(all).size).toBe(all.length);
      }
    }

    // The whole table (other tests' locks too): strictly ascending, so in order and without duplicates.
    const everything = (await allPages('', 100)).flat();
    for (let i = 1; i < everything.length; i++)
      expect((everything[i - 1] as string) < (everything[i] as string)).toBe(true);
    expect(everything).toEqual(expect.arrayContaining([...inside, ...outside]));
  });

  it('a page holds the holder state of each lock, read with one BatchGet of the page', async () => {
    counter.reset();
    const page = await ctx.storage.listLocks('shard-list/jobs/', 10);
    expect(page.locks).toHaveLength(10);
    for (const lock of page.locks)
      expect(lock.item).toMatchObject({ [LockAttr.owner]: OWNER, holder: 'lister' });
    expect(counter.calls.filter((c) => c === 'QueryCommand')).toHaveLength(LIST_SHARDS);
    expect(counter.calls.filter((c) => c === 'BatchGetItemCommand')).toHaveLength(1);
    expect(counter.calls.filter((c) => c === 'ScanCommand')).toHaveLength(0);
  });

  it('refuses a cursor it did not issue, or issued for another prefix, with INVALID_REQUEST (400)', async () => {
    const cursorFor = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const issued = (await ctx.storage.listLocks('shard-list/jobs/', 5)).nextCursor;
    expect(issued).toBeDefined();
    const forged: [string, string][] = [
      ['', 'bm90LWEtY3Vyc29y'], // base64 of "not-a-cursor"
      ['', '%%%'],
      ['', cursorFor(null)],
      ['', cursorFor(['shard-list/jobs/001'])],
      ['', cursorFor({ after: 42 })],
      ['', cursorFor({ after: 'has space' })],
      ['', cursorFor({ after: 'a//b' })],
      ['shard-list/', cursorFor({ after: 'other/a' })],
      // An old-style cursor (the index key of the last lock) is no longer one.
      ['shard-list/', cursorFor({ list_pk: 'LIST#0', list_sk: 'shard-list/jobs/001' })],
      // A genuine cursor, brought to another prefix.
      ['shard-list/leaders/', issued as string],
    ];
    for (const [prefix, cursor] of forged) {
      const error = await ctx.storage.listLocks(prefix, 10, cursor).catch((e: unknown) => e);
      expect(error, `cursor ${cursor} for prefix '${prefix}'`).toBeInstanceOf(LatchkeyError);
      expect(error).toMatchObject({ code: 'INVALID_REQUEST', status: 400 });
    }
    // The genuine one still works where it was issued.
    expect((await ctx.storage.listLocks('shard-list/jobs/', 5, issued)).locks[0]?.name).toBe(
      'shard-list/jobs/005',
    );
  });
});

describe('a write whose response is lost (the SDK sends it again)', () => {
  it('is answered as written: acquire, count-down release, release', async () => {
    const proxy = await startTcpProxy(dynamoEndpoint());
    const store = testServices(table.tableName, { endpoint: proxy.endpoint });
    try {
      const name = 'lost-responses';
      proxy.loseResponses(1);
      const first = await store.acquire({
        name,
        owner: OWNER,
        clientId: 'a',
        tenure: lease(30_000),
        reentrant: true,
      });
      expect(first).toMatchObject({ acquired: true, grant: { clientId: 'a', reentry: 1 } });
      const token = tokenOf(first);
      proxy.loseResponses(1);
      expect(
        await store.acquire({ name, owner: OWNER, clientId: 'a', tenure: lease(30_000), reentrant: true }),
      ).toMatchObject({
        acquired: true,
        grant: { fencingToken: token, reentry: 2 },
      });
      proxy.loseResponses(1);
      expect(
        await store.services.locks.release({ name, owner: OWNER, clientId: 'a', fencingToken: token }),
      ).toEqual({
        lock: name,
        remaining: 1,
        queued: 0,
      });
      expect((await rawItem(name))?.holder).toBe('a'); // still held by the outer scope
      proxy.loseResponses(1);
      expect(
        await store.services.locks.release({ name, owner: OWNER, clientId: 'a', fencingToken: token }),
      ).toEqual({
        lock: name,
        remaining: 0,
        queued: 0,
      });
      expect((await rawItem(name))?.holder).toBeUndefined();
    } finally {
      await proxy.close();
    }
  });
});

describe('DynamoDB faults are typed and retryable, never "not acquired"', () => {
  it('an unreachable DynamoDB is UNAVAILABLE', async () => {
    const proxy = await startTcpProxy(dynamoEndpoint());
    const store = testServices(table.tableName, { endpoint: proxy.endpoint });
    expect(
      (await store.acquire({ name: 'outage', owner: OWNER, clientId: 'a', tenure: lease(5_000) })).acquired,
    ).toBe(true);
    proxy.cut();
    const error = await store
      .acquire({ name: 'outage', owner: OWNER, clientId: 'b', tenure: lease(5_000) })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LatchkeyError);
    expect(error).toMatchObject({ code: 'UNAVAILABLE', status: 503, retryable: true });
    await proxy.close();
  });

  it('a DynamoDB that accepts connections and never answers is UNAVAILABLE within the operation deadline', async () => {
    const proxy = await startTcpProxy(dynamoEndpoint());
    const store = testServices(table.tableName, { endpoint: proxy.endpoint, deadlineMs: 1_500 });
    proxy.blackhole();
    const error = await store
      .acquire({ name: 'blackhole', owner: OWNER, clientId: 'a', tenure: lease(5_000) })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'UNAVAILABLE', retryable: true });
    await proxy.close();
  }, 5_000); // without the deadline the SDK would wait 3 attempts x 3 s request timeout, plus backoff

  it('throttling is UNAVAILABLE with a retry hint', async () => {
    const fake = createServer((_req, res) => {
      res.writeHead(400, { 'content-type': 'application/x-amz-json-1.0' });
      res.end(
        JSON.stringify({
          __type: 'com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException',
          message: 'slow down',
        }),
      );
    });
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    const endpoint = `http://127.0.0.1:${(fake.address() as AddressInfo).port}`;
    const store = testServices(table.tableName, { endpoint, maxAttempts: 1 });
    await expect(
      store.acquire({ name: 'throttled', owner: OWNER, clientId: 'a', tenure: lease(5_000) }),
    ).rejects.toMatchObject({
      code: 'UNAVAILABLE',
      retryable: true,
    });
    await new Promise((resolve) => fake.close(resolve));
  });
});
