import { Duration } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import { Rule, Schedule } from 'aws-cdk-lib/aws-events';
import { LambdaFunction } from 'aws-cdk-lib/aws-events-targets';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { SWEEPER } from '../../lambdas/shared/function-spec';
import { LockFunction } from './lock-function';

export interface LockSweeperProps {
  readonly table: ITable;
  /** Function environment, including the WebSocket API's management endpoint (it hands locks over). */
  readonly environment: Record<string, string>;
  readonly logRetention: RetentionDays;
  readonly connectionsArn: string;
  /** The timer queue: ending a session serves its locks' queues, which arms their timers. */
  readonly timerQueue?: IQueue;
  /** Reserved concurrency: room no other function can take. Default: none. */
  readonly reservedConcurrency?: number;
  /** X-Ray active tracing on its functions (LockFunctionProps.tracing). Default: off. */
  readonly tracing?: boolean;
}

/** The sweeper: every minute, ends expired sessions and releases their locks (reads only what is due). */
export class LockSweeper extends Construct {
  readonly function: LockFunction;
  readonly rule: Rule;

  constructor(scope: Construct, id: string, props: LockSweeperProps) {
    super(scope, id);
    this.function = new LockFunction(this, 'Function', {
      spec: SWEEPER,
      table: props.table,
      environment: props.environment,
      logRetention: props.logRetention,
      connectionsArn: props.connectionsArn,
      ...(props.timerQueue ? { timerQueue: props.timerQueue } : {}),
      tracing: props.tracing,
      ...(props.reservedConcurrency === undefined ? {} : { reservedConcurrency: props.reservedConcurrency }),
    });
    this.rule = new Rule(this, 'EveryMinute', {
      description: 'latchkey sweeper: end expired sessions',
      schedule: Schedule.rate(Duration.minutes(1)),
      // A run missed or failed is made up by the next one: it starts where the last one finished.
      targets: [new LambdaFunction(this.function.fn, { retryAttempts: 2 })],
    });
  }
}
