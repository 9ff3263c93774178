import { CfnOutput, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import { PRIORITY, QUOTA_SHARDS } from '../lambdas/core/queue';
import { DEFAULT_LIMITS, retentionProblem } from '../lambdas/core/wire';
import { LockHandoff } from './constructs/lock-handoff';
import { LockHttpApi } from './constructs/lock-http-api';
import { LockSweeper } from './constructs/lock-sweeper';
import { LockTable } from './constructs/lock-table';
import { LockWebSocketApi } from './constructs/lock-websocket-api';

export interface LatchkeyStackProps extends StackProps {
  /**
   * Shortest lease a client may ask for, in milliseconds.
   * @default 1000
   */
  readonly minTtlMs?: number;
  /**
   * Longest lease a client may ask for, in milliseconds.
   * @default 3600000 (one hour)
   */
  readonly maxTtlMs?: number;
  /**
   * How long an item is kept once what it records has ended (a lease, a wait, a request), in
   * seconds: also how long a request_id is remembered. At least a day, and an hour more than
   * `maxTtlMs` and the longest wait (checked at synth time and again when a function starts).
   * Fencing tokens stay increasing after collection either way.
   * @default 86400 (one day)
   */
  readonly lockRetentionSeconds?: number;
  /**
   * Retention of function and access logs.
   * @default RetentionDays.ONE_MONTH
   */
  readonly logRetention?: RetentionDays;
  /**
   * What happens to the lock table when the stack is deleted.
   * @default RemovalPolicy.RETAIN
   */
  readonly tableRemovalPolicy?: RemovalPolicy;
  /**
   * The priorities callers may ask for, within −100..100 and including 0 (the priority of a request
   * that names none); a request outside is refused (400). Narrow it (say to [0, 0]) where no caller
   * should jump a queue.
   * @default [-100, 100]
   */
  readonly priorityRange?: readonly [number, number];
  /**
   * Waiters in one lock's queue; one more is refused with 429 QUEUE_FULL.
   * @default 1000
   */
  readonly maxQueueLength?: number;
  /**
   * Waiters whose grant goes to one WebSocket connection; one more: 429 TOO_MANY_WAITERS.
   * @default 100
   */
  readonly maxWaitersPerConnection?: number;
  /**
   * Waiters of one IAM principal over all locks (kept in 16 shards of an equal share each, so a
   * principal may be refused a little before it reaches this; at least 16); one more: 429
   * TOO_MANY_WAITERS.
   * @default 25000
   */
  readonly maxWaitersPerPrincipal?: number;
  /**
   * HTTP waits polling at once, service-wide. Each holds a lock-commands instance for up to 25 s;
   * past this a wait is refused (429 TOO_MANY_WAITS) and WebSocket waits (which hold nothing)
   * still work. Must stay below the lock-commands function's reserved concurrency. 0: none.
   * @default 100
   */
  readonly maxHttpWaits?: number;
  /**
   * Reserved concurrency per function: a cap for lock-commands (so lock traffic cannot take the
   * account's whole concurrency), and room that nothing else can take for the notifier, the timer
   * and the sweeper. `false` reserves nothing (for accounts whose concurrency limit is too low).
   * @default { lockCommands: 200, notifier: 50, timer: 20, sweeper: 2 }
   */
  readonly reservedConcurrency?:
    | false
    | {
        readonly lockCommands?: number;
        readonly notifier?: number;
        readonly timer?: number;
        readonly sweeper?: number;
      };
  /**
   * The HTTP API stage's throttle: requests per second, and the burst above it, over all callers.
   * @default { rateLimit: 1000, burstLimit: 2000 }
   */
  readonly httpThrottle?: { readonly rateLimit: number; readonly burstLimit: number };
  /**
   * The WebSocket API stage's throttle (messages and connects per second, and the burst).
   * @default { rateLimit: 500, burstLimit: 1000 }
   */
  readonly webSocketThrottle?: { readonly rateLimit: number; readonly burstLimit: number };
}

/** Reserved concurrency when the props do not say. */
export const DEFAULT_RESERVED_CONCURRENCY = {
  lockCommands: 200,
  notifier: 50,
  timer: 20,
  sweeper: 2,
} as const;

export class LatchkeyStack extends Stack {
  readonly table: LockTable;
  readonly httpApi: LockHttpApi;
  readonly webSocketApi: LockWebSocketApi;
  readonly handoff: LockHandoff;
  readonly sweeper: LockSweeper;

  constructor(scope: Construct, id: string, props: LatchkeyStackProps = {}) {
    super(scope, id, {
      description: 'latchkey: distributed locks with fencing tokens on DynamoDB',
      ...props,
    });
    const retentionSeconds = props.lockRetentionSeconds ?? 86_400;
    const maxTtlMs = props.maxTtlMs ?? DEFAULT_LIMITS.maxTtlMs;
    const problem = retentionProblem(retentionSeconds, maxTtlMs);
    if (problem) throw new Error(`LatchkeyStack: lockRetentionSeconds: ${problem}`);
    this.table = new LockTable(this, 'Locks', {
      removalPolicy: props.tableRemovalPolicy ?? RemovalPolicy.RETAIN,
    });
    const limits = checkedLimits(props);
    const reserved =
      props.reservedConcurrency === false
        ? undefined
        : { ...DEFAULT_RESERVED_CONCURRENCY, ...props.reservedConcurrency };
    if (reserved && limits.maxHttpWaits >= reserved.lockCommands)
      throw new Error(
        `LatchkeyStack: maxHttpWaits (${limits.maxHttpWaits}) must be below the lock-commands reserved concurrency (${reserved.lockCommands}), or waiting callers could take all of it`,
      );
    const environment = {
      TABLE_NAME: this.table.table.tableName,
      LOCK_MIN_TTL_MS: String(props.minTtlMs ?? DEFAULT_LIMITS.minTtlMs),
      LOCK_MAX_TTL_MS: String(maxTtlMs),
      LOCK_RETENTION_SECONDS: String(retentionSeconds),
      LOCK_MIN_PRIORITY: String(limits.minPriority),
      LOCK_MAX_PRIORITY: String(limits.maxPriority),
      MAX_QUEUE_LENGTH: String(limits.maxQueueLength),
      MAX_WAITERS_PER_CONNECTION: String(limits.maxWaitersPerConnection),
      MAX_WAITERS_PER_PRINCIPAL: String(limits.maxWaitersPerPrincipal),
      MAX_HTTP_WAITS: String(limits.maxHttpWaits),
    };
    const logRetention = props.logRetention ?? RetentionDays.ONE_MONTH;
    this.webSocketApi = new LockWebSocketApi(this, 'WebSocket', {
      table: this.table.table,
      environment,
      logRetention,
      ...props.webSocketThrottle,
    });
    const withPush = { ...environment, WS_MANAGEMENT_ENDPOINT: this.webSocketApi.managementEndpoint };
    this.handoff = new LockHandoff(this, 'Handoff', {
      table: this.table.table,
      environment: withPush,
      logRetention,
      connectionsArn: this.webSocketApi.connectionsArn,
      ...(reserved ? { notifierConcurrency: reserved.notifier, timerConcurrency: reserved.timer } : {}),
    });
    this.httpApi = new LockHttpApi(this, 'Http', {
      table: this.table.table,
      environment: withPush,
      logRetention,
      connectionsArn: this.webSocketApi.connectionsArn,
      ...props.httpThrottle,
      ...(reserved ? { reservedConcurrency: { 'http/lock-commands': reserved.lockCommands } } : {}),
    });
    this.sweeper = new LockSweeper(this, 'Sweeper', {
      table: this.table.table,
      environment: withPush,
      logRetention,
      connectionsArn: this.webSocketApi.connectionsArn,
      ...(reserved ? { reservedConcurrency: reserved.sweeper } : {}),
    });
    new CfnOutput(this, 'TableName', {
      value: this.table.table.tableName,
      description: 'latchkey lock table',
    });
  }
}

/** The limits the props ask for (defaults filled in), refused at synth time if they make no sense. */
function checkedLimits(props: LatchkeyStackProps) {
  const [minPriority, maxPriority] = props.priorityRange ?? [PRIORITY.min, PRIORITY.max];
  const limits = {
    minPriority,
    maxPriority,
    maxQueueLength: props.maxQueueLength ?? DEFAULT_LIMITS.maxQueueLength,
    maxWaitersPerConnection: props.maxWaitersPerConnection ?? DEFAULT_LIMITS.maxWaitersPerConnection,
    maxWaitersPerPrincipal: props.maxWaitersPerPrincipal ?? DEFAULT_LIMITS.maxWaitersPerPrincipal,
    maxHttpWaits: props.maxHttpWaits ?? DEFAULT_LIMITS.maxHttpWaits,
  };
  const whole = (value: number, min: number) => Number.isInteger(value) && value >= min;
  // 0 (a request that names no priority) must be in the range, or it would jump every narrowed queue.
  if (!whole(minPriority + 100, 0) || !whole(100 - maxPriority, 0) || minPriority > 0 || maxPriority < 0)
    throw new Error(
      'LatchkeyStack: priorityRange must be two integers [min, max] with -100 <= min <= 0 <= max <= 100',
    );
  for (const name of ['maxQueueLength', 'maxWaitersPerConnection'] as const)
    if (!whole(limits[name], 1)) throw new Error(`LatchkeyStack: ${name} must be a positive integer`);
  // Counted in QUOTA_SHARDS shards of at least one waiter each.
  if (!whole(limits.maxWaitersPerPrincipal, QUOTA_SHARDS))
    throw new Error(`LatchkeyStack: maxWaitersPerPrincipal must be an integer of at least ${QUOTA_SHARDS}`);
  if (!whole(limits.maxHttpWaits, 0)) throw new Error('LatchkeyStack: maxHttpWaits must be an integer >= 0');
  return limits;
}
