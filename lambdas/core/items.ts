/**
 * The transaction vocabulary: which item a write touches (an `ItemRef`, not
 * a DynamoDB key: store/table.ts maps refs to keys) and what it does to it
 * (a `Step`). Every change the service makes, a single conditional write or
 * a transaction, is written as steps here, so one set of steps describes it
 * for every storage adapter: DynamoDB, and the in-memory one the
 * simulation runs on.
 *
 * A step also says what it means for the item's housekeeping: when the
 * sweeper must look at it (`sweepAt`) and from when it may be garbage-
 * collected (`gcFrom`). Adapters turn those into index and TTL attributes;
 * nobody has to search an update list for a value.
 */
import { createHash } from 'node:crypto';
import type { Condition, Update } from './expr';

export type ItemRef =
  | { readonly kind: 'lock'; readonly lock: string }
  | { readonly kind: 'waiter'; readonly lock: string; readonly order: string }
  /** The record of one waiting request (see request.ts); `key` is requestKey(client, request_id). */
  | { readonly kind: 'request'; readonly lock: string; readonly key: string }
  | { readonly kind: 'session'; readonly session: string }
  /** The record that a session took a lock: how a session's locks are found when it ends. */
  | { readonly kind: 'session-lock'; readonly session: string; readonly lock: string }
  | { readonly kind: 'connection'; readonly connection: string }
  | { readonly kind: 'sweeper' }
  /** A counter of waiters that one scope (a principal's shard, a connection) has queued: limits. */
  | { readonly kind: 'quota'; readonly scope: string }
  /** One of the slots an HTTP wait holds while it polls (limits). */
  | { readonly kind: 'http-wait'; readonly slot: number }
  /**
   * That a principal and client keep `lock` while they wait for another: where their last wait that
   * named it as held is (core/deadlock.ts). `party` is a hash of the principal and client id.
   */
  | { readonly kind: 'keeper'; readonly lock: string; readonly party: string };

export const lockRef = (lock: string): ItemRef => ({ kind: 'lock', lock });
export const waiterRef = (lock: string, order: string): ItemRef => ({ kind: 'waiter', lock, order });
export const requestRef = (lock: string, key: string): ItemRef => ({ kind: 'request', lock, key });
export const sessionRef = (session: string): ItemRef => ({ kind: 'session', session });
export const sessionLockRef = (session: string, lock: string): ItemRef => ({
  kind: 'session-lock',
  session,
  lock,
});
export const connectionRef = (connection: string): ItemRef => ({ kind: 'connection', connection });
export const SWEEPER_REF: ItemRef = { kind: 'sweeper' };
export const quotaRef = (scope: string): ItemRef => ({ kind: 'quota', scope });
export const httpWaitRef = (slot: number): ItemRef => ({ kind: 'http-wait', slot });
export const keeperRef = (lock: string, owner: string, clientId: string): ItemRef => ({
  kind: 'keeper',
  lock,
  party: createHash('sha256')
    .update(owner)
    .update('\u0000')
    .update(clientId)
    .digest('base64url')
    .slice(0, 22),
});

/** A stable text form of a ref (map keys, logs). */
export function refText(ref: ItemRef): string {
  switch (ref.kind) {
    case 'lock':
      return `lock:${ref.lock}`;
    case 'waiter':
      return `waiter:${ref.lock}#${ref.order}`;
    case 'request':
      return `request:${ref.lock}#${ref.key}`;
    case 'session':
      return `session:${ref.session}`;
    case 'session-lock':
      return `session-lock:${ref.session}#${ref.lock}`;
    case 'connection':
      return `connection:${ref.connection}`;
    case 'sweeper':
      return 'sweeper';
    case 'quota':
      return `quota:${ref.scope}`;
    case 'http-wait':
      return `http-wait:${ref.slot}`;
    case 'keeper':
      return `keeper:${ref.lock}#${ref.party}`;
  }
}

/** What a write states about its item's housekeeping; an absent field leaves it unchanged. */
export interface Housekeeping {
  /** When the sweeper must look at the item, ms on the server's clock; null takes it out of the due index. */
  readonly sweepAt?: number | null;
  /**
   * The instant from which the item's retention period runs (then it may be garbage-collected);
   * null: never collect it. It must never fall before the end of anything the item records that is
   * still in force: a lease's end, a wait's deadline; an item held through a session has none.
   */
  readonly gcFrom?: number | null;
  /** The WebSocket connection whose waiters include this item (the owner index); null: none. */
  readonly owner?: string | null;
  /**
   * Sessions only: false takes the session out of the operators' session listing (once swept).
   * Every other write of a session item lists it.
   */
  readonly listed?: false;
}

/** A conditional update (UpdateItem semantics: creates the item if absent) with its housekeeping. */
export interface ItemWrite extends Housekeeping {
  /** Absent: unconditional. */
  readonly condition?: Condition;
  readonly update: Update;
}

export type Step =
  | ({ readonly kind: 'update'; readonly ref: ItemRef } & ItemWrite)
  | { readonly kind: 'delete'; readonly ref: ItemRef; readonly condition?: Condition }
  /** Only a condition on another item (TransactWriteItems' ConditionCheck). */
  | { readonly kind: 'check'; readonly ref: ItemRef; readonly condition: Condition };

export const updateStep = (ref: ItemRef, write: ItemWrite): Step => ({ kind: 'update', ref, ...write });
