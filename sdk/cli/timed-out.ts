/**
 * A wait that timed out, told who held the lock: an HTTP wait's last answer says so; where the
 * error names nobody (a WebSocket wait's timeout says nothing), one look at the lock (sent once,
 * for at most 2 s after the wait) fills it in.
 */
import type { LockClient } from '../client';
import { type HeldWhenRefused, heldWhenRefused, WaitTimeoutError } from '../errors';
import type { WaitedLockView } from './run';

const LOOKUP_MS = 2_000;

/**
 * `error`, naming the holder to wait out if it did not: for a `shared` wait the lease that ends
 * first (a slot), for an exclusive one the last; unchanged if the lookup fails or finds it free.
 */
export async function explainedTimeout(
  client: LockClient,
  error: WaitTimeoutError,
  shared: boolean,
  /** Ends the lookup early (a signal to `run`). */
  signal?: AbortSignal,
): Promise<WaitTimeoutError> {
  if (error.holderSummary || error.heldByClient !== undefined) return error;
  const within = AbortSignal.timeout(LOOKUP_MS);
  const view: WaitedLockView | undefined = await client
    .inspect(error.lock, { attempts: 1, signal: signal ? AbortSignal.any([signal, within]) : within })
    .catch(() => undefined);
  const held = heldIn(view, shared, client.clientId);
  return held ? new WaitTimeoutError(error.lock, error.waitMs, undefined, held) : error;
}

/** Who holds the lock in `view`, as a refusal would say it to a `shared` (or exclusive) request. */
export function heldIn(
  view: WaitedLockView | undefined,
  shared: boolean,
  clientId: string,
): HeldWhenRefused | undefined {
  const holders = view?.holders ?? [];
  const end = (expiresAt: string | null | undefined) =>
    expiresAt ? Date.parse(expiresAt) : Number.POSITIVE_INFINITY;
  const sorted = [...holders].sort((a, b) => end(a.expires_at) - end(b.expires_at));
  const holder = shared ? sorted[0] : sorted.at(-1);
  // None, or this very client: a grant that came just after the wait ended, being given back.
  if (!holder || (holder.mine === true && holder.client_id === clientId)) return undefined;
  // As the service would have refused it (`mine`: this principal's, and this client id's).
  return heldWhenRefused({
    holder: { ...holder, mine: holder.mine === true && holder.client_id === clientId },
    ...(view?.mode === 'shared' ? { shared_holders: holders.length, max_holders: view.max_holders } : {}),
  });
}
