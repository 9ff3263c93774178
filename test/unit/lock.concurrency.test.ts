/**
 * Concurrent commands, with every interleaving of their writes that
 * fast-check's scheduler explores: DynamoDB applies each write atomically, but
 * a protocol's writes (a refusal and a second write) can interleave with
 * another client's.
 */
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { LatchkeyError } from '../../lambdas/core/errors';
import type { ItemWrite } from '../../lambdas/core/items';
import {
  acquireProtocol,
  lease,
  leaseEnd,
  liveHolder,
  type Protocol,
  releaseProtocol,
  renewProtocol,
  runProtocol,
} from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { MemoryLock } from '../support/memory-lock';

/** A principal and one of its clients; two principals use client id 'a'. */
interface Actor {
  readonly owner: string;
  readonly client: string;
}
const ALICE = localPrincipal('alice');
const BOB = localPrincipal('bob');

type Op =
  | { op: 'acquire'; who: Actor; reentrant: boolean; rid: string | undefined }
  | { op: 'release'; who: Actor; pick: number }
  | { op: 'renew'; who: Actor; pick: number };

const client = fc.constantFrom<Actor>(
  { owner: ALICE, client: 'a' },
  { owner: ALICE, client: 'b' },
  { owner: BOB, client: 'a' },
  { owner: BOB, client: 'c' },
);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    op: fc.constant('acquire' as const),
    who: client,
    reentrant: fc.boolean(),
    rid: fc.option(fc.constantFrom('r1', 'r2'), { nil: undefined }),
  }),
  fc.record({ op: fc.constant('release' as const), who: client, pick: fc.nat() }),
  fc.record({ op: fc.constant('renew' as const), who: client, pick: fc.nat() }),
);

const START = 1_800_000_000_000;
const TTL = 20;

it('concurrent acquire, release and renew never leave two live leases, and tokens only grow', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.scheduler(),
      fc.array(
        fc.record({
          ops: fc.array(opArb, { minLength: 2, maxLength: 5 }),
          tick: fc.integer({ min: 0, max: 25 }),
          duplicated: fc.boolean(),
        }),
        {
          minLength: 1,
          maxLength: 6,
        },
      ),
      async (s, rounds) => {
        const lock = new MemoryLock();
        let ids = 0;
        const tryWrite = s.scheduleFunction(async (write: ItemWrite) => lock.tryWrite(write));
        // Write ids name their command, so outcomes can be ordered by when their last write applied.
        const runCmd = <O>(p: Protocol<O>, cmd: number) => runProtocol(p, tryWrite, () => `c${cmd}:${++ids}`);
        let cmds = 0;
        let now = START;
        const told = new Map<number, { owner: string; client: string; expiresAt: number }>();
        /** The principal each token was granted to. */
        const grantedTo = new Map<number, string>();
        let highest = 0;

        for (const round of rounds) {
          lock.duplicateDelivery = round.duplicated;
          const tokens = [...told.keys(), highest];
          /** When a command's last write was applied (-1: never); outcomes are judged in that order. */
          const appliedAt = (cmd: number) =>
            Math.max(
              -1,
              ...[...lock.applied].filter(([id]) => id.startsWith(`c${cmd}:`)).map(([, at]) => at),
            );
          const attempt = async (op: Op, cmd: number) => {
            const run = <O>(p: Protocol<O>) => runCmd(p, cmd);
            let token = 0;
            try {
              if (op.op === 'acquire') {
                const out = await run(
                  acquireProtocol(
                    {
                      name: 'L',
                      owner: op.who.owner,
                      clientId: op.who.client,
                      tenure: lease(TTL),
                      reentrant: op.reentrant,
                      requestId: op.rid,
                    },
                    now,
                  ),
                );
                return { op, out };
              }
              token = tokens[op.pick % tokens.length] ?? 0;
              const named = { name: 'L', owner: op.who.owner, clientId: op.who.client, fencingToken: token };
              if (op.op === 'release') return { op, token, out: await run(releaseProtocol(named, now)) };
              return { op, token, out: await run(renewProtocol({ ...named, ttlMs: TTL }, now)) };
            } catch (error) {
              if (!(error instanceof LatchkeyError)) throw error;
              // A refusal (409 or 403), or every attempt lost a race (retryable 503): then none of its writes applied.
              if (error.code === 'UNAVAILABLE') expect(appliedAt(cmd)).toBe(-1);
              else if (error.code === 'FORBIDDEN') {
                // Only a release or renew, of a lock recorded for another principal, is refused as such.
                expect(op.op).not.toBe('acquire');
                expect(appliedAt(cmd)).toBe(-1);
              } else if (error.status !== 409) throw error;
              return { op, out: error };
            }
          };
          const ids = round.ops.map(() => ++cmds);
          const outcomes = await s.waitFor(
            Promise.all(round.ops.map((op, i) => attempt(op, ids[i] as number))),
          );
          const results = outcomes
            .map((outcome, i) => ({ outcome, at: appliedAt(ids[i] as number) }))
            .sort((x, y) => x.at - y.at)
            .map((x) => x.outcome);

          const fresh: number[] = [];
          for (const r of results) {
            if (r.out instanceof LatchkeyError) continue;
            if (r.op.op === 'acquire' && 'acquired' in r.out && r.out.acquired) {
              const { grant } = r.out;
              // Granted, re-entered or replayed: always the caller's own grant.
              expect(grant).toMatchObject({ owner: r.op.who.owner, clientId: r.op.who.client });
              if (grant.reentry === 1 && !r.out.replayed && !told.has(grant.fencingToken))
                fresh.push(grant.fencingToken);
              grantedTo.set(grant.fencingToken, grant.owner);
              told.set(grant.fencingToken, {
                owner: grant.owner,
                client: grant.clientId,
                expiresAt: leaseEnd(grant) ?? 0,
              });
            } else if (
              r.op.op === 'release' &&
              'remaining' in r.out &&
              r.out.remaining === 0 &&
              'token' in r
            ) {
              told.delete(r.token as number);
            } else if (r.op.op === 'renew' && 'grant' in r.out) {
              // Only the principal it was granted to renews it.
              expect(r.out.grant.owner).toBe(r.op.who.owner);
              expect(grantedTo.get(r.out.grant.fencingToken)).toBe(r.op.who.owner);
              told.set(r.out.grant.fencingToken, {
                owner: r.out.grant.owner,
                client: r.out.grant.clientId,
                expiresAt: leaseEnd(r.out.grant) ?? 0,
              });
            }
          }
          // Fresh tokens are distinct and above every token of earlier rounds.
          expect(new Set(fresh).size).toBe(fresh.length);
          for (const token of fresh) expect(token).toBeGreaterThan(highest);
          highest = Math.max(highest, ...fresh);
          // At most one lease believed live, and it is the one the item records.
          const live = [...told.entries()].filter(([, t]) => t.expiresAt > now);
          expect(live.length).toBeLessThanOrEqual(1);
          if (live[0]) expect(liveHolder(lock.item, now)?.fencingToken).toBe(live[0][0]);
          now += round.tick;
        }
      },
    ),
    { numRuns: 1000 },
  );
}, 60_000); // a thousand schedules: seconds, more on a loaded machine
