import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import { Effect, PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Architecture, Runtime } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import type { RouteSpec } from '../../lambdas/http/routes';
import { LIST_INDEX } from '../../lambdas/store/table';

export interface LockFunctionProps {
  /** The route this function serves: its handler module and the only table and index actions it may take. */
  readonly route: RouteSpec;
  readonly table: ITable;
  readonly environment: Record<string, string>;
  readonly logRetention: RetentionDays;
}

/**
 * One Lambda function with its own role, log group and nothing else: the
 * role may write to its own log group and take exactly the table actions
 * named, on exactly this table (and index).
 */
export class LockFunction extends Construct {
  readonly fn: NodejsFunction;

  constructor(scope: Construct, id: string, props: LockFunctionProps) {
    super(scope, id);
    const logGroup = new LogGroup(this, 'Logs', {
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const role = new Role(this, 'Role', {
      assumedBy: new ServicePrincipal('lambda.amazonaws.com'),
      description: `latchkey: ${props.route.description}`,
    });
    role.addToPolicy(
      new PolicyStatement({
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [logGroup.logGroupArn],
      }),
    );
    if (props.route.table.length) {
      role.addToPolicy(
        new PolicyStatement({
          effect: Effect.ALLOW,
          actions: [...props.route.table],
          resources: [props.table.tableArn],
        }),
      );
    }
    if (props.route.index.length) {
      role.addToPolicy(
        new PolicyStatement({
          effect: Effect.ALLOW,
          actions: [...props.route.index],
          resources: [`${props.table.tableArn}/index/${LIST_INDEX.name}`],
        }),
      );
    }
    this.fn = new NodejsFunction(this, 'Function', {
      entry: `lambdas/http/${props.route.module}.ts`,
      handler: 'handler',
      description: `latchkey: ${props.route.description}`,
      runtime: Runtime.NODEJS_24_X,
      architecture: Architecture.ARM_64,
      memorySize: 512,
      timeout: Duration.seconds(10),
      role,
      logGroup,
      environment: { ...props.environment, NODE_OPTIONS: '--enable-source-maps' },
      bundling: bundlingOptions,
    });
  }
}

/**
 * Bundled with the local esbuild (no Docker), as ES modules (middy is
 * ESM-only). The AWS SDK is bundled too: the function runs the SDK version
 * the tests ran, not whatever the runtime ships.
 */
export const bundlingOptions = {
  forceDockerBundling: false,
  format: OutputFormat.ESM,
  target: 'node24',
  minify: true,
  sourceMap: true,
  mainFields: ['module', 'main'],
  externalModules: [],
  banner:
    "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
};
