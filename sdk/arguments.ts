/**
 * Checks of what SDK calls are given, before anything is sent: a missing optional argument takes
 * its documented default, and anything else that is not what a call takes is an
 * InvalidArgumentError that names the argument and says what it takes (never a raw TypeError
 * from deep inside, nor a 400 from the service on every try).
 */
import { InvalidArgumentError } from './errors';
import { type EnclosingHolds, MAX_ENCLOSING, MAX_HOLDING } from './held-locks';
import { Lease } from './lease';
import type { LockMode, LockWant } from './multi-lock';
import { IDENTIFIER, IDENTIFIER_CHARACTERS, IDENTIFIER_MAX_LENGTH, lockNameRefusal } from './names';

/**
 * The lease length when a call does not give one. The service has no default (it requires
 * `ttl_ms`, within its limits: 1 s to 1 h unless the operator changed them); 30 s is the CLI's too.
 */
export const DEFAULT_TTL_MS = 30_000;

/** A value as a message shows it: strings quoted, objects by kind. */
export function shown(value: unknown): string {
  if (typeof value === 'string') return `'${value}'`;
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (typeof value === 'object') return `an object (${Object.keys(value).join(', ') || 'empty'})`;
  return String(value);
}

/**
 * A duration as the service takes it: whole milliseconds. Any finite, non-negative number is
 * accepted and rounded (a computed 2499.7 ms is fine); NaN, ±Infinity, a negative number or a
 * non-number is refused, naming the option. With `infinite`, Infinity is taken too (and returned
 * as is): it means "no limit".
 */
export function wholeMs(what: string, value: unknown, options: { infinite?: boolean } = {}): number {
  if (typeof value !== 'number') {
    const hint =
      typeof value === 'string'
        ? `; for a duration in text, convert it first: parseDuration(${shown(value)})`
        : '';
    throw new InvalidArgumentError(
      what,
      `${what} must be a number of milliseconds (got ${shown(value)})${hint}`,
    );
  }
  if (value === Number.POSITIVE_INFINITY && options.infinite) return value;
  if (Number.isNaN(value))
    throw new InvalidArgumentError(
      what,
      `${what} must be a number of milliseconds, not NaN (a computation that failed?)`,
    );
  if (!Number.isFinite(value))
    throw new InvalidArgumentError(what, `${what} must be a finite number of milliseconds (got ${value})`);
  if (value < 0) throw new InvalidArgumentError(what, `${what} must not be negative (got ${value} ms)`);
  return Math.round(value);
}

/**
 * The options object of a call: absent is `{}`; a number or a string is a mistake worth naming, and
 * so is a key the call does not take (`ttl` for `ttlMs` would otherwise leave the default in force
 * without a word, where the HTTP API refuses an unknown field). `known`: the keys it takes.
 */
export function optionsArg<T extends object>(
  call: string,
  value: T | undefined,
  example: string,
  known: readonly string[],
): T {
  if (value === undefined || value === null) return {} as T;
  if (typeof value !== 'object' || Array.isArray(value))
    throw new InvalidArgumentError(
      'options',
      `${call}: options must be an object, e.g. ${example} (got ${shown(value)})`,
    );
  const unknown = Object.keys(value).find((key) => !known.includes(key));
  if (unknown !== undefined) {
    const near = nearestKey(unknown, known);
    throw new InvalidArgumentError(
      unknown,
      `${call}: no option ${unknown}${near ? ` (did you mean ${near}?)` : ''}; it takes ${known.join(', ')}`,
    );
  }
  return value;
}

/** The known key an unknown one was likely meant as: the same but for case, `_` and a `Ms` suffix, or a prefix. */
function nearestKey(key: string, known: readonly string[]): string | undefined {
  const bare = (k: string) => k.toLowerCase().replace(/_/g, '').replace(/ms$/, '');
  return (
    known.find((k) => bare(k) === bare(key)) ??
    known.find(
      (k) => bare(key).length >= 3 && (bare(k).startsWith(bare(key)) || bare(key).startsWith(bare(k))),
    )
  );
}

/**
 * A lock name: a string the service takes (sdk/names.ts, the service's own rule), refused here
 * before it is put in a path: the URL would otherwise rewrite it ("a/./b" is "a/b", "a?b" is "a")
 * or percent-encode it, and the service would answer about the path instead of the name.
 */
export function nameArg(call: string, value: unknown): string {
  if (typeof value !== 'string')
    throw new InvalidArgumentError(
      'name',
      `${call}: name must be the lock's name, a string like 'jobs/nightly-report' (got ${shown(value)})`,
    );
  const refusal = lockNameRefusal(value);
  if (refusal) throw new InvalidArgumentError('name', `${call}: ${refusal.message}`, 'INVALID_NAME');
  return value;
}

/** The `holding` option: lock names (checked like any name), or undefined. */
export function holdingArg(value: unknown): readonly string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value))
    throw new InvalidArgumentError(
      'holding',
      `holding must be an array of the lock names this task holds while it waits (got ${shown(value)})`,
    );
  for (const name of value) nameArg('holding', name);
  return value as readonly string[];
}

/**
 * The `enclosing` client option: other client ids of this principal and the locks each holds (one
 * `{ clientId, holding }`, or a list of them, outermost first), within the service's limits.
 */
export function enclosingArg(value: unknown): readonly EnclosingHolds[] {
  if (value === undefined) return [];
  const list = Array.isArray(value) ? (value as unknown[]) : [value];
  const checked = list.map((one) => enclosingClient(one));
  const names = checked.reduce((n, c) => n + c.holding.length, 0);
  if (checked.length > MAX_ENCLOSING || names > MAX_HOLDING)
    throw new InvalidArgumentError(
      'enclosing',
      `enclosing names at most ${MAX_ENCLOSING} clients and ${MAX_HOLDING} locks in all (got ${checked.length} and ${names}): the service takes no more`,
    );
  return checked;
}

function enclosingClient(value: unknown): EnclosingHolds {
  const given = value as Partial<EnclosingHolds> | null;
  const names = given?.holding;
  if (typeof given !== 'object' || given === null || !Array.isArray(names) || names.length === 0)
    throw new InvalidArgumentError(
      'enclosing',
      `enclosing must be { clientId, holding } (or a list of them): the client id that holds locks while this client waits, and those locks (got ${shown(value)})`,
    );
  const { clientId } = given;
  if (typeof clientId !== 'string' || !IDENTIFIER.test(clientId))
    throw new InvalidArgumentError(
      'enclosing',
      `enclosing.clientId must be the id of the client that holds the locks: 1 to ${IDENTIFIER_MAX_LENGTH} characters of ${IDENTIFIER_CHARACTERS} (got ${shown(clientId)})`,
    );
  for (const name of names) nameArg('enclosing', name);
  return { clientId, holding: [...new Set(names as string[])] };
}

/** A lease this SDK answered (or one built from a name, client id and fencing token). */
export function leaseArg(call: string, value: unknown): Lease {
  const l = value as Partial<Lease> | undefined;
  if (
    value instanceof Lease ||
    (typeof l === 'object' &&
      l !== null &&
      typeof l.name === 'string' &&
      typeof l.clientId === 'string' &&
      typeof l.fencingToken === 'number')
  )
    return value as Lease;
  throw new InvalidArgumentError(
    'lease',
    `${call} takes the Lease that tryAcquire or acquire answered (got ${shown(value)})`,
  );
}

/** A queue priority: an integer in −100..100 (the service may allow less). */
export function priorityArg(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < -100 || value > 100)
    throw new InvalidArgumentError(
      'priority',
      `priority must be an integer from -100 to 100, higher served first (got ${shown(value)})`,
    );
  return value;
}

/** The most holders a semaphore may have (the service's bound on `max_holders`). */
export const MAX_HOLDERS_LIMIT = 1_000;

/**
 * How a lock is asked for: `mode` 'exclusive' (the default) or 'shared', and `maxHolders` (an
 * integer 1..1000, only with 'shared': a semaphore of that many holders). `where` prefixes the
 * messages (e.g. "withLocks: locks[1] (jobs/b): ").
 */
export function wantArg(given: { mode?: unknown; maxHolders?: unknown }, where = ''): LockWant {
  const { mode, maxHolders } = given;
  if (mode !== undefined && mode !== 'exclusive' && mode !== 'shared')
    throw new InvalidArgumentError(
      'mode',
      `${where}mode must be 'exclusive' (one holder, the default) or 'shared' (many holders at once) (got ${shown(mode)})`,
    );
  const asked = (mode ?? 'exclusive') as LockMode;
  if (maxHolders === undefined) return { mode: asked };
  if (asked !== 'shared')
    throw new InvalidArgumentError(
      'maxHolders',
      `${where}maxHolders makes a semaphore of shared holders: it takes mode: 'shared' (got maxHolders ${shown(maxHolders)} with mode ${shown(asked)}${mode === undefined ? ', the default' : ''})`,
    );
  if (
    typeof maxHolders !== 'number' ||
    !Number.isInteger(maxHolders) ||
    maxHolders < 1 ||
    maxHolders > MAX_HOLDERS_LIMIT
  )
    throw new InvalidArgumentError(
      'maxHolders',
      `${where}maxHolders must be an integer from 1 to ${MAX_HOLDERS_LIMIT}: how many may hold the lock at once (got ${shown(maxHolders)})`,
    );
  return { mode: 'shared', maxHolders };
}

export function booleanArg(what: string, value: unknown): boolean | undefined {
  if (value === undefined || typeof value === 'boolean') return value;
  throw new InvalidArgumentError(what, `${what} must be true or false (got ${shown(value)})`);
}

export function signalArg(value: unknown): AbortSignal | undefined {
  if (value === undefined || value instanceof AbortSignal) return value;
  throw new InvalidArgumentError(
    'signal',
    `signal must be an AbortSignal, e.g. AbortSignal.timeout(60_000) or an AbortController's signal (got ${shown(value)})`,
  );
}

/** How many times to send a call (the first included): a whole number from 1 to 10. */
export function attemptsArg(value: unknown): number {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 10) return value;
  throw new InvalidArgumentError(
    'attempts',
    `attempts must be a whole number from 1 to 10 (got ${shown(value)})`,
  );
}

export function clientIdArg(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string' && IDENTIFIER.test(value)) return value;
  throw new InvalidArgumentError(
    'clientId',
    `clientId must be 1 to ${IDENTIFIER_MAX_LENGTH} characters of ${IDENTIFIER_CHARACTERS} (got ${shown(value)})`,
  );
}

/** A URL of one of the given schemes; `what` and `expected` say which and what it should be. */
export function urlArg(what: string, value: unknown, schemes: readonly string[], expected: string): URL {
  let url: URL | undefined;
  try {
    url = typeof value === 'string' ? new URL(value) : undefined;
  } catch {
    url = undefined;
  }
  if (url && schemes.includes(url.protocol)) return url;
  throw new InvalidArgumentError(what, `${what} must be ${expected} (got ${shown(value)})`);
}
