/**
 * The README's IAM policy examples, evaluated the way IAM evaluates `execute-api:Invoke`
 * (an explicit Deny wins, then any Allow; `*` matches any characters, `/` included, `?` one)
 * against the resource of real requests, each first routed by the route table. If a route moves
 * or an example is edited, this says which request a policy now allows or refuses.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { lockNameProblem, RESERVED_LAST_LEVELS } from '../../lambdas/core/names';
import { ADMIN_ACTIONS } from '../../lambdas/http/admin-locks';
import { LOCK_ACTIONS } from '../../lambdas/http/lock-commands';
import { LOCK_VIEWS } from '../../lambdas/http/lock-path';
import { ROUTES } from '../../lambdas/http/routes';
import { WS_ROUTES, WS_STAGE } from '../../lambdas/ws/routes';

interface Statement {
  readonly Effect: 'Allow' | 'Deny';
  readonly Action: string | string[];
  readonly Resource: string | string[];
}

/** The policies the README marks with `<!-- iam-policy: NAME -->`, by name. */
function readmePolicies(): Map<string, Statement[]> {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const policies = new Map<string, Statement[]>();
  for (const m of readme.matchAll(/<!-- iam-policy: ([\w-]+) -->\s*```json\n([\s\S]*?)\n```/g))
    policies.set(m[1] as string, (JSON.parse(m[2] as string) as { Statement: Statement[] }).Statement);
  return policies;
}

const list = (v: string | string[]) => (Array.isArray(v) ? v : [v]);

/** IAM's ARN wildcard match: `*` any run of characters (slashes too), `?` exactly one. */
function matches(pattern: string, resource: string): boolean {
  const source = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${source}$`).test(resource);
}

function allowed(statements: Statement[], resource: string): boolean {
  const applies = (s: Statement) =>
    list(s.Action).some((a) => matches(a, 'execute-api:Invoke')) &&
    list(s.Resource).some((r) => matches(r, resource));
  if (statements.some((s) => s.Effect === 'Deny' && applies(s))) return false;
  return statements.some((s) => s.Effect === 'Allow' && applies(s));
}

const HTTP_API = 'arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/$default';
const WS_API = 'arn:aws:execute-api:us-east-1:123456789012:f6g7h8i9j0';
const WS_CONNECT = `${WS_API}/${WS_STAGE}/$connect`;

/** The route a request takes (as API Gateway matches route keys), or undefined. */
function routeOf(method: string, path: string) {
  return ROUTES.find((r) => {
    const [m, template] = r.key.split(' ') as [string, string];
    const source = template
      .split('/')
      .map((seg) => (seg === '{proxy+}' ? '.+' : /^\{\w+\}$/.test(seg) ? '[^/]+' : seg))
      .join('/');
    return m === method && new RegExp(`^${source}$`).test(path);
  });
}

/** A request: routed first (it must reach the module named), then its resource checked. */
function request(method: string, path: string, module: string) {
  const route = routeOf(method, path);
  expect(route?.module, `${method} ${path}`).toBe(module);
  return `${HTTP_API}/${method}${path}`;
}

const policies = readmePolicies();
const policy = (name: string) => {
  const found = policies.get(name);
  if (!found) throw new Error(`README has no policy example marked ${name}`);
  return found;
};

describe('the README IAM policy examples', () => {
  it('are all here and parse', () => {
    expect([...policies.keys()].sort()).toEqual(['billing-subtree', 'operator', 'worker-jobs']);
  });

  it('worker-jobs: every lock action under jobs/, no other name, no admin route', () => {
    const p = policy('worker-jobs');
    const yes = [
      request('POST', '/api/v1/locks/jobs/nightly/acquire', 'http/lock-commands'),
      request('POST', '/api/v1/locks/jobs/a/b/release', 'http/lock-commands'),
      request('POST', '/api/v1/locks/jobs/a/renew', 'http/lock-commands'),
      request('POST', '/api/v1/locks/jobs/a/cancel', 'http/lock-commands'),
      request('GET', '/api/v1/locks/jobs/nightly', 'http/get-lock'),
      request('GET', '/api/v1/list/jobs/', 'http/list-locks'),
      request('GET', '/api/v1/list/jobs/billing', 'http/list-locks'),
      request('POST', '/api/v1/sessions', 'http/open-session'),
      request(
        'POST',
        '/api/v1/sessions/5b0e8c1a-0000-4000-8000-000000000000/heartbeat',
        'http/session-heartbeat',
      ),
      request('DELETE', '/api/v1/sessions/5b0e8c1a-0000-4000-8000-000000000000', 'http/close-session'),
      WS_CONNECT,
    ];
    const no = [
      request('POST', '/api/v1/locks/payroll/run/acquire', 'http/lock-commands'),
      request('POST', '/api/v1/locks/jobsx/acquire', 'http/lock-commands'),
      request('GET', '/api/v1/locks/payroll/run', 'http/get-lock'),
      request('GET', '/api/v1/list', 'http/list-locks'),
      request('GET', '/api/v1/list/job', 'http/list-locks'),
      request('POST', '/api/v1/admin/locks/jobs/nightly/force-release', 'http/admin-locks'),
    ];
    for (const r of yes) expect(allowed(p, r), r).toBe(true);
    for (const r of no) expect(allowed(p, r), r).toBe(false);
  });

  it('the pitfall is real: an allow on locks/jobs/billing/* alone matches the lock jobs/billing itself', () => {
    const allowOnly = policy('billing-subtree').filter((s) => s.Effect === 'Allow');
    const parent = request('POST', '/api/v1/locks/jobs/billing/acquire', 'http/lock-commands');
    expect(allowed(allowOnly, parent)).toBe(true);
  });

  it('billing-subtree: names under jobs/billing/, never jobs/billing itself nor its neighbours', () => {
    const p = policy('billing-subtree');
    const yes = [
      request('POST', '/api/v1/locks/jobs/billing/nightly/acquire', 'http/lock-commands'),
      request('POST', '/api/v1/locks/jobs/billing/nightly/release', 'http/lock-commands'),
      request('POST', '/api/v1/locks/jobs/billing/a/b/renew', 'http/lock-commands'),
      request('POST', '/api/v1/locks/jobs/billing/a/cancel', 'http/lock-commands'),
      request('GET', '/api/v1/locks/jobs/billing/nightly', 'http/get-lock'),
      request('GET', '/api/v1/list/jobs/billing/', 'http/list-locks'),
      request('GET', '/api/v1/list/jobs/billing/night', 'http/list-locks'),
    ];
    const no = [
      request('POST', '/api/v1/locks/jobs/billing/acquire', 'http/lock-commands'),
      request('POST', '/api/v1/locks/jobs/billing/release', 'http/lock-commands'),
      request('POST', '/api/v1/locks/jobs/billing/renew', 'http/lock-commands'),
      request('POST', '/api/v1/locks/jobs/billing/cancel', 'http/lock-commands'),
      request('GET', '/api/v1/locks/jobs/billing', 'http/get-lock'),
      request('POST', '/api/v1/locks/jobs/billing-archive/x/acquire', 'http/lock-commands'),
      request('GET', '/api/v1/list/jobs/billing', 'http/list-locks'),
      request('GET', '/api/v1/list/jobs/', 'http/list-locks'),
      request('POST', '/api/v1/admin/locks/jobs/billing/x/force-release', 'http/admin-locks'),
    ];
    for (const r of yes) expect(allowed(p, r), r).toBe(true);
    for (const r of no) expect(allowed(p, r), r).toBe(false);
  });

  it('a path ending in an action word is always that action: no lock name ends in one', () => {
    // So the Deny above on .../jobs/billing/acquire can only ever mean "acquire jobs/billing", and
    // GET .../locks/jobs/billing/acquire inspects nothing (400): no lock named jobs/billing/acquire exists.
    expect([...RESERVED_LAST_LEVELS].sort()).toEqual(
      [...LOCK_ACTIONS, ...ADMIN_ACTIONS, ...LOCK_VIEWS].sort(),
    );
    for (const word of RESERVED_LAST_LEVELS) {
      expect(lockNameProblem(`jobs/billing/${word}`), word).toMatch(/reserved/);
      expect(lockNameProblem(word), word).toMatch(/reserved/);
      // Anywhere else, and with anything more to it, the word is an ordinary level.
      expect(lockNameProblem(`jobs/${word}/nightly`), word).toBeUndefined();
      expect(lockNameProblem(`jobs/billing/${word}-job`), word).toBeUndefined();
    }
  });

  it('operator: the admin route and every view, but no lock action of its own', () => {
    const p = policy('operator');
    const yes = [
      request('POST', '/api/v1/admin/locks/jobs/nightly/force-release', 'http/admin-locks'),
      request('GET', '/api/v1/locks/anything/at/all', 'http/get-lock'),
      request('GET', '/api/v1/list', 'http/list-locks'),
      request('GET', '/api/v1/list/payroll/', 'http/list-locks'),
    ];
    const no = [
      request('POST', '/api/v1/locks/jobs/nightly/acquire', 'http/lock-commands'),
      request('POST', '/api/v1/locks/jobs/nightly/release', 'http/lock-commands'),
    ];
    for (const r of yes) expect(allowed(p, r), r).toBe(true);
    for (const r of no) expect(allowed(p, r), r).toBe(false);
  });

  it('cover every route: each IAM-authorized route is allowed by at least one example', () => {
    // The route table the stack synthesizes (test/infra/stack.test.ts checks the template has exactly these).
    const sample = (template: string) =>
      template.replace('{proxy+}', 'jobs/nightly').replace('{id}', '5b0e8c1a-0000-4000-8000-000000000000');
    const resources = [
      ...ROUTES.map((r) => {
        const [method, path] = r.key.split(' ') as [string, string];
        return { route: r.key, resource: request(method, sample(path), r.module) };
      }),
      // On the WebSocket API only $connect is authorized (API Gateway authorizes a connection once).
      ...WS_ROUTES.filter((r) => r.key === '$connect').map((r) => ({
        route: `WebSocket ${r.key}`,
        resource: `${WS_API}/${WS_STAGE}/${r.key}`,
      })),
    ];
    const uncovered = resources
      .filter(({ resource }) => ![...policies.values()].some((p) => allowed(p, resource)))
      .map(({ route }) => route);
    expect(uncovered, 'routes no README policy example allows').toEqual([]);
  });

  it('the evaluator itself: deny beats allow, * spans slashes, ? is one character', () => {
    const s = (Effect: 'Allow' | 'Deny', Resource: string): Statement => ({
      Effect,
      Action: 'execute-api:Invoke',
      Resource,
    });
    expect(allowed([s('Allow', 'a/*')], 'a/b/c')).toBe(true);
    expect(allowed([s('Allow', 'a/*'), s('Deny', 'a/b/*')], 'a/b/c')).toBe(false);
    expect(allowed([s('Allow', 'a/?')], 'a/bc')).toBe(false);
    expect(allowed([], 'a')).toBe(false);
  });
});
