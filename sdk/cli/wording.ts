/**
 * Errors in the command line's own words: its flags and durations, not the SDK's calls and
 * arguments or the HTTP API's fields (`--ttl must be at least 1s`, not `ttl_ms must be at least
 * 1000`).
 */
import { formatDuration, formatExactDuration } from '../duration';
import {
  type HolderSummary,
  heldText,
  InvalidArgumentError,
  InvalidRequestError,
  LockHeldError,
  MaxHoldersMismatchError,
  UnavailableError,
  WaitTimeoutError,
} from '../errors';

interface Flag {
  readonly flag: string;
  /** Its numbers are milliseconds, shown as durations. */
  readonly duration?: true;
}

/** The SDK's arguments and the API's fields, as the CLI's flags. */
const FLAGS: Readonly<Record<string, Flag>> = {
  ttl_ms: { flag: '--ttl', duration: true },
  ttlMs: { flag: '--ttl', duration: true },
  wait_timeout_ms: { flag: '--wait', duration: true },
  waitTimeoutMs: { flag: '--wait', duration: true },
  priority: { flag: '--priority' },
  max_holders: { flag: '--max-holders' },
  maxHolders: { flag: '--max-holders' },
  reason: { flag: '--reason' },
};

/** One refusal of a field or argument (`ttl_ms must be at least 1000`), in the CLI's terms. */
function inFlagTerms(path: string, message: string): string | undefined {
  const known = FLAGS[path];
  if (!known) return undefined;
  const named = message.startsWith(path) ? message.slice(path.length) : ` ${message}`;
  const said = known.duration
    ? named
        .replace(/\ban integer number of milliseconds\b/, 'a duration of whole milliseconds')
        .replace(
          /\b(at least|at most) (\d+)\b/g,
          (_, bound: string, ms: string) => `${bound} ${formatExactDuration(Number(ms))}`,
        )
    : named;
  return `${known.flag}${said}`;
}

/** What follows a holder's name: whether it is this client id, and until when it holds the lock. */
function holderTail(h: HolderSummary, shared: LockHeldError['shared']): string {
  const left = h.expiresAt
    ? `, ${shared ? `${h.clientId}'s` : 'its'} lease ends in ${formatDuration(Math.max(0, h.expiresAt.getTime() - Date.now()))}`
    : ', for as long as its session lives';
  return `${h.mine ? ' (this client id)' : ''}${left}`;
}

/**
 * The message the CLI shows for `error`: refusals of its arguments named by flag, waits and
 * refusals with their durations and what to do; anything else as the SDK says it.
 */
export function cliMessage(error: unknown): string {
  if (error instanceof WaitTimeoutError) {
    const within = `lock ${error.lock} was not granted within ${formatDuration(error.waitMs)}`;
    if (error.heldByClient !== undefined)
      return `${within}: this client id (${error.heldByClient}) holds it already, and a wait does not queue behind its own hold; release it first, or wait as another --client-id`;
    const h = error.holderSummary;
    return h ? `${within}: it ${heldText(h.clientId, error.shared)}${holderTail(h, error.shared)}` : within;
  }
  if (error instanceof LockHeldError) {
    const h = error.holderSummary;
    if (!h) return error.message;
    // The SDK's own-hold advice names SDK calls: the tail says it in the CLI's terms.
    const what = error.blockedBy
      ? error.message
      : `lock ${error.lock} ${heldText(error.holder, error.shared)}`;
    return `${what}${holderTail(h, error.shared)}`;
  }
  if (error instanceof MaxHoldersMismatchError) {
    const n = error.maxHoldersInForce;
    return `${error.message.replace(/\bmax_holders\b/g, '--max-holders')}${n === undefined ? '' : ` (give --shared --max-holders ${n})`}`;
  }
  if (error instanceof InvalidArgumentError) {
    // The SDK names the call ("acquireNow: lock name …", "withLocks: locks[1]: …"); a command
    // line called none.
    const reason = error.message.replace(/^[\w.]+: (?:locks\[\d+\]: )?/, '');
    if (error.argument === 'reason')
      return '--reason must not be empty: it is recorded with your identity in the audit log';
    return inFlagTerms(error.argument, reason) ?? reason;
  }
  if (error instanceof InvalidRequestError && error.details.length > 0) {
    const each = error.details.map((d) => inFlagTerms(d.path, d.message));
    if (each.every((text) => text !== undefined)) return each.join('; ');
  }
  // A release or renew with the right token from another client id: the flag that names it.
  return ((error as Error)?.message ?? String(error)).replace(
    /that token is held by client (\S+): send the client_id that acquired it/,
    'that token is held by client $1: give --client-id $1',
  );
}

/**
 * Whether an acquire that failed with `error` may have been granted all the same: an attempt may
 * have reached the service (a 5xx, or no answer to a request that may have been sent), as the
 * SDK's transport recorded (unknown counts as maybe); not when every attempt was refused unsent.
 */
export function mayHaveBeenGranted(error: unknown): boolean {
  return error instanceof UnavailableError && error.mayHaveApplied !== false;
}

/** What to do about an acquire that failed as `mayHaveBeenGranted` says: for `acquire` (its lock) or `run`. */
export function maybeGrantedHint(command: 'acquire' | 'run', lock: string | undefined): string {
  return command === 'acquire'
    ? `the lock may have been granted all the same (the answer was lost): latchkey show ${lock ?? 'NAME'} shows a grant of yours there with its token (release it with latchkey release); else it lapses at its ttl`
    : `the lock may have been granted all the same (the answer was lost) to this run, which has ended: it lapses at its --ttl; or latchkey show ${lock ?? 'NAME'} shows its holder and token, to release it with latchkey release ${lock ?? 'NAME'} --token TOKEN --client-id HOLDER`;
}
