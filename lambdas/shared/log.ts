/**
 * One JSON line per event on stdout, which CloudWatch Logs indexes. LOG_LEVEL=silent mutes it.
 * Every line carries the current request context (shared/request-context.ts): `request_id`,
 * `principal` (the caller) and `operation`; a field the line names itself wins.
 */
import { currentContext } from './request-context';

/** The levels LOG_LEVEL takes, lowest first (the `logLevel` configuration key offers the same). */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
type Level = Exclude<LogLevel, 'silent'>;
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

function threshold(): number {
  const level = (process.env.LOG_LEVEL ?? 'info') as LogLevel;
  return ORDER[level] ?? ORDER.info;
}

function write(level: Level, message: string, fields: Record<string, unknown>): void {
  const line = { level, time: new Date().toISOString(), message, ...currentContext(), ...fields };
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

export function log(level: Level, message: string, fields: Record<string, unknown> = {}): void {
  if (ORDER[level] < threshold()) return;
  write(level, message, fields);
}

/**
 * The audit trail: one line per change of state, written after the change succeeded (never for a
 * refused write), by the service that knows the outcome. `audit` names the change (README:
 * "Operate"). In an audit line `principal` and `client_id` are the owner of the grant, session or
 * wait that changed, and `by` is who caused it: the caller's principal, or the component (timer,
 * sweep, stream) for a change nobody asked for.
 */
export type AuditEvent =
  /** A lock granted to an acquire (not through the queue). */
  | 'grant'
  /** A lock handed to the head of its queue. */
  | 'handoff'
  /** The holder acquired it again (reentrant): the count went up. */
  | 'reenter'
  /** A holder released it (or counted a re-entry down), or the lock went with its session. */
  | 'release'
  /** A lease extended. */
  | 'renew'
  /** A lease that had ended was found and replaced by the next grant (a lapse writes nothing itself). */
  | 'lapse'
  /** A grant pushed to a connection that was gone, taken back. */
  | 'take-back'
  /** An operator ended a grant. */
  | 'force-release'
  /** A request joined a lock's queue. */
  | 'wait'
  /** A request left a queue without a grant (timeout, cancelled, connection gone, session ended). */
  | 'wait-end'
  | 'session-open'
  /** A session ended: closed by its client or an operator, expired, or its connection closed. */
  | 'session-end';

export interface AuditFields {
  readonly lock?: string;
  readonly principal?: string;
  readonly client_id?: string;
  readonly fencing_token?: number;
  readonly session_id?: string;
  readonly reason?: string;
  readonly [field: string]: unknown;
}

/**
 * Logs one audit event at any LOG_LEVEL but silent (a verbosity setting never mutes the trail).
 * `by` defaults to the caller's principal, or the context's operation for internal work.
 */
export function audit(event: AuditEvent, fields: AuditFields): void {
  if (threshold() >= ORDER.silent) return;
  const context = currentContext();
  const by = fields.by ?? context?.principal ?? context?.operation;
  const defined = Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined));
  write(event === 'force-release' ? 'warn' : 'info', `audit: ${event}`, {
    audit: event,
    ...defined,
    ...(by === undefined ? {} : { by }),
  });
}

export function describeError(error: unknown): Record<string, unknown> {
  if (!(error instanceof Error)) return { error: String(error) };
  const cause = error.cause instanceof Error ? { cause: `${error.cause.name}: ${error.cause.message}` } : {};
  return { error: `${error.name}: ${error.message}`, ...cause };
}
