/** The slots HTTP waits hold while they poll (core/http-wait.ts): a bound on what waiting callers take. */
import { createHash } from 'node:crypto';
import { LatchkeyError } from '../core/errors';
import { freeSlotWrite, SLOT_GRACE_MS, takeSlotWrite } from '../core/http-wait';
import { httpWaitRef } from '../core/items';
import type { Clock } from './clock';
import type { Storage } from './storage';

/** Slots tried (from one the holder hashes to, on) before a wait is refused. */
const PROBES = 3;

/** A slot an HTTP wait holds: freed when the wait ends, or sooner once it is most likely over. */
export interface HeldSlot {
  /** Frees the slot (once: later calls share the first). Best effort, never fails. */
  free(): Promise<void>;
}

export class HttpWaits {
  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
    private readonly slots: number,
  ) {}

  /**
   * Runs `wait` (polling until `deadline`) holding a slot; TOO_MANY_WAITS, before anything
   * changes, if the probed slots are all taken. Under heavy load a wait may be refused a little
   * before every slot is in use: PROBES slots are tried, not all of them.
   */
  async during<T>(holder: string, deadline: number, wait: (slot: HeldSlot) => Promise<T>): Promise<T> {
    const ref = httpWaitRef(await this.take(holder, deadline));
    let freed: Promise<void> | undefined;
    // Best effort: a slot not freed is free again when its lease ends.
    const slot = {
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
    // Where to start probing: spread by the holder (a request id), and the same on every replay.
    const first = createHash('sha256').update(holder).digest().readUInt32BE(0) % Math.max(1, this.slots);
    for (let probe = 0; probe < Math.min(PROBES, this.slots); probe++) {
      const slot = (first + probe) % this.slots;
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
