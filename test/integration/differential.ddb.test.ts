/**
 * DynamoDB and the core agree: for random lock items (and items random
 * histories of both modes leave) and the writes the protocols make, DynamoDB
 * Local accepts a compiled write exactly when the core's evaluator says its
 * condition holds, and leaves exactly the item the core's applyUpdate predicts.
 */
import { DeleteCommand, GetCommand, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { applyUpdate, evaluate, type Item } from '../../lambdas/core/expr';
import { liveEntries } from '../../lambdas/core/holders';
import { type ItemWrite, lockRef } from '../../lambdas/core/items';
import {
  LockAttr as A,
  acquireProtocol,
  forceReleaseWrite,
  grantOf,
  type LockMode,
  lease,
  type Protocol,
  pinnedGrant,
  releaseProtocol,
  renewProtocol,
  requestKey,
  sessionReleaseWrite,
  throughSession,
} from '../../lambdas/core/lock';
import { acquireProtocolIn, releaseProtocolIn, renewProtocolIn } from '../../lambdas/core/modes';
import { localPrincipal } from '../../lambdas/core/principal';
import {
  forceReleaseSharedWrite,
  pinnedSharedGrants,
  pruneLapsedWrite,
  sessionSharedReleaseWrite,
} from '../../lambdas/core/shared-lock';
import { tableKey, updateRequest } from '../../lambdas/store/requests';
import { STORAGE_ATTRIBUTES } from '../../lambdas/store/table';
import { createTestTable, testServices } from '../support/dynamo';
import { MemoryLock } from '../support/memory-lock';

let table: Awaited<ReturnType<typeof createTestTable>>;
let ctx: ReturnType<typeof testServices>;
beforeAll(async () => {
  table = await createTestTable();
  ctx = testServices(table.tableName);
});
afterAll(async () => table.drop());

const NOW = 1_800_000_000_000;
const CLIENTS = ['a', 'b'] as const;
/** Two principals: a client label means something only within its owner. */
const OWNERS = [localPrincipal('alice'), localPrincipal('mallory')] as const;

const itemArb: fc.Arbitrary<Item | undefined> = fc.option(
  fc.record(
    {
      [A.name]: fc.constant('d'),
      [A.holder]: fc.constantFrom(...CLIENTS),
      [A.owner]: fc.constantFrom(...OWNERS),
      [A.fence]: fc.integer({ min: 1, max: 4 }),
      [A.expiresAt]: fc.integer({ min: NOW - 3, max: NOW + 3 }),
      [A.reentry]: fc.integer({ min: 1, max: 3 }),
      [A.grantRequest]: fc.constantFrom(
        ...OWNERS.flatMap((owner) => CLIENTS.map((client) => requestKey(owner, client, 'r'))),
      ),
      [A.session]: fc.constantFrom('s1', 's2'),
      [A.queued]: fc.integer({ min: -1, max: 2 }),
      [A.blockedUntil]: fc.integer({ min: NOW - 1, max: NOW + 1 }),
    },
    { requiredKeys: [] },
  ),
  { nil: undefined },
);

const protocolArb: fc.Arbitrary<Protocol<unknown>> = fc.oneof(
  fc
    .record({
      o: fc.constantFrom(...OWNERS),
      c: fc.constantFrom(...CLIENTS),
      rid: fc.option(fc.constant('r'), { nil: undefined }),
      re: fc.boolean(),
    })
    .map(({ o, c, rid, re }) =>
      acquireProtocol(
        { name: 'd', owner: o, clientId: c, tenure: lease(5), requestId: rid, reentrant: re },
        NOW,
      ),
    ),
  fc
    .record({
      o: fc.constantFrom(...OWNERS),
      c: fc.constantFrom(...CLIENTS),
      t: fc.integer({ min: 1, max: 4 }),
    })
    .map(({ o, c, t }) => releaseProtocol({ name: 'd', owner: o, clientId: c, fencingToken: t }, NOW)),
  fc
    .record({
      o: fc.constantFrom(...OWNERS),
      c: fc.constantFrom(...CLIENTS),
      t: fc.integer({ min: 1, max: 4 }),
    })
    .map(({ o, c, t }) =>
      renewProtocol({ name: 'd', owner: o, clientId: c, fencingToken: t, ttlMs: 5 }, NOW),
    ),
);

/**
 * Writes made in transactions or outside the protocols: a grant pinned to the token seen (a
 * session's, say), a session's release, an administrator's forced release of the grant the item
 * records (as it was read, so it may be stale by the time it is written: the item is one of many).
 */
const pinnedArb: fc.Arbitrary<(item: Item | undefined) => ItemWrite> = fc.oneof(
  fc.record({ o: fc.constantFrom(...OWNERS), c: fc.constantFrom(...CLIENTS), session: fc.boolean() }).map(
    ({ o, c, session }) =>
      (item: Item | undefined) =>
        pinnedGrant(
          { name: 'd', owner: o, clientId: c, tenure: session ? throughSession('s1') : lease(5) },
          item,
          NOW,
          'w',
        ).write,
  ),
  fc.constantFrom('s1', 's2').map((session) => () => sessionReleaseWrite(session, NOW, 2)),
  fc.record({ seen: itemArb, by: fc.constantFrom(...OWNERS) }).map(
    ({ seen, by }) =>
      (item: Item | undefined) =>
        forceReleaseWrite(grantOf(seen ?? item ?? {}), by, 'differential', NOW),
  ),
);

const anyWriteArb = fc.oneof(
  protocolArb.map((protocol) => (item: Item | undefined) => writesFor(protocol, item)),
  pinnedArb.map((write) => (item: Item | undefined) => [write(item)]),
);

/** The writes a protocol may send for this item: its first, and the one its refusal names. */
function writesFor(protocol: Protocol<unknown>, item: Item | undefined): ItemWrite[] {
  const writes = [protocol.first];
  try {
    const next = protocol.onRefused(item);
    if ('write' in next) writes.push(next.write);
  } catch {
    // a refusal that answers with an error sends nothing more
  }
  return writes;
}

/** Keys and index housekeeping; never a lock attribute, even one that shares an index key's name. */
const HOUSEKEEPING = STORAGE_ATTRIBUTES.filter((attr) => !(Object.values(A) as string[]).includes(attr));

const lockState = (item: Record<string, unknown> | undefined) =>
  item &&
  Object.fromEntries(Object.entries(item).filter(([k, v]) => !HOUSEKEEPING.includes(k) && v !== undefined));

/**
 * Stores `item` (or deletes it) and sends `write`: DynamoDB Local must accept it exactly when
 * evaluate() says its condition holds, return the item as it was with a refusal, and leave exactly
 * what applyUpdate() predicts.
 */
async function expectDynamoAgrees(item: Item | undefined, write: ItemWrite): Promise<void> {
  const key = tableKey(lockRef('d'));
  const attributes = Object.fromEntries(Object.entries(item ?? {}).filter(([, v]) => v !== undefined));
  if (item)
    await ctx.db.send(new PutCommand({ TableName: table.tableName, Item: { ...key, ...attributes } }));
  else await ctx.db.send(new DeleteCommand({ TableName: table.tableName, Key: key }));
  const expected = write.condition === undefined || evaluate(write.condition, item);
  let accepted: boolean;
  try {
    await ctx.db.send(new UpdateCommand(updateRequest(ctx.settings, lockRef('d'), write)));
    accepted = true;
  } catch (error) {
    if ((error as Error).name !== 'ConditionalCheckFailedException') throw error;
    const old = (error as { Item?: Parameters<typeof unmarshall>[0] }).Item;
    expect(lockState(old && unmarshall(old))).toEqual(lockState(item));
    accepted = false;
  }
  expect(accepted).toBe(expected);
  const stored = (
    await ctx.db.send(new GetCommand({ TableName: table.tableName, Key: key, ConsistentRead: true }))
  ).Item;
  expect(lockState(stored)).toEqual(accepted ? lockState(applyUpdate(item, write.update)) : lockState(item));
}

it('DynamoDB Local agrees with evaluate() and applyUpdate() on every protocol write', async () => {
  await fc.assert(
    fc.asyncProperty(itemArb, anyWriteArb, async (item, writes) => {
      for (const write of writes(item)) await expectDynamoAgrees(item, write);
    }),
    { numRuns: 200 },
  );
});

it('comparisons with a missing attribute or another type: DynamoDB and evaluate() agree', async () => {
  const { eq, ne, lt, ge } = await import('../../lambdas/core/expr');
  const item = { num: 1, str: 'x' };
  const cases = [
    ne('absent', 'x'),
    eq('absent', 'x'),
    lt('absent', 5),
    ne('num', 'x'),
    eq('num', '1'),
    ge('str', 0),
  ];
  const key = tableKey(lockRef('comparisons'));
  for (const condition of cases) {
    await ctx.db.send(new PutCommand({ TableName: table.tableName, Item: { ...key, ...item } }));
    const write: ItemWrite = { condition, update: [] };
    const accepted = await ctx.db
      .send(new UpdateCommand(updateRequest(ctx.settings, lockRef('comparisons'), write)))
      .then(() => true)
      .catch((error: Error) => {
        if (error.name !== 'ConditionalCheckFailedException') throw error;
        return false;
      });
    expect({ condition, accepted }).toEqual({ condition, accepted: evaluate(condition, item) });
  }
});

// Shared mode: items left by random histories of both modes (entries live and lapsed, counts,
// versions), and the writes either mode may send to them, entries' tokens copied from the counter
// in the same expression included.
const owner = fc.constantFrom(...OWNERS);
const client = fc.constantFrom(...CLIENTS);
const mode = fc.constantFrom<LockMode>('exclusive', 'shared');
const maxHolders = fc.constantFrom(undefined, 2);

type Command = (now: number) => Protocol<unknown>;
const sharedCommandArb: fc.Arbitrary<Command> = fc.oneof(
  fc
    .record({
      o: owner,
      c: client,
      m: mode,
      n: maxHolders,
      ttl: fc.integer({ min: 1, max: 6 }),
      re: fc.boolean(),
    })
    .map(
      ({ o, c, m, n, ttl, re }) =>
        (now: number) =>
          acquireProtocolIn(
            {
              name: 'd',
              owner: o,
              clientId: c,
              tenure: lease(ttl),
              mode: m,
              maxHolders: m === 'shared' ? n : undefined,
              requestId: 'r',
              reentrant: re,
            },
            now,
          ),
    ),
  fc
    .record({ o: owner, c: client, t: fc.integer({ min: 0, max: 6 }), m: mode, renew: fc.boolean() })
    .map(({ o, c, t, m, renew }) => (now: number) => {
      const cmd = { name: 'd', owner: o, clientId: c, fencingToken: NOW * 1000 + t, mode: m };
      return renew ? renewProtocolIn({ ...cmd, ttlMs: 4 }, now) : releaseProtocolIn(cmd, now);
    }),
);

/** An item a history of both modes leaves behind (entries live and lapsed, counts, versions). */
async function historyItem(steps: readonly (readonly [Command, number])[]): Promise<Item | undefined> {
  const lock = new MemoryLock();
  let now = NOW - 12;
  for (const [command, tick] of steps) {
    now += tick;
    await lock.run(command(now)).catch(() => undefined);
  }
  return lock.item;
}

const sharedPinnedArb = fc.oneof(
  fc
    .uniqueArray(fc.record({ o: owner, c: client, session: fc.boolean() }), {
      minLength: 1,
      maxLength: 3,
      selector: ({ o, c }) => `${o} ${c}`,
    })
    .map(
      (grantees) => (item: Item | undefined) =>
        pinnedSharedGrants(
          grantees.map(({ o, c, session }) => ({
            name: 'd',
            owner: o,
            clientId: c,
            tenure: session ? { kind: 'session' as const, sessionId: 's1' } : lease(5),
            maxHolders: 2,
          })),
          item,
          NOW,
          'w',
        ).write,
    ),
  fc.constant(
    (item: Item | undefined) => pruneLapsedWrite(item, NOW) ?? { condition: undefined, update: [] },
  ),
  fc
    .boolean()
    .map(
      (all) => (item: Item | undefined) =>
        forceReleaseSharedWrite(
          all ? liveEntries(item, NOW) : liveEntries(item, NOW).slice(0, 1),
          item,
          OWNERS[0],
          'differential',
          NOW,
        ),
    ),
  fc.record({ o: owner, c: client, last: fc.boolean(), moves: fc.boolean() }).map(
    ({ o, c, last, moves }) =>
      () =>
        sessionSharedReleaseWrite(o, c, 's1', NOW, 3, { lastSession: last, delayMoves: moves }),
  ),
);

it('DynamoDB Local agrees with evaluate() and applyUpdate() on shared-mode writes', async () => {
  const history = fc.array(fc.tuple(sharedCommandArb, fc.integer({ min: 0, max: 3 })), { maxLength: 8 });
  const writeArb = fc.oneof(
    sharedCommandArb.map((command) => (item: Item | undefined) => writesFor(command(NOW), item)),
    sharedPinnedArb.map((write) => (item: Item | undefined) => [write(item)]),
  );
  await fc.assert(
    fc.asyncProperty(history, writeArb, async (steps, writes) => {
      const item = await historyItem(steps);
      for (const write of writes(item)) await expectDynamoAgrees(item, write);
    }),
    { numRuns: 150 },
  );
}, 120_000);
