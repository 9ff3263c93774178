import { ArnFormat, Names, Stack, Validations } from 'aws-cdk-lib';
import { WebSocketApi, WebSocketStage } from 'aws-cdk-lib/aws-apigatewayv2';
import { WebSocketIamAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { WebSocketLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { WS_ROUTES, WS_STAGE } from '../../lambdas/ws/routes';
import { jsonAccessLog } from './access-logs';
import { LockFunction } from './lock-function';

export interface LockWebSocketApiProps {
  readonly table: ITable;
  readonly environment: Record<string, string>;
  /** @default RetentionDays.ONE_MONTH */
  readonly logRetention?: RetentionDays;
  /** Steady-state messages per second for the stage. @default 500 */
  readonly rateLimit?: number;
  /** @default 1000 */
  readonly burstLimit?: number;
  /** X-Ray active tracing on its functions (LockFunctionProps.tracing). Default: off. */
  readonly tracing?: boolean;
}

/**
 * The WebSocket API for waiting: IAM authorizes `$connect` (API Gateway
 * authorizes a WebSocket once, when it opens), every message goes to
 * `$default`, and each route has its own least-privilege function.
 */
export class LockWebSocketApi extends Construct {
  readonly api: WebSocketApi;
  readonly stage: WebSocketStage;
  readonly functions: Record<string, LockFunction> = {};
  /** The management endpoint functions post frames to (https://…/v1). */
  readonly managementEndpoint: string;
  /** What `execute-api:ManageConnections` may touch: this stage's connections only. */
  readonly connectionsArn: string;

  constructor(scope: Construct, id: string, props: LockWebSocketApiProps) {
    super(scope, id);
    const logRetention = props.logRetention ?? RetentionDays.ONE_MONTH;
    this.api = new WebSocketApi(this, 'Api', {
      // Unique per deployment (stack and construct path), so stages side by side tell apart in the console.
      apiName: Names.uniqueResourceName(this, {
        maxLength: 128,
        separator: '-',
        allowedSpecialCharacters: '-',
      }),
      description: 'latchkey wait subscriptions',
      routeSelectionExpression: '$request.body.action',
    });
    this.stage = new WebSocketStage(this, 'Stage', {
      webSocketApi: this.api,
      stageName: WS_STAGE,
      autoDeploy: true,
      throttle: { rateLimit: props.rateLimit ?? 500, burstLimit: props.burstLimit ?? 1000 },
      accessLogSettings: jsonAccessLog(this, logRetention, {
        event: '$context.eventType',
        connectionId: '$context.connectionId',
      }),
    });
    this.managementEndpoint = this.stage.callbackUrl;
    // Posting frames only, on this stage only; connection ids are not known in advance.
    this.connectionsArn = Stack.of(this).formatArn({
      service: 'execute-api',
      resource: this.api.apiId,
      arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
      resourceName: `${WS_STAGE}/POST/@connections/*`,
    });
    const environment = { ...props.environment, WS_MANAGEMENT_ENDPOINT: this.managementEndpoint };
    for (const route of WS_ROUTES) {
      const name = pascal(route.module.split('/').pop() ?? route.module);
      const fn = new LockFunction(this, name, {
        spec: route,
        table: props.table,
        environment,
        logRetention,
        connectionsArn: this.connectionsArn,
        tracing: props.tracing,
      });
      this.functions[route.module] = fn;
      this.api.addRoute(route.key, {
        integration: new WebSocketLambdaIntegration(`${name}Integration`, fn.fn),
        ...(route.key === '$connect' ? { authorizer: new WebSocketIamAuthorizer() } : {}),
      });
      if (route.key !== '$connect') {
        Validations.of(this.api.node.findChild(`${route.key}-Route`)).acknowledge({
          id: 'AwsSolutions-APIG4',
          reason:
            'API Gateway authorizes a WebSocket connection once, on $connect (IAM here); later routes of that connection cannot carry an authorizer.',
        });
      }
    }
  }
}

const pascal = (name: string) => name.replace(/(^|-)([a-z])/g, (_, __, c: string) => c.toUpperCase());
