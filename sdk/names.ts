/**
 * Lock names: the one rule the service enforces and the SDK checks before it sends a name (the
 * SDK is published from sdk/ alone, so the rule lives here and the service imports it).
 *
 * A name is 1-256 characters of A-Z a-z 0-9 . _ - : /, with '/' separating levels of a hierarchy
 * ("jobs/billing/nightly"). Empty levels and the levels "." and ".." are refused: HTTP clients
 * rewrite such paths before sending them, so two callers could otherwise name different locks
 * for one path. The last level may not be an action word (RESERVED_LAST_LEVELS): the routes read
 * the action from the path's last level, so `.../locks/a/acquire` always means "acquire a", for
 * GET and POST alike, and for an IAM policy written against that path.
 */
export const LOCK_NAME_MAX_LENGTH = 256;
export const LOCK_NAME_CHARACTERS = 'A-Z a-z 0-9 . _ - : /';
const CHARSET = /^[A-Za-z0-9._\-:/]+$/;
const BAD_CHARACTER = /[^A-Za-z0-9._\-:/]/u;

/**
 * The actions of POST /api/v1/locks/{name}/{action} and POST /api/v1/admin/locks/{name}/{action},
 * and the view of GET /api/v1/locks/{name}/waits.
 */
export const RESERVED_LAST_LEVELS: readonly string[] = [
  'acquire',
  'release',
  'renew',
  'cancel',
  'force-release',
  'waits',
];

/** A name as an error message shows it: quoted, and cut short if long. */
function shown(value: string): string {
  return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
}

const wordList = (words: readonly string[]) => `${words.slice(0, -1).join(', ')} or ${words.at(-1)}`;

function charsetProblem(value: string): string {
  const bad = BAD_CHARACTER.exec(value)?.[0] ?? '';
  const hint = bad === '%' ? ': write the name as it is, not percent-encoded' : '';
  return `may contain only ${LOCK_NAME_CHARACTERS} (it contains ${shown(bad)}${hint})`;
}

/** Why `name` is not a well-formed lock name (characters, length, levels), or undefined. */
export function lockNameSyntaxProblem(name: string): string | undefined {
  if (name.length === 0) return 'must not be empty';
  if (name.length > LOCK_NAME_MAX_LENGTH)
    return `is ${name.length} characters long; the limit is ${LOCK_NAME_MAX_LENGTH}`;
  if (!CHARSET.test(name)) return charsetProblem(name);
  for (const level of name.split('/')) {
    if (level === '') return "has an empty level: it may not start or end with '/' or contain '//'";
    if (level === '.' || level === '..') return "may not contain the levels '.' or '..'";
  }
  return undefined;
}

/** Why `name` cannot name a lock (its syntax, or a reserved last level), or undefined. */
export function lockNameProblem(name: string): string | undefined {
  const syntax = lockNameSyntaxProblem(name);
  if (syntax) return syntax;
  const slash = name.lastIndexOf('/');
  const last = name.slice(slash + 1);
  if (!RESERVED_LAST_LEVELS.includes(last)) return undefined;
  const parent = slash < 0 ? undefined : name.slice(0, slash);
  const example =
    parent === undefined
      ? ''
      : last === 'waits'
        ? ` (GET /api/v1/locks/${parent}/waits shows who waits for whom around the lock ${shown(parent)})`
        : ` (POST /api/v1/locks/${parent}/${last} is the action ${last} on the lock ${shown(parent)}; GET /api/v1/locks/${parent} inspects it)`;
  return `ends in ${shown(last)}, a reserved word: a name's last level may not be ${wordList(RESERVED_LAST_LEVELS)}, because the routes read the action from the path's last level${example}`;
}

/** Why `prefix` cannot prefix lock names in a listing, or undefined. It may be empty and end with '/'. */
export function lockPrefixProblem(prefix: string): string | undefined {
  if (prefix === '') return undefined;
  if (prefix.length > LOCK_NAME_MAX_LENGTH)
    return `is ${prefix.length} characters long; the limit is ${LOCK_NAME_MAX_LENGTH}`;
  if (!CHARSET.test(prefix)) return charsetProblem(prefix);
  return undefined;
}

/** A refused name or prefix: the service answers it as 400 INVALID_NAME; the SDK throws it before sending. */
export interface NameRefusal {
  readonly code: 'INVALID_NAME';
  readonly message: string;
  readonly details: readonly { readonly path: string; readonly message: string }[];
}

const refusal = (what: 'name' | 'prefix', value: string, problem: string): NameRefusal => {
  const message = `lock ${what} ${shown(value)} ${problem}`;
  return { code: 'INVALID_NAME', message, details: [{ path: what, message }] };
};

/** The refusal of a lock name, or undefined when it is fine. */
export function lockNameRefusal(name: string): NameRefusal | undefined {
  const problem = lockNameProblem(name);
  return problem === undefined ? undefined : refusal('name', name, problem);
}

/** The refusal of a listing prefix, or undefined when it is fine. */
export function lockPrefixRefusal(prefix: string): NameRefusal | undefined {
  const problem = lockPrefixProblem(prefix);
  return problem === undefined ? undefined : refusal('prefix', prefix, problem);
}

/**
 * Identifiers the service takes besides lock names (client_id, request_id): 1-128 characters of
 * these. One rule for the service, the SDK and the CLI.
 */
export const IDENTIFIER_CHARACTERS = 'A-Z a-z 0-9 . _ - : @ / + =';
export const IDENTIFIER_MAX_LENGTH = 128;
export const IDENTIFIER = /^[A-Za-z0-9._\-:@/+=]{1,128}$/;

/** `raw` (a user or host name, say) made an identifier: other characters become `-`, cut to `max`. */
export const asIdentifier = (raw: string, max = IDENTIFIER_MAX_LENGTH) =>
  (raw.replace(/[^A-Za-z0-9._\-:@/+=]/g, '-') || '-').slice(0, max);
