import { LatchkeyError } from '../core/errors';
import { errorResponse, type HttpResult, json } from '../shared/http';

/**
 * Release and renew answer 409 `{released|renewed: false, error}` when the
 * caller is not (or no longer) the holder; other errors pass through.
 */
export async function holderConflict(
  flag: 'released' | 'renewed',
  run: () => Promise<object>,
): Promise<HttpResult> {
  try {
    return json(200, await run());
  } catch (error) {
    if (error instanceof LatchkeyError && (error.code === 'NOT_HOLDER' || error.code === 'LEASE_EXPIRED')) {
      return errorResponse(error, { [flag]: false });
    }
    throw error;
  }
}
