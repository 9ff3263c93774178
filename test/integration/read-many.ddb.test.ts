/**
 * Storage.readMany on DynamoDB Local: several items of different partitions in one
 * BatchGetItem, answered in the order asked (DynamoDB answers a batch in any order), a missing
 * item as undefined, each read strongly consistent (it sees a write made just before).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockRef, requestRef } from '../../lambdas/core/items';
import { lease } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { CallCounter, createTestTable, testServices } from '../support/dynamo';

const OWNER = localPrincipal('reader');

let table: Awaited<ReturnType<typeof createTestTable>>;
let t: ReturnType<typeof testServices>;
const counter = new CallCounter();

beforeAll(async () => {
  table = await createTestTable();
  t = testServices(table.tableName, { counter });
});
afterAll(async () => table.drop());

const acquire = (name: string) =>
  t.services.locks.acquire({
    name,
    owner: OWNER,
    clientId: 'c',
    tenure: lease(30_000),
    requestId: randomUUID(),
  });

describe('reading several items at once', () => {
  it('answers them in the order asked, a missing one as undefined, in one BatchGetItem', async () => {
    const names = Array.from({ length: 12 }, () => `many/${randomUUID()}`);
    for (const name of names) await acquire(name);
    // The ones never written in the middle: an answer matched by place, not key, would show.
    const locks = names.map(lockRef).reverse();
    const refs = [
      ...locks.slice(0, 6),
      lockRef(`many/${randomUUID()}`),
      requestRef(names[0] as string, 'no-such-request'),
      ...locks.slice(6),
    ];
    counter.reset();
    const items = await t.storage.readMany(refs);
    expect(counter.calls).toEqual(['BatchGetItemCommand']);
    expect(items).toHaveLength(refs.length);
    const one = await Promise.all([...names].reverse().map((name) => t.storage.read(lockRef(name))));
    expect(one.every((item) => item !== undefined)).toBe(true);
    expect([...items.slice(0, 6), ...items.slice(8)]).toEqual(one);
    expect(items.slice(6, 8)).toEqual([undefined, undefined]);
  });

  it('sees a write made just before it (strongly consistent), as read would', async () => {
    const name = `many/${randomUUID()}`;
    const other = `many/${randomUUID()}`;
    await acquire(other);
    const before = await t.storage.readMany([lockRef(name), lockRef(other)]);
    expect(before[0]).toBeUndefined();
    await acquire(name);
    const after = await t.storage.readMany([lockRef(name), lockRef(other)]);
    expect(after).toEqual([await t.storage.read(lockRef(name)), await t.storage.read(lockRef(other))]);
  });

  it('reads more than a BatchGetItem takes (100 keys) in one call per 100, in the order asked', async () => {
    const written = `many/${randomUUID()}`;
    await acquire(written);
    // The written lock last, after 149 never written: the second batch must keep its place.
    const refs = [...Array.from({ length: 149 }, () => lockRef(`many/${randomUUID()}`)), lockRef(written)];
    counter.reset();
    const items = await t.storage.readMany(refs);
    expect(counter.calls).toEqual(['BatchGetItemCommand', 'BatchGetItemCommand']);
    expect(items).toHaveLength(150);
    expect(items.slice(0, 149).every((item) => item === undefined)).toBe(true);
    expect(items[149]).toEqual(await t.storage.read(lockRef(written)));
  });

  it('reads nothing, and calls nothing, for no refs', async () => {
    counter.reset();
    expect(await t.storage.readMany([])).toEqual([]);
    expect(counter.calls).toEqual([]);
  });
});
