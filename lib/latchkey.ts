import { RemovalPolicy, Stack, Token } from 'aws-cdk-lib';
import type { Table } from 'aws-cdk-lib/aws-dynamodb';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { type ILogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import { type ITopic, Topic } from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { prefixesProblem } from '../lambdas/core/hierarchy';
import { PRIORITY, QUOTA_SHARDS } from '../lambdas/core/queue';
import { DEFAULT_LIMITS, retentionProblem } from '../lambdas/core/wire';
import { NOTIFIER, SWEEPER, TIMER } from '../lambdas/shared/function-spec';
import type { LogLevel } from '../lambdas/shared/log';
import { METRIC_NAMESPACE_VARIABLE, metricNamespaceFor } from '../lambdas/shared/metric-catalog';
import { WS_STAGE } from '../lambdas/ws/routes';
import { lockPrefixProblem } from '../sdk/names';
import { LockHandoff } from './constructs/lock-handoff';
import { LockHttpApi } from './constructs/lock-http-api';
import { LockObservability } from './constructs/lock-observability';
import { LockSweeper } from './constructs/lock-sweeper';
import { LockTable } from './constructs/lock-table';
import { LockWebSocketApi } from './constructs/lock-websocket-api';

/** What a latchkey deployment can be told (README: "Deploy to AWS", "Limits"). */
export interface LatchkeyProps {
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
   * What happens to the lock table when the stack is deleted (or the construct removed).
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
   * Namespaces where lock names form a hierarchy (README: "Hierarchies"), each ending with '/' and
   * none inside another: inside `tenants/`, a lock on `tenants/acme` covers `tenants/acme/…`. Names
   * outside them keep one write per operation. Change it only while no lock inside a namespace
   * that is added or removed is held.
   * @default none
   */
  readonly hierarchicalPrefixes?: readonly string[];
  /**
   * Reserved concurrency per function: a cap for lock-commands (so lock traffic cannot take the
   * account's whole concurrency), and room that nothing else can take for the notifier, the timer
   * and the sweeper. `false` reserves nothing (for accounts whose concurrency limit is too low).
   * @default { lockCommands: 200, notifier: 50, timer: 20, sweeper: 2 }
   */
  readonly reservedConcurrency?: false | ReservedConcurrency;
  /**
   * The HTTP API stage's throttle: requests per second, and the burst above it, over all callers.
   * @default { rateLimit: 1000, burstLimit: 2000 }
   */
  readonly httpThrottle?: Throttle;
  /**
   * The WebSocket API stage's throttle (messages and connects per second, and the burst).
   * @default { rateLimit: 500, burstLimit: 1000 }
   */
  readonly webSocketThrottle?: Throttle;
  /**
   * Where the alarms (README: "Operate it") send their notifications, and their recoveries. Without
   * it (and without `alarmTopicArn`) the alarms only change state, on the dashboard.
   * @default none
   */
  readonly alarmTopic?: ITopic;
  /**
   * The ARN of an existing SNS topic (standard, not FIFO) for the alarms: `alarmTopic` for the
   * command line (`-c alarmTopicArn=arn:aws:sns:…`). Not with `alarmTopic`.
   * @default none
   */
  readonly alarmTopicArn?: string;
  /**
   * X-Ray active tracing of every function, with their DynamoDB, SQS and API Gateway management
   * calls as subsegments. API Gateway HTTP APIs cannot be traced by X-Ray, so traces start at the
   * functions. Costs X-Ray's per-trace price past its free tier.
   * @default false
   */
  readonly tracing?: boolean;
  /**
   * The functions' log level (`LOG_LEVEL`): `warn` drops the one `request` line per request, the
   * largest part of the log volume at scale (and what the most-refused-callers rule reads); audit
   * lines are written at every level but `silent`.
   * @default 'info'
   */
  readonly logLevel?: LogLevel;
}

export interface ReservedConcurrency {
  readonly lockCommands?: number;
  readonly notifier?: number;
  readonly timer?: number;
  readonly sweeper?: number;
}

export interface Throttle {
  readonly rateLimit: number;
  readonly burstLimit: number;
}

/** Reserved concurrency when the props do not say. */
export const DEFAULT_RESERVED_CONCURRENCY = {
  lockCommands: 200,
  notifier: 50,
  timer: 20,
  sweeper: 2,
} as const satisfies Required<ReservedConcurrency>;

/** Props whose default is "none". */
type OptionalProp = 'alarmTopic' | 'alarmTopicArn';

/** Every default of {@link LatchkeyProps}, in one place (the config keys' docs read them too). */
export const LATCHKEY_DEFAULTS = {
  minTtlMs: DEFAULT_LIMITS.minTtlMs,
  maxTtlMs: DEFAULT_LIMITS.maxTtlMs,
  lockRetentionSeconds: 86_400,
  logRetention: RetentionDays.ONE_MONTH,
  tableRemovalPolicy: RemovalPolicy.RETAIN,
  priorityRange: [PRIORITY.min, PRIORITY.max],
  maxQueueLength: DEFAULT_LIMITS.maxQueueLength,
  maxWaitersPerConnection: DEFAULT_LIMITS.maxWaitersPerConnection,
  maxWaitersPerPrincipal: DEFAULT_LIMITS.maxWaitersPerPrincipal,
  maxHttpWaits: DEFAULT_LIMITS.maxHttpWaits,
  hierarchicalPrefixes: [],
  reservedConcurrency: DEFAULT_RESERVED_CONCURRENCY,
  httpThrottle: { rateLimit: 1000, burstLimit: 2000 },
  webSocketThrottle: { rateLimit: 500, burstLimit: 1000 },
  tracing: false,
  logLevel: 'info',
} as const satisfies { readonly [K in Exclude<keyof LatchkeyProps, OptionalProp>]-?: LatchkeyProps[K] };

/** One prop that makes no sense, and why. */
export interface LatchkeyPropProblem {
  readonly prop: keyof LatchkeyProps;
  readonly message: string;
}

/**
 * Everything wrong with the props (defaults filled in), each naming its prop: the rules the
 * construct enforces at synth time, shared with the CDK context parser (lib/config.ts) so that a
 * bad `-c` value is refused with the same words. Empty when all is well.
 */
export function latchkeyPropProblems(props: LatchkeyProps): LatchkeyPropProblem[] {
  const problems: LatchkeyPropProblem[] = [];
  const fail = (prop: keyof LatchkeyProps, message: string) => problems.push({ prop, message });
  const whole = (value: number, min: number) => Number.isInteger(value) && value >= min;
  const p = resolved(props);

  for (const name of ['minTtlMs', 'maxTtlMs'] as const)
    if (!whole(p[name], 1)) fail(name, `${name} must be a positive integer (milliseconds)`);
  if (whole(p.minTtlMs, 1) && whole(p.maxTtlMs, 1) && p.minTtlMs > p.maxTtlMs)
    fail('minTtlMs', `minTtlMs (${p.minTtlMs}) must not exceed maxTtlMs (${p.maxTtlMs})`);
  if (!whole(p.lockRetentionSeconds, 1))
    fail('lockRetentionSeconds', 'lockRetentionSeconds must be a positive integer (seconds)');
  else if (whole(p.maxTtlMs, 1)) {
    const problem = retentionProblem(p.lockRetentionSeconds, p.maxTtlMs);
    if (problem) fail('lockRetentionSeconds', `lockRetentionSeconds: ${problem}`);
  }

  const [minPriority, maxPriority] = p.priorityRange;
  // 0 (a request that names no priority) must be in the range, or it would jump every narrowed queue.
  if (
    (p.priorityRange as readonly number[]).length !== 2 ||
    !whole(minPriority - PRIORITY.min, 0) ||
    !whole(PRIORITY.max - maxPriority, 0) ||
    minPriority > 0 ||
    maxPriority < 0
  )
    fail(
      'priorityRange',
      `priorityRange must be two integers [min, max] with ${PRIORITY.min} <= min <= 0 <= max <= ${PRIORITY.max}`,
    );
  for (const name of ['maxQueueLength', 'maxWaitersPerConnection'] as const)
    if (!whole(p[name], 1)) fail(name, `${name} must be a positive integer`);
  // Counted in QUOTA_SHARDS shards of at least one waiter each.
  if (!whole(p.maxWaitersPerPrincipal, QUOTA_SHARDS))
    fail('maxWaitersPerPrincipal', `maxWaitersPerPrincipal must be an integer of at least ${QUOTA_SHARDS}`);
  if (!whole(p.maxHttpWaits, 0)) fail('maxHttpWaits', 'maxHttpWaits must be an integer >= 0');
  const hierarchy = prefixesProblem(p.hierarchicalPrefixes, lockPrefixProblem);
  if (hierarchy) fail('hierarchicalPrefixes', hierarchy);

  if (p.reservedConcurrency) {
    for (const [name, value] of Object.entries(p.reservedConcurrency))
      if (!(name in DEFAULT_RESERVED_CONCURRENCY))
        fail(
          'reservedConcurrency',
          `reservedConcurrency has no function "${name}" (only ${Object.keys(DEFAULT_RESERVED_CONCURRENCY).join(', ')})`,
        );
      else if (!whole(value as number, 1))
        // 0 would not cap a function but stop it.
        fail('reservedConcurrency', `reservedConcurrency.${name} must be a positive integer`);
    const lockCommands = p.reservedConcurrency.lockCommands;
    if (whole(p.maxHttpWaits, 0) && p.maxHttpWaits >= lockCommands)
      fail(
        'maxHttpWaits',
        `maxHttpWaits (${p.maxHttpWaits}) must be below the lock-commands reserved concurrency (${lockCommands}), or waiting callers could take all of it`,
      );
  }
  for (const name of ['httpThrottle', 'webSocketThrottle'] as const) {
    const { rateLimit, burstLimit } = p[name];
    if (!(typeof rateLimit === 'number' && rateLimit > 0) || !whole(burstLimit, 0))
      fail(name, `${name} must have a rateLimit > 0 (per second) and an integer burstLimit >= 0`);
  }
  if (props.alarmTopicArn !== undefined) {
    if (props.alarmTopic)
      fail('alarmTopicArn', 'alarmTopicArn and alarmTopic name the same thing: give one of them');
    // Tokens (a topic of the same app) are taken as they are.
    else if (!Token.isUnresolved(props.alarmTopicArn) && !SNS_TOPIC_ARN.test(props.alarmTopicArn))
      fail(
        'alarmTopicArn',
        `alarmTopicArn must be the ARN of a standard SNS topic (arn:aws:sns:REGION:ACCOUNT:NAME), not ${JSON.stringify(props.alarmTopicArn)}`,
      );
  }
  return problems;
}

/** A standard SNS topic's ARN (alarms cannot notify FIFO topics). */
const SNS_TOPIC_ARN = /^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$/;

/** The props with every default filled in (reserved concurrency merged over its defaults). */
function resolved(props: LatchkeyProps) {
  const d = LATCHKEY_DEFAULTS;
  return {
    minTtlMs: props.minTtlMs ?? d.minTtlMs,
    maxTtlMs: props.maxTtlMs ?? d.maxTtlMs,
    lockRetentionSeconds: props.lockRetentionSeconds ?? d.lockRetentionSeconds,
    logRetention: props.logRetention ?? d.logRetention,
    tableRemovalPolicy: props.tableRemovalPolicy ?? d.tableRemovalPolicy,
    priorityRange: props.priorityRange ?? d.priorityRange,
    maxQueueLength: props.maxQueueLength ?? d.maxQueueLength,
    maxWaitersPerConnection: props.maxWaitersPerConnection ?? d.maxWaitersPerConnection,
    maxWaitersPerPrincipal: props.maxWaitersPerPrincipal ?? d.maxWaitersPerPrincipal,
    maxHttpWaits: props.maxHttpWaits ?? d.maxHttpWaits,
    hierarchicalPrefixes: props.hierarchicalPrefixes ?? d.hierarchicalPrefixes,
    reservedConcurrency:
      props.reservedConcurrency === false
        ? undefined
        : ({ ...d.reservedConcurrency, ...props.reservedConcurrency } as Required<ReservedConcurrency>),
    httpThrottle: props.httpThrottle ?? d.httpThrottle,
    webSocketThrottle: props.webSocketThrottle ?? d.webSocketThrottle,
    tracing: props.tracing ?? d.tracing,
    logLevel: props.logLevel ?? d.logLevel,
  };
}

/**
 * The whole lock service as one construct: the table, the HTTP API (IAM on every route), the
 * WebSocket API, the stream notifier and timers, and the sweeper. `LatchkeyStack` is this
 * construct in a stack of its own, with outputs; embed it in a stack of yours with
 * `new Latchkey(this, 'Locks', { maxTtlMs: 600_000 })`. Nothing in it has a fixed physical name,
 * so several can live in one account and region.
 */
export class Latchkey extends Construct {
  /** The one DynamoDB table that holds all state. */
  readonly table: Table;
  /** The HTTP API's URL (https://{api}.execute-api.{region}.amazonaws.com): the stack's `ApiUrl`. */
  readonly httpUrl: string;
  /** The WebSocket API's URL (wss://…/v1): the stack's `WebSocketUrl`. */
  readonly wsUrl: string;
  /** The HTTP API's id, the `API_ID` of the `execute-api:Invoke` resources callers are granted. */
  readonly httpApiId: string;
  /** The WebSocket API's id. */
  readonly webSocketApiId: string;
  /** What a caller needs `execute-api:Invoke` on to open a WebSocket connection (to wait). */
  readonly webSocketConnectArn: string;
  /** Every function, by handler module ("http/lock-commands", "stream/notifier", …): for alarms. */
  readonly functions: Readonly<Record<string, IFunction>>;

  readonly httpApi: LockHttpApi;
  readonly webSocketApi: LockWebSocketApi;
  readonly handoff: LockHandoff;
  readonly sweeper: LockSweeper;
  /** The dashboard, alarms, Contributor Insights rules and saved queries (README: "Operate it"). */
  readonly observability: LockObservability;
  /**
   * Where its functions' metrics are: `Latchkey/<stack name>`, one namespace per stack (stage), so
   * one Latchkey per stack (two in one stack would write into one namespace).
   */
  readonly metricNamespace: string;

  constructor(scope: Construct, id: string, props: LatchkeyProps = {}) {
    super(scope, id);
    const problems = latchkeyPropProblems(props);
    if (problems.length) throw new Error(`Latchkey: ${problems.map((p) => p.message).join('; ')}`);
    const p = resolved(props);

    this.table = new LockTable(this, 'Locks', { removalPolicy: p.tableRemovalPolicy }).table;
    const [minPriority, maxPriority] = p.priorityRange;
    this.metricNamespace = metricNamespaceFor(Stack.of(this).stackName);
    const environment = {
      TABLE_NAME: this.table.tableName,
      [METRIC_NAMESPACE_VARIABLE]: this.metricNamespace,
      LOCK_MIN_TTL_MS: String(p.minTtlMs),
      LOCK_MAX_TTL_MS: String(p.maxTtlMs),
      LOCK_RETENTION_SECONDS: String(p.lockRetentionSeconds),
      LOCK_MIN_PRIORITY: String(minPriority),
      LOCK_MAX_PRIORITY: String(maxPriority),
      MAX_QUEUE_LENGTH: String(p.maxQueueLength),
      MAX_WAITERS_PER_CONNECTION: String(p.maxWaitersPerConnection),
      MAX_WAITERS_PER_PRINCIPAL: String(p.maxWaitersPerPrincipal),
      MAX_HTTP_WAITS: String(p.maxHttpWaits),
      LOG_LEVEL: p.logLevel,
      ...(p.hierarchicalPrefixes.length > 0
        ? { HIERARCHICAL_PREFIXES: p.hierarchicalPrefixes.join(',') }
        : {}),
    };
    const reserved = p.reservedConcurrency;
    const logRetention = p.logRetention;
    this.webSocketApi = new LockWebSocketApi(this, 'WebSocket', {
      table: this.table,
      environment,
      logRetention,
      tracing: p.tracing,
      ...p.webSocketThrottle,
    });
    const withPush = { ...environment, WS_MANAGEMENT_ENDPOINT: this.webSocketApi.managementEndpoint };
    this.handoff = new LockHandoff(this, 'Handoff', {
      table: this.table,
      environment: withPush,
      logRetention,
      connectionsArn: this.webSocketApi.connectionsArn,
      tracing: p.tracing,
      ...(reserved ? { notifierConcurrency: reserved.notifier, timerConcurrency: reserved.timer } : {}),
    });
    // The WebSocket API's functions come before the timer queue (the handoff needs its endpoint).
    for (const fn of Object.values(this.webSocketApi.functions)) fn.useTimerQueue(this.handoff.timerQueue);
    this.httpApi = new LockHttpApi(this, 'Http', {
      table: this.table,
      environment: withPush,
      logRetention,
      connectionsArn: this.webSocketApi.connectionsArn,
      relay: {
        url: this.webSocketApi.stage.url,
        connectArn: this.webSocketApi.api.arnForExecuteApiV2('$connect', WS_STAGE),
      },
      timerQueue: this.handoff.timerQueue,
      tracing: p.tracing,
      ...p.httpThrottle,
      ...(reserved ? { reservedConcurrency: { 'http/lock-commands': reserved.lockCommands } } : {}),
    });
    this.sweeper = new LockSweeper(this, 'Sweeper', {
      table: this.table,
      environment: withPush,
      logRetention,
      connectionsArn: this.webSocketApi.connectionsArn,
      timerQueue: this.handoff.timerQueue,
      tracing: p.tracing,
      ...(reserved ? { reservedConcurrency: reserved.sweeper } : {}),
    });

    this.httpUrl = this.httpApi.api.apiEndpoint;
    this.wsUrl = this.webSocketApi.stage.url;
    this.httpApiId = this.httpApi.api.apiId;
    this.webSocketApiId = this.webSocketApi.api.apiId;
    this.webSocketConnectArn = this.webSocketApi.api.arnForExecuteApiV2('$connect', WS_STAGE);
    const lockFunctions = {
      ...this.httpApi.functions,
      ...this.webSocketApi.functions,
      [NOTIFIER.module]: this.handoff.notifier,
      [TIMER.module]: this.handoff.timer,
      [SWEEPER.module]: this.sweeper.function,
    };
    const functions: Record<string, IFunction> = {};
    const logGroups: Record<string, ILogGroup> = {};
    for (const [module, fn] of Object.entries(lockFunctions)) {
      functions[module] = fn.fn;
      logGroups[module] = fn.logGroup;
    }
    this.functions = functions;

    const alarmTopic =
      props.alarmTopic ??
      (props.alarmTopicArn === undefined
        ? undefined
        : Topic.fromTopicArn(this, 'AlarmTopic', props.alarmTopicArn));
    this.observability = new LockObservability(this, 'Observability', {
      functions,
      logGroups,
      metricNamespace: this.metricNamespace,
      table: this.table,
      httpApi: this.httpApi.api,
      webSocketApi: this.webSocketApi.api,
      webSocketStage: this.webSocketApi.stage,
      notifier: this.handoff.notifier.fn,
      sweeper: this.sweeper.function.fn,
      timerQueue: this.handoff.timerQueue,
      timerDeadLetters: this.handoff.timerDeadLetters,
      streamFailures: this.handoff.streamFailures,
      ...(alarmTopic ? { alarmTopic } : {}),
    });
  }

  /**
   * The `execute-api:Invoke` resource of HTTP routes, any stage:
   * `arn:aws:execute-api:REGION:ACCOUNT:API_ID/*\/METHOD/PATH` (README: "Scoping callers by name").
   * `httpInvokeArn('POST', '/api/v1/locks/jobs/*')` is every lock action under `jobs/`; the
   * defaults (`*`, `/*`) are every route, the admin route included: never grant that to clients.
   */
  httpInvokeArn(method = '*', path = '/*'): string {
    return this.httpApi.api.arnForExecuteApi(method, path);
  }
}
