/**
 * The operators' routes against the local stack: listing every principal's sessions, ending any
 * of them, forcing a release, and the audit line each change leaves (with the request's id, the
 * operator and the reason), through the HTTP API, the SDK and the CLI.
 *
 * Locally every signed principal may call every route: the local gateway verifies signatures but
 * does not evaluate IAM policies, so "a non-operator is refused the admin routes" is IAM's part on
 * AWS (test/unit/admin-routes.test.ts checks the README's client policies leave the admin routes
 * out, and test/infra the routes' IAM authorization). Here: an unsigned request is refused.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { localPrincipal } from '../../lambdas/core/principal';
import type { LocalStack } from '../../local/stack';
import { LockClient } from '../../sdk/index';
import { signedClient } from '../support/signed-fetch';
import { ALICE, BOB, LOCAL, startTestStack } from '../support/stack';

const tsx = createRequire(import.meta.url).resolve('tsx');
let stack: LocalStack;
let admin: ReturnType<typeof signedClient>;
let alice: ReturnType<typeof signedClient>;
let bob: ReturnType<typeof signedClient>;
const OPERATOR = localPrincipal(LOCAL.accessKeyId);
const ALICE_ARN = localPrincipal(ALICE.accessKeyId);
const BOB_ARN = localPrincipal(BOB.accessKeyId);

type Line = Record<string, unknown>;
let lines: Line[] = [];
let level: string | undefined;

beforeAll(async () => {
  stack = await startTestStack('admin');
  admin = signedClient(stack.url, LOCAL);
  alice = signedClient(stack.url, ALICE);
  bob = signedClient(stack.url, BOB);
});
afterAll(async () => {
  await stack.stop();
});
beforeEach(() => {
  lines = [];
  level = process.env.LOG_LEVEL;
  process.env.LOG_LEVEL = 'warn'; // audit lines are written at any level but silent
  const write = process.stdout.write.bind(process.stdout);
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array, ...rest: unknown[]) => {
    for (const text of String(chunk).split('\n').filter(Boolean)) {
      try {
        const line = JSON.parse(text) as Line;
        if (typeof line.audit === 'string') {
          lines.push(line);
        }
      } catch {
        // not a log line
      }
    }
    return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
  });
});
afterEach(() => {
  vi.restoreAllMocks();
  process.env.LOG_LEVEL = level;
});

const lockName = () => `admin/${randomUUID()}`;

/** Every page of the admin listing with `query`, followed to the end. */
async function listAll(query: string): Promise<Line[]> {
  const found: Line[] = [];
  let cursor: string | null = null;
  do {
    const page: { status: number; body: { sessions: Line[]; next_cursor: string | null } } = await admin.get(
      `/api/v1/admin/sessions?${query}${cursor ? `&cursor=${cursor}` : ''}`,
    );
    expect(page.status).toBe(200);
    const limit = Number(new URLSearchParams(query).get('limit') ?? 50);
    expect(page.body.sessions.length).toBeLessThanOrEqual(limit);
    found.push(...page.body.sessions);
    cursor = page.body.next_cursor;
  } while (cursor);
  return found;
}
const auditsOf = (event: string, field: string, value: unknown) =>
  lines.filter((l) => l.audit === event && l[field] === value);

describe('GET /api/v1/admin/sessions', () => {
  it("lists every principal's live sessions with owner, state, expiry and locks held", async () => {
    const a = (await alice.post('/api/v1/sessions', { client_id: 'a-1', ttl_ms: 60_000 })).body;
    const b = (await bob.post('/api/v1/sessions', { client_id: 'b-1', ttl_ms: 60_000 })).body;
    const lock = lockName();
    expect(
      (await alice.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'a-1', session_id: a.session_id }))
        .body,
    ).toMatchObject({ acquired: true });

    const all = await listAll('limit=100');
    const byId = new Map(all.map((s) => [s.session_id, s]));
    expect(byId.get(a.session_id)).toMatchObject({
      principal: ALICE_ARN,
      client_id: 'a-1',
      state: 'alive',
      ttl_ms: 60_000,
      locks_held: 1,
      expires_at: expect.any(String),
      grace_until: expect.any(String),
    });
    expect(byId.get(b.session_id)).toMatchObject({ principal: BOB_ARN, client_id: 'b-1', locks_held: 0 });

    // A lock the session released no longer counts, though its record stays until the session ends.
    const other = lockName();
    const taken = (
      await alice.post(`/api/v1/locks/${other}/acquire`, { client_id: 'a-1', session_id: a.session_id })
    ).body;
    expect((await listAll('limit=100')).find((s) => s.session_id === a.session_id)).toMatchObject({
      locks_held: 2,
    });
    expect(
      (
        await alice.post(`/api/v1/locks/${other}/release`, {
          client_id: 'a-1',
          fencing_token: taken.fencing_token,
        })
      ).status,
    ).toBe(200);
    expect((await listAll('limit=100')).find((s) => s.session_id === a.session_id)).toMatchObject({
      locks_held: 1,
    });

    // Narrowed to one principal (and client).
    const bobs = await listAll(`principal=${encodeURIComponent(BOB_ARN)}&client_id=b-1`);
    expect(bobs.map((s) => s.session_id)).toEqual([b.session_id]);

    // A page at a time: every session once.
    const seen = (await listAll('limit=1')).map((s) => String(s.session_id));
    expect(seen).toEqual(expect.arrayContaining([a.session_id, b.session_id]));
    expect(new Set(seen).size).toBe(seen.length);

    // Closed by its client (no locks left to release): swept at once, and no longer listed.
    expect((await bob.delete(`/api/v1/sessions/${b.session_id}?client_id=b-1`)).status).toBe(200);
    const after = (await listAll('limit=100')).map((s) => s.session_id);
    expect(after).toContain(a.session_id);
    expect(after).not.toContain(b.session_id);
  });

  it('refuses a bad limit or cursor (400), and an unsigned request (403)', async () => {
    expect((await admin.get('/api/v1/admin/sessions?limit=0')).status).toBe(400);
    expect((await admin.get('/api/v1/admin/sessions?limit=101')).status).toBe(400);
    expect((await admin.get('/api/v1/admin/sessions?cursor=forged')).body.error.code).toBe('INVALID_REQUEST');
    // Well-formed, but not a session id (a 1.5 KB one would be too long for the index key): 400, not 500.
    const notAnId = Buffer.from(JSON.stringify({ after: 'x'.repeat(1_500) })).toString('base64url');
    expect((await admin.get(`/api/v1/admin/sessions?cursor=${notAnId}`)).body.error.code).toBe(
      'INVALID_REQUEST',
    );
    expect((await admin.get('/api/v1/admin/sessions?color=red')).status).toBe(400);
    expect((await admin.get('/api/v1/admin/sessions', { sign: false })).status).toBe(403);
  });
});

describe('DELETE /api/v1/admin/sessions/{id}', () => {
  it("ends another principal's session, its locks go to their next waiter, and it is audited once", async () => {
    const a = (await alice.post('/api/v1/sessions', { client_id: 'a-2', ttl_ms: 60_000 })).body;
    const lock = lockName();
    const held = await alice.post(`/api/v1/locks/${lock}/acquire`, {
      client_id: 'a-2',
      session_id: a.session_id,
    });
    expect(held.body).toMatchObject({ acquired: true });
    const waiting = bob.post(`/api/v1/locks/${lock}/acquire`, {
      client_id: 'b-2',
      ttl_ms: 5_000,
      wait_timeout_ms: 10_000,
    });
    await new Promise((resolve) => setTimeout(resolve, 200));

    const ended = await admin.request('DELETE', `/api/v1/admin/sessions/${a.session_id}`, {
      reason: 'stuck deploy',
    });
    expect(ended.status).toBe(200);
    expect(ended.body).toMatchObject({
      session_id: a.session_id,
      principal: ALICE_ARN,
      client_id: 'a-2',
      state: 'ended',
      was: 'alive',
      locks_released: 1,
      by: OPERATOR,
      reason: 'stuck deploy',
    });
    expect((await waiting).body).toMatchObject({ acquired: true, client_id: 'b-2' });

    const end = auditsOf('session-end', 'session_id', a.session_id);
    expect(end).toEqual([
      expect.objectContaining({
        principal: ALICE_ARN,
        client_id: 'a-2',
        by: OPERATOR,
        reason: 'stuck deploy',
        admin: true,
        operation: 'admin-end-session',
        request_id: expect.any(String),
      }),
    ]);
    const history = lines.filter((l) => l.lock === lock).map((l) => [l.audit, l.client_id, l.reason]);
    expect(history).toEqual([
      ['grant', 'a-2', 'acquired'],
      ['wait', 'b-2', 'queued'],
      ['release', 'a-2', 'session-ended'],
      ['handoff', 'b-2', 'next-in-queue'],
    ]);
    expect(lines.find((l) => l.audit === 'release' && l.lock === lock)).toMatchObject({
      session_id: a.session_id,
      principal: ALICE_ARN,
      fencing_token: held.body.fencing_token,
      by: OPERATOR,
    });

    // Its owner now finds it ended, by an operator; ending it again changes nothing and logs nothing more.
    expect(
      (await alice.post(`/api/v1/sessions/${a.session_id}/heartbeat`, { client_id: 'a-2' })).body.error,
    ).toMatchObject({
      code: 'SESSION_EXPIRED',
      message: `session ${a.session_id} has ended: an operator ended it`,
    });
    lines = [];
    const again = await admin.request('DELETE', `/api/v1/admin/sessions/${a.session_id}`, {
      reason: 'again',
    });
    expect(again.body).toMatchObject({ state: 'ended', was: 'ended', locks_released: 0 });
    expect(lines).toEqual([]);
  });

  it('needs a reason and a known session; refusals change nothing and log nothing', async () => {
    const a = (await alice.post('/api/v1/sessions', { client_id: 'a-3', ttl_ms: 60_000 })).body;
    lines = [];
    expect((await admin.request('DELETE', `/api/v1/admin/sessions/${a.session_id}`)).status).toBe(400);
    expect(
      (await admin.request('DELETE', `/api/v1/admin/sessions/${a.session_id}`, { reason: '' })).status,
    ).toBe(400);
    expect(
      (await admin.request('DELETE', `/api/v1/admin/sessions/${randomUUID()}`, { reason: 'x' })).body.error
        .code,
    ).toBe('NOT_FOUND');
    expect(
      (await admin.request('DELETE', '/api/v1/admin/sessions/not-a-session', { reason: 'x' })).status,
    ).toBe(400);
    expect(lines).toEqual([]);
    expect(
      (await alice.post(`/api/v1/sessions/${a.session_id}/heartbeat`, { client_id: 'a-3' })).status,
    ).toBe(200);
  });
});

describe('force-release', () => {
  it('is audited once with the holder, the operator, the reason and the request', async () => {
    const lock = lockName();
    const held = await alice.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'a-4', ttl_ms: 60_000 });
    const forced = await admin.post(`/api/v1/admin/locks/${lock}/force-release`, { reason: 'host died' });
    expect(forced.body).toMatchObject({ released: true });
    expect(lines.filter((l) => l.lock === lock).map((l) => l.audit)).toEqual(['grant', 'force-release']);
    expect(auditsOf('force-release', 'lock', lock)).toEqual([
      expect.objectContaining({
        level: 'warn',
        principal: ALICE_ARN,
        client_id: 'a-4',
        fencing_token: held.body.fencing_token,
        fenced_to: held.body.fencing_token + 1,
        by: OPERATOR,
        reason: 'host died',
        operation: 'force-release',
      }),
    ]);
    // The holder's next renew or release says why its grant ended; nobody else learns of it.
    const token = held.body.fencing_token;
    for (const verb of ['renew', 'release'] as const) {
      const late = await alice.post(`/api/v1/locks/${lock}/${verb}`, {
        client_id: 'a-4',
        fencing_token: token,
        ...(verb === 'renew' ? { ttl_ms: 60_000 } : {}),
      });
      expect(late.status).toBe(409);
      expect(late.body.error).toMatchObject({
        code: 'NOT_HOLDER',
        message: expect.stringMatching(
          /: an operator force-released that grant at \d{4}-\d\d-\d\dT[\d:.]+Z \(reason: host died\)$/,
        ),
      });
    }
    const stranger = await bob.post(`/api/v1/locks/${lock}/release`, {
      client_id: 'a-4',
      fencing_token: token,
    });
    expect(stranger.body.error?.message).not.toMatch(/force-released|host died/);
    // Nothing held: nothing forced, nothing logged.
    lines = [];
    expect(
      (await admin.post(`/api/v1/admin/locks/${lock}/force-release`, { reason: 'again' })).body,
    ).toMatchObject({
      released: false,
    });
    expect(lines).toEqual([]);
  });

  it('with a token no grant holds, says so and leaves the holder be', async () => {
    const lock = lockName();
    const held = await alice.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'a-6', ttl_ms: 60_000 });
    const wrong = held.body.fencing_token - 1;
    const forced = await admin.post(`/api/v1/admin/locks/${lock}/force-release`, {
      reason: 'stale view',
      fencing_token: wrong,
    });
    expect(forced.body).toEqual({
      released: false,
      lock,
      reason: expect.stringContaining(`no grant with fencing token ${wrong} holds it, or the lock changed`),
    });
    expect((await alice.get(`/api/v1/locks/${lock}`)).body).toMatchObject({
      state: 'held',
      fencing_token: held.body.fencing_token,
    });
  });
});

describe('SDK and CLI', () => {
  it('LockClient.listSessions and endSession', async () => {
    const operator = new LockClient({ endpoint: stack.url });
    const a = (await alice.post('/api/v1/sessions', { client_id: 'a-5', ttl_ms: 60_000 })).body;
    const mine = await operator.listSessions({ principal: ALICE_ARN, clientId: 'a-5' });
    expect(mine).toEqual([
      expect.objectContaining({ session_id: a.session_id, state: 'alive', locks_held: 0 }),
    ]);
    expect(await operator.endSession(a.session_id, 'sdk test')).toMatchObject({
      state: 'ended',
      by: OPERATOR,
    });
    await expect(operator.endSession(a.session_id, '')).rejects.toThrow(/needs a reason/);
    await expect(operator.endSession('nope', 'x')).rejects.toThrow(/session id/);
    operator.close();
  });

  it('latchkey admin sessions, end-session, queue and force-release', async () => {
    const run = (args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(
          process.execPath,
          [
            '--import',
            tsx,
            'bin/latchkey.ts',
            '--endpoint',
            stack.url,
            '--ws-endpoint',
            stack.wsUrl,
            ...args,
          ],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        );
        let stdout = '';
        let stderr = '';
        child.stdout?.on('data', (c: Buffer) => (stdout += c));
        child.stderr?.on('data', (c: Buffer) => (stderr += c));
        child.on('close', (code) => resolve({ code, stdout, stderr }));
      });
    const a = (await alice.post('/api/v1/sessions', { client_id: 'a-6', ttl_ms: 60_000 })).body;
    const listed = await run(['--json', 'admin', 'sessions', '--principal', ALICE_ARN, '--client', 'a-6']);
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([expect.objectContaining({ session_id: a.session_id })]);
    const table = await run(['admin', 'sessions', '--client', 'a-6']);
    expect(table.stdout).toMatch(/^SESSION\s+PRINCIPAL\s+CLIENT\s+STATE\s+EXPIRES\s+LOCKS/);
    expect(table.stdout).toContain(a.session_id);
    // EXPIRES: the session's own expiry from now, then its grace (5 s by default).
    expect(table.stdout).toMatch(/\sin \d+(\.\d)?[sm] \(\+5s grace\)\s+0$/m);
    const ended = await run(['admin', 'end-session', a.session_id, '--reason', 'cli test']);
    expect(ended.code, ended.stderr).toBe(0);
    expect(ended.stdout).toContain(`ended session ${a.session_id} of ${ALICE_ARN}`);

    const lock = lockName();
    await alice.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'holder', ttl_ms: 60_000 });
    const waiter = bob.post(`/api/v1/locks/${lock}/acquire`, {
      client_id: 'waiter',
      ttl_ms: 5_000,
      wait_timeout_ms: 10_000,
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const queue = await run(['admin', 'queue', lock]);
    expect(queue.code, queue.stderr).toBe(0);
    expect(queue.stdout).toContain('holder   holder');
    expect(queue.stdout).toMatch(
      /POS\s+CLIENT\s+PRIORITY\s+VIA\s+QUEUED AT\s+WAITS UNTIL\n1\s+waiter\s+0\s+http/,
    );
    const forced = await run(['admin', 'force-release', lock, '--reason', 'cli test']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stdout).toContain(`force-released ${lock}: holder`);
    const granted = (await waiter).body;
    expect(granted).toMatchObject({ acquired: true, client_id: 'waiter' });
    // --token ends only that grant: another token forces nothing.
    const stale = await run(['admin', 'force-release', lock, '--reason', 'old', '--token', '1']);
    expect(stale.code, stale.stderr).toBe(1); // nothing released: a script sees it
    expect(stale.stdout).toContain(`${lock} was not released`);
    // The old top-level command is an alias.
    const token = String(granted.fencing_token);
    const alias = await run(['force-release', lock, '--reason', 'alias', '--token', token]);
    expect(alias.code, alias.stderr).toBe(0);
    expect(alias.stdout).toContain(`force-released ${lock}: waiter (token ${token})`);
  });
});
