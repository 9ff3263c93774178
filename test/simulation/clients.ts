/**
 * The simulation's clients: they use latchkey the way the SDK does. They
 * retry an unanswered or 503-answered call with the same request_id, give
 * up a wait past its end (a WebSocket waiter then cancels it), reconnect
 * and ask again on a dropped connection, release a grant they did not
 * expect, renew, pause past their lease, stop heartbeating, and close.
 * What each client is told is reported to the checker: a belief that it
 * holds a lock (until its own deadline), or a request answered "not
 * acquired".
 */
import type { LatchkeyError } from '../../lambdas/core/errors';
import { type AcquireCommand, type Grant, lease, requestKey, throughSession } from '../../lambdas/core/lock';
import type { Frame } from '../../lambdas/core/ws-wire';
import type { Services } from '../../lambdas/service/services';
import type { Belief, Checker, Trace } from './checks';
import type { Answer, SimConnection, World } from './world';

/** HTTP waits are at most this long in the simulation (25 s on the real API). */
const MAX_HTTP_WAIT_MS = 3_000;
/** Past its wait by this much without an answer, a WebSocket waiter gives up and cancels (as the SDK does). */
const OVERDUE_SLACK_MS = 5_000;

type AnyFrame = Frame & Record<string, unknown>;

export abstract class Client {
  /** Cleared when the simulation winds down: finish what is under way, start nothing new. */
  active = true;

  constructor(
    readonly id: string,
    protected readonly world: World,
    protected readonly check: Checker,
    protected readonly trace: Trace,
    protected readonly locks: readonly string[],
  ) {}

  abstract run(): Promise<void>;

  protected get rng() {
    return this.world.rng;
  }
  protected now() {
    return this.world.sched.now();
  }
  protected sleep(ms: number) {
    return this.world.sched.sleep(ms);
  }

  /** One call, retried as the SDK does: on no answer or a retryable error, the same call again. */
  protected async call<T>(name: string, run: (s: Services) => Promise<T>, attempts = 6): Promise<Answer<T>> {
    let answer: Answer<T> = { kind: 'none' };
    for (let attempt = 1; attempt <= attempts; attempt++) {
      answer = await this.world.call(name, 29_000, run);
      if (answer.kind === 'ok' || (answer.kind === 'error' && !answer.error.retryable)) return answer;
      await this.sleep(this.rng.int(20, 100 * 2 ** attempt));
    }
    return answer;
  }

  /** Holds a lease: maybe renews it, maybe pauses past it, then releases it (over HTTP). */
  protected async holdLease(grant: Grant, sentAt: number, remainingMs: number): Promise<void> {
    let deadline = sentAt + remainingMs;
    const belief: Belief = {
      client: this.id,
      lock: grant.lock,
      token: grant.fencingToken,
      from: this.now(),
      until: () => deadline,
    };
    this.check.hold(belief);
    const ttl = grant.held.kind === 'lease' ? grant.held.ttlMs : remainingMs;
    const renewals = this.rng.chance(0.3) ? this.rng.int(1, 3) : 0;
    for (let i = 0; i < renewals && this.now() < deadline - ttl / 2; i++) {
      await this.sleep(this.rng.int(0, ttl / 3));
      if (this.now() >= deadline) break;
      const renewAt = this.now();
      const cmd = { name: grant.lock, clientId: this.id, fencingToken: grant.fencingToken, ttlMs: ttl };
      const renewed = await this.call('renew', (s) => s.locks.renew(cmd));
      if (renewed.kind === 'ok') deadline = Math.max(deadline, renewAt + ttl);
      else if (renewed.kind === 'error') break; // lost it: the deadline it had is all it has
    }
    if (this.rng.chance(0.1)) {
      // Paused past its lease (a long GC, say): it stops using the lock at its deadline, and never releases.
      belief.endedAt = deadline;
      await this.sleep(Math.max(0, deadline - this.now()) + this.rng.int(0, 2_000));
      return;
    }
    await this.sleep(this.rng.int(0, Math.max(0, Math.min(ttl, deadline - this.now()))));
    await this.release(grant, belief);
  }

  protected async release(grant: Grant, belief?: Belief): Promise<void> {
    if (belief) belief.endedAt = Math.min(this.now(), belief.until());
    const cmd = { name: grant.lock, clientId: grant.clientId, fencingToken: grant.fencingToken };
    const out = await this.call('release', (s) => s.locks.release(cmd));
    this.trace.add(`${this.id} release ${grant.lock} #${grant.fencingToken}: ${describe(out)}`);
  }

  protected newRequest() {
    return `r${this.world.newId('')}`;
  }
}

export const describe = (a: Answer<unknown>): string =>
  a.kind === 'ok' ? 'ok' : a.kind === 'error' ? (a.error as LatchkeyError).code : 'no answer';

/** Acquires over HTTP: tries, or waits up to a few seconds, each request retried with its request_id. */
export class HttpClient extends Client {
  async run(): Promise<void> {
    while (this.active) {
      await this.sleep(this.rng.int(0, 800));
      if (!this.active) return;
      const lock = this.rng.pick(this.locks);
      const waitMs = this.rng.chance(0.4) ? 0 : this.rng.int(50, MAX_HTTP_WAIT_MS);
      const ttl = this.rng.int(300, 3_000);
      const requestId = this.newRequest();
      const cmd: AcquireCommand = { name: lock, clientId: this.id, tenure: lease(ttl), requestId };
      const key = requestKey(this.id, requestId);
      let sentAt = this.now();
      const until = sentAt + waitMs;
      let out: Answer<Awaited<ReturnType<Services['locks']['acquireOverHttp']>>> = { kind: 'none' };
      for (let attempt = 1; attempt <= 6; attempt++) {
        sentAt = this.now();
        // A retry asks for what is left of the wait, down to none (any client may; the old SDK did).
        const left = waitMs === 0 ? 0 : Math.max(0, until - sentAt);
        out = await this.world.call('acquire', 29_000, (s) => s.locks.acquireOverHttp(cmd, { waitMs: left }));
        if (out.kind === 'ok' || (out.kind === 'error' && !out.error.retryable)) break;
        await this.sleep(this.rng.int(20, 100 * 2 ** attempt));
      }
      this.trace.add(`${this.id} acquire ${lock} wait ${waitMs} ${requestId}: ${describe(out)}`);
      if (out.kind !== 'ok') continue; // told nothing final (or LEASE_EXPIRED for a grant that ended)
      if (!out.value.acquired) {
        this.check.answeredNotAcquired(lock, key);
        continue;
      }
      const grant = out.value.grant;
      this.check.answeredGranted(lock, key, grant.fencingToken);
      const remaining = grant.held.kind === 'lease' ? grant.held.expiresAt - this.now() : 0;
      await this.holdLease(grant, sentAt, remaining);
    }
  }
}

interface PendingWait {
  readonly requestId: string;
  readonly lock: string;
  readonly ttl: number;
  readonly waitMs: number;
  readonly ephemeral: boolean;
  /** When the wait ends, on this client's clock. */
  readonly until: number;
  /**
   * Send time of the request's first attempt: a grant is counted from there, whichever attempt it
   * answers. (A grant pushed for an earlier attempt can arrive after a later one was sent: counting
   * from the later send would overstate the lease. The simulation caught exactly that, seed 1728.)
   */
  readonly sentAt: number;
  cancels: number;
  settle(result: { grant: Grant; remaining: number; sentAt: number } | undefined): void;
}

/** Waits over WebSocket as the SDK does: one connection, reconnecting and asking again when it drops. */
export class WsClient extends Client {
  private connection: SimConnection | undefined;
  private pending: PendingWait | undefined;
  /** Requests given up on: a grant that still arrives for one is released at once. */
  private readonly abandoned = new Set<string>();
  /** Requests already answered with their grant: the same grant may arrive again (a push and a retry's answer). */
  private readonly answered = new Set<string>();

  async run(): Promise<void> {
    while (this.active) {
      await this.sleep(this.rng.int(0, 800));
      if (!this.active) break;
      if (!(await this.ensureConnected())) continue;
      const lock = this.rng.pick(this.locks);
      const ephemeral = this.rng.chance(0.1);
      const wait: PendingWait = await this.startWait(lock, ephemeral);
      const result = await new Promise<Parameters<PendingWait['settle']>[0]>((resolve) => {
        wait.settle = resolve;
      });
      this.pending = undefined;
      if (!result) continue;
      if (ephemeral) await this.holdThroughConnection(result.grant);
      else await this.holdLease(result.grant, result.sentAt, result.remaining);
    }
    if (this.connection) this.world.disconnect(this.connection);
  }

  private async startWait(lock: string, ephemeral: boolean): Promise<PendingWait> {
    const waitMs = this.rng.chance(0.2) ? 0 : this.rng.int(100, 6_000);
    const wait: PendingWait = {
      requestId: this.newRequest(),
      lock,
      ttl: this.rng.int(300, 3_000),
      waitMs,
      ephemeral,
      until: this.now() + waitMs,
      sentAt: this.now(),
      cancels: 0,
      settle: () => {},
    };
    this.pending = wait;
    this.send(wait);
    this.watchOverdue(wait);
    return wait;
  }

  private send(wait: PendingWait): void {
    if (!this.connection?.open) return;
    this.trace.add(
      `${this.id} -> acquire ${wait.requestId} on ${this.connection.id}${wait.ephemeral ? ' (ephemeral)' : ''}`,
    );
    this.world.sendWs(this.connection.id, {
      action: 'acquire',
      lock: wait.lock,
      request_id: wait.requestId,
      wait_timeout_ms: Math.max(wait.waitMs === 0 ? 0 : 1, wait.until - this.now()),
      ...(wait.ephemeral ? { ephemeral: true } : { ttl_ms: wait.ttl }),
    });
    // Sometimes the connection drops while waiting: reconnect and ask again with the same request.
    if (this.rng.chance(0.08))
      this.world.sched.at(this.now() + this.rng.int(0, 2_000), () => void this.drop(wait));
  }

  /** Past its wait with no answer: cancel it; the answer is `cancelled` or, if it was granted, the grant. */
  private watchOverdue(wait: PendingWait): void {
    this.world.sched.at(wait.until + OVERDUE_SLACK_MS * (wait.cancels + 1), () => {
      if (this.pending !== wait) return;
      if (wait.cancels >= 3 || !this.connection?.open) {
        this.abandoned.add(wait.requestId); // told nothing: whatever arrives later is released
        wait.settle(undefined);
        return;
      }
      wait.cancels++;
      this.world.sendWs(this.connection.id, {
        action: 'cancel',
        lock: wait.lock,
        request_id: wait.requestId,
      });
      this.watchOverdue(wait);
    });
  }

  private async drop(wait: PendingWait): Promise<void> {
    if (this.pending !== wait || !this.connection) return;
    this.trace.add(`${this.id} connection ${this.connection.id} dropped while waiting`);
    this.world.disconnect(this.connection);
    this.connection = undefined;
    if (await this.ensureConnected()) if (this.pending === wait) this.send(wait);
  }

  private async ensureConnected(): Promise<boolean> {
    if (this.connection?.open) return true;
    this.connection = await this.world.connect(this.id, (frame) => this.onFrame(frame as AnyFrame));
    return this.connection !== undefined;
  }

  private onFrame(frame: AnyFrame): void {
    const wait = this.pending;
    const requestId = typeof frame.request_id === 'string' ? frame.request_id : undefined;
    this.trace.add(
      `${this.id} <- ${frame.type} ${requestId ?? ''} ${frame.type === 'error' ? JSON.stringify(frame.error) : ''}`,
    );
    if (!wait || requestId !== wait.requestId) {
      // A grant this client did not expect (a wait it gave up on): it is its own, so it releases it. The
      // same grant twice (pushed, and the answer to a retry) is not unexpected: it may be in use.
      if (frame.type === 'granted' && !(requestId !== undefined && this.answered.has(requestId)))
        void this.releaseFrame(frame);
      return;
    }
    const key = requestKey(this.id, wait.requestId);
    if (frame.type === 'granted') {
      const grant = grantOfFrame(frame, this.id);
      this.check.answeredGranted(wait.lock, key, grant.fencingToken);
      this.answered.add(wait.requestId);
      wait.settle({ grant, remaining: Number(frame.remaining_ms ?? 0), sentAt: wait.sentAt });
    } else if (frame.type === 'timeout' || frame.type === 'busy' || frame.type === 'cancelled') {
      this.check.answeredNotAcquired(wait.lock, key);
      wait.settle(undefined);
    } else if (frame.type === 'error') {
      const error = frame.error as { code?: string };
      if (error?.code === 'UNAVAILABLE') {
        // Outcome unknown: ask again, same request.
        this.world.sched.at(this.now() + this.rng.int(20, 300), () => {
          if (this.pending === wait) this.send(wait);
        });
      } else if (error?.code === 'LEASE_EXPIRED') {
        wait.settle(undefined); // it was granted, and that grant already ended
      } else {
        this.check.answeredNotAcquired(wait.lock, key);
        wait.settle(undefined);
      }
    }
  }

  private async releaseFrame(frame: AnyFrame): Promise<void> {
    await this.release(grantOfFrame(frame, this.id));
  }

  /** A lock held through this connection: kept until the client disconnects. */
  private async holdThroughConnection(grant: Grant): Promise<void> {
    const connection = this.connection;
    const belief: Belief = {
      client: this.id,
      lock: grant.lock,
      token: grant.fencingToken,
      from: this.now(),
      until: () => (connection?.open ? Number.POSITIVE_INFINITY : (belief.endedAt ?? this.now())),
    };
    this.check.hold(belief);
    await this.sleep(this.rng.int(0, 2_000));
    belief.endedAt = this.now();
    if (connection) this.world.disconnect(connection);
    this.connection = undefined;
  }
}

/** Opens a session, heartbeats it, takes locks in it, sometimes stops heartbeating, and closes it. */
export class SessionClient extends Client {
  async run(): Promise<void> {
    while (this.active) {
      await this.sleep(this.rng.int(0, 1_000));
      if (!this.active) return;
      await this.oneSession();
    }
  }

  private async oneSession(): Promise<void> {
    const ttl = this.rng.int(600, 3_000);
    const grace = this.rng.int(0, 500);
    const lockDelay = this.rng.chance(0.3) ? this.rng.int(1, 1_000) : 0;
    const openedAt = this.now();
    const opened = await this.call('open-session', (s) =>
      s.sessions.create(this.id, { ttlMs: ttl, graceMs: grace, lockDelayMs: lockDelay }),
    );
    if (opened.kind !== 'ok') return;
    const id = opened.value.id;
    const session = { deadline: openedAt + ttl, lost: false, closedAt: undefined as number | undefined };
    const beliefs: Belief[] = [];
    // Heartbeats every ttl/3; the session is lost for good once its deadline passes without one.
    const stopHeartbeatsAt = this.rng.chance(0.2)
      ? this.now() + this.rng.int(0, 4_000)
      : Number.POSITIVE_INFINITY;
    const heartbeats = (async () => {
      while (!session.lost && session.closedAt === undefined) {
        await this.sleep(ttl / 3);
        if (session.closedAt !== undefined) return;
        if (this.now() >= session.deadline) session.lost = true;
        if (session.lost || this.now() >= stopHeartbeatsAt) return;
        const sentAt = this.now();
        const beat = await this.world.call('heartbeat', 10_000, (s) => s.sessions.heartbeat(id, this.id));
        if (beat.kind === 'ok' && sentAt < session.deadline) session.deadline = sentAt + ttl;
        else if (beat.kind === 'error' && !beat.error.retryable) session.lost = true;
      }
    })();
    const uses = this.rng.int(1, 4);
    for (let i = 0; i < uses && this.active && !session.lost && this.now() < session.deadline; i++) {
      const lock = this.rng.pick(this.locks);
      const waitMs = this.rng.chance(0.5) ? 0 : this.rng.int(50, MAX_HTTP_WAIT_MS);
      const requestId = this.newRequest();
      const cmd: AcquireCommand = { name: lock, clientId: this.id, tenure: throughSession(id), requestId };
      const out = await this.call('acquire-in-session', (s) => s.locks.acquireOverHttp(cmd, { waitMs }));
      this.trace.add(`${this.id} acquire ${lock} in session ${id} wait ${waitMs}: ${describe(out)}`);
      const key = requestKey(this.id, requestId);
      if (out.kind !== 'ok') continue;
      if (!out.value.acquired) {
        this.check.answeredNotAcquired(lock, key);
        continue;
      }
      const grant = out.value.grant;
      this.check.answeredGranted(lock, key, grant.fencingToken);
      const belief: Belief = {
        client: this.id,
        lock,
        token: grant.fencingToken,
        from: this.now(),
        until: () => session.deadline,
      };
      this.check.hold(belief);
      beliefs.push(belief);
      if (this.rng.chance(0.2)) {
        // A confused client renews a lock it holds through its session: refused (HELD_BY_SESSION), nothing changes.
        const renew = {
          name: lock,
          clientId: this.id,
          fencingToken: grant.fencingToken,
          ttlMs: this.rng.int(300, 1_000),
        };
        const renewed = await this.world.call('renew', 10_000, (s) => s.locks.renew(renew));
        this.trace.add(`${this.id} renew session lock ${lock}: ${describe(renewed)}`);
      }
      await this.sleep(this.rng.int(0, 2 * ttl));
      if (this.rng.chance(0.5) && !session.lost) await this.release(grant, belief);
    }
    // Done (or lost it): close the session, which releases whatever is still held through it.
    session.closedAt = this.now();
    for (const b of beliefs) b.endedAt ??= Math.min(session.closedAt, session.deadline);
    if (!session.lost || this.rng.chance(0.5)) {
      const closed = await this.call('close-session', (s) => s.sessions.close(id, this.id));
      this.trace.add(`${this.id} close session ${id}: ${describe(closed)}`);
    }
    await heartbeats;
  }
}

function grantOfFrame(frame: AnyFrame, clientId: string): Grant {
  const expires = typeof frame.expires_at === 'string' ? Date.parse(frame.expires_at) : undefined;
  return {
    lock: String(frame.lock),
    clientId,
    fencingToken: Number(frame.fencing_token),
    held:
      frame.session_id !== undefined && frame.session_id !== null
        ? { kind: 'session', sessionId: String(frame.session_id) }
        : { kind: 'lease', ttlMs: Number(frame.ttl_ms ?? 0), expiresAt: expires ?? 0 },
    mode: 'exclusive',
    acquiredAt: 0,
    reentry: 1,
  };
}
