/** The slots HTTP waits hold while they poll (core/http-wait.ts): a bound on what waiting callers take. */
import { createHash } from 'node:crypto';
import { LatchkeyError } from '../core/errors';
import { freeSlotWrite, SLOT_GRACE_MS, takeSlotWrite } from '../core/http-wait';
import { httpWaitRef } from '../core/items';
import type { Clock } from './clock';
import type { Storage } from './storage';

/**
 * Slots tried before a wait is refused, each chosen apart by hashing the holder with the probe's
 * number: a wait is refused with k of n slots in use with a chance of about (k/n)^PROBES (1 in
 * 10^6 at a tenth, 1.6 % at half). Probes that follow on from one slot (as 3 did before) fail
 * together where taken slots bunch up: a tenth in use refused about 1 wait in 1,000. Only a probe
 * that finds its slot taken costs a write more (a refused one).
 */
const PROBES = 6;

/**
 * The slots a holder (a request id) tries, in order: the same on every replay of one request.
 * Every slot when there are at most PROBES of them; else PROBES distinct ones, each hashed apart.
 */
export function probeOrder(holder: string, slots: number): number[] {
  const hashed = (probe: number) =>
    createHash('sha256').update(`${probe}:${holder}`).digest().readUInt32BE(0) % slots;
  if (slots <= PROBES) return Array.from({ length: slots }, (_, i) => (hashed(0) + i) % slots);
  const order = new Set<number>();
  // Each hash is a slot not yet in the order with a chance of at least 1 - (PROBES - 1)/slots.
  for (let probe = 0; order.size < PROBES; probe++) order.add(hashed(probe));
  return [...order];
}

/** A slot an HTTP wait holds: freed when the wait ends, or sooner once it is most likely over. */
export interface HeldSlot {
  readonly index: number;
  /** Who holds it (the HTTP request's id): only it may free the slot (freeSlotWrite). */
  readonly holder: string;
  /** Frees the slot (once: later calls share the first). Best effort, never fails. */
  free(): Promise<void>;
  /** Its waiter's granter frees it, after the ring that carried the grant: this wait need not. */
  freedByGranter(): void;
}

export class HttpWaits {
  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly slots: number,
  ) {}

  /**
   * Runs `wait` (polling until `deadline`) holding a slot; TOO_MANY_WAITS, before anything
   * changes, if the probed slots are all taken. A wait may be refused before every slot is in
   * use: PROBES slots are tried, not all of them.
   */
  async during<T>(holder: string, deadline: number, wait: (slot: HeldSlot) => Promise<T>): Promise<T> {
    const index = await this.take(holder, deadline);
    const ref = httpWaitRef(index);
    let freed: Promise<void> | undefined;
    // Best effort: a slot not freed is free again when its lease ends.
    const slot: HeldSlot = {
      index,
      holder,
      freedByGranter: () => {
        freed ??= Promise.resolve();
      },
      free: () => {
        freed ??= this.storage.write(ref, freeSlotWrite(holder)).then(
          () => undefined,
          () => undefined,
        );
        return freed;
      },
    };
    try {
      return await wait(slot);
    } finally {
      await slot.free();
    }
  }

  private async take(holder: string, deadline: number): Promise<number> {
    for (const slot of probeOrder(holder, this.slots)) {
      const now = this.clock.now();
      const taken = await this.storage.write(
        httpWaitRef(slot),
        takeSlotWrite(holder, now, Math.max(deadline, now) + SLOT_GRACE_MS),
      );
      if (taken.ok) return slot;
    }
    throw new LatchkeyError(
      'TOO_MANY_WAITS',
      `too many HTTP waits are in progress (the stack's maxHttpWaits is ${this.slots}): retry later, or wait over the WebSocket API (give connection_id), which holds no function while it waits`,
      undefined,
      1_000,
    );
  }
}
