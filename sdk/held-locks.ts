/**
 * The locks the current task holds, for deadlock detection: a wait names them (`holding`), saying
 * it keeps them until it is served, and the service refuses with DEADLOCK a wait that would close
 * a cycle of such waits. withLock and withLocks run their callback with their locks added to the
 * task's; a wait made inside (or between the locks of a withLocks set) names them. Tracked per
 * async context (AsyncLocalStorage), so concurrent tasks sharing one client never name each
 * other's locks: one task's hold is no reason to think another task will keep it.
 */
import { AsyncLocalStorage } from 'node:async_hooks';

/** The most locks one wait names (the service's limit), in `holding` and in `enclosing` each. */
export const MAX_HOLDING = 32;
/** The most enclosing clients one wait names (the service's limit). */
export const MAX_ENCLOSING = 8;

const held = new AsyncLocalStorage<readonly string[]>();

/** Runs `fn` as a task that holds `names` too (besides what the enclosing task holds). */
export function runHolding<T>(names: readonly string[], fn: () => T): T {
  const outer = held.getStore() ?? [];
  return held.run([...outer, ...names.filter((n) => !outer.includes(n))], fn);
}

/**
 * Locks another client id of the same principal holds while this client waits (a process that
 * started this one, and waits for it: `latchkey run` nested in another run's command). Every wait
 * names them, so a cycle through them is refused as a deadlock instead of waiting forever.
 */
export interface EnclosingHolds {
  readonly clientId: string;
  readonly holding: readonly string[];
}

/** What a wait's body says it keeps while it waits (deadlock detection): `holding`, `enclosing`. */
export const keptBody = (holding: readonly string[] | undefined, enclosing: readonly EnclosingHolds[]) => ({
  ...(holding?.length ? { holding } : {}),
  ...(enclosing.length
    ? { enclosing: enclosing.map((c) => ({ client_id: c.clientId, holding: c.holding })) }
    : {}),
});

/**
 * What a wait for `lock` names as held: the task's own locks (withLock, withLocks), then the
 * explicit `holding` option, without `lock` itself or repeats, the first MAX_HOLDING of them.
 */
export function holdingFor(lock: string, explicit: readonly string[] | undefined): string[] {
  const names: string[] = [];
  for (const n of [...(held.getStore() ?? []), ...(explicit ?? [])])
    if (n !== lock && !names.includes(n)) names.push(n);
  return names.slice(0, MAX_HOLDING);
}
