/**
 * Several locks held together (`LockClient.withLocks`, `latchkey run --lock A --lock B`). Every
 * caller takes them in one canonical order, the names sorted by plain code-unit order, so two
 * callers that want the same set can never each hold one and wait for the other. Each lock is
 * acquired through its own path (`/api/v1/locks/{name}/acquire`), so IAM scoping by name holds
 * for every one. On any failure while acquiring, what is already held is released; once all are
 * held, each lease has its own keeper, and one signal aborts if any of them is lost.
 */

import {
  DEFAULT_TTL_MS,
  holdingArg,
  nameArg,
  optionsArg,
  priorityArg,
  shown,
  signalArg,
  wantArg,
  wholeMs,
} from './arguments';
import { InvalidArgumentError, LockHeldError, markMayHaveApplied } from './errors';
import { runHolding } from './held-locks';
import type { Lease } from './lease';
import { lostWhileHeld } from './lease-keeper';

/**
 * How a lock is held: `exclusive` (one holder, the default) or `shared` (many holders at once, and
 * no exclusive one: readers against writers). A shared lock with `maxHolders` N is a semaphore:
 * at most N holders at once.
 */
export type LockMode = 'exclusive' | 'shared';

/** How a lock is asked for: its mode and, for a semaphore (shared only), how many may hold it. */
export interface LockWant {
  readonly mode: LockMode;
  /** Shared only: at most this many holders at once (1..1000); every holder must ask for the same. */
  readonly maxHolders?: number | undefined;
}

/** The acquire body's fields for `want`: none for exclusive (the service's default), so those requests are unchanged. */
export function wantBody(want: LockWant | undefined): { mode?: 'shared'; max_holders?: number } {
  if (want === undefined || want.mode !== 'shared') return {};
  return want.maxHolders === undefined
    ? { mode: 'shared' }
    : { mode: 'shared', max_holders: want.maxHolders };
}

/** One lock of a set: its name (exclusive), or its name and mode (and, shared, its maxHolders). */
export type LockSpec =
  | string
  | { readonly name: string; readonly mode?: LockMode; readonly maxHolders?: number | undefined };

/** A lock of a set as it is acquired: named, with its mode (default `exclusive`) and maxHolders if any. */
export interface LockRequest extends LockWant {
  readonly name: string;
}

/**
 * What `withLocks` runs while every lock is held.
 * - `leases`: one Lease per lock, in the canonical order (sorted by name), whatever order the
 *   locks were given in.
 * - `signal`: aborts when any of the leases is lost (or cannot be confirmed before its local
 *   deadline); its `reason` is the first lost lease's LeaseLostError.
 * - `byName`: the same leases by lock name: `byName.get('ledger/a')?.fencingToken`.
 */
export type WithLocksCallback<T> = (
  leases: Lease[],
  signal: AbortSignal,
  byName: ReadonlyMap<string, Lease>,
) => T | Promise<T>;

/**
 * The canonical order of lock names: plain UTF-16 code-unit order (what `<` compares; never
 * locale-aware, so every process and language sorts the same). `withLocks` and `latchkey run`
 * both acquire in this order; a program that takes several locks by other means should too.
 */
export function compareLockNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * A set of locks checked and put in the canonical order (compareLockNames): at least one, each a
 * valid lock name (or `{ name, mode?, maxHolders? }`: mode `exclusive` or `shared`, maxHolders an
 * integer 1..1000 with `shared` only), no name twice. The order is the same whatever the modes:
 * a set that mixes shared and exclusive locks cannot deadlock either.
 * Throws InvalidArgumentError naming what is wrong. `call` names the caller in messages.
 */
export function lockOrder(locks: readonly LockSpec[], call = 'withLocks'): LockRequest[] {
  if (!Array.isArray(locks))
    throw new InvalidArgumentError(
      'locks',
      `${call}: locks must be an array of lock names or { name, mode?, maxHolders? } objects, e.g. ['jobs/a', { name: 'jobs/b', mode: 'shared' }] (got ${shown(locks)})`,
    );
  if (locks.length === 0)
    throw new InvalidArgumentError(
      'locks',
      `${call}: locks must name at least one lock, e.g. ['jobs/a', 'jobs/b'] (got an empty array)`,
    );
  const seen = new Set<string>();
  const requests = locks.map((spec: unknown, i): LockRequest => {
    const given =
      typeof spec === 'string'
        ? { name: spec, mode: undefined }
        : typeof spec === 'object' && spec !== null && !Array.isArray(spec)
          ? (spec as { name?: unknown; mode?: unknown; maxHolders?: unknown })
          : undefined;
    if (given === undefined)
      throw new InvalidArgumentError(
        'locks',
        `${call}: locks[${i}] must be a lock name or { name, mode?, maxHolders? } (got ${shown(spec)})`,
      );
    const name = nameArg(`${call}: locks[${i}]`, given.name);
    const want = wantArg(
      { mode: given.mode, maxHolders: 'maxHolders' in given ? given.maxHolders : undefined },
      `${call}: locks[${i}] (${name}): `,
    );
    if (seen.has(name))
      throw new InvalidArgumentError(
        'locks',
        `${call}: the lock ${name} is named twice: each lock of a set must be named once`,
      );
    seen.add(name);
    return { name, ...want };
  });
  return requests.sort((a, b) => compareLockNames(a.name, b.name));
}

/** How a LockClient takes, keeps and releases one lock of a set (its own paths, injected for tests). */
export interface LockTaker {
  /** One try without waiting, in `want`'s mode: the lease, or the LockHeldError to throw. */
  tryOnce(name: string, want: LockWant, ttlMs: number): Promise<Lease | LockHeldError>;
  /** A wait in the lock's queue of at most `waitTimeoutMs` (Infinity: no limit), ended by `signal`. */
  wait(
    name: string,
    want: LockWant,
    options: {
      ttlMs: number;
      waitTimeoutMs: number;
      priority: number | undefined;
      signal: AbortSignal | undefined;
      holding: readonly string[] | undefined;
    },
  ): Promise<Lease>;
  /** Renews `lease` in the background until stopped; `signal` aborts when it is lost. */
  keep(lease: Lease, stopMarginMs: number | undefined): { readonly signal: AbortSignal; stop(): void };
  /** Releases without failing (a lease that cannot be released lapses at its ttl). */
  releaseQuietly(lease: Lease): Promise<boolean>;
}

/** withLocks' options, checked before anything is sent (the same rules and defaults as withLock). */
export interface CheckedOptions {
  readonly ttlMs: number;
  readonly waitTimeoutMs: number;
  readonly priority: number | undefined;
  readonly signal: AbortSignal | undefined;
  readonly stopMarginMs: number | undefined;
  /** Locks held outside the set (taken by hand), named by each wait besides the set's own. */
  readonly holding: readonly string[] | undefined;
}

export function withLocksOptions(
  call: string,
  given:
    | {
        ttlMs?: number;
        waitTimeoutMs?: number;
        priority?: number;
        signal?: AbortSignal;
        stopMarginMs?: number;
        holding?: readonly string[];
      }
    | undefined,
): CheckedOptions {
  const options = optionsArg(call, given, '{ ttlMs: 30_000, waitTimeoutMs: 60_000 }', [
    'ttlMs',
    'waitTimeoutMs',
    'priority',
    'signal',
    'stopMarginMs',
    'holding',
    // Refused below, saying where they go instead.
    'mode',
    'maxHolders',
  ]);
  for (const key of ['mode', 'maxHolders'] as const)
    if ((options as Record<string, unknown>)[key] !== undefined)
      throw new InvalidArgumentError(
        key,
        `${call}: ${key} goes with each lock, not in the options: e.g. [{ name: 'jobs/a', mode: 'shared', maxHolders: 3 }, 'jobs/b'] (got options.${key} ${shown((options as Record<string, unknown>)[key])})`,
      );
  return {
    ttlMs: wholeMs('ttlMs', options.ttlMs ?? DEFAULT_TTL_MS),
    waitTimeoutMs: wholeMs('waitTimeoutMs', options.waitTimeoutMs ?? 0, { infinite: true }),
    priority: priorityArg(options.priority),
    signal: signalArg(options.signal),
    stopMarginMs:
      options.stopMarginMs === undefined ? undefined : wholeMs('stopMarginMs', options.stopMarginMs),
    holding: holdingArg(options.holding),
  };
}

interface Held {
  readonly lease: Lease;
  readonly keeper: { readonly signal: AbortSignal; stop(): void };
}

/**
 * Acquires `requests` (already in the canonical order) one after another, runs `fn` holding them
 * all, and releases them in reverse order when it settles. `waitTimeoutMs` is one deadline for the
 * whole set: each lock waits for what is left of it (0: each is tried once, LockHeldError if
 * held). Each lease is kept from the moment it is granted (a long wait for the next one must not
 * let it lapse); a lease lost while waiting for a later lock, or `signal` aborting, ends that wait.
 * Any failure while acquiring releases what is held (best effort) and rethrows the failure; the
 * release after `fn` never replaces what `fn` returned or threw. What `fn` returned while a lease
 * was lost (or past its deadline) is not returned: that LeaseLostError is thrown instead.
 */
export async function holdLocks<T>(
  taker: LockTaker,
  requests: readonly LockRequest[],
  options: CheckedOptions,
  fn: WithLocksCallback<T>,
): Promise<T> {
  const held: Held[] = [];
  /** Releases what is held; false if some could not be (held until its ttl). */
  const releaseAll = async () => {
    for (const h of held) h.keeper.stop();
    let all = true;
    for (const h of [...held].reverse()) all = (await taker.releaseQuietly(h.lease)) && all;
    return all;
  };
  const until = performance.now() + options.waitTimeoutMs;
  try {
    for (const { name, ...want } of requests) {
      const ending = [...(options.signal ? [options.signal] : []), ...held.map((h) => h.keeper.signal)];
      const signal = ending.length === 0 ? undefined : AbortSignal.any(ending);
      signal?.throwIfAborted();
      let lease: Lease;
      if (options.waitTimeoutMs > 0) {
        // What is left of the one deadline (at least 1 ms: a wait, not a try).
        const left = Math.max(1, Math.round(until - performance.now())); // Infinity stays Infinity
        // Each wait names the locks of the set already held (deadlock detection).
        lease = await runHolding(
          held.map((h) => h.lease.name),
          () =>
            taker.wait(name, want, {
              ttlMs: options.ttlMs,
              waitTimeoutMs: left,
              priority: options.priority,
              signal,
              holding: options.holding,
            }),
        );
      } else {
        const got = await taker.tryOnce(name, want, options.ttlMs);
        if (got instanceof LockHeldError) throw got;
        lease = got;
      }
      held.push({ lease, keeper: taker.keep(lease, options.stopMarginMs) });
    }
  } catch (error) {
    if (!(await releaseAll())) markMayHaveApplied(error);
    throw error;
  }
  const leases = held.map((h) => h.lease);
  const byName = new Map(requests.map((r, i) => [r.name, leases[i] as Lease]));
  const first = held[0] as Held;
  const signal = held.length === 1 ? first.keeper.signal : AbortSignal.any(held.map((h) => h.keeper.signal));
  try {
    const value = await runHolding(
      leases.map((l) => l.name),
      () => fn(leases, signal, byName),
    );
    const lost = await lostWhileHeld(leases, signal);
    if (lost) throw lost;
    return value;
  } finally {
    // Best effort: a lease already lost has nothing to release, and one that cannot be released
    // now lapses at its ttl; neither may replace what `fn` returned or threw.
    await releaseAll();
  }
}
