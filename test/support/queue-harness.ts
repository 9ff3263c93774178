/**
 * The real services on the in-memory storage, with a clock the test moves
 * (a sleep moves it too), and a pusher and timers that record what they are
 * asked: the model the queue's rule tests run on. Nothing here re-implements
 * a rule; it only sets up and observes.
 */
import type { Item } from '../../lambdas/core/expr';
import { lockRef, requestRef } from '../../lambdas/core/items';
import {
  type AcquireCommand,
  type Grant,
  type LockMode,
  lease,
  requestKey,
  type Tenure,
  throughSession,
} from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import type { LockChangeImages, Waiter, WaitSlot } from '../../lambdas/core/queue';
import { requestOf } from '../../lambdas/core/request';
import type { ServiceLimits } from '../../lambdas/core/wire';
import type { Frame } from '../../lambdas/core/ws-wire';
import type { AcquireResult } from '../../lambdas/service/lock-service';
import type { PushOutcome } from '../../lambdas/service/push';
import type { Doorbell } from '../../lambdas/service/relay';
import { type Services, wireServices } from '../../lambdas/service/services';
import type { TimerMessage } from '../../lambdas/service/timers';
import { MemoryStorage } from './memory-storage';

export const START = 1_800_000_000_000;
export const LOCK = 'L';
/** The principal the harness's clients act as (unless a test names another). */
export const OWNER = localPrincipal('test');

export interface WaitOptions {
  readonly waitMs?: number;
  readonly priority?: number;
  readonly connection?: string;
  /** An HTTP waiter's doorbell (service/relay.ts), as its function would name it. */
  readonly bell?: string;
  /** The HTTP-wait slot such a waiter's function holds (core/queue.ts WaitAttr.slot). */
  readonly slot?: WaitSlot;
  readonly requestId?: string;
  readonly ttl?: number;
  readonly session?: string;
  /** The principal acting (default OWNER). */
  readonly owner?: string;
  /** Default exclusive. */
  readonly mode?: LockMode;
  /** Shared mode: a semaphore's N. */
  readonly maxHolders?: number;
  /** False: queue first, as on a lock lately seen contended (default: a free lock's grant is tried first). */
  readonly grantFirst?: boolean;
}

/** How another function instance differs: its relay, its own sleeps (default: the harness's clock moves). */
export interface InstanceOptions {
  readonly doorbell?: Doorbell;
  readonly sleep?: (ms: number) => Promise<void>;
}

export class QueueHarness {
  now = START;
  readonly memory: MemoryStorage;
  readonly services: Services;
  /** Every push, in order, with what it answered. */
  readonly pushes: { connection: string; frame: Frame; outcome: PushOutcome }[] = [];
  /** What a push answers (default: sent); it may act first (a retry racing the push, say). */
  pushOutcome: (connection: string, frame: Frame) => PushOutcome | Promise<PushOutcome> = () => 'sent';
  /** Every timer armed. */
  readonly timers: TimerMessage[] = [];
  private ids = 0;

  /** `limits`: the service's limits (default DEFAULT_LIMITS, as wireServices takes them). */
  constructor(limits?: ServiceLimits) {
    this.memory = new MemoryStorage({ tableName: 'queue', retentionSeconds: 86_400 }, () => this.now);
    this.limits = limits;
    this.services = this.instance();
  }

  private readonly limits: ServiceLimits | undefined;

  /**
   * Services wired to the same table, pushes, timers and clock: another function instance, which
   * remembers nothing the others saw.
   */
  instance(options: InstanceOptions = {}): Services {
    return wireServices({
      storage: this.memory,
      pusher: {
        push: async (connection, frame) => {
          const outcome = await this.pushOutcome(connection, frame);
          this.pushes.push({ connection, frame, outcome });
          return outcome;
        },
      },
      timers: {
        schedule: async (lock, at) => {
          this.timers.push({ lock, due_at: at });
        },
        scheduleSession: async (session, at) => {
          this.timers.push({ session, due_at: at });
        },
      },
      clock: {
        now: () => this.now,
        sleep:
          options.sleep ??
          (async (ms) => {
            this.now += Math.max(0, ms);
          }),
      },
      ids: () => `id-${++this.ids}`,
      ...(this.limits === undefined ? {} : { limits: this.limits }),
      ...(options.doorbell ? { doorbell: options.doorbell } : {}),
    });
  }

  /** The lock item as it is now. */
  get item(): Item | undefined {
    return this.memory.readNow(lockRef(LOCK));
  }

  waiters(): readonly Waiter[] {
    return this.memory.queueNow(LOCK).waiters;
  }

  /** The record of `client`'s request (of principal `owner`, default OWNER). */
  record(client: string, requestId: string, owner = OWNER) {
    return requestOf(this.memory.readNow(requestRef(LOCK, requestKey(owner, client, requestId))));
  }

  command(client: string, options: WaitOptions = {}): AcquireCommand {
    const tenure: Tenure =
      options.session !== undefined ? throughSession(options.session) : lease(options.ttl ?? 1_000);
    return {
      name: LOCK,
      owner: options.owner ?? OWNER,
      clientId: client,
      tenure,
      requestId: options.requestId,
      mode: options.mode ?? 'exclusive',
      maxHolders: options.maxHolders,
    };
  }

  /** Acquires at once; the test expects it granted. */
  async hold(client: string, options: WaitOptions & { reentrant?: boolean } = {}): Promise<Grant> {
    const result = await this.services.locks.acquire({
      ...this.command(client, options),
      reentrant: options.reentrant,
    });
    if (result.kind !== 'done' || !result.outcome.acquired)
      throw new Error(`${client} expected to hold ${LOCK}: ${JSON.stringify(result)}`);
    return result.outcome.grant;
  }

  /** A waiting acquire (over WebSocket when `connection` is given: opened first, by the waiter's principal). */
  async wait(client: string, options: WaitOptions = {}): Promise<AcquireResult> {
    const cmd = this.command(client, options);
    if (options.connection !== undefined && !(await this.services.connections.get(options.connection)))
      await this.services.connections.open(options.connection, cmd.owner, client);
    return this.services.locks.acquire(
      cmd,
      {
        waitMs: options.waitMs ?? 10_000,
        priority: options.priority,
        connectionId: options.connection,
        bell: options.bell,
        slot: options.slot,
      },
      options.grantFirst,
    );
  }

  release(grant: Grant) {
    return this.services.locks.release({
      name: LOCK,
      owner: grant.owner,
      clientId: grant.clientId,
      fencingToken: grant.fencingToken,
      mode: grant.mode,
    });
  }

  /** The frames pushed to `connection`, by type. */
  framesTo(connection: string, type?: Frame['type']): Frame[] {
    return this.pushes
      .filter((p) => p.connection === connection && (!type || p.frame.type === type))
      .map((p) => p.frame);
  }
}

/** One batch of stream records for the lock, as the notifier reads it (see stream-changes.ts). */
export const batch = (
  before: Item | undefined,
  after: Item | undefined,
  released?: Item,
): LockChangeImages => ({
  before,
  after,
  released,
});
