/**
 * Slots for HTTP waits. An HTTP acquire that waits keeps a function
 * instance busy while it polls (up to 25 s), so waiting callers could take
 * all of the lock-commands function's concurrency and stall every release
 * and renew behind them. Each polling wait therefore holds one of
 * `maxHttpWaits` slots, an item leased until shortly after its deadline: a
 * function that dies mid-wait frees its slot when the lease ends, so no
 * slot leaks. A wait that finds no free slot is refused with 429
 * TOO_MANY_WAITS and changes nothing.
 */
import { eq, le, missing, or, remove, set } from './expr';
import type { ItemWrite } from './items';

const SlotAttr = { holder: 'holder', until: 'until' } as const;

/** A wait may overrun its deadline by this much (its last poll, its answer) before its slot is free again. */
export const SLOT_GRACE_MS = 5_000;

/** Takes a slot that is free, or whose lease has ended, until `until`. */
export const takeSlotWrite = (holder: string, now: number, until: number): ItemWrite => ({
  condition: or(missing(SlotAttr.holder), le(SlotAttr.until, now)),
  update: [set(SlotAttr.holder, holder), set(SlotAttr.until, until)],
  gcFrom: until,
});

/** Frees a slot, if `holder` still has it. */
export const freeSlotWrite = (holder: string): ItemWrite => ({
  condition: eq(SlotAttr.holder, holder),
  update: [remove(SlotAttr.holder), remove(SlotAttr.until)],
});
