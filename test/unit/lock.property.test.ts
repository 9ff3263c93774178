/**
 * Property tests of the lock rules, run through the same protocol runner the
 * DynamoDB store uses, against an in-memory item with DynamoDB's semantics.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LatchkeyError } from '../../lambdas/core/errors';
import { type Condition, evaluate, type Item } from '../../lambdas/core/expr';
import {
  LockAttr as A,
  acquireProtocol,
  clockFencedGrant,
  fenceFloor,
  lease,
  leaseEnd,
  liveHolder,
  type Protocol,
  releaseProtocol,
  renewProtocol,
  requestKey,
} from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { MemoryLock } from '../support/memory-lock';

const ALICE = localPrincipal('alice');
const BOB = localPrincipal('bob');
/** Who acts: a principal and one of its clients. Both principals have a client 'a'. */
interface Actor {
  readonly owner: string;
  readonly client: string;
}
const ACTORS: readonly Actor[] = [
  { owner: ALICE, client: 'a' },
  { owner: ALICE, client: 'b' },
  { owner: BOB, client: 'a' },
  { owner: BOB, client: 'c' },
];
const CLIENTS = ['a', 'b', 'c'] as const;
const START = 1_800_000_000_000;

type Op =
  | { op: 'acquire'; who: Actor; ttl: number; rid: string | undefined; reentrant: boolean }
  /** A waiting request's grant with no read first, from a clock up to `behind` ms slow (clockFencedGrant). */
  | { op: 'grantUnread'; who: Actor; ttl: number; behind: number }
  | { op: 'release'; who: Actor; pick: number }
  | { op: 'renew'; who: Actor; pick: number; ttl: number }
  | { op: 'tick'; ms: number }
  /** TTL collects the item: only ever long after its lease ended. */
  | { op: 'collect' }
  /** An operator deletes the item by hand, whatever it holds. */
  | { op: 'delete' };

const who = fc.constantFrom(...ACTORS);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant('acquire' as const),
      who,
      ttl: fc.integer({ min: 1, max: 40 }),
      rid: fc.option(fc.constantFrom('r1', 'r2', 'r3'), { nil: undefined }),
      reentrant: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('grantUnread' as const),
      who,
      ttl: fc.integer({ min: 1, max: 40 }),
      behind: fc.constantFrom(0, 0, 1, 3),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('release' as const), who, pick: fc.nat() }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('renew' as const),
      who,
      pick: fc.nat(),
      ttl: fc.integer({ min: 1, max: 40 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({ op: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 30 }) }),
  },
  { weight: 1, arbitrary: fc.constant({ op: 'collect' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'delete' as const }) },
);

/** What a client has been told it holds: token -> lease. */
interface Told {
  owner: string;
  client: string;
  expiresAt: number;
}

const sameActor = (a: { owner?: string; client?: string; clientId?: string } | undefined, b: Actor) =>
  a !== undefined && a.owner === b.owner && (a.client ?? a.clientId) === b.client;

async function expectRefusalOrError<T>(run: () => Promise<T>): Promise<T | LatchkeyError> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof LatchkeyError) return error;
    throw error;
  }
}

describe('lock rules under random histories', () => {
  it('never two live holders; tokens strictly increase; an expired lease never blocks; retries are idempotent', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(opArb, fc.boolean()), { minLength: 1, maxLength: 120 }),
        async (steps) => {
          const lock = new MemoryLock();
          let now = START;
          const told = new Map<number, Told>();
          const issued: number[] = [];
          let lastServed: { who: Actor; rid: string; token: number } | undefined;

          for (const [op, duplicated] of steps) {
            // Any write may be delivered twice (a lost response and the SDK's retry): outcomes must not change.
            lock.duplicateDelivery = duplicated;
            if (op.op === 'tick') {
              now += op.ms;
              continue;
            }
            if (op.op === 'collect' || op.op === 'delete') {
              if (op.op === 'collect' && liveHolder(lock.item, now)) continue;
              // Deleting a live lock by hand ends its lease by force: only fencing protects its holder's
              // writes from here on (the next token is larger), so the holder's belief no longer counts.
              if (op.op === 'delete') told.clear();
              lock.item = undefined;
              // At least a millisecond passes before the next grant, on every grantor's clock (the
              // slowest is 3 ms behind): across a deletion, tokens rely on the clock's floor.
              now += 4;
              continue;
            }
            const before = structuredClone(lock.item);
            const holderBefore = liveHolder(before, now);
            if (op.op === 'grantUnread') {
              // One transaction: a lost answer's retry carries the same ClientRequestToken and is
              // applied at most once, so it is never delivered twice here.
              lock.duplicateDelivery = false;
              const at = now - op.behind;
              const grantee = {
                name: 'L',
                owner: op.who.owner,
                clientId: op.who.client,
                tenure: lease(op.ttl),
              };
              const { write, grant } = clockFencedGrant(grantee, at, `unread-${issued.length}`);
              const result = await lock.tryWrite(write);
              const fenceBefore = before?.[A.fence];
              if (!result.ok) {
                expect(lock.item).toEqual(before); // a refusal changes nothing
                // Refused a lock free by every rule but its counter: only at or past the clock's floor.
                if (!liveHolder(before, at)) expect(fenceBefore).toBeGreaterThanOrEqual(fenceFloor(at) + 1);
                continue;
              }
              expect(holderBefore).toBeUndefined();
              for (const earlier of issued) expect(grant.fencingToken).toBeGreaterThan(earlier);
              issued.push(grant.fencingToken);
              told.set(grant.fencingToken, { ...op.who, expiresAt: leaseEnd(grant) ?? 0 });
            } else if (op.op === 'acquire') {
              const out = await expectRefusalOrError(() =>
                lock.run(
                  acquireProtocol(
                    {
                      name: 'L',
                      owner: op.who.owner,
                      clientId: op.who.client,
                      tenure: lease(op.ttl),
                      requestId: op.rid,
                      reentrant: op.reentrant,
                    },
                    now,
                  ),
                ),
              );
              const isReplay =
                op.rid !== undefined &&
                before?.[A.grantRequest] === requestKey(op.who.owner, op.who.client, op.rid);
              if (out instanceof LatchkeyError) {
                // Only a retry of a request whose lease has ended may fail.
                expect(out.code).toBe('LEASE_EXPIRED');
                expect(isReplay).toBe(true);
                continue;
              }
              if (!holderBefore && !isReplay) expect(out.acquired).toBe(true); // an expired lease never blocks
              if (isReplay && out.acquired && lastServed) {
                expect(out.grant.fencingToken).toBe(lastServed.token); // a retry gets the same grant
                expect(out.replayed).toBe(true);
              }
              if (!out.acquired) {
                expect(holderBefore).toBeDefined();
                expect(out.holder?.clientId).toBe(holderBefore?.clientId);
                continue;
              }
              const token = out.grant.fencingToken;
              if (!out.replayed && out.grant.reentry === 1) {
                // A fresh grant: strictly above every token ever issued, even across deletions.
                for (const earlier of issued) expect(token).toBeGreaterThan(earlier);
                issued.push(token);
                told.set(token, { ...op.who, expiresAt: leaseEnd(out.grant) ?? 0 });
              } else {
                // A replay or a re-entry: only ever of the caller's own grant (its principal and client).
                expect(sameActor(told.get(token), op.who)).toBe(true);
              }
              expect(out.grant).toMatchObject({ owner: op.who.owner, clientId: op.who.client });
              if (op.rid !== undefined) lastServed = { who: op.who, rid: op.rid, token };
            } else {
              const token = issued.length ? (issued[op.pick % issued.length] as number) : 1;
              const rightful = sameActor(holderBefore, op.who) && holderBefore?.fencingToken === token;
              // A grant recorded for another principal: FORBIDDEN, whatever client and token were named.
              const foreign = before?.[A.holder] !== undefined && before[A.owner] !== op.who.owner;
              const refused = (out: unknown) => {
                expect(out instanceof LatchkeyError).toBe(!rightful);
                if (!(out instanceof LatchkeyError)) return false;
                if (foreign) expect(out.code).toBe('FORBIDDEN');
                else expect(out.code).not.toBe('FORBIDDEN');
                expect(lock.item).toEqual(before); // a refusal changes nothing
                return true;
              };
              if (op.op === 'release') {
                const out = await expectRefusalOrError(() =>
                  lock.run(
                    releaseProtocol(
                      { name: 'L', owner: op.who.owner, clientId: op.who.client, fencingToken: token },
                      now,
                    ),
                  ),
                );
                refused(out);
                if (!(out instanceof LatchkeyError)) {
                  expect(out.remaining).toBe((holderBefore?.reentry ?? 1) - 1);
                  if (out.remaining === 0) told.delete(token);
                }
              } else {
                const out = await expectRefusalOrError(() =>
                  lock.run(
                    renewProtocol(
                      {
                        name: 'L',
                        owner: op.who.owner,
                        clientId: op.who.client,
                        fencingToken: token,
                        ttlMs: op.ttl,
                      },
                      now,
                    ),
                  ),
                );
                refused(out);
                if (!(out instanceof LatchkeyError)) {
                  expect(leaseEnd(out.grant)).toBe(now + op.ttl);
                  told.set(token, { ...op.who, expiresAt: leaseEnd(out.grant) ?? 0 });
                }
              }
            }
            // Safety: every lease a client still believes in is the same lease.
            const live = [...told.entries()].filter(([, t]) => t.expiresAt > now);
            expect(new Set(live.map(([token]) => token)).size).toBeLessThanOrEqual(1);
            // ...and it is the one the item records.
            if (live.length) expect(liveHolder(lock.item, now)?.fencingToken).toBe(live[0]?.[0]);
          }
        },
      ),
      { numRuns: 2000 },
    );
  }, 60_000); // two thousand histories: seconds, more on a loaded machine
});

// Any item our writes can leave behind: held (or lapsed), released, or absent.
const itemArb = (now: number): fc.Arbitrary<Item | undefined> => {
  const grantRequest = fc.option(
    fc.constantFrom(requestKey(ALICE, 'a', 'r1'), requestKey(ALICE, 'b', 'r1'), requestKey(BOB, 'a', 'r1')),
    { nil: undefined },
  );
  const held = fc.record({
    [A.owner]: fc.constantFrom(ALICE, BOB),
    [A.holder]: fc.constantFrom(...CLIENTS),
    [A.fence]: fc.integer({ min: 1, max: 5 }),
    [A.expiresAt]: fc.integer({ min: now - 5, max: now + 5 }),
    [A.reentry]: fc.integer({ min: 1, max: 3 }),
    [A.grantRequest]: grantRequest,
  });
  const released = fc.record({ [A.fence]: fc.integer({ min: 1, max: 5 }), [A.grantRequest]: grantRequest });
  return fc.oneof(held, released, fc.constant(undefined));
};

/** Without contention, a protocol ends after at most two writes: a refusal never names a write that would fail too. */
function settlesWithoutContention<O>(protocol: Protocol<O>, item: Item | undefined): void {
  if (!protocol.first.condition || evaluate(protocol.first.condition, item)) return;
  let next: ReturnType<Protocol<O>['onRefused']>;
  try {
    next = protocol.onRefused(item);
  } catch (error) {
    expect(error).toBeInstanceOf(LatchkeyError);
    return;
  }
  if ('write' in next && next.write.condition) expect(evaluate(next.write.condition, item)).toBe(true);
}

describe('refusals are explained consistently with the conditions', () => {
  const now = START;
  it('acquire', () => {
    fc.assert(
      fc.property(
        itemArb(now),
        who,
        fc.option(fc.constant('r1'), { nil: undefined }),
        fc.boolean(),
        (item, c, rid, reentrant) => {
          settlesWithoutContention(
            acquireProtocol(
              {
                name: 'L',
                owner: c.owner,
                clientId: c.client,
                tenure: lease(10),
                requestId: rid,
                reentrant,
              },
              now,
            ),
            item,
          );
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('release and renew', () => {
    fc.assert(
      fc.property(itemArb(now), who, fc.integer({ min: 1, max: 5 }), (item, c, token) => {
        const cmd = { name: 'L', owner: c.owner, clientId: c.client, fencingToken: token };
        settlesWithoutContention(releaseProtocol(cmd, now), item);
        settlesWithoutContention(renewProtocol({ ...cmd, ttlMs: 10 }, now), item);
        // A grant recorded for another principal: never written, refused FORBIDDEN whatever was named.
        const foreign = item?.[A.holder] !== undefined && item[A.owner] !== c.owner;
        if (foreign) {
          expect(evaluate(releaseProtocol(cmd, now).first.condition as Condition, item)).toBe(false);
          expect(evaluate(renewProtocol({ ...cmd, ttlMs: 10 }, now).first.condition as Condition, item)).toBe(
            false,
          );
          expect(() => releaseProtocol(cmd, now).onRefused(item)).toThrow(
            expect.objectContaining({ code: 'FORBIDDEN' }),
          );
          expect(() => renewProtocol({ ...cmd, ttlMs: 10 }, now).onRefused(item)).toThrow(
            expect.objectContaining({ code: 'FORBIDDEN' }),
          );
        }
        // Anything else refused is not explained as another principal's.
        for (const protocol of [releaseProtocol(cmd, now), renewProtocol({ ...cmd, ttlMs: 10 }, now)]) {
          if (foreign || evaluate(protocol.first.condition as Condition, item)) continue;
          try {
            protocol.onRefused(item);
          } catch (error) {
            expect(error).not.toMatchObject({ code: 'FORBIDDEN' });
          }
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('lock rules, by example', () => {
  it('an expired lease is taken over at once, with a larger token', async () => {
    const lock = new MemoryLock();
    const first = await lock.run(
      acquireProtocol({ name: 'L', owner: ALICE, clientId: 'a', tenure: lease(1000) }, START),
    );
    const refused = await lock.run(
      acquireProtocol({ name: 'L', owner: ALICE, clientId: 'b', tenure: lease(1000) }, START + 999),
    );
    const taken = await lock.run(
      acquireProtocol({ name: 'L', owner: ALICE, clientId: 'b', tenure: lease(1000) }, START + 1000),
    );
    expect(refused).toMatchObject({ acquired: false, holder: { clientId: 'a' }, retryAfterMs: 1 });
    expect(taken.acquired && first.acquired && taken.grant.fencingToken > first.grant.fencingToken).toBe(
      true,
    );
  });

  it('the first token of a lock comes from the clock floor', async () => {
    const lock = new MemoryLock();
    const out = await lock.run(
      acquireProtocol({ name: 'L', owner: ALICE, clientId: 'a', tenure: lease(1000) }, START + 0.7),
    );
    expect(out.acquired && out.grant.fencingToken).toBe(fenceFloor(START) + 1);
  });

  it('reentrancy is opt-in and counts down to free', async () => {
    const lock = new MemoryLock();
    const grant = await lock.run(
      acquireProtocol({ name: 'L', owner: ALICE, clientId: 'a', tenure: lease(1000) }, START),
    );
    const token = grant.acquired ? grant.grant.fencingToken : 0;
    const again = await lock.run(
      acquireProtocol({ name: 'L', owner: ALICE, clientId: 'a', tenure: lease(1000) }, START + 1),
    );
    expect(again.acquired).toBe(false);
    const reentered = await lock.run(
      acquireProtocol(
        { name: 'L', owner: ALICE, clientId: 'a', tenure: lease(5000), reentrant: true },
        START + 1,
      ),
    );
    expect(reentered).toMatchObject({
      acquired: true,
      grant: { fencingToken: token, reentry: 2, held: { expiresAt: START + 1000 } },
    });
    expect(
      await lock.run(
        releaseProtocol({ name: 'L', owner: ALICE, clientId: 'a', fencingToken: token }, START + 2),
      ),
    ).toMatchObject({ remaining: 1 });
    expect(liveHolder(lock.item, START + 2)?.clientId).toBe('a');
    expect(
      await lock.run(
        releaseProtocol({ name: 'L', owner: ALICE, clientId: 'a', fencingToken: token }, START + 3),
      ),
    ).toMatchObject({ remaining: 0 });
    expect(liveHolder(lock.item, START + 3)).toBeUndefined();
  });

  it('release and renew by a stranger or with a stale token are refused and change nothing', async () => {
    const lock = new MemoryLock();
    const grant = await lock.run(
      acquireProtocol({ name: 'L', owner: ALICE, clientId: 'a', tenure: lease(1000) }, START),
    );
    const token = grant.acquired ? grant.grant.fencingToken : 0;
    const snapshot = structuredClone(lock.item);
    // Each refusal names what differs: the client id (the token was right), or the token.
    await expect(
      lock.run(releaseProtocol({ name: 'L', owner: ALICE, clientId: 'b', fencingToken: token }, START)),
    ).rejects.toMatchObject({
      code: 'NOT_HOLDER',
      message: `b does not hold L with fencing token ${token}: that token is held by client a: send the client_id that acquired it`,
    });
    await expect(
      lock.run(
        renewProtocol({ name: 'L', owner: ALICE, clientId: 'a', fencingToken: token - 1, ttlMs: 9 }, START),
      ),
    ).rejects.toMatchObject({
      code: 'NOT_HOLDER',
      message: `a does not hold L with fencing token ${token - 1}: it is held by a with another fencing token`,
    });
    await expect(
      lock.run(
        renewProtocol(
          { name: 'L', owner: ALICE, clientId: 'a', fencingToken: token, ttlMs: 9 },
          START + 1000,
        ),
      ),
    ).rejects.toMatchObject({ code: 'LEASE_EXPIRED' });
    expect(lock.item).toEqual(snapshot);
  });

  it('release and renew by another principal, with the holder’s client id and token, are refused FORBIDDEN and change nothing', async () => {
    const lock = new MemoryLock();
    const grant = await lock.run(
      acquireProtocol({ name: 'L', owner: ALICE, clientId: 'a', tenure: lease(1000) }, START),
    );
    const token = grant.acquired ? grant.grant.fencingToken : 0;
    const snapshot = structuredClone(lock.item);
    const stolen = { name: 'L', owner: BOB, clientId: 'a', fencingToken: token };
    await expect(lock.run(releaseProtocol(stolen, START + 1))).rejects.toMatchObject({
      code: 'FORBIDDEN',
      status: 403,
    });
    await expect(lock.run(renewProtocol({ ...stolen, ttlMs: 5000 }, START + 1))).rejects.toMatchObject({
      code: 'FORBIDDEN',
    });
    // Nor may it re-enter, or replay the holder's request.
    const reentered = await lock.run(
      acquireProtocol(
        { name: 'L', owner: BOB, clientId: 'a', tenure: lease(1000), reentrant: true },
        START + 1,
      ),
    );
    expect(reentered).toMatchObject({ acquired: false, holder: { clientId: 'a' } });
    expect(lock.item).toEqual(snapshot);
    // The owner still can.
    expect(await lock.run(releaseProtocol({ ...stolen, owner: ALICE }, START + 2))).toMatchObject({
      remaining: 0,
    });
  });

  it('a retried acquire whose lease ended is refused, never granted twice', async () => {
    const lock = new MemoryLock();
    const cmd = { name: 'L', owner: ALICE, clientId: 'a', tenure: lease(1000), requestId: 'r1' };
    const grant = await lock.run(acquireProtocol(cmd, START));
    const token = grant.acquired ? grant.grant.fencingToken : 0;
    await lock.run(
      releaseProtocol({ name: 'L', owner: ALICE, clientId: 'a', fencingToken: token }, START + 1),
    );
    await expect(lock.run(acquireProtocol(cmd, START + 2))).rejects.toMatchObject({ code: 'LEASE_EXPIRED' });
    expect(liveHolder(lock.item, START + 2)).toBeUndefined();
  });
});
