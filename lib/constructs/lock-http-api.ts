import { Names } from 'aws-cdk-lib';
import { HttpApi, type HttpMethod } from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpIamAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { ROUTES } from '../../lambdas/http/routes';
import { jsonAccessLog } from './access-logs';
import { LockFunction, type RelayTarget } from './lock-function';

export interface LockHttpApiProps {
  readonly table: ITable;
  /** Environment for every function (table name, lease bounds, WebSocket management endpoint). */
  readonly environment: Record<string, string>;
  /** The WebSocket API's @connections: a release hands the lock over and pushes the grant itself. */
  readonly connectionsArn?: string;
  /** The WebSocket API the acquire function's relay connects to: HTTP waits are rung there. */
  readonly relay?: RelayTarget;
  /** The timer queue, for the routes that serve queues (and so arm their locks' timers). */
  readonly timerQueue?: IQueue;
  /**
   * Retention of function and access logs.
   * @default RetentionDays.ONE_MONTH
   */
  readonly logRetention?: RetentionDays;
  /**
   * Steady-state requests per second across the API before API Gateway answers 429.
   * @default 1000
   */
  readonly rateLimit?: number;
  /**
   * Burst of requests API Gateway admits above the rate.
   * @default 2000
   */
  readonly burstLimit?: number;
  /** Reserved concurrency by handler module (e.g. "http/lock-commands"); absent: none. */
  readonly reservedConcurrency?: Readonly<Record<string, number>>;
  /** X-Ray active tracing on its functions (LockFunctionProps.tracing). Default: off. */
  readonly tracing?: boolean;
}

/**
 * The HTTP API: every route IAM-authorized (callers sign with SigV4), one
 * function per route (lambdas/http/routes.ts), access logs on the stage.
 */
export class LockHttpApi extends Construct {
  readonly api: HttpApi;
  readonly functions: Record<string, LockFunction> = {};

  constructor(scope: Construct, id: string, props: LockHttpApiProps) {
    super(scope, id);
    const logRetention = props.logRetention ?? RetentionDays.ONE_MONTH;
    this.api = new HttpApi(this, 'Api', {
      // Unique per deployment (stack and construct path), so stages side by side tell apart in the console.
      apiName: Names.uniqueResourceName(this, {
        maxLength: 128,
        separator: '-',
        allowedSpecialCharacters: '-',
      }),
      description: 'latchkey lock service',
      defaultAuthorizer: new HttpIamAuthorizer(),
      createDefaultStage: false,
    });
    this.api.addStage('DefaultStage', {
      stageName: '$default',
      autoDeploy: true,
      throttle: { rateLimit: props.rateLimit ?? 1000, burstLimit: props.burstLimit ?? 2000 },
      accessLogSettings: jsonAccessLog(this, logRetention, {
        path: '$context.path',
        latencyMs: '$context.responseLatency',
        integrationStatus: '$context.integrationStatus',
        authorizerError: '$context.authorizer.error',
      }),
    });

    for (const route of ROUTES) {
      const [method, path] = route.key.split(' ') as [HttpMethod, string];
      const name = pascal(route.module.split('/').pop() ?? route.module);
      // One function per handler module: routes that share one (the listing's two) share it.
      const fn =
        this.functions[route.module] ??
        new LockFunction(this, name, {
          spec: route,
          table: props.table,
          environment: props.environment,
          logRetention,
          tracing: props.tracing,
          ...(props.connectionsArn ? { connectionsArn: props.connectionsArn } : {}),
          ...(props.relay ? { relay: props.relay } : {}),
          ...(props.timerQueue ? { timerQueue: props.timerQueue } : {}),
          ...(props.reservedConcurrency?.[route.module] === undefined
            ? {}
            : { reservedConcurrency: props.reservedConcurrency[route.module] }),
        });
      this.functions[route.module] = fn;
      this.api.addRoutes({
        path,
        methods: [method],
        integration: new HttpLambdaIntegration(`${pascal(routeId(route.key))}Integration`, fn.fn),
      });
    }
  }
}

/** A construct id for a route key: "GET /api/v1/list/{proxy+}" -> "get-api-v1-list-proxy". */
const routeId = (key: string) =>
  key
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');

const pascal = (name: string) => name.replace(/(^|-)([a-z])/g, (_, __, c: string) => c.toUpperCase());
