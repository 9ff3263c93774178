import { AssetStaging, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import { Effect, PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Architecture, Runtime, Tracing } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { FunctionSpec } from '../../lambdas/shared/function-spec';
import { PARTITIONS } from '../../lambdas/store/table';
import { ESBUILD_OPTIONS, functionEntry, localEsbuild, tracerBuildCommand } from '../bundling';

/** Where a function's relay connects (lambdas/service/relay.ts). */
export interface RelayTarget {
  /** The WebSocket API stage's URL, wss://... */
  readonly url: string;
  /** The ARN of its $connect route on that stage (execute-api:Invoke). */
  readonly connectArn: string;
}

export interface LockFunctionProps {
  /** What the function is: its handler module and the only table, index and other actions it may take. */
  readonly spec: FunctionSpec;
  readonly table: ITable;
  readonly environment: Record<string, string>;
  readonly logRetention: RetentionDays;
  /** ARN pattern of the WebSocket API's @connections, for functions that push (`spec.pushes`). */
  readonly connectionsArn?: string;
  /** The WebSocket API its relay connects to, for functions that wait for HTTP waiters (`spec.relays`). */
  readonly relay?: RelayTarget;
  /** The timer queue, for functions that arm timers (`spec.schedules`). */
  readonly timerQueue?: IQueue;
  /** Reserved concurrency: both a cap on this function and room kept for it. Default: none. */
  readonly reservedConcurrency?: number;
  /**
   * X-Ray active tracing: Lambda samples and sends segments, the role may put them, and the code's
   * tracer (lambdas/shared/tracing.ts) records its AWS SDK calls. Default: off.
   */
  readonly tracing?: boolean;
}

/**
 * One Lambda function with its own role, log group and nothing else: the
 * role may write to its own log group and take exactly the table actions
 * named, on exactly this table (and index).
 */
export class LockFunction extends Construct {
  readonly fn: NodejsFunction;
  readonly spec: FunctionSpec;
  private readonly role: Role;
  private timerQueue: IQueue | undefined;
  /** Its log group (one JSON line per event): Contributor Insights rules and saved queries read it. */
  readonly logGroup: LogGroup;

  constructor(scope: Construct, id: string, props: LockFunctionProps) {
    super(scope, id);
    const { spec } = props;
    this.spec = spec;
    const logGroup = new LogGroup(this, 'Logs', {
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.logGroup = logGroup;
    const role = new Role(this, 'Role', {
      assumedBy: new ServicePrincipal('lambda.amazonaws.com'),
      description: `latchkey: ${spec.description}`,
    });
    role.addToPolicy(
      new PolicyStatement({
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [logGroup.logGroupArn],
      }),
    );
    if (spec.table.length) {
      // Only the partitions the function's spec names (dynamodb:LeadingKeys: each item's partition key).
      const leadingKeys = spec.partitions.map((p) => `${PARTITIONS[p]}*`);
      role.addToPolicy(
        new PolicyStatement({
          effect: Effect.ALLOW,
          actions: [...spec.table],
          resources: [props.table.tableArn],
          conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': leadingKeys } },
        }),
      );
    }
    for (const [index, actions] of Object.entries(spec.indexes ?? {})) {
      role.addToPolicy(
        new PolicyStatement({
          effect: Effect.ALLOW,
          actions: [...(actions ?? [])],
          resources: [`${props.table.tableArn}/index/${index}`],
        }),
      );
    }
    if (spec.pushes) {
      if (!props.connectionsArn) throw new Error(`${spec.module} pushes to connections: pass connectionsArn`);
      role.addToPolicy(
        new PolicyStatement({
          actions: ['execute-api:ManageConnections'],
          resources: [props.connectionsArn],
        }),
      );
      Validations.of(role).acknowledge({
        id: `AwsSolutions-IAM5[Resource::${nagResource(this, props.connectionsArn)}]`,
        reason:
          "Posting to WebSocket connections: ids are made at connect time, so the resource is this stage's POST @connections/*, nothing wider.",
      });
    }
    if (spec.relays) {
      if (!props.relay) throw new Error(`${spec.module} waits on a relay connection: pass relay`);
      role.addToPolicy(
        new PolicyStatement({ actions: ['execute-api:Invoke'], resources: [props.relay.connectArn] }),
      );
    }
    // A function that arms timers gets the queue now, or later (useTimerQueue) when the queue is
    // made after it; the synth fails if it never does.
    this.role = role;
    if (spec.schedules) {
      this.node.addValidation({
        validate: () =>
          this.timerQueue ? [] : [`${spec.module} arms timers: give it the timer queue (useTimerQueue)`],
      });
    }
    this.fn = new NodejsFunction(this, 'Function', {
      entry: functionEntry(spec.module),
      handler: 'handler',
      description: `latchkey: ${spec.description}`,
      runtime: Runtime.NODEJS_24_X,
      architecture: Architecture.ARM_64,
      memorySize: 512,
      timeout: Duration.seconds(spec.timeoutSeconds ?? 10),
      ...(props.reservedConcurrency === undefined
        ? {}
        : { reservedConcurrentExecutions: props.reservedConcurrency }),
      role,
      logGroup,
      environment: {
        ...props.environment,
        ...(spec.relays && props.relay ? { WS_RELAY_URL: props.relay.url } : {}),
        NODE_OPTIONS: '--enable-source-maps',
        ...tracingEnvironment(props.tracing ?? false),
      },
      bundling: bundlingOptions,
      ...(props.tracing ? { tracing: Tracing.ACTIVE } : {}),
    });
    if (props.tracing)
      Validations.of(role).acknowledge({
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason:
          'X-Ray active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords (added by Lambda tracing) have no resource-level permissions.',
      });
    if (props.timerQueue) this.useTimerQueue(props.timerQueue);
  }

  /** Lets a function that arms timers send them to `queue` (sqs:SendMessage, TIMER_QUEUE_URL); others ignore it. */
  useTimerQueue(queue: IQueue): void {
    if (!this.spec.schedules || this.timerQueue) return;
    this.timerQueue = queue;
    queue.grantSendMessages(this.role);
    this.fn.addEnvironment('TIMER_QUEUE_URL', queue.queueUrl);
  }
}

/**
 * The tracer's settings (Powertools, lambdas/shared/tracing.ts): on only with active tracing; AWS
 * SDK calls are captured explicitly, so plain HTTPS capture (which would record them twice) and
 * responses (lock state, principals) are off. No POWERTOOLS_SERVICE_NAME: the metrics would take
 * it as a dimension.
 */
export const tracingEnvironment = (tracing: boolean): Record<string, string> => ({
  POWERTOOLS_TRACE_ENABLED: String(tracing),
  POWERTOOLS_TRACER_CAPTURE_RESPONSE: 'false',
  POWERTOOLS_TRACER_CAPTURE_HTTPS_REQUESTS: 'false',
});

/**
 * Bundled with the local esbuild (no Docker), with the options of ../bundling.ts (ESM, node24,
 * minified, source maps, the AWS SDK left to the runtime): the ones the cold-start bench and the
 * bundle-size test build with. After the handler (index.mjs), the same esbuild builds the tracer
 * into the same asset (tracer.mjs), which lambdas/shared/tracing.ts loads only when tracing is on.
 */
export const bundlingOptions = {
  forceDockerBundling: false,
  format: ESBUILD_OPTIONS.format === 'esm' ? OutputFormat.ESM : OutputFormat.CJS,
  target: ESBUILD_OPTIONS.target,
  minify: ESBUILD_OPTIONS.minify,
  sourceMap: ESBUILD_OPTIONS.sourcemap,
  mainFields: ESBUILD_OPTIONS.mainFields,
  externalModules: ESBUILD_OPTIONS.external,
  define: ESBUILD_OPTIONS.define,
  banner: ESBUILD_OPTIONS.banner.js,
  commandHooks: {
    beforeBundling: () => [],
    beforeInstall: () => [],
    // CDK falls back to Docker when there is no local esbuild: its image has esbuild on the PATH.
    afterBundling: (inputDir: string, outputDir: string) => [
      tracerBuildCommand(
        outputDir.startsWith(AssetStaging.BUNDLING_OUTPUT_DIR) ? 'esbuild' : localEsbuild(),
        inputDir,
        outputDir,
      ),
    ],
  },
};

/** How cdk-nag names a resource in a finding id: references and pseudo parameters in angle brackets. */
function nagResource(scope: Construct, arn: string): string {
  const render = (part: unknown): string => {
    if (typeof part === 'string') return part;
    const obj = part as Record<string, unknown>;
    if ('Ref' in obj) return `<${String(obj.Ref)}>`;
    if ('Fn::GetAtt' in obj) return `<${(obj['Fn::GetAtt'] as string[]).join('.')}>`;
    if ('Fn::Join' in obj) {
      const [sep, parts] = obj['Fn::Join'] as [string, unknown[]];
      return parts.map(render).join(sep);
    }
    return JSON.stringify(part);
  };
  return render(Stack.of(scope).resolve(arn));
}
