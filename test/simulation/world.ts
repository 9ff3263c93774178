/**
 * The simulated world around the real services: the in-memory storage
 * behind a fault-injecting port, API Gateway's @connections (the pusher),
 * SQS timers, the DynamoDB stream feeding the notifier, DynamoDB's TTL, and
 * the sweeper's schedule. The services are wired exactly as in Lambda
 * (service/services.ts); only the adapters differ.
 */
import { LatchkeyError } from '../../lambdas/core/errors';
import type { ItemRef, ItemWrite, Step } from '../../lambdas/core/items';
import { localPrincipal } from '../../lambdas/core/principal';
import { DEFAULT_LIMITS, type ServiceLimits } from '../../lambdas/core/wire';
import type { Frame, WsMessage } from '../../lambdas/core/ws-wire';
import type { Pusher, PushOutcome } from '../../lambdas/service/push';
import { RELAY_CLIENT_ID, Relay, type RelaySocket } from '../../lambdas/service/relay';
import { type Services, wireServices } from '../../lambdas/service/services';
import type { Storage } from '../../lambdas/service/storage';
import type { StreamRecord } from '../../lambdas/service/stream-changes';
import { delaySeconds, type TimerMessage, type Timers } from '../../lambdas/service/timers';
import { keyOf, lockPartition, sessionPartition } from '../../lambdas/store/table';
import { answer } from '../../lambdas/ws/answer';
import { FakeSocket } from '../support/fake-socket';
import { MemoryStorage, type StreamRecordOut } from '../support/memory-storage';
import type { Rng, Scheduler } from './scheduler';

/** Probabilities of each fault, per call (0 everywhere once the faults stop). */
export interface Faults {
  /** A storage call refused before it applies (throttle, 500). */
  readonly throttle: number;
  /** A write applied whose answer never arrives (the SDK gave up): the caller sees UNAVAILABLE. */
  readonly lostAnswer: number;
  /** A write applied whose answer was lost, then sent again by the SDK: the second delivery answers. */
  readonly redelivered: number;
  /** The process dies just before, or just after, a call. */
  readonly crash: number;
  /** A push delivered whose answer is lost / a push that failed without delivering: both 'unknown'. */
  readonly pushUnknown: number;
  /** An SQS send that fails; a timer message lost for good, duplicated, or late by up to 5 s. */
  readonly timerSendFails: number;
  readonly timerLost: number;
  readonly timerDuplicate: number;
  readonly timerLate: number;
  /** A stream batch delivered again after it was processed. */
  readonly streamDuplicate: number;
  /** An answer to a client (HTTP response, or the frame of a WebSocket message's answer) lost on the way. */
  readonly answerLost: number;
  /** A $disconnect that API Gateway never delivers. */
  readonly disconnectLost: number;
  /** How far behind the indexes (due, owner, listing) run, at most, in ms. */
  readonly indexLagMs: number;
}

export const FAULTS: Faults = {
  throttle: 0.03,
  lostAnswer: 0.015,
  redelivered: 0.02,
  crash: 0.006,
  pushUnknown: 0.05,
  timerSendFails: 0.02,
  timerLost: 0.03,
  timerDuplicate: 0.05,
  timerLate: 0.1,
  streamDuplicate: 0.05,
  answerLost: 0.02,
  disconnectLost: 0.1,
  indexLagMs: 300,
};

export const NO_FAULTS: Faults = {
  throttle: 0,
  lostAnswer: 0,
  redelivered: 0,
  crash: 0,
  pushUnknown: 0,
  timerSendFails: 0,
  timerLost: 0,
  timerDuplicate: 0,
  timerLate: 0,
  streamDuplicate: 0,
  answerLost: 0,
  disconnectLost: 0,
  indexLagMs: 0,
};

/**
 * What AWS does not promise to avoid: a timer or stream batch delivered twice, an answer lost (and
 * a write sent again), a push whose outcome is unknown, a $disconnect that never comes, indexes that
 * lag. No message lost for good, no crash, no throttling (those only delay: a retry comes later).
 */
export const TIMELY: Faults = {
  ...NO_FAULTS,
  redelivered: 0.02,
  pushUnknown: 0.05,
  timerDuplicate: 0.05,
  streamDuplicate: 0.05,
  answerLost: 0.02,
  disconnectLost: 0.1,
  indexLagMs: 300,
};

export type Answer<T> =
  | { readonly kind: 'ok'; readonly value: T }
  | { readonly kind: 'error'; readonly error: LatchkeyError }
  /** No answer: the function crashed or timed out, or the answer was lost on the way. */
  | { readonly kind: 'none' };

const unavailable = (what: string) =>
  new LatchkeyError('UNAVAILABLE', `simulated fault: ${what}`, undefined, 100);

const pk = (ref: ItemRef) => keyOf(ref).pk;

/** The storage port with faults: every call first waits for its turn, then may fail in one of several ways. */
class FaultyStorage implements Storage {
  constructor(
    private readonly inner: MemoryStorage,
    private readonly world: World,
  ) {}

  write(ref: ItemRef, write: ItemWrite) {
    return this.mutate([pk(ref)], () => this.inner.write(ref, write), true);
  }
  transact(steps: readonly Step[]) {
    // The SDK retries a transaction with the same ClientRequestToken: a second delivery is not applied again.
    return this.mutate(
      steps.map((s) => pk(s.ref)),
      () => this.inner.transact(steps),
      false,
    );
  }
  remove(ref: ItemRef) {
    return this.mutate([pk(ref)], () => this.inner.remove(ref), true);
  }
  read(ref: ItemRef) {
    return this.query([pk(ref)], () => this.inner.read(ref));
  }
  readMany(refs: readonly ItemRef[]) {
    return this.query(refs.map(pk), () => this.inner.readMany(refs));
  }
  queue(lock: string, limit: number) {
    return this.query([lockPartition(lock)], () => this.inner.queue(lock, limit));
  }
  position(lock: string, order: string) {
    return this.query([lockPartition(lock)], () => this.inner.position(lock, order));
  }
  sessionLocks(session: string) {
    return this.query([sessionPartition(session)], () => this.inner.sessionLocks(session));
  }
  dueIn(minute: number, now: number) {
    return this.query([], () => this.inner.dueIn(minute, now));
  }
  waitersOf(connection: string) {
    return this.query([], () => this.inner.waitersOf(connection));
  }
  sessionIds(limit: number, after: string) {
    return this.query([], () => this.inner.sessionIds(limit, after));
  }
  listLocks(prefix: string, limit: number, cursor?: string) {
    return this.query([], () => this.inner.listLocks(prefix, limit, cursor));
  }

  private async query<T>(partitions: readonly string[], run: () => Promise<T>): Promise<T> {
    await this.world.beforeCall();
    if (this.world.fault('throttle') || this.world.inOutage(partitions)) throw unavailable('throttled');
    return run();
  }

  /** A write: throttled (not applied), applied with its answer lost, or applied twice (a resend). */
  private async mutate<T>(
    partitions: readonly string[],
    run: () => Promise<T>,
    resendApplies: boolean,
  ): Promise<T> {
    await this.world.beforeCall();
    if (this.world.fault('throttle') || this.world.inOutage(partitions)) throw unavailable('throttled');
    const result = await run();
    if (this.world.fault('crash')) return this.world.sched.crash();
    if (this.world.fault('lostAnswer')) throw unavailable('the answer to an applied write was lost');
    if (this.world.fault('redelivered')) return resendApplies ? run() : result;
    return result;
  }
}

/** The principal of the functions' relays (their role). */
const RELAY_OWNER = localPrincipal('latchkey-functions');

/** A client's end of a WebSocket connection. */
export interface SimConnection {
  readonly id: string;
  open: boolean;
  onFrame(frame: Frame): void;
}

export class World {
  readonly memory: MemoryStorage;
  readonly storage: Storage;
  /** What background work (notifier, timers, sweeper) runs on. */
  readonly services: Services;
  /**
   * Function instances a client's call lands on, at random, as on Lambda: each remembers what it
   * saw (which locks are contended, say), and another does not.
   */
  private readonly instances: readonly Services[];
  faults: Faults = FAULTS;
  /**
   * One partition that fails every call for over an hour (a hot or broken partition): what tests that
   * nothing due is ever abandoned. It outlasts the faulty phase; liveness is judged after it ends.
   */
  outage: { readonly partition: string; readonly until: number } | undefined;
  readonly connections = new Map<string, SimConnection>();
  readonly stats = {
    invocations: 0,
    crashes: 0,
    pushes: 0,
    /** Rings that reached a relay (HTTP waits woken by a push). */
    rings: 0,
    timers: 0,
    batches: 0,
    collected: 0,
    outageMinutes: 0,
  };
  /** Where the world reports what it does (the simulation's trace). */
  onTrace: (line: string) => void = () => {};
  /** Errors that are not typed LatchkeyErrors: bugs, reported by the simulation. */
  readonly bugs: unknown[] = [];
  private readonly shards = new Map<string, { records: StreamRecordOut[]; busy: boolean }>();
  private running = true;
  private ids = 0;

  constructor(
    readonly sched: Scheduler,
    readonly rng: Rng,
    retentionSeconds: number,
    readonly limits: ServiceLimits = DEFAULT_LIMITS,
    /** Namespaces where lock names form a hierarchy (none by default). */
    hierarchicalPrefixes: readonly string[] = [],
    /** How many function instances the clients' calls land on. */
    instanceCount = 3,
    /** Whether each instance has a relay on which its HTTP waits are rung. */
    relays = false,
  ) {
    this.memory = new MemoryStorage({ tableName: 'sim', retentionSeconds }, () => sched.now());
    this.memory.indexLag = () => (this.faults.indexLagMs ? rng.int(0, this.faults.indexLagMs) : 0);
    this.memory.onRecord = (record) => this.recordStreamed(record);
    this.storage = new FaultyStorage(this.memory, this);
    const instance = () =>
      wireServices({
        storage: this.storage,
        pusher: this.pusher,
        timers: this.timers,
        clock: sched,
        ids: () => `${rng.uuid()}`,
        limits,
        hierarchicalPrefixes,
        ...(relays ? { doorbell: this.relay() } : {}),
      });
    this.instances = Array.from({ length: instanceCount }, instance);
    this.services = this.instances[0] as Services;
  }

  newId(prefix: string): string {
    return `${prefix}${++this.ids}`;
  }

  /** Whether a fault of this kind happens now: only inside an invocation (what the services do). */
  fault(kind: 'throttle' | 'lostAnswer' | 'redelivered' | 'crash'): boolean {
    if (!this.sched.current()) return false;
    return this.rng.chance(this.faults[kind]);
  }

  inOutage(partitions: readonly string[]): boolean {
    const outage = this.outage;
    return outage !== undefined && this.sched.now() < outage.until && partitions.includes(outage.partition);
  }

  /** At a random moment, one session's partition starts failing for 61 to 80 minutes. */
  planOutage(withinMs: number): void {
    this.sched.at(this.sched.now() + this.rng.int(0, withinMs), () => {
      const sessions = this.memory.all().flatMap(({ ref }) => (ref?.kind === 'session' ? [ref] : []));
      if (!sessions.length) return;
      const victim = this.rng.pick(sessions);
      const minutes = this.rng.int(61, 80);
      this.outage = { partition: pk(victim), until: this.sched.now() + minutes * 60_000 };
      this.stats.outageMinutes = minutes;
    });
  }

  /** Every call of the services waits for its turn; a process may die just before it. */
  async beforeCall(): Promise<void> {
    // A DynamoDB call takes a few ms: others' calls land meanwhile, so two requests for one lock race.
    await this.sched.sleep(this.rng.int(1, 4));
    await this.sched.turn();
    if (this.sched.current() && this.rng.chance(this.faults.crash)) {
      this.stats.crashes++;
      await this.sched.crash();
    }
  }

  /** One function invocation on behalf of a client: its answer, or none (crashed, timed out, lost). */
  async call<T>(name: string, timeoutMs: number, run: (s: Services) => Promise<T>): Promise<Answer<T>> {
    this.stats.invocations++;
    const instance = this.rng.pick(this.instances);
    const out = await this.sched.invoke(name, timeoutMs, () => run(instance));
    if ('crashed' in out) return { kind: 'none' };
    if (this.rng.chance(this.faults.answerLost)) return { kind: 'none' };
    if (out.ok) return { kind: 'ok', value: out.value };
    // INTERNAL is a bug (a request DynamoDB would refuse as malformed), not an answer.
    if (out.error instanceof LatchkeyError && out.error.code !== 'INTERNAL')
      return { kind: 'error', error: out.error };
    this.bugs.push(out.error); // not a typed error: a bug the simulation reports
    return { kind: 'none' };
  }

  /** An invocation nobody waits for (a stream batch, a timer, the sweeper); true if it succeeded. */
  private async background(name: string, timeoutMs: number, run: () => Promise<unknown>): Promise<boolean> {
    this.stats.invocations++;
    const out = await this.sched.invoke(name, timeoutMs, run);
    if ('ok' in out && !out.ok && (!(out.error instanceof LatchkeyError) || out.error.code === 'INTERNAL'))
      this.bugs.push(out.error);
    return 'ok' in out && out.ok;
  }

  /** A WebSocket message: $default answers it with one frame, pushed to the connection. */
  sendWs(connectionId: string, message: WsMessage): void {
    void this.background('ws-message', 10_000, async () => {
      const frame = await answer(message, connectionId, this.services).catch((error: unknown) => {
        if (!(error instanceof LatchkeyError)) throw error;
        return { type: 'error' as const, request_id: message.request_id, ...error.toBody() } as Frame;
      });
      const lost = this.rng.chance(this.faults.answerLost);
      this.onTrace(
        `answer to ${message.action} ${message.request_id ?? ''} on ${connectionId}: ${frame.type}${lost ? ' (lost)' : ''}`,
      );
      if (!lost) await this.pusher.push(connectionId, frame);
    });
  }

  /** Opens a connection for a client of principal `owner` ($connect); undefined if that failed. */
  async connect(
    owner: string,
    clientId: string,
    onFrame: (frame: Frame) => void,
  ): Promise<SimConnection | undefined> {
    const id = this.newId('conn-');
    const out = await this.call('$connect', 10_000, (s) => s.connections.open(id, owner, clientId));
    if (out.kind !== 'ok') return undefined;
    const connection: SimConnection = { id, open: true, onFrame };
    this.connections.set(id, connection);
    return connection;
  }

  /**
   * A function instance's relay (service/relay.ts): its socket is a connection opened through
   * $connect like a client's, so pushes to it take the same delays and faults (a ring lost, or
   * late), and its `hello` is answered with a welcome a moment later.
   */
  private relay(): Relay {
    return new Relay(
      'ws://sim/v1',
      () => this.relaySocket(),
      () => ({}),
      () => this.sched.now(),
    );
  }

  private relaySocket(): RelaySocket {
    let connection: SimConnection | undefined;
    const socket: FakeSocket = new FakeSocket(
      'ws://sim/v1',
      {},
      {
        onSend: (message) => {
          const id = connection?.id;
          if (id && message.action === 'hello')
            this.sched.at(this.sched.now() + this.rng.int(1, 30), () =>
              socket.receives({ type: 'welcome', connection_id: id }),
            );
        },
        onClose: () => {
          if (connection) this.disconnect(connection);
        },
      },
    );
    const open = async () => {
      const opened = await this.connect(RELAY_OWNER, RELAY_CLIENT_ID, (frame) => {
        if (frame.type === 'ring') this.stats.rings++;
        socket.receives(frame);
      });
      if (socket.readyState === 3) {
        if (opened) this.disconnect(opened);
        return;
      }
      connection = opened;
      if (opened) socket.opens();
      else socket.refused();
    };
    // Its own invocation ($connect), not part of the HTTP wait that asked for the doorbell.
    this.sched.at(this.sched.now(), () => void open());
    return socket;
  }

  /** Closes a connection; API Gateway calls $disconnect (unless that is lost: then the sweeper will). */
  disconnect(connection: SimConnection): void {
    connection.open = false;
    if (this.rng.chance(this.faults.disconnectLost)) return;
    void this.background('$disconnect', 30_000, () => this.services.connections.closed(connection.id));
  }

  /** Background work: stream delivery, timers (SQS), the sweeper's schedule and TTL. */
  startBackground(): void {
    const sweep = () => {
      if (!this.running) return;
      const runs = this.rng.chance(0.05) ? 2 : 1; // EventBridge may deliver a run twice
      for (let i = 0; i < runs; i++)
        void this.background('sweeper', 60_000, () => this.services.sweeper.sweep());
      this.sched.at(this.sched.now() + 60_000 + this.rng.int(0, 2_000), sweep);
    };
    this.sched.at(this.sched.now() + this.rng.int(0, 60_000), sweep);
    const collect = () => {
      if (!this.running) return;
      this.stats.collected += this.memory.collectGarbage(this.sched.now(), () => this.rng.chance(0.3));
      this.sched.at(this.sched.now() + this.rng.int(1_000, 30_000), collect);
    };
    collect();
  }

  stopBackground(): void {
    this.running = false;
  }

  private recordStreamed(record: StreamRecordOut): void {
    let shard = this.shards.get(record.partition);
    if (!shard) {
      shard = { records: [], busy: false };
      this.shards.set(record.partition, shard);
    }
    shard.records.push(record);
    this.pollSoon();
  }

  /** The event source polls a shard with records 10-250 ms after they were written (DynamoDB Local: 17-36 ms). */
  private pollScheduled = false;
  private pollSoon(): void {
    if (this.pollScheduled || !this.running) return;
    this.pollScheduled = true;
    this.sched.at(this.sched.now() + this.rng.int(10, 250), () => {
      this.pollScheduled = false;
      for (const shard of this.shards.values()) if (!shard.busy && shard.records.length) this.deliver(shard);
    });
  }

  /** One batch of a shard, in order; retried until processed (then the on-failure queue takes it). */
  private deliver(shard: { records: StreamRecordOut[]; busy: boolean }): void {
    shard.busy = true;
    const batch = shard.records.splice(0, this.rng.int(1, 20)) as unknown as StreamRecord[];
    const attempt = (tries: number) => {
      this.stats.batches++;
      void this.background('notifier', 30_000, () => this.services.notifier.handle(batch)).then((ok) => {
        if (ok) {
          if (this.rng.chance(this.faults.streamDuplicate))
            this.sched.at(
              this.sched.now() + this.rng.int(0, 500),
              () => void this.background('notifier', 30_000, () => this.services.notifier.handle(batch)),
            );
          this.release(shard);
          return;
        }
        if (tries < 10) this.sched.at(this.sched.now() + 1_000, () => attempt(tries + 1));
        else this.release(shard); // to the on-failure queue: the batch is not processed
      });
    };
    attempt(1);
  }

  private release(shard: { records: StreamRecordOut[]; busy: boolean }): void {
    shard.busy = false;
    if (shard.records.length) this.pollSoon();
  }

  /** API Gateway's @connections: sent, gone, or (faults) unknown, delivered or not. */
  readonly pusher: Pusher = {
    push: async (connectionId: string, frame: Frame): Promise<PushOutcome> => {
      await this.beforeCall();
      this.stats.pushes++;
      // A PostToConnection takes a while (tens of ms on AWS): the world goes on meanwhile.
      await this.sched.sleep(this.rng.int(1, 40));
      const connection = this.connections.get(connectionId);
      if (!connection?.open) return 'gone';
      if (this.rng.chance(this.faults.pushUnknown)) {
        const delivered = this.rng.chance(0.5);
        if (delivered) this.arrive(connection, frame);
        this.onTrace(
          `push ${frame.type} to ${connectionId}: unknown (${delivered ? 'delivered' : 'not delivered'})`,
        );
        return 'unknown';
      }
      this.arrive(connection, frame);
      return 'sent';
    },
  };

  private arrive(connection: SimConnection, frame: Frame): void {
    this.sched.at(this.sched.now() + this.rng.int(1, 30), () => {
      if (connection.open) connection.onFrame(frame);
    });
  }

  /** SQS: a message delayed by whole seconds, delivered to the timer function, retried when it fails. */
  readonly timers: Timers = {
    schedule: (lock: string, at: number) => this.sendTimer({ lock, due_at: at }, at),
    scheduleSession: (id: string, at: number) => this.sendTimer({ session: id, due_at: at }, at),
  };

  private async sendTimer(message: TimerMessage, at: number): Promise<void> {
    await this.beforeCall();
    if (this.sched.current() && this.rng.chance(this.faults.timerSendFails))
      throw unavailable('SQS send failed');
    this.stats.timers++;
    if (this.rng.chance(this.faults.timerLost)) return;
    const late = this.rng.chance(this.faults.timerLate) ? this.rng.int(0, 5_000) : this.rng.int(0, 50);
    const deliverAt = this.sched.now() + delaySeconds(at, this.sched.now()) * 1000 + late;
    const copies = this.rng.chance(this.faults.timerDuplicate) ? 2 : 1;
    for (let i = 0; i < copies; i++)
      this.sched.at(deliverAt + i * this.rng.int(0, 200), () => this.fireTimer(message, 1));
  }

  private fireTimer(message: TimerMessage, receive: number): void {
    void this.background('timer', 30_000, () => this.services.timekeeper.fire(message)).then((ok) => {
      if (ok) return;
      // Back on the queue after its visibility timeout; after 5 receives, to the dead-letter queue.
      if (receive < 5) this.sched.at(this.sched.now() + 30_000, () => this.fireTimer(message, receive + 1));
    });
  }
}
