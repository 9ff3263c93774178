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
    description: 'records a WebSocket connection, its principal and its client',
    table: ['dynamodb:UpdateItem'],
    partitions: ['connection'],
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
    description: 'hello (the connection id) and ping; waits are asked for over HTTP',
    table: ['dynamodb:GetItem'],
    partitions: ['connection'],
    pushes: true,
  },
];

/** The stage clients connect to: wss://{api}.execute-api.{region}.amazonaws.com/v1 */
export const WS_STAGE = 'v1';
