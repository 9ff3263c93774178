/**
 * What this process knows of its own releases of a lease object. One lease object is one entry of
 * a grant, so every release of it carries one release_id: a second release of it (withLock's
 * cleanup after the callback's own, two calls at once, a retry after a failure) is answered as
 * the first, never applied twice (a re-entered lock would count down twice and be freed under
 * another entry). States: `asked` while a release is on its way, `done` once one was applied.
 * A release refused because the lease had ended already says the lease was lost.
 * withLock's keeper stops keeping a lease its holder released, and does not count a refusal it
 * caused as a loss. Kept beside the lease (a WeakMap), so a plain or frozen lease object can be
 * released too.
 */
import { randomUUID } from 'node:crypto';
import { LeaseLostError } from './errors';

export type ReleaseState = 'none' | 'asked' | 'done';

interface Known {
  readonly releaseId: string;
  readonly pending: Set<Promise<unknown>>;
  applied: boolean;
  /** A release refused because the lease had ended: it was lost, not released. */
  lost?: LeaseLostError;
}

const known = new WeakMap<object, Known>();

function knownOf(lease: object): Known {
  let k = known.get(lease);
  if (!k) {
    k = { releaseId: randomUUID(), pending: new Set(), applied: false };
    known.set(lease, k);
  }
  return k;
}

export function releaseStateOf(lease: object): ReleaseState {
  const k = known.get(lease);
  return k?.applied ? 'done' : k?.pending.size ? 'asked' : 'none';
}

/** The one release_id every release of this lease object carries. */
export const releaseIdOf = (lease: object): string => knownOf(lease).releaseId;

/** The refusal that said the lease had ended when its holder released it, if one did. */
export const lostOnRelease = (lease: object): LeaseLostError | undefined => known.get(lease)?.lost;

/** Resolves once no release of `lease` is on its way (whatever their outcomes). */
export async function releasesSettled(lease: object): Promise<void> {
  const k = known.get(lease);
  while (k?.pending.size) await Promise.allSettled([...k.pending]);
}

/** Runs `release` as a release of `lease`: `done` from the first that `applied(result)`. */
export async function trackRelease<T>(
  lease: object,
  release: () => Promise<T>,
  applied: (result: T) => boolean,
): Promise<T> {
  const k = knownOf(lease);
  const running = release();
  k.pending.add(running);
  try {
    const result = await running;
    if (applied(result)) k.applied = true;
    return result;
  } catch (error) {
    if (error instanceof LeaseLostError && !k.applied) k.lost = error;
    throw error;
  } finally {
    k.pending.delete(running);
  }
}
