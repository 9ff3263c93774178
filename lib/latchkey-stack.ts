import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { Latchkey, type LatchkeyProps } from './latchkey';

export {
  DEFAULT_RESERVED_CONCURRENCY,
  type LatchkeyProps,
  type ReservedConcurrency,
  type Throttle,
} from './latchkey';

/** {@link LatchkeyProps} and the stack's own (env, tags, terminationProtection…). */
export type LatchkeyStackProps = LatchkeyProps & StackProps;

/**
 * The {@link Latchkey} construct in a stack of its own, with its URLs and table as outputs
 * (`ApiUrl`, `WebSocketUrl`, `TableName`: the CLI reads them from `cdk deploy --outputs-file`).
 * The app (lib/app.ts) names it `Latchkey-<stage>`.
 */
export class LatchkeyStack extends Stack {
  readonly latchkey: Latchkey;

  constructor(scope: Construct, id: string, props: LatchkeyStackProps = {}) {
    super(scope, id, {
      description: 'latchkey: distributed locks with fencing tokens on DynamoDB',
      ...props,
    });
    // 'Default' is left out of logical ids: the resources keep the ids they had when the stack held them itself.
    this.latchkey = new Latchkey(this, 'Default', props);
    new CfnOutput(this, 'ApiUrl', {
      value: this.latchkey.httpUrl,
      description: 'latchkey HTTP API (SigV4, service execute-api)',
    });
    new CfnOutput(this, 'WebSocketUrl', {
      value: this.latchkey.wsUrl,
      description: 'latchkey WebSocket API for waiting (SigV4 on connect, ?client_id=…)',
    });
    new CfnOutput(this, 'MetricNamespace', {
      value: this.latchkey.metricNamespace,
      description: "latchkey's metrics in CloudWatch (this stack's alone; latchkey top reads it)",
    });
    new CfnOutput(this, 'TableName', {
      value: this.latchkey.table.tableName,
      description: 'latchkey lock table',
    });
  }
}
