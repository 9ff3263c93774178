/** The handler module behind each function spec, loaded as Lambda would load each function. */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Context } from 'aws-lambda';

// biome-ignore lint/suspicious/noExplicitAny: each module's handler takes its own event shape.
export type AnyHandler = (event: any, context: Context) => Promise<any>;

const HANDLER_MODULES: Record<string, () => Promise<{ handler: AnyHandler }>> = {
  'http/lock-commands': () => import('../lambdas/http/lock-commands'),
  'http/get-lock': () => import('../lambdas/http/get-lock'),
  'http/list-locks': () => import('../lambdas/http/list-locks'),
  'http/admin-locks': () => import('../lambdas/http/admin-locks'),
  'http/admin-sessions': () => import('../lambdas/http/admin-sessions'),
  'http/admin-end-session': () => import('../lambdas/http/admin-end-session'),
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

/**
 * Which function (handler module) is running: every call a handler makes happens inside its
 * invocation, as in Lambda, where each function is its own process with its own role. Tests use
 * it to check each function's DynamoDB calls against the grants its spec gives it.
 */
export const invocation = new AsyncLocalStorage<{ readonly module: string; readonly requestId: string }>();

export async function loadHandler(module: string): Promise<AnyHandler> {
  const load = HANDLER_MODULES[module];
  if (!load) throw new Error(`no local handler module ${module}`);
  const { handler } = await load();
  return (event, context) =>
    invocation.run({ module, requestId: context.awsRequestId }, () => handler(event, context));
}

/**
 * A Lambda context for one invocation of a function with `timeoutMs` (its configured timeout):
 * the time left counts down from now, as on Lambda (middy answers early when it runs out).
 */
export function lambdaContext(requestId: string, timeoutMs = 10_000): Context {
  const end = Date.now() + timeoutMs;
  return {
    awsRequestId: requestId,
    callbackWaitsForEmptyEventLoop: false,
    functionName: 'latchkey-local',
    functionVersion: '$LATEST',
    invokedFunctionArn: 'arn:aws:lambda:us-east-1:000000000000:function:latchkey-local',
    logGroupName: '/aws/lambda/latchkey-local',
    logStreamName: 'local',
    memoryLimitInMB: '512',
    getRemainingTimeInMillis: () => Math.max(0, end - Date.now()),
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
}
