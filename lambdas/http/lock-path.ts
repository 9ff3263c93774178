import { invalidRequest, LatchkeyError } from '../core/errors';
import { lockPrefixProblem } from '../core/names';
import { lockName } from '../core/wire';
import { type HttpEvent, validate } from '../shared/http';

/**
 * Lock names and prefixes need no percent-escape (they use only A-Z a-z 0-9 . _ - : /), so any
 * escape in the raw path is refused before anything is decoded: the path IAM authorized (API
 * Gateway builds the execute-api resource from the request's path) and the name and action acted
 * on are then one and the same, and `.../jobs%2Fbilling/acquire` or `.../jobs/billing/%61cquire`
 * can never slip past a Deny written for `.../jobs/billing/acquire`.
 */
function plainPath(event: HttpEvent): void {
  if ((event.rawPath ?? '').includes('%'))
    throw invalidRequest(
      "the path may not be percent-encoded: lock names use only A-Z a-z 0-9 . _ - : / (write '/' as it is)",
    );
}

/** The lock name carried by the greedy path variable (GET /api/v1/locks/{name}), validated. */
export function lockNameFrom(event: HttpEvent): string {
  plainPath(event);
  return validate(lockName, event.pathParameters?.proxy ?? '', 'lock name');
}

/** Splits ".../locks/{name}/{action}" (the greedy variable holds "{name}/{action}"). */
export function lockCommandFrom(event: HttpEvent): { name: string; action: string } {
  plainPath(event);
  const path = event.pathParameters?.proxy ?? '';
  const slash = path.lastIndexOf('/');
  if (slash < 0) {
    throw new LatchkeyError(
      'NOT_FOUND',
      `no such route: POST ${event.rawPath}; use .../locks/{name}/acquire|release|renew|cancel`,
    );
  }
  return { name: validate(lockName, path.slice(0, slash), 'lock name'), action: path.slice(slash + 1) };
}

/** The prefix of GET /api/v1/list/{prefix} (empty for GET /api/v1/list), validated. */
export function listPrefixFrom(event: HttpEvent): string {
  plainPath(event);
  const prefix = event.pathParameters?.proxy ?? '';
  const problem = lockPrefixProblem(prefix);
  if (problem) throw invalidRequest(`prefix ${problem}`, [{ path: 'prefix', message: problem }]);
  return prefix;
}
