/**
 * What each Lambda function is and may do: its handler module and exactly
 * the DynamoDB actions, indexes and other services it touches. The CDK stack
 * grants exactly this (lib/constructs/lock-function.ts) and the template
 * tests check each function's policy against it; the local stack loads the
 * same modules.
 */
import type { DUE_INDEX, LIST_INDEX, OWNER_INDEX, Partition } from '../store/table';

export type TableAction =
  | 'dynamodb:UpdateItem'
  | 'dynamodb:GetItem'
  | 'dynamodb:PutItem'
  | 'dynamodb:DeleteItem'
  | 'dynamodb:BatchGetItem'
  | 'dynamodb:ConditionCheckItem'
  | 'dynamodb:Query';

export type IndexName = typeof LIST_INDEX.name | typeof OWNER_INDEX.name | typeof DUE_INDEX.name;

export interface FunctionSpec {
  /** Handler module under lambdas/, without extension, e.g. "http/lock-commands". It exports `handler`. */
  readonly module: string;
  readonly description: string;
  /** Actions on the table itself (a transaction needs the actions of its parts). */
  readonly table: readonly TableAction[];
  /**
   * The table partitions it touches (their key prefixes, store/table.ts PARTITIONS): its role's
   * table actions carry a `dynamodb:LeadingKeys` condition allowing only these.
   */
  readonly partitions: readonly Partition[];
  /** Actions on each index. */
  readonly indexes?: Partial<Record<IndexName, readonly TableAction[]>>;
  /** Posts to WebSocket connections (execute-api:ManageConnections on this API's @connections). */
  readonly pushes?: boolean;
  /**
   * Waits for its HTTP waiters on a WebSocket connection of its own, its relay (service/relay.ts):
   * execute-api:Invoke on the WebSocket API's $connect, and WS_RELAY_URL.
   */
  readonly relays?: boolean;
  /** Sends expiry timers (sqs:SendMessage on the timer queue). */
  readonly schedules?: boolean;
  /** @default 10 */
  readonly timeoutSeconds?: number;
}

/**
 * Serving a queue: read it, hand over or remove waiters and their request records (transactions),
 * take back a grant nobody received and forget that connection (reading its waiters). A grant to a
 * waiter held through a session also checks the session and records the lock under it. Ending a
 * session (mark it ended, release its locks, serving each queue, drop its records) needs the same.
 */
export const QUEUE_SERVER = {
  table: [
    'dynamodb:Query',
    'dynamodb:GetItem',
    'dynamodb:UpdateItem',
    'dynamodb:DeleteItem',
    'dynamodb:ConditionCheckItem',
  ],
  // Locks and their queues, request records, sessions (checks, links), connections (a grant to a
  // vanished one removes its other waiters and its item), waiter counters (limits), HTTP-wait
  // slots (whoever grants an HTTP waiter frees its function's slot after the ring).
  partitions: ['lock', 'request', 'session', 'connection', 'quota', 'httpWait'],
  // A grant to a vanished connection removes that connection's other waiters and its item.
  indexes: { by_owner: ['dynamodb:Query'] },
  pushes: true,
  // Whoever serves a queue makes sure its lock's timer looks at the new lease's end and the
  // waiters' deadlines (core/lock-timer.ts).
  schedules: true,
} as const satisfies Partial<FunctionSpec>;

/** Functions no client calls: the stream notifier and the expiry timer. */
export const NOTIFIER: FunctionSpec = {
  module: 'stream/notifier',
  description: 'hands freed locks to their next waiter (DynamoDB stream)',
  ...QUEUE_SERVER,
  timeoutSeconds: 30,
};

export const TIMER: FunctionSpec = {
  module: 'schedule/timer',
  description: 'serves the queue of a lock whose lease lapsed, ends a session past due (SQS timer)',
  ...QUEUE_SERVER,
  timeoutSeconds: 30,
};

/** Every minute (EventBridge): ends the sessions that expired, reading only those (the due index). */
export const SWEEPER: FunctionSpec = {
  module: 'schedule/sweeper',
  description: 'ends expired sessions and releases their locks (every minute)',
  ...QUEUE_SERVER,
  partitions: [...QUEUE_SERVER.partitions, 'sweeper'],
  indexes: { ...QUEUE_SERVER.indexes, by_due: ['dynamodb:Query'] },
  timeoutSeconds: 60,
};
