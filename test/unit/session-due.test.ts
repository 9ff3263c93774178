/**
 * The session's due index entry (core/session.ts: keepsDueEntry, heartbeatWrite, refileWrite),
 * evaluated exactly as DynamoDB would apply the writes (expr.ts), with the entry (`sweepAt`)
 * modelled as the storage adapters keep it. The properties hold for every history, not on average:
 * the entry is never later than the session's expiry (so the sweeper, reading `due_at <= now`,
 * finds every expired session no later than before), a client heartbeating at the recommended
 * interval is never due in the index while it lives, and such a client moves its entry exactly
 * once every n heartbeats.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyUpdate, evaluate, type Item } from '../../lambdas/core/expr';
import type { ItemWrite } from '../../lambdas/core/items';
import { localPrincipal } from '../../lambdas/core/principal';
import {
  createWrite,
  dueEntryMisfiled,
  dueLeadMs,
  endWrite,
  heartbeatIntervalMs,
  heartbeatWrite,
  keepsDueEntry,
  refileWrite,
  type Session,
  sessionOfItem,
} from '../../lambdas/core/session';

const T0 = 1_800_000_000_000;
const ALICE = localPrincipal('alice');

/** A session item and where its due entry is filed (undefined: not in the index). */
interface Stored {
  readonly item: Item;
  readonly filedAt: number | undefined;
}

/** One conditional write: the state after it, or undefined if refused. */
function apply(state: Stored | undefined, write: ItemWrite): Stored | undefined {
  if (write.condition && !evaluate(write.condition, state?.item)) return undefined;
  const filedAt = write.sweepAt === undefined ? state?.filedAt : (write.sweepAt ?? undefined);
  return { item: applyUpdate(state?.item, write.update), filedAt };
}

const sessionOf = (state: Stored): Session => sessionOfItem('s', state.item);

const open = (ttlMs: number, graceMs: number, at = T0): Stored =>
  apply(undefined, createWrite(ALICE, 'alice', { ttlMs, graceMs, lockDelayMs: 0 }, at)) as Stored;

/** What Sessions.heartbeat does: read, write; a keep overtaken meanwhile reads again. */
function heartbeat(state: Stored, now: number): { state: Stored; ok: boolean; moved: boolean } {
  const write = heartbeatWrite(sessionOf(state), now, state.filedAt);
  const after = apply(state, write);
  return after
    ? { state: after, ok: true, moved: after.filedAt !== state.filedAt }
    : { state, ok: false, moved: false };
}

const settings = fc.record({
  ttlMs: fc.integer({ min: 1_000, max: 3_600_000 }),
  graceMs: fc.integer({ min: 0, max: 60_000 }),
});

describe("a session's due entry", () => {
  it('is never later than the expiry, and after a heartbeat at `now` more than the lead ahead of now', () => {
    fc.assert(
      fc.property(
        settings,
        // Gaps between heartbeats, some on a clock behind the last one's (another function instance).
        fc.array(fc.integer({ min: -2_000, max: 200_000 }), { minLength: 1, maxLength: 60 }),
        ({ ttlMs, graceMs }, gaps) => {
          let state = open(ttlMs, graceMs);
          let now = T0;
          for (const gap of gaps) {
            now += gap;
            const before = sessionOf(state);
            const beat = heartbeat(state, now);
            state = beat.state;
            const s = sessionOf(state);
            const filed = state.filedAt as number;
            expect(filed).toBeLessThanOrEqual(s.expiresAt);
            if (beat.ok) {
              expect(s.expiresAt).toBe(now + ttlMs + graceMs);
              expect(filed).toBeGreaterThan(now + dueLeadMs(ttlMs));
            } else {
              // Refused only once expired: then the entry is due, so the sweeper finds it.
              expect(before.expiresAt).toBeLessThanOrEqual(now);
              expect(filed).toBeLessThanOrEqual(now);
              return;
            }
          }
        },
      ),
    );
  });

  it('is found by a sweeper at any time at or after the expiry, and never while a punctual client lives', () => {
    fc.assert(
      fc.property(
        settings,
        // Gaps no longer than the lead (the recommended interval and 10 %), then the client stops.
        fc.array(fc.integer({ min: 0, max: 1_000_000 }), { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 0, max: 10_000_000 }),
        ({ ttlMs, graceMs }, fractions, after) => {
          const lead = dueLeadMs(ttlMs);
          let state = open(ttlMs, graceMs);
          let now = T0;
          for (const f of fractions) {
            const next = now + Math.floor((lead * f) / 1_000_000);
            // Every instant before the next heartbeat: the entry is not due yet.
            expect(state.filedAt as number).toBeGreaterThan(next);
            const beat = heartbeat(state, next);
            expect(beat.ok).toBe(true);
            state = beat.state;
            now = next;
          }
          // The client stopped: expired at expiresAt, and due in the index by then.
          const s = sessionOf(state);
          const sweptAt = s.expiresAt + after;
          expect(state.filedAt as number).toBeLessThanOrEqual(sweptAt);
          expect(apply(state, endWrite(s, 'expired', sweptAt))).toBeDefined();
          expect(apply(state, endWrite(s, 'expired', s.expiresAt - 1))).toBeUndefined();
        },
      ),
    );
  });

  it('moves exactly once every n = ceil((ttl + grace - lead) / interval) heartbeats at the recommended interval', () => {
    fc.assert(
      fc.property(settings, fc.integer({ min: 1, max: 300 }), ({ ttlMs, graceMs }, beats) => {
        const interval = heartbeatIntervalMs(ttlMs);
        const n = Math.max(1, Math.ceil((ttlMs + graceMs - dueLeadMs(ttlMs)) / interval));
        let state = open(ttlMs, graceMs);
        const movedAt: number[] = [];
        for (let k = 1; k <= beats; k++) {
          const beat = heartbeat(state, T0 + k * interval);
          expect(beat.ok).toBe(true);
          if (beat.moved) movedAt.push(k);
          state = beat.state;
        }
        expect(movedAt).toEqual(Array.from({ length: Math.floor(beats / n) }, (_, i) => (i + 1) * n));
      }),
    );
  });

  it('at the defaults (ttl 30 s, grace 5 s, a heartbeat every 10 s) moves every 3rd heartbeat: 2/3 index writes each', () => {
    let state = open(30_000, 5_000);
    const moves: boolean[] = [];
    for (let k = 1; k <= 60; k++) {
      const beat = heartbeat(state, T0 + k * 10_000);
      moves.push(beat.moved);
      state = beat.state;
    }
    expect(moves.filter(Boolean)).toHaveLength(20);
    // Each move changes the index key: a delete and a put. Before, all 60 moved: 120 index writes.
    expect((2 * moves.filter(Boolean).length) / moves.length).toBeCloseTo(2 / 3, 10);
  });

  it('two heartbeats racing (either order, any clocks) never leave the entry later than the expiry', () => {
    fc.assert(
      fc.property(
        settings,
        fc.integer({ min: 0, max: 120_000 }),
        fc.integer({ min: -3_000, max: 3_000 }),
        fc.integer({ min: 0, max: 120_000 }),
        fc.boolean(),
        ({ ttlMs, graceMs }, firstBeat, skew, lastBeatGap, aFirst) => {
          // A state somewhere in a punctual history: created, then a heartbeat.
          let state = open(ttlMs, graceMs);
          const t1 = T0 + Math.min(firstBeat, heartbeatIntervalMs(ttlMs));
          state = heartbeat(state, t1).state;
          // A and B both read this state, then write in some order (A at a, B at a + skew).
          const a = t1 + Math.min(lastBeatGap, ttlMs + graceMs - 1);
          const b = a + skew;
          const seen = state;
          const writeA = heartbeatWrite(sessionOf(seen), a, seen.filedAt);
          const writeB = heartbeatWrite(sessionOf(seen), b, seen.filedAt);
          let after = seen;
          for (const [write, at] of aFirst
            ? ([
                [writeA, a],
                [writeB, b],
              ] as const)
            : ([
                [writeB, b],
                [writeA, a],
              ] as const)) {
            const applied = apply(after, write);
            if (applied) after = applied;
            // Refused: only a keep overtaken by a later expiry (or an expiry); it reads again.
            else if (sessionOf(after).expiresAt > at) after = heartbeat(after, at).state;
            expect(after.filedAt as number).toBeLessThanOrEqual(sessionOf(after).expiresAt);
          }
        },
      ),
    );
  });

  it('found early by the sweeper (a heartbeat skipped): moved to the expiry, and only while live and unchanged', () => {
    fc.assert(
      fc.property(settings, fc.integer({ min: 0, max: 1_000_000 }), ({ ttlMs, graceMs }, f) => {
        // A heartbeat at the lead before the entry's time keeps it; then the client is slow.
        let state = open(ttlMs, graceMs);
        const keepAt = T0 + (state.filedAt as number) - T0 - dueLeadMs(ttlMs) - 1;
        const beat = heartbeat(state, Math.max(T0, keepAt));
        state = beat.state;
        const s = sessionOf(state);
        const filed = state.filedAt as number;
        // A sweep anywhere from the entry's time to just before the expiry finds it early.
        const sweep = filed + Math.floor(((s.expiresAt - 1 - filed) * f) / 1_000_000);
        if (sweep >= s.expiresAt) return;
        expect(dueEntryMisfiled(s, filed, sweep)).toBe(true);
        expect(apply(state, endWrite(s, 'expired', sweep))).toBeUndefined(); // not expired
        const moved = apply(state, refileWrite(s, sweep)) as Stored;
        expect(moved.filedAt).toBe(s.expiresAt);
        expect(moved.item).toEqual(state.item); // only housekeeping
        expect(dueEntryMisfiled(sessionOf(moved), moved.filedAt, sweep)).toBe(false);
        // Refused once a heartbeat moved the expiry, or once expired.
        const later = heartbeat(state, sweep).state;
        expect(apply(later, refileWrite(s, sweep))).toBeUndefined();
        expect(apply(state, refileWrite(s, s.expiresAt))).toBeUndefined();
      }),
    );
  });

  it('is kept only while not later than the new expiry and ahead of now by more than the lead', () => {
    const s = sessionOf(open(30_000, 5_000));
    const e = T0 + 35_000;
    expect(dueLeadMs(30_000)).toBe(11_000);
    expect(keepsDueEntry(s, T0 + 35_000, e, T0)).toBe(true);
    expect(keepsDueEntry(s, T0 + 35_000, e + 20_000, T0 + 20_000)).toBe(true);
    expect(keepsDueEntry(s, T0 + 35_000, e + 24_000, T0 + 24_000)).toBe(false); // only the lead ahead
    expect(keepsDueEntry(s, undefined, e, T0)).toBe(false);
    expect(keepsDueEntry(s, e + 1, e, T0)).toBe(false); // later than the expiry (a failed sweep moved it)
    expect(keepsDueEntry(s, T0 + 34_000, e - 1_000, T0 - 1_000)).toBe(false); // the expiry moves back
    // A kept entry: no housekeeping, and the write is conditional on the expiry not having passed it.
    const kept = heartbeatWrite(s, T0 + 1_000, T0 + 35_000);
    expect(kept.sweepAt).toBeUndefined();
    expect(heartbeatWrite(s, T0 + 1_000).sweepAt).toBe(T0 + 36_000);
    expect(heartbeatWrite(s, T0 + 25_000, T0 + 35_000).sweepAt).toBe(T0 + 60_000);
    // Misfiled: only for a live session.
    expect(dueEntryMisfiled(s, T0 + 20_000, T0 + 20_000)).toBe(true);
    expect(dueEntryMisfiled(s, T0 + 20_000, T0 + 19_999)).toBe(false);
    expect(dueEntryMisfiled(s, undefined, T0)).toBe(true);
    expect(dueEntryMisfiled(s, e + 1, T0)).toBe(true);
    expect(dueEntryMisfiled(s, T0 + 20_000, e)).toBe(false); // expired: the sweeper ends it
    expect(dueEntryMisfiled({ ...s, endedAt: T0 }, T0, T0 + 1)).toBe(false);
  });
});
