/** Every sample event in events/ runs through its handler with the expected status. */
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ROUTES } from '../../lambdas/http/routes';
import { invokeEvent } from '../../local/invoke';
import { createTestTable, dynamoEndpoint } from '../support/dynamo';

const EXPECTED: Record<string, number> = {
  'acquire.json': 200,
  'release.json': 409, // valid, but worker-1 does not hold token 1795435200000001
  'renew.json': 409,
  'get-lock.json': 200,
  'list-locks.json': 200,
  'list-all-locks.json': 200,
  'health.json': 200,
  'force-release.json': 200, // after acquire.json: ends worker-1's grant
  'acquire-no-identity.json': 403, // no IAM identity in the request context
  'open-session.json': 201,
  'session-heartbeat.json': 404, // valid, but no such session
  'close-session.json': 404,
  'admin-sessions.json': 200,
  'admin-end-session.json': 404, // valid, but no such session
};

let table: Awaited<ReturnType<typeof createTestTable>>;
beforeAll(async () => {
  table = await createTestTable();
  process.env.TABLE_NAME = table.tableName;
  process.env.AWS_ENDPOINT_URL_DYNAMODB = dynamoEndpoint();
});
afterAll(async () => table.drop());

// In name order: acquire.json takes the lock the later samples look at.
const files = readdirSync('events/http')
  .filter((f) => f.endsWith('.json'))
  .sort();

/** What some answers say, beyond their status. */
const EXPECTED_BODY: Record<string, object> = {
  'acquire.json': { acquired: true, lock: 'jobs/nightly', client_id: 'worker-1' },
  'acquire-no-identity.json': { error: { code: 'UNAUTHORIZED' } },
  // By the role, not the role session: every session of a role is one principal.
  'force-release.json': {
    released: true,
    lock: 'jobs/nightly',
    holder: { owner: 'arn:aws:iam::123456789012:user/worker', client_id: 'worker-1' },
    by: 'arn:aws:sts::123456789012:assumed-role/LatchkeyAdmin',
  },
  'list-locks.json': { prefix: 'jobs/', locks: [{ lock: 'jobs/nightly', state: 'free' }], next_cursor: null },
  'list-all-locks.json': { prefix: '', locks: [{ lock: 'jobs/nightly' }] },
};

it('has valid and invalid samples for every route', () => {
  expect(files.length).toBeGreaterThan(10);
  for (const valid of Object.keys(EXPECTED)) expect(files).toContain(valid);
  const covered = new Set(files.map((f) => JSON.parse(readFileSync(`events/http/${f}`, 'utf8')).routeKey));
  for (const route of ROUTES) expect(covered).toContain(route.key);
});

it.each(files)('%s', async (file) => {
  const result = await invokeEvent(JSON.parse(readFileSync(`events/http/${file}`, 'utf8')));
  const body = JSON.parse(result.body ?? '{}');
  const expected =
    file.includes('-invalid') ||
    file.includes('-unknown') ||
    file.includes('-malformed') ||
    file.includes('-missing')
      ? 400
      : EXPECTED[file];
  expect({ status: result.statusCode, body }).toMatchObject({
    status: expected,
    body: EXPECTED_BODY[file] ?? {},
  });
  if ((expected ?? 500) >= 400)
    expect(body.error).toMatchObject({ code: expect.any(String), message: expect.any(String) });
});
