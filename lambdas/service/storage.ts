/**
 * The storage port: everything the services need from DynamoDB, in the
 * core's vocabulary (item refs and steps, lambdas/core/items.ts). Two
 * adapters implement it: the DynamoDB one (lambdas/store/dynamo-storage.ts)
 * and an in-memory one on the core's evaluator (test/support/memory-storage.ts)
 * that the simulation runs the real services on.
 *
 * Every method either answers or throws a LatchkeyError: UNAVAILABLE
 * (retryable) for a fault on the way to storage, INTERNAL for a request the
 * storage refuses as malformed (a bug). A refused condition is an answer,
 * never an error.
 */
import type { Item } from '../core/expr';
import type { ItemRef, ItemWrite, Step } from '../core/items';
import type { WriteResult } from '../core/lock';
import type { Waiter } from '../core/queue';

export interface QueueSnapshot {
  /** The lock item, read strongly consistently together with the queue. */
  readonly lock: Item | undefined;
  /** The first waiters in serving order. */
  readonly waiters: readonly Waiter[];
  /** True when `waiters` is the whole queue. */
  readonly complete: boolean;
}

/** Each step's verdict in a cancelled transaction: its condition held, or it refused (with the item as it was). */
export type StepVerdict =
  | { readonly refused: false }
  | { readonly refused: true; readonly old: Item | undefined };

export type TransactResult =
  | { readonly ok: true }
  | { readonly ok: false; readonly steps: readonly StepVerdict[] };

export interface SessionIdPage {
  readonly ids: readonly string[];
  readonly more: boolean;
}

export interface LockPage {
  /** Locks in name order; a name whose item was collected between the index read and the item read is left out. */
  readonly locks: readonly { readonly name: string; readonly item: Item }[];
  readonly nextCursor: string | undefined;
}

export interface Storage {
  /** One conditional update: the item after it, or (refused) the item as it was. */
  write(ref: ItemRef, write: ItemWrite): Promise<WriteResult>;
  /** All of the steps or none (TransactWriteItems); a retry of the same call is applied at most once. */
  transact(steps: readonly Step[]): Promise<TransactResult>;
  /** Deletes an item, whatever it holds. */
  remove(ref: ItemRef): Promise<void>;
  /** One item, strongly consistent. */
  read(ref: ItemRef): Promise<Item | undefined>;
  /**
   * Several distinct items, in the order asked: one call (BatchGetItem) per 100. Each is strongly
   * consistent, as one `read` would see it; together they are not one moment's snapshot.
   */
  readMany(refs: readonly ItemRef[]): Promise<(Item | undefined)[]>;
  /** A lock item and its first `limit` waiters in serving order, strongly consistent (one Query). */
  queue(lock: string, limit: number): Promise<QueueSnapshot>;
  /** How many waiters are queued up to and including `order`, strongly consistent. */
  position(lock: string, order: string): Promise<number>;
  /** The locks a session took (the records its grants left), strongly consistent. */
  sessionLocks(session: string): Promise<string[]>;
  /** What the due index says falls due in `minute` by `now` (an index: eventually consistent). */
  dueIn(minute: number, now: number): Promise<ItemRef[]>;
  /** The waiters one WebSocket connection queued (an index: eventually consistent). */
  waitersOf(connection: string): Promise<ItemRef[]>;
  /**
   * The ids of the first `limit` sessions not yet swept after id `after`, in id order, and whether
   * more may follow (an index: eventually consistent).
   */
  sessionIds(limit: number, after: string): Promise<SessionIdPage>;
  /** Locks whose names start with `prefix`, in name order, a page at a time. */
  listLocks(prefix: string, limit: number, cursor?: string): Promise<LockPage>;
}

/** The verdict of step `index` of a cancelled transaction (undefined when the transaction applied). */
export const verdictOf = (result: TransactResult, index: number): StepVerdict | undefined =>
  result.ok ? undefined : result.steps[index];

/** Whether step `index` refused. */
export const refusedAt = (result: TransactResult, index: number): boolean =>
  verdictOf(result, index)?.refused === true;

/** The item step `index` saw when it refused. */
export const oldAt = (result: TransactResult, index: number): Item | undefined => {
  const verdict = verdictOf(result, index);
  return verdict?.refused ? verdict.old : undefined;
};
