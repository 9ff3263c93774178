/**
 * GET /api/v1/admin/sessions?principal=: an assumed-role session's ARN filters by its role, as
 * ownership counts it (core/principal.ts). The real handlers on the in-memory storage.
 */
import { randomUUID } from 'node:crypto';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { DEFAULT_LIMITS } from '../../lambdas/core/wire';
import { wireServices } from '../../lambdas/service/services';
import type { HttpResult } from '../../lambdas/shared/http';
import { handlerDeps, steppedClock } from '../support/handler-deps';
import { httpEvent } from '../support/http-event';
import { MemoryStorage } from '../support/memory-storage';
import { START } from '../support/queue-harness';

const state = vi.hoisted(() => ({ deps: undefined as unknown }));
vi.mock('../../lambdas/shared/deps', () => ({ getDeps: () => state.deps }));

const ROLE = 'arn:aws:sts::123456789012:assumed-role/Worker';
const WORKER = `${ROLE}/i-0abc`;
const OPERATOR = 'arn:aws:iam::123456789012:user/operator';
const t = { now: START };
const memory = new MemoryStorage({ tableName: 'admin-filter', retentionSeconds: 86_400 }, () => t.now);

beforeAll(() => {
  state.deps = handlerDeps(
    wireServices({
      storage: memory,
      pusher: { push: async () => 'sent' },
      timers: { schedule: async () => undefined, scheduleSession: async () => undefined },
      clock: steppedClock(t),
      ids: randomUUID,
      limits: DEFAULT_LIMITS,
    }),
  );
});

const body = (answer: HttpResult) => JSON.parse(String(answer.body));

async function listed(principal: string): Promise<string[]> {
  const { handler } = await import('../../lambdas/http/admin-sessions');
  const event = httpEvent('GET /api/v1/admin/sessions', '/api/v1/admin/sessions', { userArn: OPERATOR });
  event.queryStringParameters = { principal };
  const answer = (await handler(event, {} as never)) as HttpResult;
  expect(answer.statusCode).toBe(200);
  return body(answer).sessions.map((s: { session_id: string }) => s.session_id);
}

describe('the admin session listing, by principal', () => {
  it('finds an assumed-role session by the role or by the session ARN its caller signed with', async () => {
    const { handler } = await import('../../lambdas/http/open-session');
    const opened = (await handler(
      httpEvent('POST /api/v1/sessions', '/api/v1/sessions', {
        userArn: WORKER,
        body: { client_id: 'w-1', ttl_ms: 60_000 },
      }),
      {} as never,
    )) as HttpResult;
    expect(opened.statusCode).toBe(201);
    const id = body(opened).session_id as string;
    expect(await listed(ROLE)).toEqual([id]);
    expect(await listed(WORKER)).toEqual([id]);
    expect(await listed('arn:aws:sts::123456789012:assumed-role/Other/i-0abc')).toEqual([]);
  });
});
