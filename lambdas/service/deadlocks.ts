/**
 * Deadlock detection against storage: the core's walk (core/deadlock.ts) reading keeper records
 * and each lock's queue, strongly consistently. A wait that closes a cycle is refused by the lock
 * service (409 DEADLOCK); the waits route shows the graph around a lock.
 */
import {
  findCycle,
  type GraphReader,
  keeperOf,
  keptBy,
  type Search,
  type SearchBounds,
  waitGraphFrom,
} from '../core/deadlock';
import { LatchkeyError } from '../core/errors';
import { ancestorsOf } from '../core/hierarchy';
import { keeperRef, lockRef } from '../core/items';
import type { Waiter } from '../core/queue';
import { describeError, log } from '../shared/log';
import type { Clock } from './clock';
import type { Storage } from './storage';

/** Waiters read per queue the walk looks at: a wait further back is not followed. */
export const VIEW_QUEUE_LIMIT = 100;

/** The diagnostic walk (GET .../waits) may look further than the one on every join. */
export const DIAGNOSIS_SEARCH: SearchBounds = { maxDepth: 16, maxReads: 200 };

export class Deadlocks {
  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
    /** null: no detection when a wait joins. */
    private readonly bounds: SearchBounds | null,
    /** The stack's hierarchical namespaces: edges also go through holds above and below a lock. */
    private readonly prefixes: readonly string[] = [],
  ) {}

  private readonly reader: GraphReader = {
    keeperOf: async (lock, p) => keeperOf(await this.storage.read(keeperRef(lock, p.owner, p.clientId))),
    lock: async (name) => {
      const { lock, waiters, complete } = await this.storage.queue(name, VIEW_QUEUE_LIMIT);
      return { item: lock, queue: waiters, complete };
    },
    // Outside every hierarchical namespace a name has no ancestors (and its item no intentions).
    hierarchy: {
      ancestorsOf: (name) => ancestorsOf(name, this.prefixes),
      item: (name) => this.storage.read(lockRef(name)),
    },
  };

  /**
   * The cycle that wait `w`, now in its queue, closes (undefined: none within the bounds, or
   * detection is off). A wait that names no lock as held is not walked from, so it costs nothing:
   * nothing waits for a hold of its own, so the only cycle it could close runs through a wait it
   * jumped ahead of by priority (core/deadlock.ts); GET .../waits and `latchkey deadlocks` show
   * such a cycle, and lease ends and deadlines break it.
   */
  async closedBy(w: Waiter): Promise<Search | undefined> {
    if (this.bounds === null || this.bounds.maxDepth < 2 || keptBy(w).length === 0) return undefined;
    try {
      const search = await findCycle(w, this.reader, this.clock.now(), this.bounds);
      return search.cycle ? search : undefined;
    } catch (error) {
      // The wait is queued already: a walk that cannot read (an outage) finds nothing, so the
      // caller is answered "queued" (its wait stands) rather than an error that hides it.
      if (!(error instanceof LatchkeyError) || error.code !== 'UNAVAILABLE') throw error;
      log('warn', 'deadlock detection could not read; the wait stands unchecked', {
        lock: w.lock,
        ...describeError(error),
      });
      return undefined;
    }
  }

  /** Who waits for whom from `lock` outward, with the cycles among them. */
  graphFrom(lock: string): Promise<Search> {
    return waitGraphFrom(lock, this.reader, this.clock.now(), DIAGNOSIS_SEARCH);
  }
}
