/** Runs the core's protocols against an in-memory item with DynamoDB's semantics (for property tests). */
import { applyUpdate, evaluate, type Item, type Write } from '../../lambdas/core/expr';
import { type Protocol, runProtocol, type WriteResult } from '../../lambdas/core/lock';

export class MemoryLock {
  item: Item | undefined;
  writes = 0;
  refusals = 0;

  tryWrite = async (write: Write): Promise<WriteResult> => {
    this.writes++;
    if (!evaluate(write.condition, this.item)) {
      this.refusals++;
      return { ok: false, old: this.item };
    }
    this.item = applyUpdate(this.item, write.update);
    return { ok: true, item: this.item };
  };

  run<O>(protocol: Protocol<O>): Promise<O> {
    return runProtocol(protocol, this.tryWrite);
  }
}
