/**
 * The HTTP API's routes, shared by the CDK stack (one function per route,
 * least-privilege table access) and the local stack (same routing rules).
 *
 * Lock names may contain '/', which API Gateway will not carry inside a
 * single path variable (a %2F is decoded before routing), so lock routes use
 * a greedy variable and the handler takes the action from the last segment:
 * POST /api/v1/locks/jobs/nightly/acquire -> lock "jobs/nightly", "acquire".
 */
import { type FunctionSpec, QUEUE_SERVER } from '../shared/function-spec';

export interface RouteSpec extends FunctionSpec {
  /** The API Gateway route key, e.g. "GET /api/v1/locks/{proxy+}". */
  readonly key: string;
}

export const ROUTES: readonly RouteSpec[] = [
  {
    key: 'POST /api/v1/locks/{proxy+}',
    module: 'http/lock-commands',
    description: 'acquire (waiting up to 25 s, or queued for a push), release, renew and cancel',
    ...QUEUE_SERVER,
    // A rung HTTP wait reads its record and the lock in one call.
    table: [...QUEUE_SERVER.table, 'dynamodb:BatchGetItem'],
    // An HTTP wait may last 25 s; API Gateway's integration timeout is 30 s.
    timeoutSeconds: 29,
    // HTTP waits are rung on the function's own WebSocket connection (its relay).
    relays: true,
  },
  {
    key: 'GET /api/v1/locks/{proxy+}',
    module: 'http/get-lock',
    description: 'inspect one lock and its queue, or (.../waits) who waits for whom from it outward',
    // The waits view reads keeper records by key (core/deadlock.ts).
    table: ['dynamodb:Query', 'dynamodb:GetItem'],
    partitions: ['lock'],
  },
  {
    key: 'GET /api/v1/list/{proxy+}',
    module: 'http/list-locks',
    description: 'list locks by name prefix (the prefix is in the path, so IAM can scope it)',
    table: ['dynamodb:BatchGetItem'],
    partitions: ['lock'],
    indexes: { by_name: ['dynamodb:Query'] },
  },
  {
    key: 'GET /api/v1/list',
    module: 'http/list-locks',
    description: 'list every lock',
    table: ['dynamodb:BatchGetItem'],
    partitions: ['lock'],
    indexes: { by_name: ['dynamodb:Query'] },
  },
  {
    key: 'POST /api/v1/sessions',
    module: 'http/open-session',
    description: 'open a session',
    table: ['dynamodb:UpdateItem'],
    partitions: ['session'],
  },
  {
    key: 'POST /api/v1/sessions/{id}/heartbeat',
    module: 'http/session-heartbeat',
    description: 'heartbeat a session (renews all its locks)',
    table: ['dynamodb:GetItem', 'dynamodb:UpdateItem'],
    partitions: ['session'],
  },
  {
    key: 'DELETE /api/v1/sessions/{id}',
    module: 'http/close-session',
    description: 'close a session, releasing its locks',
    ...QUEUE_SERVER,
  },
  {
    // Its own route, so that IAM grants it apart from the lock actions (README: "Security model").
    key: 'POST /api/v1/admin/locks/{proxy+}',
    module: 'http/admin-locks',
    description: 'force-release a lock, whoever holds it (administrators)',
    ...QUEUE_SERVER,
  },
  {
    // Admin routes of their own (under /admin/), so IAM grants them apart from the client routes.
    key: 'GET /api/v1/admin/sessions',
    module: 'http/admin-sessions',
    description: "list every principal's sessions (administrators)",
    // The owner index lists the sessions not yet swept; each is read, and the locks its records
    // name are read to count those it still holds.
    table: ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:BatchGetItem'],
    partitions: ['session', 'lock'],
    indexes: { by_owner: ['dynamodb:Query'] },
  },
  {
    key: 'DELETE /api/v1/admin/sessions/{id}',
    module: 'http/admin-end-session',
    description: 'end any session, releasing its locks (administrators)',
    ...QUEUE_SERVER,
  },
  { key: 'GET /api/v1/health', module: 'http/health', description: 'liveness', table: [], partitions: [] },
];
