import { LatchkeyError } from '../core/errors';
import { LOCK_NAME_CHARACTERS, lockNameRefusal, lockPrefixRefusal, type NameRefusal } from '../core/names';
import type { HttpEvent } from '../shared/http';

/** What a lock route reads from its request: the path, as sent and as API Gateway decoded it. */
export type PathEvent = Pick<HttpEvent, 'rawPath' | 'pathParameters'>;

const refused = (refusal: NameRefusal) => new LatchkeyError(refusal.code, refusal.message, refusal.details);

/**
 * Lock names and prefixes need no percent-escape (they use only A-Z a-z 0-9 . _ - : /), so any
 * escape in the raw path is refused: the path IAM authorized (API Gateway builds the execute-api
 * resource from the request's path) and the name and action acted on are then one and the same,
 * and `.../jobs%2Fbilling/acquire` or `.../jobs/billing/%61cquire` can never slip past a Deny
 * written for `.../jobs/billing/acquire`. A name that is wrong once decoded ("a b", "café") is
 * refused for what is wrong with it, as the SDK refuses it before sending.
 */
function plainPath(event: PathEvent): void {
  const escaped = /%[0-9A-Fa-f]{2}|%/.exec(event.rawPath ?? '')?.[0];
  if (!escaped) return;
  const message = `the path may not be percent-encoded (it contains ${JSON.stringify(escaped)}): write the lock name as it is, '/' included; lock names use only ${LOCK_NAME_CHARACTERS}`;
  throw new LatchkeyError('INVALID_NAME', message, [{ path: 'name', message }]);
}

function checkedName(name: string): string {
  const refusal = lockNameRefusal(name);
  if (refusal) throw refused(refusal);
  return name;
}

/** The lock name carried by the greedy path variable (GET /api/v1/locks/{name}), validated. */
export function lockNameFrom(event: PathEvent): string {
  const name = checkedName(event.pathParameters?.proxy ?? '');
  plainPath(event);
  return name;
}

/** The views of GET /api/v1/locks/{name}/{view} (besides the lock itself): reserved last levels too. */
export const LOCK_VIEWS: readonly string[] = ['waits'];

/** What GET /api/v1/locks/{proxy+} shows: the lock itself, or (`.../{name}/waits`) its wait-for graph. */
export function lockViewFrom(event: PathEvent): { name: string; view: 'lock' | 'waits' } {
  const path = event.pathParameters?.proxy ?? '';
  const slash = path.lastIndexOf('/');
  if (slash > 0 && LOCK_VIEWS.includes(path.slice(slash + 1))) {
    const name = checkedName(path.slice(0, slash));
    plainPath(event);
    return { name, view: 'waits' };
  }
  return { name: lockNameFrom(event), view: 'lock' };
}

/** Splits ".../locks/{name}/{action}" (the greedy variable holds "{name}/{action}"). */
export function lockCommandFrom(event: PathEvent): { name: string; action: string } {
  const path = event.pathParameters?.proxy ?? '';
  const slash = path.lastIndexOf('/');
  if (slash < 0) {
    plainPath(event);
    throw new LatchkeyError(
      'NOT_FOUND',
      `no such route: POST ${event.rawPath}; use .../locks/{name}/acquire|release|renew|cancel`,
    );
  }
  const name = checkedName(path.slice(0, slash));
  plainPath(event);
  return { name, action: path.slice(slash + 1) };
}

/** The prefix of GET /api/v1/list/{prefix} (empty for GET /api/v1/list), validated. */
export function listPrefixFrom(event: PathEvent): string {
  const prefix = event.pathParameters?.proxy ?? '';
  const refusal = lockPrefixRefusal(prefix);
  if (refusal) throw refused(refusal);
  plainPath(event);
  return prefix;
}

/**
 * What each route that carries a lock name or prefix in its path reads from it, by route key. The
 * local gateway runs it before checking the signature, so that a bad name is answered with the
 * same 400 the function gives, whatever canonical path the client's signer computed for it.
 */
export const PATH_READERS: Readonly<Record<string, (event: PathEvent) => unknown>> = {
  'POST /api/v1/locks/{proxy+}': lockCommandFrom,
  'GET /api/v1/locks/{proxy+}': lockViewFrom,
  'GET /api/v1/list/{proxy+}': listPrefixFrom,
  'GET /api/v1/list': listPrefixFrom,
  'POST /api/v1/admin/locks/{proxy+}': lockCommandFrom,
};
