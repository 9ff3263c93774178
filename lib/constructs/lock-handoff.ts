import { Duration, Validations } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import { StartingPosition } from 'aws-cdk-lib/aws-lambda';
import { DynamoEventSource, SqsDlq, SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { NOTIFIER, TIMER } from '../../lambdas/shared/function-spec';
import { LockFunction } from './lock-function';

export interface LockHandoffProps {
  readonly table: ITable;
  /** Function environment, including the WebSocket API's management endpoint. */
  readonly environment: Record<string, string>;
  readonly logRetention: RetentionDays;
  /** The WebSocket API's @connections, where grants and timeouts are posted. */
  readonly connectionsArn: string;
  /** Reserved concurrency of the notifier and the timer (room no other function can take). */
  readonly notifierConcurrency?: number;
  readonly timerConcurrency?: number;
  /** X-Ray active tracing on its functions (LockFunctionProps.tracing). Default: off. */
  readonly tracing?: boolean;
}

/**
 * What moves a queue without a client: the stream notifier (serves a lock
 * left free with waiters, arms timers) and the expiry timers (an SQS queue
 * with per-message delays and its consumer). Failures are retried and then
 * kept: stream batches in an on-failure queue, timers in a dead-letter
 * queue; the sweeper (issue 4) is the backstop after that.
 */
export class LockHandoff extends Construct {
  readonly timerQueue: Queue;
  readonly notifier: LockFunction;
  readonly timer: LockFunction;
  /** Stream batches the notifier failed on after its retries. */
  readonly streamFailures: Queue;
  readonly timerDeadLetters: Queue;

  constructor(scope: Construct, id: string, props: LockHandoffProps) {
    super(scope, id);
    const queueDefaults = {
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    };
    this.timerDeadLetters = new Queue(this, 'TimerDeadLetters', queueDefaults);
    this.timerQueue = new Queue(this, 'Timers', {
      ...queueDefaults,
      retentionPeriod: Duration.days(1),
      // Six times the timer function's timeout, as Lambda recommends for SQS sources.
      visibilityTimeout: Duration.seconds(6 * (TIMER.timeoutSeconds ?? 10)),
      deadLetterQueue: { queue: this.timerDeadLetters, maxReceiveCount: 5 },
    });
    this.streamFailures = new Queue(this, 'StreamFailures', queueDefaults);
    Validations.of(this.streamFailures).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason:
        'This queue is the on-failure destination of the stream event source (it keeps records of failed batches); it is a dead-letter queue in purpose, which cdk-nag only recognises for SQS redrive.',
    });
    const common = {
      table: props.table,
      environment: { ...props.environment, TIMER_QUEUE_URL: this.timerQueue.queueUrl },
      logRetention: props.logRetention,
      connectionsArn: props.connectionsArn,
      timerQueue: this.timerQueue,
      tracing: props.tracing,
    };
    this.notifier = new LockFunction(this, 'Notifier', {
      spec: NOTIFIER,
      ...common,
      ...(props.notifierConcurrency === undefined ? {} : { reservedConcurrency: props.notifierConcurrency }),
    });
    this.notifier.fn.addEventSource(
      new DynamoEventSource(props.table, {
        startingPosition: StartingPosition.TRIM_HORIZON,
        batchSize: 100,
        maxBatchingWindow: Duration.millis(0),
        bisectBatchOnError: true,
        retryAttempts: 5,
        maxRecordAge: Duration.hours(1),
        onFailure: new SqsDlq(this.streamFailures),
      }),
    );
    const role = this.notifier.fn.role;
    if (role) {
      Validations.of(role).acknowledge({
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason:
          "dynamodb:ListStreams, added by the DynamoDB event source, has no resource-level permissions; reading records is scoped to this table's stream.",
      });
    }
    this.timer = new LockFunction(this, 'Timer', {
      spec: TIMER,
      ...common,
      ...(props.timerConcurrency === undefined ? {} : { reservedConcurrency: props.timerConcurrency }),
    });
    this.timer.fn.addEventSource(
      new SqsEventSource(this.timerQueue, {
        batchSize: 10,
        reportBatchItemFailures: true,
        // Never poll faster than the reserved room: a throttled batch would count toward the dead-letter limit.
        ...(props.timerConcurrency === undefined
          ? {}
          : { maxConcurrency: Math.max(2, props.timerConcurrency) }),
      }),
    );
  }
}
