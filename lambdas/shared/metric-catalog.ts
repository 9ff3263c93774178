/**
 * Every metric latchkey emits: one catalog for the functions (CloudWatch EMF), the local stack's
 * Prometheus endpoint, the dashboard and the alarms, so a name cannot differ between them.
 *
 * A deployed stack's metrics are in a namespace of its own, `Latchkey/<stack name>`, so that the
 * stages in one account and region never add up in one another's dashboard, alarms or `latchkey
 * top`. Dimensions stay low-cardinality: the operation and the outcome, never a lock name, a
 * principal or a client (per-lock and per-caller views come from Contributor Insights over the
 * structured logs).
 */
export const METRIC_NAMESPACE = 'Latchkey';

/** A stack's namespace: METRIC_NAMESPACE, a slash, the stack's name. */
export const metricNamespaceFor = (stackName: string) => `${METRIC_NAMESPACE}/${stackName}`;

/** The functions' environment variable naming the namespace (unset: METRIC_NAMESPACE, as locally). */
export const METRIC_NAMESPACE_VARIABLE = 'METRIC_NAMESPACE';

/** What CloudWatch accepts as a custom namespace: 1-255 of these characters, not under `AWS/`. */
export const isMetricNamespace = (namespace: string) =>
  /^[A-Za-z0-9 ._/#:-]{1,255}$/.test(namespace) && !namespace.startsWith('AWS/');

/** The operations a request is counted under (the `Operation` dimension). */
export const OPERATIONS = [
  'acquire',
  'release',
  'renew',
  'cancel',
  'inspect',
  'list',
  'force-release',
  'admin-list-sessions',
  'admin-end-session',
  'open',
  'heartbeat',
  'close',
  'connect',
  'disconnect',
  'message',
  'notify',
  'timer',
  'sweep',
] as const;
export type Operation = (typeof OPERATIONS)[number];

export type MetricUnit = 'Count' | 'Milliseconds';

export interface MetricSpec {
  readonly unit: MetricUnit;
  /** The dimensions it is emitted with (besides none): always a subset of Operation and Outcome. */
  readonly dimensions: readonly ('Operation' | 'Outcome')[];
  readonly help: string;
}

export const METRICS = {
  Requests: {
    unit: 'Count',
    dimensions: ['Operation', 'Outcome'],
    help: 'requests by operation and outcome (granted, refused, queued, timeout, ok, or an error code)',
  },
  Latency: { unit: 'Milliseconds', dimensions: ['Operation'], help: 'time to answer a request' },
  WaitTime: { unit: 'Milliseconds', dimensions: [], help: 'from joining a queue to the grant' },
  HoldDuration: { unit: 'Milliseconds', dimensions: [], help: 'from a grant to its release' },
  QueueDepth: {
    unit: 'Count',
    dimensions: [],
    help: 'waiters still queued behind the one a lock is handed to (at handoffs that read the queue)',
  },
  Contention: {
    unit: 'Count',
    dimensions: ['Outcome'],
    help: 'acquires that found the lock held (Outcome=refused or queued) or free (Outcome=granted)',
  },
  HandoffLatency: { unit: 'Milliseconds', dimensions: [], help: 'from a release to the next grant' },
  LeasesLapsed: { unit: 'Count', dimensions: [], help: 'leases that ended unreleased' },
  LockDelays: {
    unit: 'Count',
    dimensions: [],
    help: 'lock-delay activations (a session expired holding locks)',
  },
  SessionsOpened: { unit: 'Count', dimensions: [], help: 'sessions opened' },
  SessionsClosed: {
    unit: 'Count',
    dimensions: [],
    help: 'sessions closed by their client or ended by an operator',
  },
  SessionsExpired: { unit: 'Count', dimensions: [], help: 'sessions that expired' },
  SweeperLag: {
    unit: 'Milliseconds',
    dimensions: [],
    help: 'age of the oldest due item a sweeper run found',
  },
  TimerLateness: { unit: 'Milliseconds', dimensions: [], help: 'how late a timer fired after its due time' },
  TimerArmFailures: {
    unit: 'Count',
    dimensions: [],
    help: 'lock timers a request could not arm after serving a queue (the stream notifier arms the lease end; the sweeper is the backstop)',
  },
  Pushes: {
    unit: 'Count',
    dimensions: ['Outcome'],
    help: 'grants and frames pushed to WebSocket connections, by outcome (delivered, gone, unknown: may have been delivered)',
  },
  DynamoCalls: { unit: 'Count', dimensions: ['Operation'], help: 'DynamoDB calls made for an operation' },
  DynamoLatency: { unit: 'Milliseconds', dimensions: ['Operation'], help: 'latency of each DynamoDB call' },
  DynamoThrottles: { unit: 'Count', dimensions: ['Operation'], help: 'DynamoDB calls refused by throttling' },
  DynamoConditionFailures: {
    unit: 'Count',
    dimensions: ['Operation'],
    help: 'conditional writes DynamoDB refused (a race lost, or a refusal the rules expect)',
  },
} as const satisfies Record<string, MetricSpec>;
export type MetricName = keyof typeof METRICS;
