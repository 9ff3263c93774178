/** The `latchkey` command line, built only on the SDK. */
import { createRequire } from 'node:module';
import { hostname, userInfo } from 'node:os';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { MAX_HOLDERS_LIMIT } from '../arguments';
import { LockClient, MAX_HTTP_WAIT_MS } from '../client';
import { formatDuration, parseDuration } from '../duration';
import {
  InvalidArgumentError as BadArgument,
  DeadlockError,
  EndpointError,
  LatchkeyClientError,
  LockHeldError,
  RetryWarning,
  UnavailableError,
  WaitTimeoutError,
} from '../errors';
import { Lease } from '../lease';
import { asIdentifier } from '../names';
import { addDeadlockCommands, deadlockLines, edgeWire } from './deadlocks';
import { type EndpointFlags, type Endpoints, endpointHint, resolveEndpoints } from './endpoints';
import { showFrame } from './frames';
import { DEFAULT_KILL_GRACE_MS, EXIT, enclosingRun, graceRefusal, runLocked, waitingNote } from './run';
import { explainedTimeout } from './timed-out';
import { addTopCommand } from './top';
import { cliMessage, maybeGrantedHint, mayHaveBeenGranted } from './wording';

interface Globals extends EndpointFlags {
  readonly region?: string;
  readonly json?: boolean;
  readonly clientId?: string;
}

const duration = (value: string) => {
  try {
    return parseDuration(value);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
};
/** A duration option, its default shown with its unit in --help. */
const durationOption = (flags: string, description: string, defaultMs?: number, shownDefault?: string) => {
  const option = new Option(flags, description).argParser(duration);
  return defaultMs === undefined
    ? option
    : option.default(defaultMs, shownDefault ?? formatDuration(defaultMs));
};
const integer = (value: string) => {
  if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError(`not an integer: ${value}`);
  return Number(value);
};
/** --max-holders: a semaphore's N, 1..1000. */
const holderCount = (value: string) => {
  const n = integer(value);
  if (n < 1 || n > MAX_HOLDERS_LIMIT)
    throw new InvalidArgumentError(
      `--max-holders takes an integer from 1 to ${MAX_HOLDERS_LIMIT} (got ${value})`,
    );
  return n;
};

/** A command line whose flags contradict each other, or ask what cannot be done: `USAGE`, as commander's own. */
const usageError = (flag: string, message: string) => new BadArgument(flag, message, 'USAGE');

/**
 * The mode --shared and --max-holders ask for: nothing without --shared (exclusive, asked as
 * always); --max-holders without --shared is refused (a semaphore is shared).
 */
export function lockModeFlags(o: { shared?: boolean; maxHolders?: number }): {
  mode?: 'shared';
  maxHolders?: number;
} {
  if (o.maxHolders !== undefined && o.shared !== true)
    throw usageError(
      '--max-holders',
      `--max-holders ${o.maxHolders} makes each lock a semaphore of shared holders: give --shared with it (e.g. --shared --max-holders ${o.maxHolders})`,
    );
  if (o.shared !== true) return {};
  return o.maxHolders === undefined ? { mode: 'shared' } : { mode: 'shared', maxHolders: o.maxHolders };
}

/** `n thing` or `n things`. */
const count = (n: number, thing: string) => `${n} ${thing}${n === 1 ? '' : 's'}`;

/** --priority orders a wait in the queue: refused where nothing waits (-n, --wait 0), not ignored. */
export function priorityNeedsWait(priority: number | undefined, waitMs: number | undefined): void {
  if (priority !== undefined && waitMs === 0)
    throw usageError(
      '--priority',
      `--priority ${priority} orders a wait in the lock's queue, and this tries once without waiting: give --wait with it`,
    );
}

/**
 * `--wait D` and `-n/--no-wait` set one value, so whichever came last would win without a word
 * (`-n` from an alias, `--wait 5m` typed after it): given both, the command refuses to start,
 * unless the wait is 0 (they agree).
 */
function refuseWaitWithNoWait(command: Command): void {
  const given = new Set<string>();
  command.on('option:wait', (value: string) => {
    if (!/^0+(?:\.0*)?[a-z]*$/.test(value.trim())) given.add('--wait');
  });
  command.on('option:no-wait', () => given.add('-n/--no-wait'));
  command.hook('preAction', () => {
    if (given.size > 1)
      throw usageError(
        '--wait',
        '--wait and -n/--no-wait contradict each other: give one (-n, or --wait 0, tries once and exits at once if the lock is held)',
      );
  });
}

/** How a lock or holder is held, compactly: 'shared', a semaphore's 'shared 2/3' (holders/N), or 'exclusive'. */
function modeText(v: LockView): string {
  if (v.mode !== 'shared') return v.mode ?? '-';
  const n = v.holders?.length ?? 0;
  return v.max_holders ? `shared ${n}/${v.max_holders}` : 'shared';
}

/** The holder's name for commands whose lease outlives the process: stable per user and host. */
const stableClientId = () =>
  process.env.LATCHKEY_CLIENT_ID || asIdentifier(`${userInfo().username}@${hostname()}`);

/** The endpoints this run uses, for messages about them. */
let endpointsInUse: Endpoints | undefined;

/**
 * A client for the command. `sayRetries`: print a line before each retry of a failed call (not
 * for views redrawn in place, which show the failure in their next frame).
 */
function clientFor(g: Globals, clientId?: string, sayRetries = true): LockClient {
  const endpoints = resolveEndpoints(g);
  endpointsInUse = endpoints;
  const enclosing = enclosingRun();
  return new LockClient({
    endpoint: endpoints.http,
    ...(endpoints.ws ? { wsEndpoint: endpoints.ws } : {}),
    ...(g.region ? { region: g.region } : {}),
    ...(clientId ? { clientId } : {}),
    // Inside a run's command: waits keep that run's locks (a cycle through them is a deadlock).
    ...(enclosing.length ? { enclosing } : {}),
    // A retry says so at once: a call that keeps failing (DynamoDB unavailable) takes a while.
    onWarning: (warning) => {
      if (!(warning instanceof RetryWarning)) {
        const how = endpointTrouble(warning);
        console.error(
          `latchkey: ${warning.message}: waiting over HTTP instead (each wait rejoins the queue every 25 s)${how ? `; ${endpointHint('websocket', endpoints, how)}` : ''}`,
        );
      } else if (sayRetries) {
        const line = retryLine(warning, endpoints);
        if (line !== undefined) console.error(line);
      }
    },
  });
}

/**
 * What a wait that may outlast one HTTP wait says, with its waiting note (once it has waited a
 * moment), when it goes over HTTP for want of a WebSocket endpoint (only the HTTP API's was
 * given): it rejoins the queue every 25 s, so a long one is not served first come, first served.
 * `waitMs` undefined: until granted. Undefined: nothing to say.
 */
export function httpWaitsNote(waitMs: number | undefined, endpoints = endpointsInUse): string | undefined {
  if (!endpoints || endpoints.ws !== undefined || (waitMs !== undefined && waitMs <= MAX_HTTP_WAIT_MS))
    return undefined;
  return `latchkey: no WebSocket endpoint (give --ws-endpoint URL or set LATCHKEY_WS_ENDPOINT): this wait goes over HTTP, rejoining the queue at its end every ${formatDuration(MAX_HTTP_WAIT_MS)}, so it is not served in turn; give the WebSocket API's URL for a fair long wait`;
}

/**
 * The line said before a retry: each one as it goes (`renew jobs/a: DynamoDB is unavailable (…):
 * trying again (attempt 2 of 5)`), except where nothing listens at the default endpoint, most
 * likely no local stack rather than an outage: said once per call, with what to do (the final
 * error says it again if every attempt fails). Undefined: nothing to say.
 */
export function retryLine(warning: RetryWarning, endpoints: Endpoints): string | undefined {
  if (endpoints.httpFrom.kind !== 'local' || !/ECONNREFUSED/.test(warning.reason ?? ''))
    return `latchkey: ${warning.message}`;
  if (warning.attempt !== 2) return undefined;
  const call = warning.call ? `${warning.call}: ` : '';
  return `latchkey: ${call}nothing answers at ${endpoints.http} (${endpointHint('http', endpoints)}): trying again`;
}

/** Which endpoint an error is about, if it is about one. */
function endpointOf(error: LatchkeyClientError): 'http' | 'websocket' | undefined {
  if (error instanceof BadArgument)
    return error.argument === 'endpoint' ? 'http' : error.argument === 'wsEndpoint' ? 'websocket' : undefined;
  if (error instanceof EndpointError) return error.api;
  if (error.endpoint === undefined) return undefined;
  return /^wss?:/.test(error.endpoint) ? 'websocket' : 'http';
}

/** An error as the CLI says it: about an endpoint, where that endpoint came from and how to set it. */
export function explain(error: unknown, endpoints = endpointsInUse): string {
  const message = cliMessage(error);
  if (!(error instanceof LatchkeyClientError) || !endpoints) return message;
  const api = endpointOf(error);
  const how = endpointTrouble(error);
  if (!api || !how) return message;
  const said =
    api === 'http' && error instanceof UnavailableError && error.reason
      ? `latchkey at ${endpoints.http} is unreachable (${error.reason})`
      : message;
  return `${said}; ${endpointHint(api, endpoints, how)}`;
}

/**
 * What an error about an endpoint says of the URL: nothing (undefined) when latchkey answered
 * there and is only unavailable (a 5xx, a throttle: the URL is right, try again later);
 * `unreachable` when nothing answered; else that it may be the wrong URL.
 */
function endpointTrouble(error: LatchkeyClientError): 'wrong' | 'unreachable' | undefined {
  if (!(error instanceof UnavailableError)) return 'wrong';
  return error.status === undefined ? 'unreachable' : undefined;
}

// biome-ignore lint/suspicious/noExplicitAny: the wire view of a lock
type LockView = any;

/**
 * A lock for people. Held shared, the first line says so (`held (shared 2/3)`: holders / the
 * semaphore's N), and so does each shared holder and waiter; exclusive ones read as they always did.
 */
function describeLock(v: LockView): string {
  const shared = v.mode === 'shared' ? ` (${modeText(v)})` : '';
  const lines = [`${v.lock}: ${v.state}${shared}${v.blocked_until ? ` until ${v.blocked_until}` : ''}`];
  // One holder a line, in columns (several shared holders read as a table).
  const rows = (v.holders ?? []).map((h: LockView) => [
    `${h.client_id}${h.mine ? ' (yours)' : ''}`,
    h.mode === 'shared' ? 'shared' : '',
    h.fencing_token === undefined ? '' : `token ${h.fencing_token}`,
    h.expires_at === null
      ? `session${h.session_id ? ` ${h.session_id}` : ''}`
      : `expires in ${formatDuration(Math.max(0, Date.parse(h.expires_at) - Date.now()))}`,
  ]);
  const widths = [0, 1, 2].map((i) => Math.max(0, ...rows.map((r: string[]) => (r[i] ?? '').length)));
  for (const r of rows)
    lines.push(
      `  holder   ${r
        .map((cell: string, i: number) => (i < 3 ? cell.padEnd(widths[i] ?? 0) : cell))
        .filter((_cell: string, i: number) => (widths[i] ?? 1) > 0)
        .join('  ')}`,
    );
  if (v.queued) lines.push(`  queued   ${v.queued}`);
  for (const w of v.waiters ?? [])
    lines.push(
      `  ${String(w.position).padStart(3)}. ${w.client_id}  priority ${w.priority}  via ${w.via}${w.mode === 'shared' ? '  shared' : ''}`,
    );
  if (!v.holders?.length && v.fencing_token) lines.push(`  last token ${v.fencing_token}`);
  return lines.join('\n');
}

function describeList(locks: LockView[]): string {
  if (!locks.length) return '(no locks)';
  const rows = locks.map((v) => {
    const h = v.holders?.[0];
    // Another principal's token is not shown to you (README: "Security model").
    const token = h?.fencing_token === undefined ? '-' : String(h.fencing_token);
    const more = (v.holders?.length ?? 0) > 1 ? ` (+${v.holders.length - 1})` : '';
    // MODE: '-' when free; 'shared 2/3' for a semaphore (holders / N).
    const mode = v.holders?.length ? modeText({ ...v, mode: v.mode ?? h?.mode ?? 'exclusive' }) : '-';
    return [
      v.lock,
      v.state,
      h ? `${h.client_id}${h.mine ? ' (yours)' : ''}${more}` : '-',
      token,
      String(v.queued ?? 0),
      mode,
    ];
  });
  // MODE last: scripts that read the first columns read them as before.
  const header = ['LOCK', 'STATE', 'HOLDER', 'TOKEN', 'QUEUED', 'MODE'];
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [header, ...rows]
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/**
 * A lock and the locks below it, indented by level: each one's state and holder, and BELOW, the
 * live grants under it (a hierarchical namespace's intention counts: 'x1 s2' is one exclusive and
 * two shared grants somewhere below).
 */
function describeTree(root: LockView, below: LockView[]): string {
  const depth = (name: string) => name.split('/').length - root.lock.split('/').length;
  const rows = [root, ...below].map((v) => {
    const h = v.holders?.[0];
    const more = (v.holders?.length ?? 0) > 1 ? ` (+${v.holders.length - 1})` : '';
    const mode = v.holders?.length ? modeText({ ...v, mode: v.mode ?? h?.mode ?? 'exclusive' }) : '-';
    const under = v.below ? `x${v.below.exclusive} s${v.below.shared}` : '-';
    return [
      `${'  '.repeat(depth(v.lock))}${v.lock}`,
      v.state,
      h ? `${h.client_id}${h.mine ? ' (yours)' : ''}${more}` : '-',
      mode,
      under,
    ];
  });
  return table(['LOCK', 'STATE', 'HOLDER', 'MODE', 'BELOW'], rows);
}

/** When `iso` is from now, for people: 'in 25s' or '3m ago'. */
export function fromNow(iso: string, now = Date.now()): string {
  const ms = Date.parse(iso) - now;
  return ms >= 0 ? `in ${formatDuration(ms)}` : `${formatDuration(-ms)} ago`;
}

/**
 * A table of sessions (the admin listing). EXPIRES: when the session expires unless it
 * heartbeats, then its grace (its locks are released once both have passed).
 */
export function describeSessions(sessions: LockView[], now = Date.now()): string {
  if (!sessions.length) return '(no sessions)';
  return table(
    ['SESSION', 'PRINCIPAL', 'CLIENT', 'STATE', 'EXPIRES', 'LOCKS'],
    sessions.map((s) => [
      s.session_id,
      s.principal,
      s.client_id,
      s.state,
      `${fromNow(s.expires_at, now)}${s.grace_ms ? ` (+${formatDuration(s.grace_ms)} grace)` : ''}`,
      String(s.locks_held),
    ]),
  );
}

/** A lock's holder and its queue, one waiter a line, with when each joined and gives up. */
function describeQueue(v: LockView): string {
  const lines = [describeLock({ ...v, waiters: [] })];
  // A MODE column only when some waiter waits to share: an exclusive queue reads as it always did.
  const modes = v.waiters?.some((w: LockView) => w.mode === 'shared');
  if (v.waiters?.length)
    lines.push(
      table(
        ['POS', 'CLIENT', 'PRIORITY', 'VIA', 'QUEUED AT', 'WAITS UNTIL', ...(modes ? ['MODE'] : [])],
        v.waiters.map((w: LockView) => [
          String(w.position),
          w.client_id,
          String(w.priority),
          w.via,
          w.queued_at,
          w.wait_until,
          ...(modes ? [w.mode ?? 'exclusive'] : []),
        ]),
      ),
    );
  if (v.queued > (v.waiters?.length ?? 0)) lines.push(`  … and ${v.queued - v.waiters.length} more`);
  return lines.join('\n');
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [header, ...rows]
    .map((r) =>
      r
        .map((c, i) => (c ?? '').padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

const print = (g: Globals, value: unknown, human: () => string) =>
  console.log(g.json ? JSON.stringify(value) : human());

/**
 * `acquire --json`'s answer when the lock was not acquired: the HTTP API's refusal (its holder an
 * object: client_id, expires_at, held_by), or a wait that timed out (with whom it waited for).
 */
export const notAcquiredView = (lock: string, error: LockHeldError | WaitTimeoutError) => {
  const held = {
    holder: error.holderSummary
      ? {
          client_id: error.holderSummary.clientId,
          expires_at: error.holderSummary.expiresAt?.toISOString() ?? null,
          held_by: error.holderSummary.heldBy,
          ...(error.holderSummary.mine ? { mine: true } : {}),
        }
      : null,
    ...(error.shared
      ? { shared_holders: error.shared.holders, max_holders: error.shared.maxHolders ?? null }
      : {}),
  };
  return error instanceof LockHeldError
    ? {
        acquired: false,
        lock,
        ...held,
        retry_after_ms: error.retryAfterMs,
        ...(error.blockedBy ? { blocked_by: error.blockedBy } : {}),
      }
    : { acquired: false, lock, wait_timed_out: true, ...held };
};

/** A lease under --json: the HTTP API's grant, its lease left as this process counts it. */
export const leaseView = (lease: Lease) => ({
  acquired: true,
  lock: lease.name,
  client_id: lease.clientId,
  fencing_token: lease.fencingToken,
  expires_at: lease.expiresAt?.toISOString() ?? null,
  remaining_ms: lease.expiresAt ? Math.max(0, Math.floor(lease.remainingMs())) : null,
  ttl_ms: lease.expiresAt ? lease.ttlMs : null,
  mode: lease.mode,
  ...(lease.maxHolders === undefined ? {} : { max_holders: lease.maxHolders }),
  ...(lease.sessionId === undefined ? {} : { session_id: lease.sessionId }),
  reentry: lease.reentry,
});

/** `renew --json`: the HTTP API's renewal answer. */
const renewView = (lease: Lease) => ({
  renewed: true,
  lock: lease.name,
  client_id: lease.clientId,
  fencing_token: lease.fencingToken,
  expires_at: lease.expiresAt?.toISOString() ?? null,
  remaining_ms: Math.max(0, Math.floor(lease.remainingMs())),
  ttl_ms: lease.ttlMs,
});

/**
 * An error under --json, on stdout, shaped as the HTTP API's error answers (`{error: {code,
 * message}}`, a deadlock's cycle as the service writes it), so a script reads every answer from
 * stdout. The message is also on stderr, for people.
 */
export function errorView(error: unknown) {
  const known = error instanceof LatchkeyClientError ? error : undefined;
  return {
    error: {
      code: known?.code ?? 'CLI_ERROR',
      message: explain(error),
      retryable: known?.retryable ?? false,
      ...(error instanceof DeadlockError ? { cycle: error.cycle.map(edgeWire) } : {}),
    },
  };
}

/** A command line commander refused (an unknown option, a missing one, a bad value) under --json. */
export const usageErrorView = (message: string) => ({
  error: { code: 'USAGE', message, retryable: false },
});

/** A shared lease's mode for people ('shared', or 'shared (a semaphore of 3)'); '' for exclusive. */
const heldText = (lease: Lease) =>
  lease.mode === 'shared'
    ? ` shared${lease.maxHolders === undefined ? '' : ` (a semaphore of ${lease.maxHolders})`}`
    : '';

/** When a lease ends, for people: its end and what is left, or the session it lasts with. */
const endsText = (lease: Lease) =>
  lease.expiresAt
    ? `expires ${lease.expiresAt.toISOString()} (in ${formatDuration(lease.remainingMs())})`
    : `held as long as session ${lease.sessionId} lives`;

/** What `latchkey run` holds and runs. */
export interface RunTargets {
  /** The locks, each once, in the order given. */
  readonly names: string[];
  readonly command: string[];
}

/**
 * `latchkey run`'s locks and command, from its operands (commander drops the `--`), its --lock
 * values and the raw arguments (which still have the `--`). Without --lock, as always: the first
 * operand is the lock, the rest the command. With --lock, the command is what follows `--` (so it
 * can never be taken for a lock name), and at most one NAME may come before it.
 */
export function runTargets(
  operands: readonly string[],
  locks: readonly string[],
  rawArgs: readonly string[],
): RunTargets {
  const usage =
    'latchkey run NAME -- command [args...], or latchkey run --lock NAME --lock NAME -- command [args...]';
  if (locks.length === 0) {
    const [name, ...command] = operands;
    if (name === undefined) throw new Error(`missing the lock name: ${usage}`);
    // `run -- cmd args`: the command's first word is not the lock name.
    const dashes = rawArgs.indexOf('--');
    if (dashes >= 0 && operands.length <= rawArgs.length - dashes - 1)
      throw new Error(`missing the lock name before --: ${usage}`);
    if (command.length === 0) throw new Error(`missing the command: ${usage}`);
    return { names: [name], command };
  }
  const at = rawArgs.indexOf('--');
  const tail = at < 0 ? [] : rawArgs.slice(at + 1);
  const offset = operands.length - tail.length;
  // Commander keeps what follows `--` as the last operands.
  if (at < 0 || offset < 0 || tail.some((arg, i) => operands[offset + i] !== arg))
    throw new Error(`with --lock, the command goes after --: ${usage}`);
  const before = operands.slice(0, offset);
  if (before.length > 1)
    throw new Error(
      `at most one NAME goes before -- (got ${before.join(' ')}); the command goes after --: ${usage}`,
    );
  if (tail.length === 0) throw new Error(`missing the command after --: ${usage}`);
  return { names: [...new Set([...before, ...locks])], command: tail };
}

/** The client package's version: its package.json is one directory up from cli/ and dist/ alike. */
export const CLIENT_VERSION = (createRequire(import.meta.url)('../package.json') as { version: string })
  .version;

export function program(): Command {
  const cli = new Command('latchkey')
    .description('Distributed locks with fencing tokens on AWS (latchkey).')
    // Not commander's .version(): as a program option it would be taken anywhere before `--`, and
    // `latchkey run jobs/a tool --version` would print it and exit 0 without running anything.
    .addHelpText('after', '\nlatchkey --version (or -V), alone, prints the version of this client.')
    .option(
      '--endpoint <url>',
      'HTTP API URL (default: $LATCHKEY_ENDPOINT, the CDK outputs file, or the local stack)',
    )
    .option(
      '--ws-endpoint <url>',
      'WebSocket API URL with its stage, e.g. wss://abc.execute-api.eu-west-1.amazonaws.com/v1 (default: $LATCHKEY_WS_ENDPOINT, or from the same place as the HTTP API; waits go over HTTP without one)',
    )
    .option('--outputs-file <file>', "outputs of 'cdk deploy --outputs-file' (default: ./cdk-outputs.json)")
    .option('--region <region>', 'AWS region for signing (default: from the endpoint, or $AWS_REGION)')
    .option(
      '--client-id <id>',
      'holder name (default: $LATCHKEY_CLIENT_ID, or user@host; run: unique per run)',
    )
    .option('--json', 'machine-readable output')
    // A hint, not the whole help: the one-line error is what a user needs to see.
    .showHelpAfterError('(add --help for usage)')
    .addHelpText(
      'after',
      `
Examples:
  latchkey run nightly-report --ttl 30s --wait 5m -- ./report.sh --full
  latchkey run -n nightly-report -- ./report.sh   # try once: exit ${EXIT.NOT_ACQUIRED} if held
  latchkey run --lock ledger/a --lock ledger/b -- ./move.sh   # both; env LATCHKEY_LOCKS
  latchkey run --shared config/app -- ./read-config.sh   # with other --shared runs, no exclusive one
  latchkey run --shared --max-holders 3 pool/gpu -- ./train.sh   # a semaphore: at most 3 at once
  latchkey acquire deploy/prod --ttl 10m          # prints the token; release it later
  latchkey release deploy/prod --token 1795...001
  latchkey show deploy/prod
  latchkey ls jobs/
  latchkey watch jobs/
  latchkey deadlocks --prefix jobs/               # cycles of waits; exit 1 if any
  latchkey top --once --json                      # requests/s, latency, contended locks, sessions

Durations take a unit: 500ms, 30s, 5m, 1h, 1m30s (a bare number is refused; 0 is 0).
Exit codes: 0 ok, 1 error, ${EXIT.NOT_ACQUIRED} lock not acquired, ${EXIT.LEASE_LOST} lease lost during run,
${EXIT.NOT_EXECUTABLE} command not executable, ${EXIT.CANNOT_RUN} command not found, 130 / 143 interrupted (SIGINT / SIGTERM)
while waiting; otherwise run exits with the command's code (128 + n if it died of signal n).`,
    );
  const globals = () => cli.opts<Globals>();

  cli
    .command('run')
    .description(
      'hold a lock (or several) while a command runs (waits for it; renewed; released when the command exits)',
    )
    .usage('[options] [NAME] [--lock NAME]... -- command [args...]')
    .argument('[name]', 'lock name (or give the locks with --lock)')
    .argument('[command...]', 'the command, after --')
    .option(
      '--lock <name>',
      'a lock to hold, repeatable: every one is held (with NAME, if given), acquired in order of name',
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    )
    .addOption(durationOption('--ttl <duration>', 'lease length, renewed every third of it', 30_000))
    .option(
      '--wait <duration>',
      'wait at most this long for the lock, then exit 3 (default: wait until it is granted, or latchkey is signalled)',
      duration,
    )
    .option('-n, --no-wait', `do not wait: exit ${EXIT.NOT_ACQUIRED} at once if the lock is held`)
    .option('--priority <n>', 'queue priority, -100..100 (higher first)', integer)
    .option(
      '--shared',
      'hold the lock shared: with other shared holders, while nobody holds it exclusively (with --lock: every lock)',
    )
    .option(
      '--max-holders <n>',
      'with --shared: a semaphore, at most n holders at once (1..1000; every holder must give the same n)',
      holderCount,
    )
    .addOption(
      new Option('--on-lost <signal>', "signal to send the command's process group if the lease is lost")
        .choices(['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGKILL', 'none'])
        .default('SIGTERM'),
    )
    .addOption(
      durationOption(
        '--kill-grace <duration>',
        'then SIGKILL the group after this long; also how long the command has if latchkey itself dies',
        DEFAULT_KILL_GRACE_MS,
      ),
    )
    .addHelpText(
      'after',
      `
Waiting: by default run waits in the lock's queue until it is granted (Ctrl-C or SIGTERM ends the
wait, exit 130/143). --wait 5m waits at most 5 minutes; -n/--no-wait (or --wait 0) tries once.
Either way, exit ${EXIT.NOT_ACQUIRED} if the lock was not acquired. A wait that would close a cycle of waits
(a deadlock) is refused by the service: exit ${EXIT.NOT_ACQUIRED} too, with the cycle on stderr, one wait a line;
so is a run inside another run's command asking for a lock that run holds (unless both are --shared).

Shared: --shared holds the lock together with other shared holders (readers), while no exclusive
holder (a run without --shared) has it; --max-holders N makes it a semaphore of N holders (all of
them must give the same N, or they are refused with MAX_HOLDERS_MISMATCH). With several --lock,
--shared and --max-holders apply to every one of them.

Several locks: latchkey run --lock jobs/a --lock jobs/b -- ./job.sh (a NAME before -- joins them;
with --lock the command must follow --). They are acquired one after another sorted by name (plain
code-unit order, the same for every caller, so two runs wanting the same locks never deadlock);
--wait is one deadline for all of them; if one cannot be had, those already held are released and
latchkey exits ${EXIT.NOT_ACQUIRED}. Losing any of the leases counts as a lost lease (below).

The command runs in a process group of its own, with latchkey's stdin, stdout and stderr, and
gets LATCHKEY_LOCKS, each lock as name=token, joined by commas, sorted by name (lock names never
contain = or ,): LATCHKEY_LOCKS=jobs/a=1795001,jobs/b=1795002. Holding one lock, it also gets
LATCHKEY_LOCK and LATCHKEY_FENCING_TOKEN (holding several, neither). LATCHKEY_MODE says how
they are held (exclusive, or shared under --shared). LATCHKEY_LOCKS_CLIENT_ID is this run's client
id and LATCHKEY_ENCLOSING names the runs around it: a latchkey inside the command keeps all their
locks while it waits, so runs nested in opposite orders are refused as a deadlock (exit ${EXIT.NOT_ACQUIRED})
instead of waiting.

Signals latchkey gets (INT, TERM, HUP, QUIT, USR1, USR2, and WINCH) are forwarded to the group.
If the lease is lost, the group gets --on-lost (SIGTERM), then SIGKILL after --kill-grace (5s),
and latchkey exits ${EXIT.LEASE_LOST}. If latchkey itself is killed (even with SIGKILL), a watchdog stops
the group the same way (SIGTERM, SIGKILL after --kill-grace), well before the lease lapses if
--kill-grace is short against --ttl. The command has no controlling terminal (/dev/tty).`,
    )
    .action(async (name: string | undefined, rest: string[], o, run: Command) => {
      const g = globals();
      let targets: RunTargets;
      try {
        targets = runTargets(
          [...(name === undefined ? [] : [name]), ...rest],
          o.lock ?? [],
          // The arguments as given, `--` included (set by parse(); commander's types leave it out).
          (run.parent as { rawArgs?: string[] } | null)?.rawArgs ?? process.argv,
        );
      } catch (error) {
        return run.error(`error: ${(error as Error).message}`);
      }
      const killGraceMs: number = o.killGrace;
      const refusal = graceRefusal(o.ttl, killGraceMs);
      if (refusal) throw usageError('--kill-grace', refusal);
      const mode = lockModeFlags(o);
      priorityNeedsWait(o.priority, o.wait === false ? 0 : o.wait);
      const client = clientFor(g, g.clientId);
      const { names, command } = targets;
      try {
        process.exitCode = await runLocked(
          client,
          names.length === 1 ? (names[0] as string) : names,
          command,
          {
            ttlMs: o.ttl,
            // undefined: not given (wait until granted); false: --no-wait; else the duration.
            waitMs: o.wait === undefined ? Number.POSITIVE_INFINITY : o.wait === false ? 0 : o.wait,
            priority: o.priority,
            ...mode,
            onLost: o.onLost,
            killGraceMs,
            say: (line) => console.error(line),
            waitingAlso: httpWaitsNote(o.wait === false ? 0 : o.wait),
          },
        );
      } finally {
        client.close();
      }
    });

  cli
    .command('acquire')
    .description('take a lock and print its lease (it is not renewed: release or renew it yourself)')
    .argument('<name>')
    .addOption(durationOption('--ttl <duration>', 'lease length', 30_000))
    .addOption(
      durationOption('--wait <duration>', 'how long to wait for it (0: exit 3 at once if held)', 0, '0'),
    )
    .option('-n, --no-wait', 'do not wait (the default): exit 3 at once if the lock is held')
    .option('--priority <n>', 'queue priority, -100..100', integer)
    .option('--shared', 'take it shared: with other shared holders, while nobody holds it exclusively')
    .option('--max-holders <n>', 'with --shared: a semaphore of at most n holders (1..1000)', holderCount)
    .action(async (name: string, o) => {
      const g = globals();
      const mode = lockModeFlags(o);
      const waitMs: number = o.wait === false ? 0 : o.wait; // false: -n / --no-wait
      priorityNeedsWait(o.priority, waitMs);
      const client = clientFor(g, g.clientId ?? stableClientId());
      // Still waiting after a second: said once on stderr, whom for and where in the queue.
      const note = waitingNote(client, [name], (line) => console.error(line), waitMs, httpWaitsNote(waitMs));
      try {
        const lease =
          waitMs > 0
            ? await client
                .acquire(name, { ttlMs: o.ttl, waitTimeoutMs: waitMs, priority: o.priority, ...mode })
                .finally(() => note?.end())
            : await client.acquireNow(name, { ttlMs: o.ttl, ...mode });
        // Not acquired: who holds it, or (in a hierarchical namespace) what keeps it out.
        if (lease instanceof LockHeldError) throw lease;

        const hint = lease.mode === 'shared' ? ' --shared' : '';
        print(g, leaseView(lease), () =>
          [
            `acquired ${lease.name} as ${lease.clientId}${heldText(lease)}`,
            `  fencing token ${lease.fencingToken}`,
            `  ${endsText(lease)}`,
            `  release: latchkey release ${lease.name} --token ${lease.fencingToken} --client-id ${lease.clientId}${hint}`,
          ].join('\n'),
        );
      } catch (thrown) {
        const error =
          thrown instanceof WaitTimeoutError
            ? await explainedTimeout(client, thrown, o.shared === true)
            : thrown;
        // Not acquired (exit 3): under --json, a script still reads an answer from stdout.
        if (g.json && (error instanceof LockHeldError || error instanceof WaitTimeoutError))
          console.log(JSON.stringify(notAcquiredView(name, error)));
        throw error;
      } finally {
        client.close();
      }
    });

  const holderCommand = (verb: 'release' | 'renew') => {
    const command = cli
      .command(verb)
      .description(verb === 'release' ? 'release a lease' : 'extend a lease')
      .argument('<name>')
      .requiredOption('--token <n>', 'the fencing token of the lease', integer)
      .option('--shared', 'the lease is a shared one (a hint that saves the service a write; optional)');
    // No default: a default would silently cut a longer lease (`acquire --ttl 10m`) down to it.
    if (verb === 'renew')
      command.addOption(
        durationOption(
          '--ttl <duration>',
          'new lease length from now, e.g. the ttl it was acquired with',
        ).makeOptionMandatory(),
      );
    command.action(async (name: string, o) => {
      const g = globals();
      const client = clientFor(g, g.clientId ?? stableClientId());
      const lease = new Lease(
        {
          lock: name,
          client_id: client.clientId,
          fencing_token: o.token,
          expires_at: new Date().toISOString(),
          remaining_ms: 0,
          ttl_ms: o.ttl ?? 30_000,
          ...(o.shared ? { mode: 'shared' as const } : {}),
        },
        performance.now(),
      );
      if (verb === 'release') {
        const { remainingReentries: left } = await client.release(lease);
        print(g, { released: true, lock: name, remaining_reentries: left }, () =>
          left === 0
            ? `released ${name}`
            : `counted one re-entry of ${name} down: still held (token ${o.token}) until ${count(left, 'more release')}`,
        );
      } else {
        await client.renew(lease, o.ttl);
        print(g, renewView(lease), () => `renewed ${name}: ${endsText(lease)}`);
      }
    });
  };
  holderCommand('release');
  holderCommand('renew');

  const tokenOption = () =>
    new Option(
      '--token <n>',
      'end only the grant with this fencing token (from `admin queue`); without it the request is sent once, never retried',
    ).argParser(integer);
  const forceRelease = async (name: string, o: { reason: string; token?: number }) => {
    const g = globals();
    const out = await clientFor(g).forceRelease(
      name,
      o.reason,
      o.token === undefined ? {} : { fencingToken: o.token },
    );
    print(g, out, () =>
      out.released
        ? `force-released ${name}: ${out.holder.client_id} (token ${out.holder.fencing_token}) is fenced out; the next token is above ${out.fenced_to - 1}`
        : `${name} was not released: ${out.reason}`,
    );
    // Nothing released (not held, or the token named no live grant): a script sees it.
    if (!out.released) process.exitCode = 1;
  };
  // Kept as an alias of `latchkey admin force-release` (hidden from --help).
  cli
    .command('force-release', { hidden: true })
    .description('admin: the same as `latchkey admin force-release`')
    .argument('<name>')
    .requiredOption('--reason <text>', 'why: recorded with your identity in the service log')
    .addOption(tokenOption())
    .action(forceRelease);

  const admin = cli
    .command('admin')
    .description(
      'operators: force-release locks, list and end sessions, view a queue (needs the admin routes in IAM)',
    );
  admin
    .command('force-release')
    .description('end whoever holds the lock and fence them out; the next waiter is served')
    .argument('<name>')
    .requiredOption('--reason <text>', 'why: recorded with your identity in the audit log')
    .addOption(tokenOption())
    .action(forceRelease);
  admin
    .command('sessions')
    .description("every principal's sessions: owner, state, expiry, locks held")
    .option('--principal <arn>', "only this principal's (an assumed-role session counts as its role)")
    .option('--client <id>', "only this client id's (the global --client-id names this CLI's own holder)")
    .addOption(new Option('--limit <n>', 'at most this many').argParser(integer).default(1_000))
    .action(async (o: { principal?: string; client?: string; limit: number }) => {
      const g = globals();
      const sessions = await clientFor(g).listSessions({
        ...(o.principal ? { principal: o.principal } : {}),
        ...(o.client ? { clientId: o.client } : {}),
        limit: o.limit,
      });
      print(g, sessions, () => describeSessions(sessions));
    });
  admin
    .command('end-session')
    .description("end any session (whoever's); its locks go to their next waiters")
    .argument('<id>')
    .requiredOption('--reason <text>', 'why: recorded with your identity in the audit log')
    .action(async (id: string, o: { reason: string }) => {
      const g = globals();
      const out = await clientFor(g).endSession(id, o.reason);
      print(g, out, () =>
        out.was === 'ended'
          ? `session ${id} of ${out.principal} (${out.client_id}) was ended already (by another, or by this call's first attempt if its answer was lost): ${count(out.locks_released, 'lock')} released`
          : `ended session ${id} of ${out.principal} (${out.client_id}), ${out.was} before: ${count(out.locks_released, 'lock')} released`,
      );
    });
  admin
    .command('queue')
    .description('a lock: its holder and every waiter in serving order (the first 100)')
    .argument('<name>')
    .action(async (name: string) => {
      const g = globals();
      const v = await clientFor(g).inspect(name);
      print(g, v, () => describeQueue(v));
    });

  cli
    .command('show')
    .description('a lock: state, holder, token, queue')
    .argument('<name>')
    .option('--tree', 'and every lock below it, with how many grants each has below it (hierarchies)')
    .action(async (name: string, o: { tree?: boolean }) => {
      const g = globals();
      const client = clientFor(g);
      if (o.tree) {
        const [v, below] = await Promise.all([client.inspect(name), client.list(`${name}/`)]);
        print(g, { ...v, tree: below }, () => describeTree(v, below));
        return;
      }
      const v = await client.inspect(name);
      print(g, v, () => describeLock(v));
    });

  cli
    .command('ls')
    .description('locks whose names start with PREFIX')
    .argument('[prefix]', 'name prefix', '')
    .action(async (prefix: string) => {
      const g = globals();
      const locks = await clientFor(g).list(prefix);
      print(g, locks, () => describeList(locks));
    });

  cli
    .command('watch')
    .description('live view of holders and waiters, refreshed in place (Ctrl-C to stop)')
    .argument('[prefix]', 'name prefix', '')
    .addOption(durationOption('--every <duration>', 'refresh interval', 1_000))
    .action(async (prefix: string, o) => {
      const g = globals();
      const client = clientFor(g, undefined, false);
      // Under --json, one JSON object a line.
      const show = (json: object, human: string) => {
        if (g.json) console.log(JSON.stringify(json));
        else showFrame(human);
      };
      for (;;) {
        const at = new Date().toISOString();
        try {
          const locks = await client.list(prefix);
          const queues = await Promise.all(
            locks.filter((v) => v.queued > 0).map((v) => client.inspect(v.lock)),
          );
          show(
            { at, prefix, locks, queues },
            `${at}  ${count(locks.length, 'lock')} under '${prefix}'\n\n${describeList(locks)}${
              queues.length ? `\n\n${queues.map(describeLock).join('\n\n')}` : ''
            }`,
          );
        } catch (error) {
          show({ at, prefix, ...errorView(error) }, `${at}  ${explain(error)} (retrying)`);
        }
        await new Promise((resolve) => setTimeout(resolve, o.every));
      }
    });

  addTopCommand(cli, {
    globals,
    client: (g) => clientFor(g, undefined, false),
    errorJson: errorView,
    explain: (error) => explain(error),
  });
  addDeadlockCommands(cli, { globals, client: (g) => clientFor(g) });

  for (const command of cli.commands)
    if (command.options.some((o) => o.long === '--no-wait')) refuseWaitWithNoWait(command);
  return cli;
}

/**
 * Every command in `root`'s tree throws its usage errors (and help's exit) as a CommanderError
 * instead of exiting, telling `failed` its own name first.
 */
function throwUsageErrors(root: Command, failed: (name: string) => void): void {
  root.exitOverride((error) => {
    failed(root.name());
    throw error;
  });
  for (const sub of root.commands) throwUsageErrors(sub, failed);
}

export async function main(argv = process.argv): Promise<void> {
  const asked = argv.slice(2);
  if (asked.length === 1 && (asked[0] === '--version' || asked[0] === '-V')) {
    console.log(CLIENT_VERSION);
    return;
  }
  const cli = program();
  // The command that ran or was refused: under --json all but `run` (whose stdout is its
  // command's) print an error on stdout as well.
  let command: string | undefined;
  let operands: readonly string[] = [];
  cli.hook('preAction', (_root, action) => {
    command = action.name();
    operands = action.args;
  });
  throwUsageErrors(cli, (name) => {
    command ??= name;
  });
  try {
    await cli.parseAsync(argv);
  } catch (error) {
    const e = error as Error;
    // --json as latchkey's own flag: before any `--` (what follows is a command's arguments).
    const dashes = argv.indexOf('--');
    const flags = dashes < 0 ? argv : argv.slice(0, dashes);
    const json = (cli.opts<Globals>().json === true || flags.includes('--json')) && command !== 'run';
    if (error instanceof CommanderError) {
      // Commander said it on stderr already (an error, or help: exit 0).
      if (json && error.exitCode !== 0) {
        // Help shown for a missing command (`latchkey`, `latchkey admin`): say that.
        const message = error.code.startsWith('commander.help')
          ? 'no command given (--help lists them)'
          : error.message.replace(/^error: /, '');
        console.log(JSON.stringify(usageErrorView(message)));
      }
      process.exitCode = error.exitCode;
      return;
    }
    const notAcquired = error instanceof WaitTimeoutError || error instanceof LockHeldError;
    // Under --json every answer is on stdout (acquire printed its own "not acquired").
    if (json && !notAcquired) console.log(JSON.stringify(errorView(error)));
    if (error instanceof DeadlockError) {
      for (const line of deadlockLines(error)) console.error(line);
      process.exitCode = EXIT.NOT_ACQUIRED;
      return;
    }
    if (notAcquired) {
      console.error(`latchkey: ${explain(e)}`);
      process.exitCode = EXIT.NOT_ACQUIRED;
      return;
    }
    const code = error instanceof LatchkeyClientError ? ` [${error.code}]` : '';
    console.error(`latchkey: ${explain(e)}${code}`);
    if ((command === 'acquire' || command === 'run') && mayHaveBeenGranted(error))
      console.error(`latchkey: ${maybeGrantedHint(command, operands[0])}`);
    process.exitCode = 1;
  }
}
