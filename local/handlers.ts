/** The handler module behind each function spec, loaded as Lambda would load each function. */
import type { Context } from 'aws-lambda';

// biome-ignore lint/suspicious/noExplicitAny: each module's handler takes its own event shape.
export type AnyHandler = (event: any, context: Context) => Promise<any>;

const HANDLER_MODULES: Record<string, () => Promise<{ handler: AnyHandler }>> = {
  'http/lock-commands': () => import('../lambdas/http/lock-commands'),
  'http/get-lock': () => import('../lambdas/http/get-lock'),
  'http/list-locks': () => import('../lambdas/http/list-locks'),
  'http/health': () => import('../lambdas/http/health'),
  'http/open-session': () => import('../lambdas/http/open-session'),
  'http/session-heartbeat': () => import('../lambdas/http/session-heartbeat'),
  'http/close-session': () => import('../lambdas/http/close-session'),
  'ws/connect': () => import('../lambdas/ws/connect'),
  'ws/disconnect': () => import('../lambdas/ws/disconnect'),
  'ws/messages': () => import('../lambdas/ws/messages'),
  'stream/notifier': () => import('../lambdas/stream/notifier'),
  'schedule/timer': () => import('../lambdas/schedule/timer'),
  'schedule/sweeper': () => import('../lambdas/schedule/sweeper'),
};

export async function loadHandler(module: string): Promise<AnyHandler> {
  const load = HANDLER_MODULES[module];
  if (!load) throw new Error(`no local handler module ${module}`);
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
