/**
 * What this process knows of its own releases of a lease object: `asked` while one is on its way,
 * `done` once one was applied (the lock freed, or a re-entry counted down: either way this
 * object's entry was given back). withLock's keeper stops keeping a lease its holder released, and
 * does not count a refusal it caused as a loss; withLock's cleanup does not release it again.
 * Kept beside the lease (a WeakMap), so a plain or frozen lease object can be released too.
 */
export type ReleaseState = 'none' | 'asked' | 'done';

const known = new WeakMap<object, { readonly state: ReleaseState; readonly inFlight?: Promise<unknown> }>();

export const releaseStateOf = (lease: object): ReleaseState => known.get(lease)?.state ?? 'none';

/** The release of `lease` on its way, if one is. */
export const releaseInFlight = (lease: object): Promise<unknown> | undefined => known.get(lease)?.inFlight;

/**
 * Runs `release` as this process's release of `lease`: `asked` meanwhile (unless done already),
 * then `done` if `applied(result)`, else as before; a failure leaves it as before too.
 */
export async function trackRelease<T>(
  lease: object,
  release: () => Promise<T>,
  applied: (result: T) => boolean,
): Promise<T> {
  const before = releaseStateOf(lease);
  const running = release();
  if (before !== 'done') known.set(lease, { state: 'asked', inFlight: running });
  try {
    const result = await running;
    known.set(lease, { state: applied(result) || before === 'done' ? 'done' : before });
    return result;
  } catch (error) {
    known.set(lease, { state: before });
    throw error;
  }
}
