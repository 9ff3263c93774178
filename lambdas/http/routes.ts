/**
 * The HTTP API's routes, shared by the CDK stack (one function per route,
 * least-privilege table access) and the local stack (same routing rules).
 *
 * Lock names may contain '/', which API Gateway will not carry inside a
 * single path variable (a %2F is decoded before routing), so lock routes use
 * a greedy variable and the handler takes the action from the last segment:
 * POST /api/v1/locks/jobs/nightly/acquire -> lock "jobs/nightly", "acquire".
 */
export type TableAction =
  | 'dynamodb:UpdateItem'
  | 'dynamodb:GetItem'
  | 'dynamodb:BatchGetItem'
  | 'dynamodb:Query';

export interface RouteSpec {
  /** The API Gateway route key, e.g. "GET /api/v1/locks/{proxy+}". */
  readonly key: string;
  /** Module under lambdas/http/ exporting `handler`. */
  readonly module: string;
  readonly description: string;
  /** Actions on the table itself. */
  readonly table: readonly TableAction[];
  /** Actions on the listing index. */
  readonly index: readonly TableAction[];
}

export const ROUTES: readonly RouteSpec[] = [
  {
    key: 'POST /api/v1/locks/{proxy+}',
    module: 'lock-commands',
    description: 'acquire, release and renew a lock',
    table: ['dynamodb:UpdateItem'],
    index: [],
  },
  {
    key: 'GET /api/v1/locks/{proxy+}',
    module: 'get-lock',
    description: 'inspect one lock',
    table: ['dynamodb:GetItem'],
    index: [],
  },
  {
    key: 'GET /api/v1/locks',
    module: 'list-locks',
    description: 'list locks by name prefix',
    table: ['dynamodb:BatchGetItem'],
    index: ['dynamodb:Query'],
  },
  { key: 'GET /api/v1/health', module: 'health', description: 'liveness', table: [], index: [] },
];
