import { CfnOutput, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
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
}

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
    const environment = {
      TABLE_NAME: this.table.table.tableName,
      LOCK_MIN_TTL_MS: String(props.minTtlMs ?? DEFAULT_LIMITS.minTtlMs),
      LOCK_MAX_TTL_MS: String(maxTtlMs),
      LOCK_RETENTION_SECONDS: String(retentionSeconds),
    };
    const logRetention = props.logRetention ?? RetentionDays.ONE_MONTH;
    this.webSocketApi = new LockWebSocketApi(this, 'WebSocket', {
      table: this.table.table,
      environment,
      logRetention,
    });
    const withPush = { ...environment, WS_MANAGEMENT_ENDPOINT: this.webSocketApi.managementEndpoint };
    this.handoff = new LockHandoff(this, 'Handoff', {
      table: this.table.table,
      environment: withPush,
      logRetention,
      connectionsArn: this.webSocketApi.connectionsArn,
    });
    this.httpApi = new LockHttpApi(this, 'Http', {
      table: this.table.table,
      environment: withPush,
      logRetention,
      connectionsArn: this.webSocketApi.connectionsArn,
    });
    this.sweeper = new LockSweeper(this, 'Sweeper', {
      table: this.table.table,
      environment: withPush,
      logRetention,
      connectionsArn: this.webSocketApi.connectionsArn,
    });
    new CfnOutput(this, 'TableName', {
      value: this.table.table.tableName,
      description: 'latchkey lock table',
    });
  }
}
