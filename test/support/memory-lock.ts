/**
 * One lock item in memory with DynamoDB's write semantics, for property tests of the protocols alone
 * (the whole storage port in memory is memory-storage.ts).
 */
import { applyUpdate, evaluate, type Item } from '../../lambdas/core/expr';
import type { ItemWrite } from '../../lambdas/core/items';
import { LockAttr, type Protocol, runProtocol, type WriteResult } from '../../lambdas/core/lock';

export class MemoryLock {
  item: Item | undefined;
  writes = 0;
  /**
   * Deliver every write twice, answering with the second delivery's result, as the
   * AWS SDK does when the response to an applied write is lost and it sends it again.
   */
  duplicateDelivery = false;
  /** The order in which writes were applied, by their `last_write` id. */
  readonly applied = new Map<string, number>();
  private ids = 0;

  private deliver(write: ItemWrite): WriteResult {
    this.writes++;
    if (write.condition && !evaluate(write.condition, this.item)) return { ok: false, old: this.item };
    this.item = applyUpdate(this.item, write.update);
    const id = this.item[LockAttr.lastWrite];
    if (typeof id === 'string') this.applied.set(id, this.applied.size);
    return { ok: true, item: this.item };
  }

  tryWrite = async (write: ItemWrite): Promise<WriteResult> => {
    const first = this.deliver(write);
    return this.duplicateDelivery ? this.deliver(write) : first;
  };

  run<O>(protocol: Protocol<O>): Promise<O> {
    return runProtocol(protocol, this.tryWrite, () => `write-${++this.ids}`);
  }
}
