/**
 * DynamoDB and the core agree on shared mode's writes: for lock items left by random histories of
 * both modes, DynamoDB Local accepts a compiled write exactly when the core's evaluator says its
 * condition holds, and leaves exactly the item applyUpdate predicts (entries' tokens copied from
 * the counter in the same expression included).
 */
import { DeleteCommand, GetCommand, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { applyUpdate, evaluate, type Item } from '../../lambdas/core/expr';
import { liveEntries } from '../../lambdas/core/holders';
import { type ItemWrite, lockRef } from '../../lambdas/core/items';
import { LockAttr as A, type LockMode, lease, type Protocol } from '../../lambdas/core/lock';
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
const OWNERS = [localPrincipal('alice'), localPrincipal('mallory')] as const;
const CLIENTS = ['a', 'b', 'c'] as const;
const owner = fc.constantFrom(...OWNERS);
const client = fc.constantFrom(...CLIENTS);
const mode = fc.constantFrom<LockMode>('exclusive', 'shared');
const maxHolders = fc.constantFrom(undefined, 2);

type Command = (now: number) => Protocol<unknown>;
const commandArb: fc.Arbitrary<Command> = fc.oneof(
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

const pinnedArb = fc.oneof(
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

const HOUSEKEEPING = STORAGE_ATTRIBUTES.filter((attr) => !(Object.values(A) as string[]).includes(attr));
const lockState = (item: Record<string, unknown> | undefined) =>
  item &&
  Object.fromEntries(Object.entries(item).filter(([k, v]) => !HOUSEKEEPING.includes(k) && v !== undefined));

it('DynamoDB Local agrees with evaluate() and applyUpdate() on shared-mode writes', async () => {
  const key = tableKey(lockRef('d'));
  const history = fc.array(fc.tuple(commandArb, fc.integer({ min: 0, max: 3 })), { maxLength: 8 });
  const writeArb = fc.oneof(
    commandArb.map((command) => (item: Item | undefined) => writesFor(command(NOW), item)),
    pinnedArb.map((write) => (item: Item | undefined) => [write(item)]),
  );
  await fc.assert(
    fc.asyncProperty(history, writeArb, async (steps, writes) => {
      const item = await historyItem(steps);
      for (const write of writes(item)) {
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
        expect(lockState(stored)).toEqual(
          accepted ? lockState(applyUpdate(item, write.update)) : lockState(item),
        );
      }
    }),
    { numRuns: 150 },
  );
}, 120_000);
