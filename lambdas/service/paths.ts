/**
 * Every write of a lock item's grants goes through here. Outside the stack's
 * hierarchical namespaces it is the plain write or transaction. Inside one,
 * the write of a node becomes one transaction with the intentions it moves on
 * each ancestor (core/hierarchy.ts):
 *
 * - the node is read first (one strongly consistent read), and the write is
 *   judged against that read with the core's evaluator: which grants it makes,
 *   ends or renews (an IntentionDelta);
 * - the node's write is pinned on the read (its `path_version` and fencing
 *   counter), so the judgement is exact, and checked against the intentions
 *   the node carries from below;
 * - each ancestor gets one step adding, removing or renewing those grants'
 *   intentions, blind at first (counts), then decided from the item its
 *   refusal returned.
 *
 * A grant an ancestor's holder (or a grant below) keeps out is a
 * SubtreeConflict, which the lock service answers as "not acquired".
 */

import { LatchkeyError } from '../core/errors';
import { add, and, applyUpdate, type Condition, eq, evaluate, type Item, missing } from '../core/expr';
import {
  type AncestorOp,
  ancestorOps,
  ancestorsOf,
  ancestorVerdict,
  ancestorWrite,
  hierarchyProblem,
  type IntentionKind,
  intentionDelta,
  intentionKey,
  namespaceOf,
  nodeGuard,
  PATH_VERSION,
  type SubtreeBlock,
  wakeRefusal,
  wakeWrite,
} from '../core/hierarchy';
import { type ItemWrite, lockRef, type Step, updateStep } from '../core/items';
import { type Protocol, runProtocol, sameFence, type WriteResult } from '../core/lock';
import type { Clock } from './clock';
import { oldAt, refusedAt, type Storage, type TransactResult } from './storage';

/** A grant kept out by a holder above it or a grant below it. */
export class SubtreeConflict extends Error {
  constructor(readonly block: SubtreeBlock) {
    super(block.reason);
  }
}

/** The node as last seen by one command's writes (read once, then from each refusal). */
interface Cursor {
  seen: Item | undefined;
}

/** Rounds of ancestor refusals one write goes through before giving up (UNAVAILABLE). */
const ROUNDS = 6;

/** A renewal of a grant whose lease ended, with a conflicting grant made above or below it since. */
const superseded = (name: string, block: SubtreeBlock) =>
  new LatchkeyError(
    'LEASE_EXPIRED',
    `the lease on ${name} has ended, and ${block.lock} has been granted since (${block.reason})`,
  );

const pathPin = (seen: Item | undefined): Condition => {
  const v = seen?.[PATH_VERSION];
  return and(typeof v === 'number' ? eq(PATH_VERSION, v) : missing(PATH_VERSION), sameFence(seen));
};

export class Paths {
  constructor(
    private readonly storage: Storage,
    private readonly clock: Clock,
    readonly prefixes: readonly string[],
  ) {}

  isHierarchical(name: string): boolean {
    return namespaceOf(name, this.prefixes) !== undefined;
  }

  /** How many ancestors a write of `name` also writes (0 outside every namespace). */
  ancestorCount(name: string): number {
    return ancestorsOf(name, this.prefixes).length;
  }

  /** Refuses (400 INVALID_NAME) a name too deep for one transaction to write its whole path. */
  checkDepth(name: string): void {
    const problem = hierarchyProblem(name, this.prefixes);
    if (problem) throw new LatchkeyError('INVALID_NAME', problem, [{ path: 'name', message: problem }]);
  }

  /** Runs a protocol on the lock item of `name` (`seen`: the item as read, if it was). */
  run<Outcome>(
    name: string,
    protocol: Protocol<Outcome>,
    ids: () => string,
    seen?: { readonly seen: Item | undefined },
  ): Promise<Outcome> {
    if (!this.isHierarchical(name))
      return runProtocol(protocol, (write) => this.storage.write(lockRef(name), write), ids);
    let cursor: Cursor | undefined = seen && { seen: seen.seen };
    return runProtocol(
      protocol,
      async (write) => {
        cursor ??= { seen: await this.storage.read(lockRef(name)) };
        return this.write(name, write, cursor);
      },
      ids,
    );
  }

  /** One conditional write of the lock item of `name` (`seen`: the item as read, if it was). */
  async write(
    name: string,
    write: ItemWrite,
    seen?: Cursor | { readonly seen: Item | undefined },
  ): Promise<WriteResult> {
    if (!this.isHierarchical(name)) return this.storage.write(lockRef(name), write);
    const cursor: Cursor = seen ? { seen: seen.seen } : { seen: await this.storage.read(lockRef(name)) };
    const { result, item } = await this.onPath(name, [updateStep(lockRef(name), write)], cursor);
    if (result.ok) return { ok: true, item: item as Item };
    return { ok: false, old: oldAt(result, 0) };
  }

  /**
   * A transaction whose first step updates the lock item of `name`; `seen` is that item as the
   * write was planned from (absent: read it first). A refusal's verdicts are the steps' own
   * (ancestors' are handled here).
   */
  async transact(
    name: string,
    steps: readonly Step[],
    seen?: {
      readonly seen: Item | undefined;
      /** When the request its grants serve arrived, if it waited (ancestors may yield to it). */
      readonly arrivedAt?: number;
    },
  ): Promise<TransactResult> {
    if (!this.isHierarchical(name)) return this.storage.transact(steps);
    const cursor: Cursor = seen ? { seen: seen.seen } : { seen: await this.storage.read(lockRef(name)) };
    return (await this.onPath(name, steps, cursor, seen?.arrivedAt)).result;
  }

  /**
   * A wait for `node` was kept out by `block`: if an ancestor keeps it out, mark it there to be
   * served when that changes (core/hierarchy.ts wakeWrite). False when the ancestor's item is gone
   * (then nothing keeps the node out: serve it again).
   */
  async markWake(
    node: string,
    block: SubtreeBlock,
    kind: IntentionKind,
    nonce: string,
    /** When the node's waiting head arrived. */
    arrivedAt: number,
  ): Promise<'marked' | 'full' | 'gone'> {
    if (!node.startsWith(`${block.lock}/`)) return 'marked';
    const ref = lockRef(block.lock);
    const fresh = await this.storage
      .write(ref, wakeWrite(node, kind, nonce, 'new', arrivedAt))
      .catch((error: unknown) => {
        // The ancestor's item has no room left (DynamoDB's 400 KB): a timer looks again instead.
        if (error instanceof LatchkeyError && error.code === 'TOO_MANY_HOLDERS') return undefined;
        throw error;
      });
    if (fresh === undefined) return 'full';
    if (fresh.ok) return 'marked';
    const why = wakeRefusal(node, fresh.old);
    if (why !== 'marked') return why;
    // Marked already: written again, with this nonce (unless served and removed just now: then full's timer).
    return (await this.storage.write(ref, wakeWrite(node, kind, nonce, 'again', arrivedAt))).ok
      ? 'marked'
      : 'full';
  }

  private async onPath(
    name: string,
    steps: readonly Step[],
    cursor: Cursor,
    arrivedAt?: number,
  ): Promise<{ result: TransactResult; item?: Item }> {
    const node = steps[0];
    if (node?.kind !== 'update') throw new Error('a path write starts with an update of its lock');
    const ancestors = ancestorsOf(name, this.prefixes);
    const known = new Map<string, Item | undefined>();
    /** Intentions found gone from an ancestor (their grant lapsed, and they were removed): not removed again. */
    const gone = new Map<string, Set<string>>();
    const refusedNode = (old: Item | undefined): { result: TransactResult } => ({
      result: {
        ok: false,
        steps: steps.map((_, i) => (i === 0 ? { refused: true, old } : { refused: false })),
      },
    });
    for (let round = 0; round < ROUNDS; round++) {
      const now = this.clock.now();
      const seen = cursor.seen;
      // Judged against the read: a write whose condition fails there would fail at the item too (it is pinned).
      if (node.condition && !evaluate(node.condition, seen)) return refusedNode(seen);
      const delta = intentionDelta(seen, applyUpdate(seen, node.update), now);
      const guard = nodeGuard(name, seen, delta, now);
      if ('blocked' in guard) {
        if (delta.added.length > 0) throw new SubtreeConflict(guard.blocked);
        // A renewal that landed after its lease ended, with something below granted since.
        throw superseded(name, guard.blocked);
      }
      const nodeStep: Step = {
        ...node,
        condition: and(...(node.condition ? [node.condition] : []), guard.condition, pathPin(seen)),
        update: [...node.update, ...guard.updates, add(PATH_VERSION, 1, 0)],
        ...(guard.gcFrom === null ? { gcFrom: null } : {}),
      };
      const ops = ancestorOps(delta);
      const opsFor = (ancestor: string): AncestorOp[] =>
        ops.filter((op) => !gone.get(ancestor)?.has(intentionKey(name, op.grant.fencingToken)));
      const pathSteps = ancestors
        .map((a) => ({ a, ops: opsFor(a) }))
        .filter((x) => x.ops.length > 0)
        .map((x) => ({
          a: x.a,
          ops: x.ops,
          step: updateStep(lockRef(x.a), ancestorWrite(x.a, name, x.ops, known.get(x.a), now, arrivedAt)),
        }));
      const all = [nodeStep, ...steps.slice(1), ...pathSteps.map((p) => p.step)];
      // Refused by what this adds (the pin, the guard) while the caller's own condition still holds
      // on the item as it is: plan again from it. Refused by the caller's condition: the caller decides.
      const ownRefusal = (old: Item | undefined) => !node.condition || !evaluate(node.condition, old);
      if (all.length === 1) {
        const written = await this.storage.write(lockRef(name), nodeStep);
        cursor.seen = written.ok ? written.item : written.old;
        if (written.ok) return { result: { ok: true }, item: written.item };
        if (ownRefusal(written.old)) return refusedNode(written.old);
        continue;
      }
      const result = await this.storage.transact(all);
      if (result.ok) {
        const item = applyUpdate(seen, nodeStep.update);
        cursor.seen = item;
        return { result, item };
      }
      if (refusedAt(result, 0)) cursor.seen = oldAt(result, 0);
      const nodeOnly = refusedAt(result, 0) && !steps.some((_, i) => i > 0 && refusedAt(result, i));
      if (nodeOnly && !ownRefusal(cursor.seen)) continue;
      // The node or another of the caller's steps refused: the caller decides.
      if (steps.some((_, i) => refusedAt(result, i)) || result.steps.length === 0)
        return { result: { ok: false, steps: steps.map((_, i) => result.steps[i] ?? { refused: false }) } };
      for (const [i, p] of pathSteps.entries()) {
        const at = steps.length + i;
        if (!refusedAt(result, at)) continue;
        const old = oldAt(result, at);
        const verdict = ancestorVerdict(p.a, name, p.ops, old, now, arrivedAt);
        if (verdict.kind === 'blocked') throw new SubtreeConflict(verdict.block);
        if (verdict.kind === 'superseded') throw superseded(name, verdict.block);
        if (verdict.kind === 'full')
          throw new LatchkeyError(
            'TOO_MANY_HOLDERS',
            `${p.a} has too many grants held below it; release some first`,
          );
        if (verdict.kind === 'gone') {
          if (verdict.ops.some((op) => op.kind === 'renew'))
            throw new LatchkeyError(
              'LEASE_EXPIRED',
              `the lease on ${name} has ended: ${p.a}, above it, no longer counts it as held`,
            );
          const keys = gone.get(p.a) ?? new Set<string>();
          for (const op of verdict.ops) keys.add(intentionKey(name, op.grant.fencingToken));
          gone.set(p.a, keys);
        }
        known.set(p.a, old);
      }
    }
    throw new LatchkeyError('UNAVAILABLE', `the locks above ${name} kept changing; retry`, undefined, 50);
  }
}
