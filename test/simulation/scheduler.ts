/**
 * The simulation's machinery: a seeded random source, a virtual clock, and a
 * scheduler that decides the order of everything.
 *
 * The services are ordinary async code. Every call they make to storage,
 * the pusher or the timer queue first waits for its turn (`turn()`); the
 * scheduler lets one waiting call proceed at a time, picked at random, and
 * between turns it lets every promise that can settle settle (one
 * setImmediate drains all microtasks). When nothing waits for a turn, it
 * advances virtual time to the next event on its agenda (a sleep ending, a
 * client's next step, a timer message, a stream batch). With every source
 * of nondeterminism injected (clock, sleeps, ids, randomness), a seed
 * replays exactly.
 *
 * A process crash is an invocation (one Lambda call) that stops at a turn
 * and never goes on: its pending promise never settles, and nothing it had
 * not done yet happens. AsyncLocalStorage tells which invocation a call
 * belongs to, so a crash stops all of that invocation and nothing else.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Clock } from '../../lambdas/service/clock';

/** xoshiro128**: small, fast and good enough for choosing interleavings. */
export class Rng {
  private s: Uint32Array;

  constructor(seed: number) {
    // splitmix32 to spread the seed over the state.
    let x = seed >>> 0;
    const next = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s = new Uint32Array([next(), next(), next(), next()]);
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1] as number, 5), 7), 9) >>> 0;
    const t = (s[1] as number) << 9;
    s[2] = (s[2] as number) ^ (s[0] as number);
    s[3] = (s[3] as number) ^ (s[1] as number);
    s[1] = (s[1] as number) ^ (s[2] as number);
    s[0] = (s[0] as number) ^ (s[3] as number);
    s[2] = (s[2] as number) ^ t;
    s[3] = rotl(s[3] as number, 11);
    return result;
  }

  /** [0, 1) */
  float(): number {
    return this.u32() / 2 ** 32;
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.float() * (max - min + 1));
  }

  chance(p: number): boolean {
    return this.float() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)] as T;
  }

  /** A hex id of 32 characters, shaped like a UUID where a UUID is expected. */
  uuid(): string {
    const hex = Array.from({ length: 4 }, () => this.u32().toString(16).padStart(8, '0')).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
  }
}

const rotl = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0;

export interface Invocation {
  readonly name: string;
  dead: boolean;
}

const never = <T = void>() => new Promise<T>(() => {});

/** One for all histories: Node 20 keeps every AsyncLocalStorage ever made and visits each on every promise. */
const INVOCATIONS = new AsyncLocalStorage<Invocation>();

interface AgendaEntry {
  readonly at: number;
  readonly seq: number;
  readonly run: () => void;
  cancelled?: boolean;
}

export class Scheduler implements Clock {
  private time: number;
  private seq = 0;
  private readonly agenda: AgendaEntry[] = [];
  private readonly ready: (() => void)[] = [];
  private readonly context = INVOCATIONS;
  /** How many turns were taken (a measure of work). */
  turns = 0;

  constructor(
    readonly rng: Rng,
    start: number,
  ) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  sleep(ms: number): Promise<void> {
    const invocation = this.context.getStore();
    return new Promise<void>((resolve) => this.at(this.time + Math.max(0, ms), () => resolve())).then(() =>
      invocation?.dead ? never<void>() : undefined,
    );
  }

  /** Runs `run` at virtual time `at` (not before any turn already waiting at that time); returns a cancel. */
  at(at: number, run: () => void): () => void {
    // Whole milliseconds, as Date.now() gives.
    const entry: AgendaEntry = { at: Math.max(Math.ceil(at), this.time), seq: this.seq++, run };
    let i = this.agenda.length;
    while (i > 0 && compare(this.agenda[i - 1] as AgendaEntry, entry) > 0) i--;
    this.agenda.splice(i, 0, entry);
    return () => {
      entry.cancelled = true;
    };
  }

  /** Waits until the scheduler picks this call; a call of a crashed invocation never goes on. */
  async turn(): Promise<void> {
    const invocation = this.context.getStore();
    if (invocation?.dead) return never();
    await new Promise<void>((resolve) => this.ready.push(resolve));
    if (invocation?.dead) return never();
  }

  /** The invocation the current call belongs to, if any. */
  current(): Invocation | undefined {
    return this.context.getStore();
  }

  /**
   * Runs `fn` as one invocation (a Lambda call). It settles with fn's result
   * or error, or, if the invocation crashed or overran `timeoutMs`, with
   * `{ crashed: true }` when the timeout passes, as a caller would see it.
   */
  invoke<T>(
    name: string,
    timeoutMs: number,
    fn: () => Promise<T>,
  ): Promise<{ ok: true; value: T } | { ok: false; error: unknown } | { crashed: true }> {
    const invocation: Invocation = { name, dead: false };
    return new Promise((resolve) => {
      let settled = false;
      const settle = (v: { ok: true; value: T } | { ok: false; error: unknown } | { crashed: true }) => {
        if (settled) return;
        settled = true;
        resolve(v);
      };
      const cancelTimeout = this.at(this.time + timeoutMs, () => {
        invocation.dead = true; // Lambda ends it at its timeout, whatever it was doing
        settle({ crashed: true });
      });
      const done = (v: { ok: true; value: T } | { ok: false; error: unknown }) => {
        if (invocation.dead) return;
        invocation.dead = true; // the function returned: nothing of it runs on
        cancelTimeout();
        settle(v);
      };
      this.context.run(invocation, () => {
        fn().then(
          (value) => done({ ok: true, value }),
          (error: unknown) => done({ ok: false, error }),
        );
      });
    });
  }

  /** Kills the current invocation here: nothing after this point of it runs. */
  crash(): Promise<never> {
    const invocation = this.context.getStore();
    if (invocation) invocation.dead = true;
    return never();
  }

  /**
   * Runs until virtual time passes `until` with nothing left to do before
   * it, or `stop()` says so. Returns false if the step budget ran out.
   */
  async run(
    until: number,
    options: { maxTurns?: number; afterTurn?: () => void; shouldStop?: () => boolean } = {},
  ): Promise<boolean> {
    const maxTurns = options.maxTurns ?? Number.POSITIVE_INFINITY;
    for (;;) {
      await flush();
      if (options.shouldStop?.()) return true;
      if (this.ready.length > 0) {
        if (this.turns++ >= maxTurns) return false;
        const i = this.rng.int(0, this.ready.length - 1);
        const [next] = this.ready.splice(i, 1);
        next?.();
        options.afterTurn?.();
        continue;
      }
      while (this.agenda[0]?.cancelled) this.agenda.shift();
      const first = this.agenda[0];
      if (!first || first.at > until) {
        this.time = Math.max(this.time, until);
        return true;
      }
      this.agenda.shift();
      this.time = first.at;
      first.run();
      options.afterTurn?.();
    }
  }
}

const compare = (a: AgendaEntry, b: AgendaEntry) => a.at - b.at || a.seq - b.seq;

/** Lets every promise that can settle now settle. */
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));
