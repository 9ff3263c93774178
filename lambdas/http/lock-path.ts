import { invalidRequest, LatchkeyError } from '../core/errors';
import { lockPrefixProblem } from '../core/names';
import { lockName } from '../core/wire';
import { type HttpEvent, validate } from '../shared/http';

/** The lock name carried by the greedy path variable, validated. */
export function lockNameFrom(path: string | undefined): string {
  return validate(lockName, path ?? '', 'lock name');
}

/** Splits ".../locks/{name}/{action}" (the greedy variable holds "{name}/{action}"). */
export function lockCommandFrom(event: HttpEvent): { name: string; action: string } {
  const path = event.pathParameters?.proxy ?? '';
  const slash = path.lastIndexOf('/');
  if (slash < 0) {
    throw new LatchkeyError(
      'NOT_FOUND',
      `no such route: POST ${event.rawPath}; use .../locks/{name}/acquire|release|renew|cancel`,
    );
  }
  return { name: lockNameFrom(path.slice(0, slash)), action: path.slice(slash + 1) };
}

/** The prefix of GET /api/v1/list/{prefix} (empty for GET /api/v1/list), validated. */
export function listPrefixFrom(path: string | undefined): string {
  const prefix = path ?? '';
  const problem = lockPrefixProblem(prefix);
  if (problem) throw invalidRequest(`prefix ${problem}`, [{ path: 'prefix', message: problem }]);
  return prefix;
}
