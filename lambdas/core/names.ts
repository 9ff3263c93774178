/**
 * Lock names: 1-256 characters of A-Z a-z 0-9 . _ - : /, with '/' separating
 * levels of a hierarchy ("jobs/billing/nightly"). Empty levels and the levels
 * "." and ".." are refused: HTTP clients rewrite such paths before sending
 * them, so two callers could otherwise name different locks for one path.
 */
export const LOCK_NAME_MAX_LENGTH = 256;
const LOCK_NAME_CHARSET = /^[A-Za-z0-9._\-:/]+$/;

/** Returns why a lock name is unacceptable, or undefined when it is fine. */
export function lockNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'must not be empty';
  if (name.length > LOCK_NAME_MAX_LENGTH) return `must be at most ${LOCK_NAME_MAX_LENGTH} characters`;
  if (!LOCK_NAME_CHARSET.test(name)) return 'may contain only A-Z a-z 0-9 . _ - : /';
  for (const level of name.split('/')) {
    if (level === '') return "must not start or end with '/' or contain '//'";
    if (level === '.' || level === '..') return "must not contain the levels '.' or '..'";
  }
  return undefined;
}

/** Prefixes for listing follow the same charset; they may end with '/'. */
export function lockPrefixProblem(prefix: string): string | undefined {
  if (prefix === '') return undefined;
  if (prefix.length > LOCK_NAME_MAX_LENGTH) return `must be at most ${LOCK_NAME_MAX_LENGTH} characters`;
  if (!LOCK_NAME_CHARSET.test(prefix)) return 'may contain only A-Z a-z 0-9 . _ - : /';
  return undefined;
}
