/** The handler module behind each route of lambdas/http/routes.ts, loaded as Lambda would load each function. */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { ROUTES } from '../lambdas/http/routes';

export type HttpLambda = (
  event: APIGatewayProxyEventV2,
  context: Context,
) => Promise<APIGatewayProxyStructuredResultV2>;

const HANDLER_MODULES: Record<string, () => Promise<{ handler: HttpLambda }>> = {
  'lock-commands': () => import('../lambdas/http/lock-commands'),
  'get-lock': () => import('../lambdas/http/get-lock'),
  'list-locks': () => import('../lambdas/http/list-locks'),
  health: () => import('../lambdas/http/health'),
};

export async function loadHandler(routeKey: string): Promise<HttpLambda> {
  const route = ROUTES.find((r) => r.key === routeKey);
  if (!route) throw new Error(`no route ${routeKey}; routes: ${ROUTES.map((r) => r.key).join(', ')}`);
  const load = HANDLER_MODULES[route.module];
  if (!load) throw new Error(`no local handler module for route ${route.key} (${route.module})`);
  return (await load()).handler;
}

export function lambdaContext(requestId: string): Context {
  return {
    awsRequestId: requestId,
    callbackWaitsForEmptyEventLoop: false,
    functionName: 'latchkey-local',
    functionVersion: '$LATEST',
    invokedFunctionArn: 'arn:aws:lambda:us-east-1:000000000000:function:latchkey-local',
    logGroupName: '/aws/lambda/latchkey-local',
    logStreamName: 'local',
    memoryLimitInMB: '512',
    getRemainingTimeInMillis: () => 10_000,
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
}
