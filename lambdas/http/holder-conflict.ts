import { LatchkeyError } from '../core/errors';
import { errorResponse, type HttpResult, json } from '../shared/http';

/**
 * Release and renew answer 409 `{released|renewed: false, error}` when the
 * caller is not (or no longer) the holder, or (renew) holds it through a
 * session, and 403 with the same shape when another principal holds it;
 * other errors pass through.
 */
const REFUSALS = new Set(['NOT_HOLDER', 'LEASE_EXPIRED', 'HELD_BY_SESSION', 'FORBIDDEN']);

export async function holderConflict(
  flag: 'released' | 'renewed',
  run: () => Promise<object>,
): Promise<HttpResult> {
  try {
    return json(200, await run());
  } catch (error) {
    if (error instanceof LatchkeyError && REFUSALS.has(error.code)) {
      return errorResponse(error, { [flag]: false });
    }
    throw error;
  }
}
