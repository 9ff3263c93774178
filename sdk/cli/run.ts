/**
 * `latchkey run NAME -- cmd args...`: holds the lock while the command runs
 * (like `etcdctl lock`, `consul lock`, `flock`). It waits for the lock by
 * default (`waitMs`: Infinity), tries once with 0. The lease is renewed in
 * the background; the command gets LATCHKEY_LOCK and LATCHKEY_FENCING_TOKEN;
 * the lock is released when it exits, and latchkey exits with its code.
 *
 * `latchkey run --lock A --lock B -- cmd args...` holds several locks the
 * same way (LockClient.withLocks): acquired in the canonical order (names
 * sorted by code unit), the wait one deadline for all, released in reverse.
 * The command gets LATCHKEY_LOCKS (`name=token,name=token`, in that order;
 * names never contain `=` or `,`). Losing any lease counts as a lost lease.
 *
 * `--shared` (RunOptions.mode 'shared') holds the lock, or every lock of a set, shared (with other
 * shared holders, none exclusive); `--max-holders N` makes each a semaphore of N holders.
 *
 * The command's processes:
 * - The command runs in a process group of its own (a new session: spawn
 *   `detached`), with latchkey's stdin, stdout and stderr. Signals latchkey
 *   gets (INT, TERM, HUP, QUIT, USR1, USR2) are forwarded to that group.
 * - If the lease is lost, the group gets `onLost` (SIGTERM by default) at
 *   once, and SIGKILL `killGraceMs` later if any of it is still there;
 *   latchkey exits with EXIT.LEASE_LOST once it is gone.
 * - A watchdog (a small `node -e` process in a session of its own) holds a
 *   pipe from latchkey. Should latchkey die without saying it is done
 *   (SIGKILL, a crash), the pipe ends, and the watchdog gives the group
 *   SIGTERM, then SIGKILL after `killGraceMs`: so the command is stopped
 *   within the grace, well before the lease lapses when the grace is short
 *   against the ttl, instead of running on unlocked. The watchdog is not
 *   the command's parent (latchkey is: the exit code is the command's), has
 *   no stdin or stdout of the user's, and keeps latchkey alive for nothing.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { constants } from 'node:os';
import type { LockClient } from '../client';
import { formatDuration } from '../duration';
import { DeadlockError, LeaseLostError, LockHeldError, WaitTimeoutError } from '../errors';
import { type EnclosingHolds, MAX_ENCLOSING, MAX_HOLDING } from '../held-locks';
import type { Lease } from '../lease';
import { safetyMarginMs } from '../lease-keeper';
import { compareLockNames, type LockMode } from '../multi-lock';
import { IDENTIFIER, lockNameRefusal } from '../names';
import { deadlockLines } from './deadlocks';
import { explainedTimeout } from './timed-out';
import { cliMessage } from './wording';

export const EXIT = {
  /** The lock was not acquired: held (--no-wait), the wait ran out, or it was refused as a deadlock. */
  NOT_ACQUIRED: 3,
  /** The lease was lost while the command ran. */
  LEASE_LOST: 4,
  /** The command was found but cannot be executed (permissions). */
  NOT_EXECUTABLE: 126,
  /** The command could not be started (not found). */
  CANNOT_RUN: 127,
} as const;

/** How long the command's group has, after SIGTERM, before SIGKILL (lease lost, or latchkey died). */
export const DEFAULT_KILL_GRACE_MS = 5_000;

const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];

const exitCodeOf = (signal: NodeJS.Signals | null | undefined) =>
  128 + (signal ? (constants.signals[signal] ?? 0) : 0);

export interface RunOptions {
  readonly ttlMs: number;
  /** How long to wait for the lock: 0 tries once, Infinity waits until granted (or a signal ends it). */
  readonly waitMs: number;
  readonly priority?: number;
  /** How to hold the lock(s): 'shared' holds every one of them shared. Default exclusive. */
  readonly mode?: LockMode;
  /** With mode 'shared': each lock is a semaphore of this many holders. */
  readonly maxHolders?: number;
  /** Sent to the command's group if the lease is lost; 'none' lets it run on. */
  readonly onLost: NodeJS.Signals | 'none';
  /** After `onLost` (or latchkey's death), how long before SIGKILL. */
  readonly killGraceMs: number;
  /** Said with the waiting note, once the wait has lasted a moment (how it waits, if that matters). */
  readonly waitingAlso?: string | undefined;
  readonly say: (line: string) => void;
}

/**
 * The watchdog, run as `node -e WATCHDOG <pgid> <graceMs> <lock> <grace as said>`: "done" on stdin stands it
 * down; the end of stdin without it (latchkey is gone) stops the group: SIGTERM, then SIGKILL
 * after the grace unless the group is gone by then. Plain JavaScript, no template strings.
 */
const WATCHDOG = [
  "'use strict';",
  'const pgid = Number(process.argv[1]);',
  'const graceMs = Number(process.argv[2]);',
  'const lock = process.argv[3];',
  'const grace = process.argv[4];',
  "process.stderr.on('error', () => {});",
  'const kill = (sig) => { try { process.kill(-pgid, sig); return true; } catch { return false; } };',
  "let said = '';",
  "process.stdin.setEncoding('utf8');",
  "process.stdin.on('data', (d) => { said += d; if (said.includes('done')) process.exit(0); });",
  'let stopping = false;',
  'const stop = () => {',
  '  if (stopping) return;',
  '  stopping = true;',
  '  if (!kill(0)) process.exit(0);',
  "  process.stderr.write('latchkey: latchkey ended while its command held ' + lock + ': stopping the command (process group ' + pgid + '): SIGTERM now, SIGKILL in ' + grace + '\\n');",
  "  kill('SIGTERM');",
  '  const started = performance.now();',
  '  setInterval(() => {',
  '    if (!kill(0)) process.exit(0);',
  "    if (performance.now() - started >= graceMs) { kill('SIGKILL'); process.exit(0); }",
  '  }, 50);',
  '};',
  "process.stdin.on('end', stop);",
  "process.stdin.on('error', stop);",
].join('\n');

/**
 * Whether process group `pgid` has a process that still runs, from /proc: a zombie (exited, not yet
 * reaped) runs nothing, and where its new parent is slow to reap it, or never does (latchkey as a
 * container's PID 1, which reaps only its own children), the kernel lists it for a long while.
 * Undefined when /proc shows no member of the group (no /proc, as on macOS; one hidden with
 * `hidepid`, or of another PID namespace): then only the kernel can tell.
 */
export function groupRuns(pgid: number): boolean | undefined {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return undefined;
  }
  let members = 0;
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // After the command name (in parentheses, and it may hold spaces): state, ppid, pgrp, ...
      // num_threads 17 fields after the state.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) !== pgid) continue;
      members++;
      const state = fields[0];
      // A zombie leader whose other threads still run is not done.
      if ((state !== 'Z' && state !== 'X') || Number(fields[17]) > 1) return true;
    } catch {
      // Gone between the listing and the read.
    }
  }
  return members > 0 ? false : undefined;
}

/** The command, in a process group of its own, guarded by the watchdog. */
class CommandGroup {
  readonly child: ChildProcess;
  private readonly watchdog: ChildProcess | undefined;
  private stopping: Promise<void> | undefined;

  constructor(file: string, args: readonly string[], env: NodeJS.ProcessEnv, graceMs: number, lock: string) {
    this.child = spawn(file, args, { stdio: 'inherit', env, detached: true });
    // Started at once after the command: latchkey killed between the two leaves it unguarded.
    this.watchdog = this.child.pid === undefined ? undefined : startWatchdog(this.child.pid, graceMs, lock);
  }

  /** Sends `sig` to every process of the group; false if none is left. */
  signal(sig: NodeJS.Signals | 0): boolean {
    if (this.child.pid === undefined) return false;
    try {
      process.kill(-this.child.pid, sig);
      return true;
    } catch {
      return false;
    }
  }

  /** Whether any process of the group still runs (zombies aside, where /proc tells them apart). */
  running(): boolean {
    // The kernel first: a group it no longer lists is gone; one it lists may hold only zombies.
    if (this.child.pid === undefined || !this.signal(0)) return false;
    return groupRuns(this.child.pid) ?? true;
  }

  /** `sig` to the group, then SIGKILL after `graceMs` if any of it is left; settles when it is gone or killed. */
  stop(sig: NodeJS.Signals, graceMs: number): Promise<void> {
    this.stopping ??= new Promise<void>((resolve) => {
      this.signal(sig);
      const started = performance.now();
      const poll = setInterval(() => {
        if (!this.running()) {
          clearInterval(poll);
          resolve();
        } else if (performance.now() - started >= graceMs) {
          this.signal('SIGKILL');
          clearInterval(poll);
          resolve();
        }
      }, 50);
    });
    return this.stopping;
  }

  /** Whether the group is gone within `ms` (polled). */
  async settled(ms: number): Promise<boolean> {
    const until = performance.now() + ms;
    while (this.running()) {
      if (performance.now() >= until) return false;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return true;
  }

  /** latchkey is done with the command: the watchdog stands down. */
  disarm(): void {
    const pipe = this.watchdog?.stdin;
    if (!pipe || pipe.destroyed) return;
    pipe.end('done\n');
  }
}

function startWatchdog(pgid: number, graceMs: number, lock: string): ChildProcess {
  const { NODE_OPTIONS: _, ...env } = process.env;
  const watchdog = spawn(
    process.execPath,
    ['-e', WATCHDOG, String(pgid), String(graceMs), lock, formatDuration(graceMs)],
    {
      detached: true, // a session of its own: a signal to latchkey's group or terminal does not reach it
      stdio: ['pipe', 'ignore', 'inherit'],
      env,
    },
  );
  watchdog.on('error', () => {}); // could not start (EAGAIN): the command runs unguarded
  watchdog.stdin?.on('error', () => {});
  watchdog.unref();
  (watchdog.stdin as Socket | null)?.unref();
  return watchdog;
}

/**
 * How long before the lease's local deadline `run` treats it as lost when no renewal was confirmed:
 * the kill grace plus the SDK's usual margin, so that the command's group is gone (SIGKILL at the
 * latest) before the lease can end.
 */
export const stopMarginFor = (ttlMs: number, killGraceMs: number) => killGraceMs + safetyMarginMs(ttlMs);

/** Whether a lease of `ttlMs` leaves a command stopped within `killGraceMs` room, with a third of it to renew in. */
const graceFits = (ttlMs: number, killGraceMs: number) => stopMarginFor(ttlMs, killGraceMs) * 3 < ttlMs * 2;

/** `ms` rounded up to what formatDuration prints exactly (a tenth of its unit), so the figure printed holds. */
const roundUpAsPrinted = (ms: number) => {
  const step = ms < 59_950 ? 100 : ms < 3_597_000 ? 6_000 : 360_000;
  return Math.ceil(ms / step) * step;
};

/**
 * The least --ttl that fits `killGraceMs`, as printed (and not below the service's default least
 * ttl, 1 s). Fitting only grows with the ttl (its margin grows by a tenth of it, the room by two
 * thirds), so a search finds the edge.
 */
export function leastTtlFor(killGraceMs: number): number {
  let fits = 1_000;
  while (!graceFits(fits, killGraceMs)) fits *= 2;
  let short = 0;
  while (fits - short > 1) {
    const mid = Math.floor((short + fits) / 2);
    if (graceFits(mid, killGraceMs)) fits = mid;
    else short = mid;
  }
  return Math.max(1_000, roundUpAsPrinted(fits));
}

/** Why `ttlMs` cannot hold a command stopped within `killGraceMs` (a renewal needs a third of the ttl), or undefined. */
export function graceRefusal(ttlMs: number, killGraceMs: number): string | undefined {
  const least = leastTtlFor(killGraceMs);
  // Below the service's least ttl, and the grace would fit that: the service's refusal says what to give.
  if (graceFits(ttlMs, killGraceMs) || (ttlMs < 1_000 && least === 1_000)) return undefined;
  return (
    `--kill-grace ${formatDuration(killGraceMs)} does not fit in --ttl ${formatDuration(ttlMs)}: a lost lease must ` +
    `leave the command ${formatDuration(stopMarginFor(ttlMs, killGraceMs))} to stop before the lease ends, and renewals need a third of the ttl; ` +
    `give a --ttl of at least ${formatDuration(least)} or a shorter --kill-grace`
  );
}

/**
 * The environment of a command run holding `leases`. One lock: LATCHKEY_LOCK and
 * LATCHKEY_FENCING_TOKEN, as always. Several: neither (an outer run's would be wrong here), and
 * LATCHKEY_LOCKS for all. Both ways LATCHKEY_LOCKS is `name=token` per lock, joined by `,`, in the
 * canonical order: lock names never contain `=` or `,`, so it splits unambiguously.
 */
export function lockEnv(leases: readonly Lease[], base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const locks = [...leases]
    .sort((a, b) => compareLockNames(a.name, b.name))
    .map((l) => `${l.name}=${l.fencingToken}`)
    .join(',');
  const [only] = leases;
  // How the locks are held (`run --shared` holds every one shared): a reader knows not to write.
  const modes = new Set(leases.map((l) => l.mode));
  const { LATCHKEY_MODE: _mode, LATCHKEY_ENCLOSING: _enclosing, ...unmoded } = base;
  const mode = modes.size === 1 ? { LATCHKEY_MODE: [...modes][0] as string } : {};
  // Who holds them (a latchkey nested in the command names them as kept while it waits), and the
  // runs this one runs inside, which keep theirs as long as it runs: what a nested wait keeps too.
  const chain = enclosingChainText(enclosingRun(base));
  const holder = {
    ...(only ? { LATCHKEY_LOCKS_CLIENT_ID: only.clientId } : {}),
    ...(chain ? { LATCHKEY_ENCLOSING: chain } : {}),
  };
  if (leases.length === 1 && only)
    return {
      ...unmoded,
      LATCHKEY_LOCK: only.name,
      LATCHKEY_FENCING_TOKEN: String(only.fencingToken),
      LATCHKEY_LOCKS: locks,
      ...holder,
      ...mode,
    };
  const { LATCHKEY_LOCK: _lock, LATCHKEY_FENCING_TOKEN: _token, ...rest } = unmoded;
  return { ...rest, LATCHKEY_LOCKS: locks, ...holder, ...mode };
}

/**
 * The runs this process runs inside and the locks each holds, outermost first, from the
 * environment the nearest gave its command: its own locks and client id (LATCHKEY_LOCKS,
 * LATCHKEY_LOCKS_CLIENT_ID) after those of the runs around it (LATCHKEY_ENCLOSING). Each waits
 * for its command, so a wait made inside keeps them all (LockClientOptions.enclosing). Empty
 * outside a run; what is not a run's (another program's variables, or edited) is left out. Within
 * the service's limits, the nearest runs first: beyond them, the outermost are not named.
 */
export function enclosingRun(env: NodeJS.ProcessEnv = process.env): EnclosingHolds[] {
  const chain = enclosingChainOf(env.LATCHKEY_ENCLOSING ?? '');
  const clientId = env.LATCHKEY_LOCKS_CLIENT_ID ?? '';
  const holding = [...enclosingLocks(env).keys()].filter((name) => lockNameRefusal(name) === undefined);
  if (IDENTIFIER.test(clientId) && holding.length > 0) chain.push({ clientId, holding });
  const kept: EnclosingHolds[] = [];
  let names = 0;
  for (const run of chain.reverse()) {
    const room = MAX_HOLDING - names;
    if (kept.length === MAX_ENCLOSING || room <= 0) break;
    const holding = run.holding.slice(0, room); // a run holding more is named by its first locks
    kept.unshift({ clientId: run.clientId, holding });
    names += holding.length;
  }
  return kept;
}

/** LATCHKEY_ENCLOSING: per run, its client id, a space, its lock names joined by `,`; runs joined by `;`. */
const enclosingChainText = (chain: readonly EnclosingHolds[]) =>
  chain.map((run) => `${run.clientId} ${run.holding.join(',')}`).join(';');

function enclosingChainOf(text: string): EnclosingHolds[] {
  return text.split(';').flatMap((run) => {
    const [clientId = '', names = '', ...extra] = run.split(' ');
    const holding = names.split(',').filter((name) => name !== '' && lockNameRefusal(name) === undefined);
    return extra.length === 0 && IDENTIFIER.test(clientId) && holding.length > 0
      ? [{ clientId, holding }]
      : [];
  });
}

/** The locks an enclosing `latchkey run` holds, from the LATCHKEY_LOCKS it gave its command: name → token. */
export function enclosingLocks(env: NodeJS.ProcessEnv = process.env): Map<string, number> {
  const held = new Map<string, number>();
  for (const pair of (env.LATCHKEY_LOCKS ?? '').split(',')) {
    const at = pair.lastIndexOf('=');
    const token = Number(pair.slice(at + 1));
    if (at > 0 && Number.isSafeInteger(token) && token > 0) held.set(pair.slice(0, at), token);
  }
  return held;
}

/**
 * The first of `names` that the `latchkey run` this process runs inside holds right now (the very
 * grant its LATCHKEY_LOCKS names, still held by this principal) in a way this run could never get
 * past: either of the two exclusive, or both shared on a semaphore of one (its one place is the
 * enclosing run's). Waiting for it would wait forever, since that run ends only after its
 * command, which waits for this one. A stale LATCHKEY_LOCKS (a daemon that outlived its run)
 * names a grant that is gone, and counts for nothing. Undefined when none; a lookup that fails is
 * left to the acquire to report.
 */
export async function heldByEnclosingRun(
  client: Pick<LockClient, 'inspect'>,
  names: readonly string[],
  mode: LockMode,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string | undefined> {
  const enclosing = enclosingLocks(env);
  const bothShared = mode === 'shared' && env.LATCHKEY_MODE === 'shared';
  for (const name of names) {
    const token = enclosing.get(name);
    if (token === undefined) continue;
    const view = await client.inspect(name).catch(() => undefined);
    if (bothShared && view?.max_holders !== 1) continue; // room beside it, or places others free
    // biome-ignore lint/suspicious/noExplicitAny: the wire view of a holder
    if (view?.holders?.some((h: any) => h.mine === true && h.fencing_token === token)) return name;
  }
  return undefined;
}

/** How long a run waits before it says what it waits for. */
const WAITING_NOTE_MS = 1_000;

/** What `inspect` shows of a lock that a wait needs (its notes, and whom a timed-out one waited for). */
export interface WaitedLockView {
  readonly holders?: readonly {
    readonly client_id: string;
    readonly expires_at?: string | null;
    readonly held_by?: string;
    /** The caller's principal's. */
    readonly mine?: boolean;
  }[];
  readonly queued?: number;
  readonly waiters?: readonly { readonly client_id: string; readonly position: number }[];
  readonly mode?: string | null;
  readonly max_holders?: number | null;
}

/**
 * The line a run that waits says once: the lock(s), and for one lock whom it waits for (from
 * `view`, a lookup of it) and where this run (`clientId`) is in its queue: `waiting for jobs/a:
 * held by w-1 (lease ends in 25s), 2nd of 3 in the queue`.
 */
export function waitingLine(
  names: readonly string[],
  view?: WaitedLockView,
  clientId?: string,
  now = Date.now(),
): string {
  const what = `waiting for ${names.join(', ')}`;
  const holders = view?.holders ?? [];
  if (!view || holders.length === 0) return `${what}...`;
  // This client id's own hold (an earlier acquire's): the wait is not queued behind it.
  const own = holders.find((h) => h.mine === true && h.client_id === clientId);
  if (own)
    return `${what}: held by this client id (${own.client_id}) itself, and a wait does not queue behind its own hold: it waits for that hold's end (release it, or wait as another --client-id)`;
  const shown = holders.slice(0, 3).map((h) => h.client_id);
  const more = holders.length > 3 ? ` and ${holders.length - 3} more` : '';
  const ends = holders[0]?.expires_at ? Date.parse(holders[0].expires_at) - now : undefined;
  const lease =
    holders.length === 1
      ? ends === undefined || Number.isNaN(ends)
        ? 'through a session'
        : `lease ends in ${formatDuration(Math.max(0, ends))}`
      : undefined;
  const shared =
    view.mode === 'shared'
      ? view.max_holders
        ? `shared, ${holders.length} of ${view.max_holders}`
        : 'shared'
      : undefined;
  // One parenthesis: `(shared, 1 of 1; lease ends in 25s)`.
  const about = [shared, lease].filter((part) => part !== undefined).join('; ');
  const queued = view.queued ?? 0;
  const mine = view.waiters?.find((w) => w.client_id === clientId)?.position;
  const place = mine === undefined ? `${queued} queued` : `${ordinal(mine)} of ${queued} in the queue`;
  return `${what}: held by ${shown.join(', ')}${more}${about ? ` (${about})` : ''}, ${place}`;
}

/**
 * Says once, `WAITING_NOTE_MS` into a wait for `names`, what it waits for (`waitingLine`, from one
 * lookup of a single lock, sent once); `end()` when the wait ends, however: nothing is said after.
 * Nothing for a wait of `waitMs` that ends about then (its end says whom it waited for).
 */
export function waitingNote(
  client: Pick<LockClient, 'inspect' | 'clientId'>,
  names: readonly string[],
  say: (line: string) => void,
  waitMs = Number.POSITIVE_INFINITY,
  /** Said at the same moment, whatever the lookup finds. */
  also?: string,
): { end(): void } {
  if (waitMs < WAITING_NOTE_MS * 2) return { end() {} };
  const lookup = new AbortController();
  const timer = setTimeout(() => {
    if (also !== undefined) say(also);
    const [only] = names;
    const looked =
      names.length === 1 && only !== undefined
        ? client.inspect(only, { signal: lookup.signal, attempts: 1 })
        : Promise.resolve(undefined);
    void looked.then(
      (view) => {
        if (!lookup.signal.aborted) say(`latchkey: ${waitingLine(names, view, client.clientId)}`);
      },
      () => undefined, // not looked up (an outage): nothing known to say
    );
  }, WAITING_NOTE_MS).unref();
  return {
    end() {
      clearTimeout(timer);
      lookup.abort();
    },
  };
}

/** 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, ... */
function ordinal(n: number): string {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  const suffix = teen ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th');
  return `${n}${suffix}`;
}

/** How long processes left in the group after the command exits get to end by themselves (a pipeline's tail). */
const LEFTOVER_MS = 200;

/** The same signal again within this long is one signal (npm forwards what the terminal also sent). */
const SAME_SIGNAL_MS = 1_000;

/**
 * Runs `command` holding the lock `names` (one name), or all of `names` (several, acquired in the
 * canonical order by LockClient.withLocks); answers the exit code latchkey should exit with.
 */
export async function runLocked(
  client: LockClient,
  names: string | readonly string[],
  command: readonly string[],
  options: RunOptions,
): Promise<number> {
  const [file, ...args] = command;
  if (!file) throw new Error('no command given: latchkey run NAME -- command [args...]');
  const all = typeof names === 'string' ? [names] : [...names].sort(compareLockNames);
  if (all.length === 0) throw new Error('no lock given: latchkey run NAME -- command [args...]');
  /** The lock(s), as messages say it. */
  const name = all.join(', ');
  const theLease = all.length === 1 ? `the lease on ${name}` : `a lease (one of ${name})`;
  const enclosing = await heldByEnclosingRun(client, all, options.mode ?? 'exclusive');
  if (enclosing !== undefined) {
    options.say(
      `latchkey: not acquired: ${enclosing} is held by the latchkey run this one runs inside (its LATCHKEY_LOCKS), which ends only after this one: waiting would wait forever; run the command without the inner latchkey run, or take the lock in one of them`,
    );
    return EXIT.NOT_ACQUIRED;
  }
  // Signals go to the command once it runs; before that, they end the wait (and latchkey), but for
  // USR1 and USR2, which are ignored.
  const waiting = new AbortController();
  let group: CommandGroup | undefined;
  let signalled: NodeJS.Signals | undefined;
  let last: { sig: NodeJS.Signals; at: number } | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    const now = performance.now();
    if (last?.sig === sig && now - last.at < SAME_SIGNAL_MS) return;
    last = { sig, at: now };
    if (group) group.signal(sig);
    // USR1/USR2 ask a running program for something (reopen its logs, say), not to stop: no reason
    // to end the wait. Not kept for the command either: sent as it starts, before it can have set a
    // handler, it would kill it (their default action).
    else if (sig === 'SIGUSR1' || sig === 'SIGUSR2')
      options.say(`latchkey: ${sig} while waiting for ${name}: ignored (no command runs yet)`);
    else {
      signalled = sig;
      waiting.abort(new Error(`${sig} while waiting for ${name}`));
    }
  };
  const onResize = () => group?.signal('SIGWINCH');
  // Ctrl-Z: the command (in a session of its own) would not stop with latchkey and would run on
  // while nothing renews. Stop it too; on resume, continue it only if the lease is still good.
  let held: { leases: readonly Lease[]; lost: AbortSignal } | undefined;
  const suspend = () => {
    group?.signal('SIGSTOP');
    process.kill(process.pid, 'SIGSTOP');
  };
  const resume = () => {
    if (!group || !held) return;
    if (held.lost.aborted || held.leases.some((l) => l.remainingMs() <= 0)) {
      options.say(`latchkey: ${theLease} ended while stopped: killing the command`);
      group.signal('SIGKILL');
    } else group.signal('SIGCONT');
  };
  for (const sig of FORWARDED) process.on(sig, onSignal);
  process.on('SIGWINCH', onResize);
  process.on('SIGTSTP', suspend);
  process.on('SIGCONT', resume);
  const lockOptions = {
    ttlMs: options.ttlMs,
    waitTimeoutMs: options.waitMs,
    signal: waiting.signal,
    ...(options.priority === undefined ? {} : { priority: options.priority }),
    ...(options.onLost === 'none' ? {} : { stopMarginMs: stopMarginFor(options.ttlMs, options.killGraceMs) }),
  };
  // Only what was given: an exclusive run asks exactly as it always did.
  const mode = {
    ...(options.mode === undefined ? {} : { mode: options.mode }),
    ...(options.maxHolders === undefined ? {} : { maxHolders: options.maxHolders }),
  };
  const holding = (run: (leases: Lease[], lost: AbortSignal) => Promise<number>) => {
    const [only] = all;
    return all.length === 1 && only !== undefined
      ? client.withLock(only, { ...lockOptions, ...mode }, (lease, lost) => run([lease], lost))
      : client.withLocks(
          all.map((n) => ({ name: n, ...mode })),
          lockOptions,
          run,
        );
  };
  // A run still waiting after a moment says once what for (a cron job's log shows why it was
  // slow): one lookup, sent once, ended with the wait (granted, given up or signalled).
  const note = waitingNote(client, all, options.say, lockOptions.waitTimeoutMs, options.waitingAlso);
  const waited = () => note?.end();
  try {
    return await holding(
      (leases, lost) =>
        new Promise<number>((resolve) => {
          waited();
          if (signalled) return resolve(exitCodeOf(signalled));
          const env = lockEnv(leases);
          held = { leases, lost };
          const started = new CommandGroup(file, args, env, options.killGraceMs, name);
          group = started;
          let leaseLost = false;
          lost.addEventListener(
            'abort',
            () => {
              leaseLost = true;
              const why = (lost.reason as Error | undefined)?.message ?? String(lost.reason);
              const doing =
                options.onLost === 'none'
                  ? 'the command runs on (--on-lost none)'
                  : `stopping the command: ${options.onLost} now, SIGKILL in ${formatDuration(options.killGraceMs)}`;
              options.say(`latchkey: ${theLease} was lost (${why}): ${doing}`);
              if (options.onLost !== 'none') void started.stop(options.onLost, options.killGraceMs);
            },
            { once: true },
          );
          started.child.on('error', (error: NodeJS.ErrnoException) => {
            const why =
              error.code === 'ENOENT'
                ? 'command not found (not a path, nor on PATH)'
                : error.code === 'EACCES'
                  ? 'permission denied (not executable?)'
                  : error.message;
            options.say(`latchkey: cannot run ${file}: ${why}`);
            resolve(error.code === 'EACCES' ? EXIT.NOT_EXECUTABLE : EXIT.CANNOT_RUN);
          });
          started.child.on('exit', (code, sig) => {
            if (leaseLost) {
              if (options.onLost === 'none') return resolve(EXIT.LEASE_LOST);
              // What is left of its group (children that ignore SIGTERM) gets SIGKILL after the grace.
              void started.stop(options.onLost, options.killGraceMs).then(() => resolve(EXIT.LEASE_LOST));
              return;
            }
            const exited = code ?? exitCodeOf(sig);
            void started.settled(LEFTOVER_MS).then((gone) => {
              if (gone) return resolve(exited);
              // Processes it started in the background are still in its group: the lock is held until
              // they are gone too, so nothing of the command runs unlocked.
              options.say(
                `latchkey: ${file} exited, but processes it started still run: stopping them (SIGTERM, SIGKILL in ${formatDuration(options.killGraceMs)}) before releasing ${name}`,
              );
              void started.stop('SIGTERM', options.killGraceMs).then(() => resolve(exited));
            });
          });
        }),
    );
  } catch (error) {
    waited(); // no waiting note from here on, whatever follows
    if (signalled) return exitCodeOf(signalled);
    // The command ran and a lease was lost meanwhile (said as it happened): the SDK throws rather
    // than pass the command's exit status for work done under the lock.
    if (error instanceof LeaseLostError && held) {
      // Said as it happened when its signal aborted; a deadline passed unnoticed is said now.
      if (!held.lost.aborted) options.say(`latchkey: ${theLease} was lost: ${error.message}`);
      return EXIT.LEASE_LOST;
    }
    if (error instanceof DeadlockError) {
      // Any lock of the set already held was released (withLocks) before this was thrown.
      for (const line of deadlockLines(error)) options.say(line);
      return EXIT.NOT_ACQUIRED;
    }
    if (error instanceof WaitTimeoutError) {
      // A signal during the lookup ends it, and latchkey as a signal does.
      const explained = await explainedTimeout(client, error, options.mode === 'shared', waiting.signal);
      if (signalled) return exitCodeOf(signalled);
      options.say(`latchkey: ${cliMessage(explained)}`);
      return EXIT.NOT_ACQUIRED;
    }
    if (error instanceof LockHeldError) {
      options.say(`latchkey: ${cliMessage(error)}`);
      return EXIT.NOT_ACQUIRED;
    }
    throw error;
  } finally {
    waited();
    group?.disarm();
    for (const sig of FORWARDED) process.off(sig, onSignal);
    process.off('SIGWINCH', onResize);
    process.off('SIGTSTP', suspend);
    process.off('SIGCONT', resume);
  }
}
