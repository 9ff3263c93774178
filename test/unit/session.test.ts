/** The session rules, evaluated exactly as DynamoDB would apply them (expr.ts). */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyUpdate, evaluate, type Item } from '../../lambdas/core/expr';
import type { ItemWrite } from '../../lambdas/core/items';
import { localPrincipal } from '../../lambdas/core/principal';
import {
  createWrite,
  endWrite,
  heartbeatIntervalMs,
  heartbeatWrite,
  type Session,
  sessionDueAt,
  sessionOfItem,
  sessionState,
  sweptWrite,
} from '../../lambdas/core/session';

const T0 = 1_800_000_000_000;
/** The principal that owns the session, and another one that reuses its client id. */
const ALICE = localPrincipal('alice');
const MALLORY = localPrincipal('mallory');
const apply = (item: Item | undefined, write: ItemWrite): Item | undefined =>
  !write.condition || evaluate(write.condition, item) ? applyUpdate(item, write.update) : undefined;
const session = (item: Item | undefined): Session => sessionOf(item);
const sessionOf = (item: Item | undefined) => sessionOfItem('s', item as Item);

describe('session lifecycle', () => {
  const created = apply(
    undefined,
    createWrite(ALICE, 'alice', { ttlMs: 3_000, graceMs: 1_000, lockDelayMs: 0 }, T0),
  ) as Item;

  it('is created once, alive until ttl, in grace until ttl + grace, then expired', () => {
    expect(
      apply(created, createWrite(ALICE, 'bob', { ttlMs: 3_000, graceMs: 0, lockDelayMs: 0 }, T0)),
    ).toBeUndefined(); // never overwritten
    const s = session(created);
    expect(s).toMatchObject({
      owner: ALICE,
      clientId: 'alice',
      deadline: T0 + 3_000,
      expiresAt: T0 + 4_000,
    });
    expect(sessionState(s, T0)).toBe('alive');
    expect(sessionState(s, T0 + 2_999)).toBe('alive');
    expect(sessionState(s, T0 + 3_000)).toBe('grace');
    expect(sessionState(s, T0 + 3_999)).toBe('grace');
    expect(sessionState(s, T0 + 4_000)).toBe('expired');
    expect(heartbeatIntervalMs(3_000)).toBe(1_000);
  });

  it('a heartbeat in time (even in grace) extends it from now; a late or foreign one changes nothing', () => {
    const s = session(created);
    const inGrace = apply(created, heartbeatWrite(s, T0 + 3_500)) as Item;
    expect(session(inGrace)).toMatchObject({ deadline: T0 + 6_500, expiresAt: T0 + 7_500 });
    expect(apply(created, heartbeatWrite(s, T0 + 4_000))).toBeUndefined(); // expired: too late
    expect(apply(created, heartbeatWrite({ ...s, clientId: 'mallory' }, T0))).toBeUndefined();
    // Another principal with the very same client id is a stranger too.
    expect(apply(created, heartbeatWrite({ ...s, owner: MALLORY }, T0))).toBeUndefined();
    expect(apply(created, heartbeatWrite(s, T0))).toBeDefined();
    expect(apply(undefined, heartbeatWrite(s, T0))).toBeUndefined();
  });

  it('ends once: closed only while live, expired only once due, never after it ended', () => {
    expect(
      apply(created, endWrite({ owner: ALICE, clientId: 'alice' }, 'expired', T0 + 3_999)),
    ).toBeUndefined();
    const expired = apply(
      created,
      endWrite({ owner: ALICE, clientId: 'alice' }, 'expired', T0 + 4_000),
    ) as Item;
    expect(session(expired)).toMatchObject({ endedAt: T0 + 4_000, endReason: 'expired' });
    expect(sessionState(session(expired), T0)).toBe('ended');
    expect(apply(expired, endWrite({ owner: ALICE, clientId: 'alice' }, 'closed', T0))).toBeUndefined();
    expect(apply(expired, heartbeatWrite(session(created), T0 + 1))).toBeUndefined();
    expect(
      apply(created, endWrite({ owner: ALICE, clientId: 'alice' }, 'closed', T0 + 4_000)),
    ).toBeUndefined(); // too late
    expect(apply(created, endWrite({ owner: ALICE, clientId: 'bob' }, 'closed', T0))).toBeUndefined();
    expect(apply(created, endWrite({ owner: MALLORY, clientId: 'alice' }, 'closed', T0))).toBeUndefined();
    expect(
      apply(created, endWrite({ owner: MALLORY, clientId: 'alice' }, 'expired', T0 + 4_000)),
    ).toBeUndefined();
    const closed = apply(created, endWrite({ owner: ALICE, clientId: 'alice' }, 'closed', T0 + 10)) as Item;
    expect(session(closed).endReason).toBe('closed');
    // An operator ends it like its client would, while it lives, and says so.
    const byOperator = endWrite({ owner: ALICE, clientId: 'alice' }, 'ended-by-operator', T0 + 10);
    expect(session(apply(created, byOperator) as Item).endReason).toBe('ended-by-operator');
    expect(
      apply(created, endWrite({ owner: ALICE, clientId: 'alice' }, 'ended-by-operator', T0 + 4_000)),
    ).toBeUndefined(); // expired already: the sweeper's
    expect(session({ ...closed, end_reason: 'something-newer' }).endReason).toBeUndefined();
    // Due at once until swept (its locks released), then nothing is due; only an ended session is swept.
    expect(sessionDueAt(session(closed), T0 + 20)).toBe(T0 + 20);
    expect(apply(created, sweptWrite(T0 + 30))).toBeUndefined();
    const swept = apply(closed, sweptWrite(T0 + 30)) as Item;
    expect(sessionDueAt(session(swept), T0 + 40)).toBeUndefined();
    // Housekeeping: never collectable before it is swept, due in the index until then.
    expect(createWrite(ALICE, 'alice', { ttlMs: 3_000, graceMs: 1_000, lockDelayMs: 0 }, T0)).toMatchObject({
      gcFrom: null,
      sweepAt: T0 + 4_000,
    });
    expect(endWrite({ owner: ALICE, clientId: 'alice' }, 'closed', T0 + 10)).toMatchObject({
      sweepAt: T0 + 10,
    });
    expect(sweptWrite(T0 + 30)).toMatchObject({ sweepAt: null, gcFrom: T0 + 30 });
  });

  it('a heartbeat and an expiry racing: exactly one applies, in either order', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 6_000 }), fc.boolean(), (at, heartbeatFirst) => {
        const s = session(created);
        const beat = heartbeatWrite(s, at);
        const end = endWrite(s, 'expired', at);
        const first = heartbeatFirst ? beat : end;
        const second = heartbeatFirst ? end : beat;
        const afterFirst = apply(created, first);
        const afterBoth = afterFirst ? apply(afterFirst, second) : apply(created, second);
        // Never both; and the session is either extended (alive at `at`) or ended, per the clock.
        expect(afterFirst !== undefined && afterBoth !== undefined).toBe(false);
        const final = afterBoth ?? afterFirst;
        if (at < s.expiresAt) expect(final && session(final).endedAt).toBeUndefined();
        else expect(final && session(final).endReason).toBe('expired');
      }),
    );
  });
});
