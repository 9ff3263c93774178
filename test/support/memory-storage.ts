/**
 * The storage port in memory, built on the core's evaluator (not a mock):
 * conditions are evaluated and updates applied by lambdas/core/expr.ts, with
 * the very housekeeping attributes the DynamoDB adapter writes
 * (lambdas/store/requests.ts), so the same steps mean the same thing here.
 *
 * What DynamoDB does and this models:
 * - conditional UpdateItem returning ALL_NEW, or ALL_OLD when refused;
 * - TransactWriteItems: every condition checked first, then all applied, or
 *   nothing and each step's verdict; one item at most once per transaction;
 * - strongly consistent reads and Queries in sort-key order;
 * - global secondary indexes (due, owner, listing) that lag: an index change
 *   becomes visible `indexLag()` ms after the write (0 by default);
 * - a stream of change records (keys, old and new images, marshalled) in
 *   commit order, and TTL deletion of items whose `gc_at` has passed.
 */
import { isDeepStrictEqual } from 'node:util';
import { marshall } from '@aws-sdk/util-dynamodb';
import { invalidRequest, LatchkeyError } from '../../lambdas/core/errors';
import { applyUpdate, evaluate, type Item, type Scalar } from '../../lambdas/core/expr';
import type { ItemRef, ItemWrite, Step } from '../../lambdas/core/items';
import { lockRef, refText } from '../../lambdas/core/items';
import type { WriteResult } from '../../lambdas/core/lock';
import { waiterOf } from '../../lambdas/core/queue';
import type {
  LockPage,
  QueueSnapshot,
  SessionIdPage,
  StepVerdict,
  Storage,
  TransactResult,
} from '../../lambdas/service/storage';
import { fullUpdate, type StoreSettings } from '../../lambdas/store/requests';
import {
  connectionOwner,
  DUE_INDEX,
  decodeListCursor,
  dueBuckets,
  encodeListCursor,
  GC_ATTRIBUTE,
  KEY,
  keyOf,
  LIST_INDEX,
  LOCK_SK,
  lockPartition,
  OWNER_INDEX,
  refOfKey,
  SESSION_LINK_PREFIX,
  SESSION_LIST_PARTITIONS,
  sessionPartition,
  WAITER_SK_PREFIX,
} from '../../lambdas/store/table';

export interface Change {
  readonly ref: ItemRef;
  readonly old: Item | undefined;
  readonly new: Item | undefined;
}

export interface StreamRecordOut {
  readonly eventName: 'INSERT' | 'MODIFY' | 'REMOVE';
  readonly partition: string;
  readonly dynamodb: {
    readonly Keys: Record<string, unknown>;
    readonly OldImage?: Record<string, unknown>;
    readonly NewImage?: Record<string, unknown>;
  };
}

type Stored = Record<string, Scalar>;
interface IndexEntry {
  readonly key: string;
  readonly attrs: Record<string, Scalar | undefined>;
}

const INDEX_ATTRS = [
  DUE_INDEX.pk,
  DUE_INDEX.sk,
  OWNER_INDEX.pk,
  OWNER_INDEX.sk,
  LIST_INDEX.pk,
  LIST_INDEX.sk,
] as const;

const keyText = (pk: string, sk: string) => `${pk}\u0000${sk}`;
const clone = (item: Stored | undefined): Item | undefined => (item ? { ...item } : undefined);

export class MemoryStorage implements Storage {
  private readonly items = new Map<string, Stored>();
  /** What the indexes show: per item key, its index attributes as of the last change visible by now. */
  private readonly index = new Map<string, IndexEntry>();
  private readonly pendingIndex: { visibleAt: number; entry: IndexEntry | { key: string; gone: true } }[] =
    [];
  /** An item's index changes become visible in the order they were written. */
  private readonly lastVisible = new Map<string, number>();
  /** Called after every committed write or transaction with all of its changes. */
  onCommit: (changes: readonly Change[]) => void = () => {};
  /** Called with each stream record, in commit order. */
  onRecord: (record: StreamRecordOut) => void = () => {};
  /** How long an index change takes to become visible (ms); the simulation draws it at random. */
  indexLag: () => number = () => 0;

  constructor(
    readonly settings: StoreSettings,
    private readonly now: () => number = Date.now,
  ) {}

  async write(ref: ItemRef, write: ItemWrite): Promise<WriteResult> {
    this.validate(ref, write);
    const key = this.keyOf(ref);
    const current = this.items.get(key);
    if (write.condition && !evaluate(write.condition, current)) return { ok: false, old: clone(current) };
    const next = this.apply(ref, current, write);
    this.commit([{ ref, key, old: current, next }]);
    return { ok: true, item: { ...next } };
  }

  async transact(steps: readonly Step[]): Promise<TransactResult> {
    const keys = steps.map((s) => this.keyOf(s.ref));
    if (new Set(keys).size !== keys.length) throw new Error('a transaction names one item twice');
    for (const step of steps) if (step.kind === 'update') this.validate(step.ref, step);
    const verdicts: StepVerdict[] = steps.map((step, i) => {
      const current = this.items.get(keys[i] as string);
      const holds = step.condition === undefined || evaluate(step.condition, current);
      return holds ? { refused: false } : { refused: true, old: clone(current) };
    });
    if (verdicts.some((v) => v.refused)) return { ok: false, steps: verdicts };
    type Pending = { ref: ItemRef; key: string; old: Stored | undefined; next: Stored | undefined };
    const changes = steps.flatMap((step, i): Pending[] => {
      const key = keys[i] as string;
      const current = this.items.get(key);
      if (step.kind === 'check') return [];
      if (step.kind === 'delete')
        return current ? [{ ref: step.ref, key, old: current, next: undefined }] : [];
      return [{ ref: step.ref, key, old: current, next: this.apply(step.ref, current, step) }];
    });
    this.commit(changes);
    return { ok: true };
  }

  async remove(ref: ItemRef): Promise<void> {
    const key = this.keyOf(ref);
    const current = this.items.get(key);
    if (current) this.commit([{ ref, key, old: current, next: undefined }]);
  }

  async read(ref: ItemRef): Promise<Item | undefined> {
    return clone(this.items.get(this.keyOf(ref)));
  }

  async readMany(refs: readonly ItemRef[]): Promise<(Item | undefined)[]> {
    // DynamoDB refuses these (ValidationException): so does this, so that tests catch the misuse.
    const keys = new Set(refs.map((ref) => this.keyOf(ref)));
    if (keys.size !== refs.length || refs.length > 100)
      throw new Error(`readMany takes at most 100 distinct keys (got ${refs.length}, ${keys.size} distinct)`);
    return refs.map((ref) => clone(this.items.get(this.keyOf(ref))));
  }

  async queue(lock: string, limit: number): Promise<QueueSnapshot> {
    return this.queueNow(lock, limit);
  }

  /** The lock item and its queue as they are now (for checks that must not yield). */
  queueNow(lock: string, limit = Number.MAX_SAFE_INTEGER): QueueSnapshot {
    const pk = lockPartition(lock);
    const rows = this.partition(pk).filter(([sk]) => sk === LOCK_SK || sk.startsWith(WAITER_SK_PREFIX));
    const page = rows.slice(0, limit + 1);
    let item: Item | undefined;
    const waiters = [];
    for (const [sk, stored] of page) {
      if (sk === LOCK_SK) item = { ...stored };
      else waiters.push(waiterOf(sk.slice(WAITER_SK_PREFIX.length), stored));
    }
    return { lock: item, waiters, complete: page.length === rows.length };
  }

  async position(lock: string, order: string): Promise<number> {
    const me = `${WAITER_SK_PREFIX}${order}`;
    return this.partition(lockPartition(lock)).filter(([sk]) => sk.startsWith(WAITER_SK_PREFIX) && sk <= me)
      .length;
  }

  async sessionLocks(session: string): Promise<string[]> {
    return this.partition(sessionPartition(session))
      .filter(([sk]) => sk.startsWith(SESSION_LINK_PREFIX))
      .map(([sk]) => sk.slice(SESSION_LINK_PREFIX.length));
  }

  async dueIn(minute: number, now: number): Promise<ItemRef[]> {
    const buckets = new Set(dueBuckets(minute));
    return this.indexed()
      .filter(
        (e) =>
          buckets.has(e.attrs[DUE_INDEX.pk] as string) &&
          typeof e.attrs[DUE_INDEX.sk] === 'number' &&
          (e.attrs[DUE_INDEX.sk] as number) <= now,
      )
      .sort((a, b) => (a.attrs[DUE_INDEX.sk] as number) - (b.attrs[DUE_INDEX.sk] as number))
      .flatMap((e) => this.refOfText(e.key) ?? []);
  }

  async waitersOf(connection: string): Promise<ItemRef[]> {
    const owner = connectionOwner(connection);
    return this.indexed()
      .filter((e) => e.attrs[OWNER_INDEX.pk] === owner)
      .flatMap((e) => {
        const ref = this.refOfText(e.key);
        return ref?.kind === 'waiter' ? [ref] : [];
      });
  }

  async sessionIds(limit: number, after: string): Promise<SessionIdPage> {
    const listed = new Set(SESSION_LIST_PARTITIONS);
    const ids = this.indexed()
      .filter((e) => listed.has(e.attrs[OWNER_INDEX.pk] as string))
      .map((e) => String(e.attrs[OWNER_INDEX.sk]))
      .filter((id) => id > after)
      .sort();
    return { ids: ids.slice(0, limit), more: ids.length > limit };
  }

  async listLocks(prefix: string, limit: number, cursor?: string): Promise<LockPage> {
    const after = cursor === undefined ? undefined : decodeListCursor(cursor, prefix);
    if (cursor !== undefined && after === undefined)
      throw invalidRequest('cursor is not valid for this listing');
    const names = this.indexed()
      .map((e) => e.attrs[LIST_INDEX.sk])
      .filter(
        (n): n is string =>
          typeof n === 'string' && n.startsWith(prefix) && (after === undefined || n > after),
      )
      .sort();
    const page = names.slice(0, limit);
    const locks = page.flatMap((name) => {
      const item = this.items.get(this.keyOf(lockRef(name)));
      return item ? [{ name, item: { ...item } as Item }] : [];
    });
    const last = page.at(-1);
    return { locks, nextCursor: names.length > limit && last ? encodeListCursor(last) : undefined };
  }

  /** DynamoDB's TTL: deletes every item whose `gc_at` (epoch seconds) has passed by `nowMs` and `pick` agrees. */
  collectGarbage(nowMs: number, pick: () => boolean = () => true): number {
    this.collecting = true;
    try {
      return this.collect(nowMs, pick);
    } finally {
      this.collecting = false;
    }
  }

  /** True while TTL deletes (what onCommit sees then is garbage collection, not a service's write). */
  collecting = false;

  private collect(nowMs: number, pick: () => boolean): number {
    let collected = 0;
    for (const [key, item] of [...this.items]) {
      const gc = item[GC_ATTRIBUTE];
      if (typeof gc !== 'number' || gc * 1000 > nowMs || !pick()) continue;
      const ref =
        refOfKey({ [KEY.pk]: item[KEY.pk], [KEY.sk]: item[KEY.sk] }) ?? ({ kind: 'sweeper' } as ItemRef);
      this.commit([{ ref, key, old: item, next: undefined }]);
      collected++;
    }
    return collected;
  }

  /** One item as it is now (for checks that must not yield). */
  readNow(ref: ItemRef): Item | undefined {
    return clone(this.items.get(this.keyOf(ref)));
  }

  /** Every item, for invariant checks. */
  all(): { ref: ItemRef | undefined; item: Item }[] {
    return [...this.items.values()].map((item) => ({
      ref: refOfKey({ [KEY.pk]: item[KEY.pk], [KEY.sk]: item[KEY.sk] }),
      item: { ...item },
    }));
  }

  /**
   * What DynamoDB refuses before looking at any item (a ValidationException, which the DynamoDB
   * adapter reports as INTERNAL): an update naming one attribute twice ("Two document paths
   * overlap"), its own updates and its housekeeping together.
   */
  private validate(ref: ItemRef, write: ItemWrite): void {
    const names = fullUpdate(this.settings, ref, write).map((action) => action.attr);
    const twice = names.find((name, i) => names.indexOf(name) !== i);
    if (twice !== undefined)
      throw new LatchkeyError(
        'INTERNAL',
        `an update of ${refText(ref)} names ${twice} twice (DynamoDB refuses it)`,
      );
  }

  private apply(ref: ItemRef, current: Stored | undefined, write: ItemWrite): Stored {
    const key = keyOf(ref);
    return applyUpdate(
      { ...(current ?? {}), [KEY.pk]: key.pk, [KEY.sk]: key.sk },
      fullUpdate(this.settings, ref, write),
    );
  }

  private commit(
    changes: readonly { ref: ItemRef; key: string; old: Stored | undefined; next: Stored | undefined }[],
  ) {
    const now = this.now();
    for (const c of changes) {
      if (c.next) this.items.set(c.key, c.next);
      else this.items.delete(c.key);
      const before = INDEX_ATTRS.map((a) => c.old?.[a]);
      const after = INDEX_ATTRS.map((a) => c.next?.[a]);
      if (before.some((v, i) => v !== after[i]) || !c.next) {
        const entry = c.next
          ? { key: c.key, attrs: Object.fromEntries(INDEX_ATTRS.map((a) => [a, c.next?.[a]])) }
          : { key: c.key, gone: true as const };
        const visibleAt = Math.max(now + Math.max(0, this.indexLag()), this.lastVisible.get(c.key) ?? 0);
        this.lastVisible.set(c.key, visibleAt);
        this.pendingIndex.push({ visibleAt, entry });
      }
      // DynamoDB Streams writes no record for a write that changed nothing in the item.
      if (c.old && c.next && isDeepStrictEqual(c.old, c.next)) continue;
      const keys = {
        [KEY.pk]: c.next?.[KEY.pk] ?? c.old?.[KEY.pk],
        [KEY.sk]: c.next?.[KEY.sk] ?? c.old?.[KEY.sk],
      };
      this.onRecord({
        eventName: !c.old ? 'INSERT' : !c.next ? 'REMOVE' : 'MODIFY',
        partition: String(keys[KEY.pk]),
        dynamodb: {
          Keys: marshall(keys),
          ...(c.old ? { OldImage: marshall(c.old) } : {}),
          ...(c.next ? { NewImage: marshall(c.next) } : {}),
        },
      });
    }
    this.onCommit(changes.map((c) => ({ ref: c.ref, old: clone(c.old), new: clone(c.next) })));
  }

  /** The index entries visible now (each index change applies once its lag has passed, in write order). */
  private indexed(): IndexEntry[] {
    const now = this.now();
    const still: typeof this.pendingIndex = [];
    for (const p of this.pendingIndex) {
      if (p.visibleAt > now) still.push(p);
      else if ('gone' in p.entry) this.index.delete(p.entry.key);
      else this.index.set(p.entry.key, p.entry);
    }
    this.pendingIndex.splice(0, this.pendingIndex.length, ...still);
    return [...this.index.values()];
  }

  private partition(pk: string): [string, Stored][] {
    const rows: [string, Stored][] = [];
    for (const item of this.items.values()) if (item[KEY.pk] === pk) rows.push([String(item[KEY.sk]), item]);
    return rows.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  private keyOf(ref: ItemRef): string {
    const key = keyOf(ref);
    return keyText(key.pk, key.sk);
  }

  private refOfText(text: string): ItemRef | undefined {
    const [pk, sk] = text.split('\u0000');
    return refOfKey({ [KEY.pk]: pk, [KEY.sk]: sk });
  }
}
