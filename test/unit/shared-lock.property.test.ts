/**
 * Property tests of both modes together (read-write locks and semaphores), run through the same
 * protocol runner the DynamoDB store uses, against an in-memory item with DynamoDB's semantics,
 * every write possibly delivered twice.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LatchkeyError } from '../../lambdas/core/errors';
import { entryCount, liveEntries, sharedEntries } from '../../lambdas/core/holders';
import {
  LockAttr as A,
  type LockMode,
  lease,
  leaseEnd,
  liveGrants,
  liveHolder,
  type ReleaseCommand,
  type ReleaseOutcome,
  type RenewOutcome,
} from '../../lambdas/core/lock';
import { acquireProtocolIn, releaseProtocolIn, renewProtocolIn } from '../../lambdas/core/modes';
import { localPrincipal } from '../../lambdas/core/principal';
import { MemoryLock } from '../support/memory-lock';

const ALICE = localPrincipal('alice');
const BOB = localPrincipal('bob');
interface Actor {
  readonly owner: string;
  readonly client: string;
}
const ACTORS: readonly Actor[] = [
  { owner: ALICE, client: 'a' },
  { owner: ALICE, client: 'b' },
  { owner: BOB, client: 'a' },
  { owner: BOB, client: 'c' },
  { owner: BOB, client: 'd' },
];
const START = 1_800_000_000_000;

type Op =
  | {
      op: 'acquire';
      who: Actor;
      mode: LockMode;
      max: number | undefined;
      ttl: number;
      rid: string | undefined;
      reentrant: boolean;
    }
  | {
      op: 'release' | 'renew';
      who: Actor;
      pick: number;
      ttl: number;
      hint: LockMode;
      /** A release sent again with its release_id, as after a lost answer (the SDK's retry). */
      resend: boolean;
    }
  | { op: 'tick'; ms: number }
  /** An earlier count-down of a grant sent again late (an attempt still in flight when the SDK retried). */
  | { op: 'late'; pick: number };

const who = fc.constantFrom(...ACTORS);
const mode = fc.constantFrom<LockMode>('exclusive', 'shared');
const opArb = (maxes: readonly (number | undefined)[]): fc.Arbitrary<Op> =>
  fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record({
        op: fc.constant('acquire' as const),
        who,
        mode,
        max: fc.constantFrom(...maxes),
        ttl: fc.integer({ min: 1, max: 40 }),
        rid: fc.option(fc.constantFrom('r1', 'r2'), { nil: undefined }),
        reentrant: fc.boolean(),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constantFrom('release' as const, 'renew' as const),
        who,
        pick: fc.nat(),
        ttl: fc.integer({ min: 1, max: 40 }),
        hint: mode,
        resend: fc.boolean(),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({ op: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 30 }) }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('late' as const), pick: fc.nat() }) },
  );

/** A grant a client was told it holds. */
interface Told {
  readonly owner: string;
  readonly client: string;
  readonly mode: LockMode;
  expiresAt: number;
  reentry: number;
}

async function attempt<T>(run: () => Promise<T>): Promise<T | LatchkeyError> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof LatchkeyError) return error;
    throw error;
  }
}

async function runHistory(steps: readonly (readonly [Op, boolean])[]): Promise<void> {
  const lock = new MemoryLock();
  let now = START;
  const told = new Map<number, Told>();
  const issued: number[] = [];
  let releases = 0;
  /** Releases that counted a grant down (it stayed held), by token: each may come back late. */
  const countedDown = new Map<number, ReleaseCommand[]>();
  for (const [op, duplicated] of steps) {
    lock.duplicateDelivery = duplicated;
    if (op.op === 'tick') {
      now += op.ms;
      continue;
    }
    if (op.op === 'late') {
      const held = [...countedDown.entries()].filter(([token]) => told.has(token));
      const [, sent] = held.length ? (held[op.pick % held.length] as [number, ReleaseCommand[]]) : [0, []];
      // One of the grant's last 8 count-downs (lock.ts RECENT_RELEASES) arrives again: nothing moves.
      const cmd = sent.slice(-8)[op.pick % Math.max(1, Math.min(8, sent.length))];
      if (!cmd) continue;
      const grantsBefore = liveGrants(lock.item, now);
      const again = await attempt(() => lock.run(releaseProtocolIn(cmd, now)));
      // Another principal's grant recorded meanwhile: FORBIDDEN (it tells nothing about that grant).
      const foreign = lock.item?.[A.holder] !== undefined && lock.item[A.owner] !== cmd.owner;
      const expected = foreign ? ['FORBIDDEN'] : ['LEASE_EXPIRED', 'NOT_HOLDER'];
      if (again instanceof LatchkeyError) expect(expected).toContain(again.code);
      expect(liveGrants(lock.item, now)).toEqual(grantsBefore);
      continue;
    }
    const before = structuredClone(lock.item);
    if (op.op === 'acquire') {
      const out = await attempt(() =>
        lock.run(
          acquireProtocolIn(
            {
              name: 'L',
              owner: op.who.owner,
              clientId: op.who.client,
              tenure: lease(op.ttl),
              requestId: op.rid,
              reentrant: op.reentrant,
              mode: op.mode,
              maxHolders: op.mode === 'shared' ? op.max : undefined,
            },
            now,
          ),
        ),
      );
      if (out instanceof LatchkeyError) {
        expect(['LEASE_EXPIRED', 'MAX_HOLDERS_MISMATCH']).toContain(out.code);
        expect(lock.item).toEqual(before); // a refusal changes nothing
        continue;
      }
      const live = liveGrants(before, now);
      const mineLive = live.find((g) => g.owner === op.who.owner && g.clientId === op.who.client);
      if (!out.acquired) {
        expect(lock.item).toEqual(before);
        // Refused only when something live is in the way.
        const blocks =
          op.mode === 'exclusive'
            ? live.length > 0
            : liveHolder(before, now) !== undefined ||
              mineLive !== undefined ||
              live.length >= (op.max ?? 1_000);
        expect(blocks).toBe(true);
        continue;
      }
      const { grant } = out;
      expect(grant).toMatchObject({ owner: op.who.owner, clientId: op.who.client });
      if (!out.replayed && grant.reentry === 1) {
        for (const earlier of issued) expect(grant.fencingToken).toBeGreaterThan(earlier);
        issued.push(grant.fencingToken);
        expect(grant.mode).toBe(op.mode);
        told.set(grant.fencingToken, {
          owner: op.who.owner,
          client: op.who.client,
          mode: op.mode,
          expiresAt: leaseEnd(grant) ?? 0,
          reentry: 1,
        });
      } else {
        const mine = told.get(grant.fencingToken);
        expect(mine).toMatchObject({ owner: op.who.owner, client: op.who.client });
        if (mine && !out.replayed) mine.reentry = grant.reentry;
      }
    } else {
      const tokens = [...told.keys()];
      const token = tokens.length ? (tokens[op.pick % tokens.length] as number) : 1;
      const cmd = {
        name: 'L',
        owner: op.who.owner,
        clientId: op.who.client,
        fencingToken: token,
        mode: op.hint,
        releaseId: `rel-${++releases}`,
      };
      const belief = told.get(token);
      const rightful =
        belief !== undefined &&
        belief.owner === op.who.owner &&
        belief.client === op.who.client &&
        belief.expiresAt > now;
      const out = await attempt<ReleaseOutcome | RenewOutcome>(() =>
        op.op === 'release'
          ? lock.run(releaseProtocolIn(cmd, now))
          : lock.run(renewProtocolIn({ ...cmd, ttlMs: op.ttl }, now)),
      );
      // The rightful holder of a live grant is never refused, whatever mode it hinted; anyone else is.
      expect(out instanceof LatchkeyError).toBe(!rightful);
      if (op.op === 'release' && op.resend && !(out instanceof LatchkeyError)) {
        // Sent again (its answer lost): answered as it stands, never counted down a second time; a
        // release that ended the grant is answered so again (the item remembers it), never refused.
        const afterFirst = structuredClone(lock.item);
        const again = await attempt(() => lock.run(releaseProtocolIn(cmd, now)));
        expect(again).not.toBeInstanceOf(LatchkeyError);
        expect(again).toEqual((out as ReleaseOutcome).remaining === 0 ? { ...out, again: true } : out);
        expect(liveGrants(lock.item, now)).toEqual(liveGrants(afterFirst, now));
      }
      if (out instanceof LatchkeyError) expect(lock.item).toEqual(before);
      else if (belief && 'remaining' in out) {
        expect(out.remaining).toBe(belief.reentry - 1);
        if (out.remaining > 0) countedDown.set(token, [...(countedDown.get(token) ?? []), cmd]);
        belief.reentry -= 1;
        if (belief.reentry === 0) told.delete(token);
      } else if (belief && 'grant' in out) {
        expect(leaseEnd(out.grant)).toBe(now + op.ttl);
        belief.expiresAt = now + op.ttl;
      }
    }
    // Safety: the grants clients believe live never conflict...
    const believed = [...told.entries()].filter(([, t]) => t.expiresAt > now);
    const exclusive = believed.filter(([, t]) => t.mode === 'exclusive');
    if (exclusive.length > 0) expect(believed.length).toBe(1);
    // ...a semaphore never has more holders than its N...
    const n = lock.item?.max_holders;
    if (typeof n === 'number' && entryCount(lock.item) > 0)
      expect(liveEntries(lock.item, now).length).toBeLessThanOrEqual(n);
    // ...every one is recorded as the item's live grant...
    const recorded = liveGrants(lock.item, now).map((g) => g.fencingToken);
    for (const [token] of believed) expect(recorded).toContain(token);
    // ...and the count of entries is exact.
    expect(entryCount(lock.item)).toBe(sharedEntries(lock.item).length);
  }
}

describe('a release sent again late (an attempt still in flight when the SDK retried)', () => {
  it('is answered, not applied, after later releases of the same grant, in either mode, up to the last 8', async () => {
    for (const mode of ['exclusive', 'shared'] as const) {
      const lock = new MemoryLock();
      const me = { name: 'L', owner: ALICE, clientId: 'a', tenure: lease(40), reentrant: true, mode };
      let token = 0;
      for (let i = 0; i < 11; i++) {
        const out = await lock.run(acquireProtocolIn(me, START));
        if (!out.acquired) throw new Error('not acquired');
        token = out.grant.fencingToken;
      }
      const release = (id: string) =>
        lock.run(
          releaseProtocolIn(
            { name: 'L', owner: ALICE, clientId: 'a', fencingToken: token, mode, releaseId: id },
            START,
          ),
        );
      for (let i = 1; i <= 9; i++) expect(await release(`r${i}`)).toMatchObject({ remaining: 11 - i });
      // r2..r9 are the last 8: any of them again changes nothing.
      for (const late of ['r2', 'r5', 'r9']) expect(await release(late)).toMatchObject({ remaining: 2 });
      expect(liveGrants(lock.item, START)).toMatchObject([{ clientId: 'a', reentry: 2 }]);
      // r1 is past the last 8: it would count down again (send a holder's releases one after another).
      expect(await release('r1')).toMatchObject({ remaining: 1 });
    }
  });
});

const bob = { owner: 'arn:aws:iam::000000000000:user/bob', client: 'c' };
/**
 * Found by CI (seed 65216059): a re-entered lease counted down once, lapsed, then another principal
 * took the lock, and the count-down arrived again. The answer is FORBIDDEN, and nothing moves.
 */
const lateReleaseAfterAnotherPrincipal: [Op, boolean][] = [
  [
    { op: 'acquire', who: bob, mode: 'exclusive', max: undefined, ttl: 1, rid: undefined, reentrant: false },
    false,
  ],
  [
    { op: 'acquire', who: bob, mode: 'exclusive', max: undefined, ttl: 1, rid: undefined, reentrant: true },
    false,
  ],
  [{ op: 'release', who: bob, pick: 0, ttl: 1, hint: 'exclusive', resend: false }, false],
  [{ op: 'tick', ms: 1 }, false],
  [
    {
      op: 'acquire',
      who: { owner: 'arn:aws:iam::000000000000:user/alice', client: 'a' },
      mode: 'exclusive',
      max: undefined,
      ttl: 1,
      rid: undefined,
      reentrant: false,
    },
    false,
  ],
  [{ op: 'late', pick: 0 }, false],
];

describe('shared and exclusive modes under random histories', () => {
  it('never an exclusive lease beside another; never more than N; tokens increase across modes; no spurious refusal', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(opArb([undefined]), fc.boolean()), { minLength: 1, maxLength: 120 }),
        runHistory,
      ),
      { numRuns: 1500, examples: [[lateReleaseAfterAnotherPrincipal]] },
    );
  }, 120_000);

  it('semaphores: at most N holders, every holder asking for the same N', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(opArb([2, 3]), fc.boolean()), { minLength: 1, maxLength: 120 }),
        runHistory,
      ),
      { numRuns: 1500 },
    );
  }, 120_000);
});
