/** The lock rules on the DynamoDB adapter, against the real DynamoDB Local: contention, fencing, expiry, refusals, call counts. */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DeleteCommand, GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LatchkeyError } from '../../lambdas/core/errors';
import { lockRef } from '../../lambdas/core/items';
import { type AcquireOutcome, lease } from '../../lambdas/core/lock';
import { tableKey } from '../../lambdas/store/requests';
import { CallCounter, createTestTable, dynamoEndpoint, manualClock, testServices } from '../support/dynamo';
import { startTcpProxy } from '../support/tcp-proxy';

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
          ctx.acquire({ name, clientId: `client-${i}`, tenure: lease(30_000) }),
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
      const token = tokenOf(await ctx.acquire({ name, clientId: `c${i}`, tenure: lease(10_000) }));
      tokens.push(token);
      await ctx.services.locks.release({ name, clientId: `c${i}`, fencingToken: token });
    }
    await ctx.db.send(new DeleteCommand({ TableName: table.tableName, Key: tableKey(lockRef(name)) }));
    expect(await rawItem(name)).toBeUndefined();
    await new Promise((resolve) => setTimeout(resolve, 2)); // the clock floor needs a millisecond to pass
    tokens.push(tokenOf(await ctx.acquire({ name, clientId: 'after-delete', tenure: lease(10_000) })));
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]).toBeGreaterThan(tokens[i - 1] as number);
    for (const token of tokens) expect(Number.isSafeInteger(token)).toBe(true);
  });

  it('survive deletion of a lock granted a thousand times within one millisecond', async () => {
    const name = 'busy-then-deleted';
    clockMs += 10_000;
    const first = tokenOf(await manual.acquire({ name, clientId: 'a', tenure: lease(1_000) }));
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
    expect(tokenOf(await manual.acquire({ name, clientId: 'next', tenure: lease(1_000) }))).toBeGreaterThan(
      busiest,
    );
  });
});

describe('leases', () => {
  it('an expired lease is taken over at once by another client, with a larger token', async () => {
    const name = 'expiring';
    clockMs += 10_000;
    const first = tokenOf(await manual.acquire({ name, clientId: 'a', tenure: lease(1_000) }));
    clockMs += 999;
    expect((await manual.acquire({ name, clientId: 'b', tenure: lease(1_000) })).acquired).toBe(false);
    clockMs += 1;
    const second = tokenOf(await manual.acquire({ name, clientId: 'b', tenure: lease(1_000) }));
    expect(second).toBeGreaterThan(first);
    await expect(
      manual.services.locks.renew({ name, clientId: 'a', fencingToken: first, ttlMs: 1_000 }),
    ).rejects.toMatchObject({
      code: 'NOT_HOLDER',
    });
  });

  it('expiry is judged by the clock at request time, in real time too', async () => {
    const name = 'real-time-expiry';
    tokenOf(await ctx.acquire({ name, clientId: 'a', tenure: lease(1_000) }));
    await new Promise((resolve) => setTimeout(resolve, 1_050));
    expect(tokenOf(await ctx.acquire({ name, clientId: 'b', tenure: lease(1_000) }))).toBeGreaterThan(0);
  });

  it('release or renew with a stale token or another client_id is refused, and the holder is unchanged', async () => {
    const name = 'owned';
    const token = tokenOf(await ctx.acquire({ name, clientId: 'owner', tenure: lease(30_000) }));
    const before = await rawItem(name);
    const attempts = [
      () => ctx.services.locks.release({ name, clientId: 'stranger', fencingToken: token }),
      () => ctx.services.locks.release({ name, clientId: 'owner', fencingToken: token - 1 }),
      () => ctx.services.locks.renew({ name, clientId: 'stranger', fencingToken: token, ttlMs: 5_000 }),
      () => ctx.services.locks.renew({ name, clientId: 'owner', fencingToken: token + 1, ttlMs: 5_000 }),
    ];
    for (const attempt of attempts) {
      await expect(attempt()).rejects.toMatchObject({ code: 'NOT_HOLDER', status: 409 });
    }
    expect(await rawItem(name)).toEqual(before);
  });

  it('renewing a lapsed lease is refused with LEASE_EXPIRED, even if nobody took the lock', async () => {
    const name = 'lapsed';
    clockMs += 10_000;
    const token = tokenOf(await manual.acquire({ name, clientId: 'a', tenure: lease(1_000) }));
    clockMs += 1_000;
    await expect(
      manual.services.locks.renew({ name, clientId: 'a', fencingToken: token, ttlMs: 1_000 }),
    ).rejects.toMatchObject({
      code: 'LEASE_EXPIRED',
    });
    await expect(
      manual.services.locks.release({ name, clientId: 'a', fencingToken: token }),
    ).rejects.toMatchObject({
      code: 'LEASE_EXPIRED',
    });
  });
});

describe('idempotent retries and reentrancy', () => {
  it('a retried acquire with the same request_id returns the same grant, never a refusal or a second grant', async () => {
    const name = 'retried';
    const cmd = { name, clientId: 'a', tenure: lease(30_000), requestId: 'req-1' };
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
    const token = tokenOf(await ctx.acquire({ name, clientId: 'a', tenure: lease(30_000), reentrant: true }));
    expect(await ctx.acquire({ name, clientId: 'a', tenure: lease(30_000), reentrant: true })).toMatchObject({
      acquired: true,
      grant: { fencingToken: token, reentry: 2 },
    });
    expect(await ctx.services.locks.release({ name, clientId: 'a', fencingToken: token })).toMatchObject({
      remaining: 1,
    });
    expect((await ctx.acquire({ name, clientId: 'b', tenure: lease(30_000) })).acquired).toBe(false);
    expect(await ctx.services.locks.release({ name, clientId: 'a', fencingToken: token })).toMatchObject({
      remaining: 0,
    });
    expect((await ctx.acquire({ name, clientId: 'b', tenure: lease(30_000) })).acquired).toBe(true);
  });
});

describe('DynamoDB calls per operation', () => {
  it('uncontended acquire, release and renew are one call each; a refused acquire is one call too', async () => {
    const name = 'counted';
    counter.reset();
    const token = tokenOf(await ctx.acquire({ name, clientId: 'a', tenure: lease(30_000), requestId: 'x' }));
    expect(counter.calls).toEqual(['UpdateItemCommand']);
    counter.reset();
    await ctx.services.locks.renew({ name, clientId: 'a', fencingToken: token, ttlMs: 30_000 });
    expect(counter.total).toBe(1);
    counter.reset();
    expect((await ctx.acquire({ name, clientId: 'b', tenure: lease(30_000) })).acquired).toBe(false);
    expect(counter.total).toBe(1);
    counter.reset();
    await ctx.acquire({ name, clientId: 'a', tenure: lease(30_000), requestId: 'x' }); // replay answered from ALL_OLD
    expect(counter.total).toBe(1);
    counter.reset();
    await ctx.services.locks.release({ name, clientId: 'a', fencingToken: token });
    expect(counter.total).toBe(1);
  });
});

describe('listing', () => {
  it('lists by prefix in name order, page by page, with a Query', async () => {
    const names = ['list/a', 'list/b', 'list/c', 'list/d', 'list/e', 'listing-other'];
    for (const name of names) await ctx.acquire({ name, clientId: 'a', tenure: lease(30_000) });
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

  it('refuses a cursor it did not issue', async () => {
    await expect(ctx.storage.listLocks('', 10, 'bm90LWEtY3Vyc29y')).rejects.toMatchObject({
      code: 'INVALID_REQUEST',
    });
  });
});

describe('a write whose response is lost (the SDK sends it again)', () => {
  it('is answered as written: acquire, count-down release, release', async () => {
    const proxy = await startTcpProxy(dynamoEndpoint());
    const store = testServices(table.tableName, { endpoint: proxy.endpoint });
    try {
      const name = 'lost-responses';
      proxy.loseResponses(1);
      const first = await store.acquire({ name, clientId: 'a', tenure: lease(30_000), reentrant: true });
      expect(first).toMatchObject({ acquired: true, grant: { clientId: 'a', reentry: 1 } });
      const token = tokenOf(first);
      proxy.loseResponses(1);
      expect(
        await store.acquire({ name, clientId: 'a', tenure: lease(30_000), reentrant: true }),
      ).toMatchObject({
        acquired: true,
        grant: { fencingToken: token, reentry: 2 },
      });
      proxy.loseResponses(1);
      expect(await store.services.locks.release({ name, clientId: 'a', fencingToken: token })).toEqual({
        lock: name,
        remaining: 1,
        queued: 0,
      });
      expect((await rawItem(name))?.holder).toBe('a'); // still held by the outer scope
      proxy.loseResponses(1);
      expect(await store.services.locks.release({ name, clientId: 'a', fencingToken: token })).toEqual({
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
    expect((await store.acquire({ name: 'outage', clientId: 'a', tenure: lease(5_000) })).acquired).toBe(
      true,
    );
    proxy.cut();
    const error = await store
      .acquire({ name: 'outage', clientId: 'b', tenure: lease(5_000) })
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
      .acquire({ name: 'blackhole', clientId: 'a', tenure: lease(5_000) })
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
      store.acquire({ name: 'throttled', clientId: 'a', tenure: lease(5_000) }),
    ).rejects.toMatchObject({
      code: 'UNAVAILABLE',
      retryable: true,
    });
    await new Promise((resolve) => fake.close(resolve));
  });
});
