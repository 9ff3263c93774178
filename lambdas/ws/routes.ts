/**
 * The WebSocket API's routes. IAM authorizes `$connect` (API Gateway
 * authorizes a WebSocket connection once, when it opens); every message
 * goes to `$default`, which reads its `action`.
 */
import { type FunctionSpec, QUEUE_SERVER } from '../shared/function-spec';

export interface WsRouteSpec extends FunctionSpec {
  readonly key: '$connect' | '$disconnect' | '$default';
}

export const WS_ROUTES: readonly WsRouteSpec[] = [
  {
    key: '$connect',
    module: 'ws/connect',
    description: 'records a WebSocket connection and its client',
    table: ['dynamodb:UpdateItem'],
  },
  {
    key: '$disconnect',
    module: 'ws/disconnect',
    description: 'takes a closed connection and its waiters out, and releases its ephemeral locks',
    ...QUEUE_SERVER,
  },
  {
    key: '$default',
    module: 'ws/messages',
    description: 'acquire (waiting up to 2 h), cancel and ping over WebSocket',
    ...QUEUE_SERVER,
  },
];

/** The stage clients connect to: wss://{api}.execute-api.{region}.amazonaws.com/v1 */
export const WS_STAGE = 'v1';
