/**
 * The admin routes are routes of their own under /api/v1/admin/, so IAM grants them apart: no
 * client policy the README shows reaches them (the local stack does not evaluate IAM, so this is
 * where "a non-operator cannot" is checked), and each has a function of its own.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ROUTES } from '../../lambdas/http/routes';

interface Statement {
  readonly Effect: 'Allow' | 'Deny';
  readonly Resource: string | string[];
}

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const policies = new Map<string, Statement[]>();
for (const m of readme.matchAll(/<!-- iam-policy: ([\w-]+) -->\s*```json\n([\s\S]*?)\n```/g))
  policies.set(m[1] as string, (JSON.parse(m[2] as string) as { Statement: Statement[] }).Statement);

const matches = (pattern: string, resource: string) =>
  new RegExp(
    `^${pattern
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
  ).test(resource);
const allows = (statements: Statement[], resource: string) =>
  !statements.some((s) => s.Effect === 'Deny' && [s.Resource].flat().some((r) => matches(r, resource))) &&
  statements.some((s) => s.Effect === 'Allow' && [s.Resource].flat().some((r) => matches(r, resource)));

const API = 'arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/$default';
const ADMIN_REQUESTS = [
  `${API}/GET/api/v1/admin/sessions`,
  `${API}/DELETE/api/v1/admin/sessions/5b0e8c1a-0000-4000-8000-000000000000`,
  `${API}/POST/api/v1/admin/locks/jobs/nightly/force-release`,
];

describe('admin routes', () => {
  it('are the routes under /api/v1/admin/, each with a function of its own', () => {
    const admin = ROUTES.filter((r) => r.key.includes('/api/v1/admin/'));
    expect(admin.map((r) => r.key).sort()).toEqual([
      'DELETE /api/v1/admin/sessions/{id}',
      'GET /api/v1/admin/sessions',
      'POST /api/v1/admin/locks/{proxy+}',
    ]);
    const clientModules = new Set(ROUTES.filter((r) => !admin.includes(r)).map((r) => r.module));
    for (const r of admin) expect(clientModules.has(r.module), r.module).toBe(false);
  });

  it("no client policy in the README reaches them (the client's session routes stay apart)", () => {
    for (const name of ['worker-jobs', 'billing-subtree']) {
      const policy = policies.get(name);
      expect(policy, name).toBeDefined();
      for (const resource of ADMIN_REQUESTS)
        expect(allows(policy ?? [], resource), `${name}: ${resource}`).toBe(false);
    }
    // The worker may close its own sessions; that grant does not reach the admin route.
    const worker = policies.get('worker-jobs') ?? [];
    expect(allows(worker, `${API}/DELETE/api/v1/sessions/5b0e8c1a-0000-4000-8000-000000000000`)).toBe(true);
  });
});
