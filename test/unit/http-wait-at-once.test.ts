/**
 * The lock-commands handler's waiting acquire (`wait_timeout_ms`, no `connection_id`): a free lock
 * is granted before any HTTP-wait slot is taken, so a grant at once never needs one; a held lock
 * takes a slot to wait, and with none free is refused TOO_MANY_WAITS, changing nothing. The real
 * handler and services on the in-memory storage, with no slots at all (`maxHttpWaits: 0`).
 */
import { randomUUID } from 'node:crypto';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { lockRef } from '../../lambdas/core/items';
import { DEFAULT_LIMITS } from '../../lambdas/core/wire';
import { wireServices } from '../../lambdas/service/services';
import type { HttpResult } from '../../lambdas/shared/http';
import { handlerDeps, steppedClock } from '../support/handler-deps';
import { httpEvent } from '../support/http-event';
import { MemoryStorage } from '../support/memory-storage';
import { START } from '../support/queue-harness';

const state = vi.hoisted(() => ({ deps: undefined as unknown }));
vi.mock('../../lambdas/shared/deps', () => ({ getDeps: () => state.deps }));

const ARN = 'arn:aws:iam::000000000000:user/waiter';
const t = { now: START };
const memory = new MemoryStorage({ tableName: 'at-once', retentionSeconds: 86_400 }, () => t.now);
const services = wireServices({
  storage: memory,
  pusher: { push: async () => 'sent' },
  timers: { schedule: async () => undefined, scheduleSession: async () => undefined },
  clock: steppedClock(t),
  ids: randomUUID,
  limits: { ...DEFAULT_LIMITS, maxHttpWaits: 0 },
});

beforeAll(() => {
  state.deps = handlerDeps(services);
});

async function acquire(name: string, body: Record<string, unknown>) {
  const { handler } = await import('../../lambdas/http/lock-commands');
  const event = httpEvent('POST /api/v1/locks/{proxy+}', `/api/v1/locks/${name}/acquire`, {
    body,
    userArn: ARN,
    pathParameters: { proxy: `${name}/acquire` },
  });
  const answer = (await handler(event, {} as never)) as HttpResult;
  return { status: answer.statusCode, body: JSON.parse(String(answer.body)) };
}

describe('an HTTP wait with no HTTP-wait slot free', () => {
  it('is granted a free lock at once; waiting for a held one is refused TOO_MANY_WAITS, changing nothing', async () => {
    const wait = { ttl_ms: 10_000, wait_timeout_ms: 5_000 };
    const first = await acquire('jobs/a', { client_id: 'one', request_id: 'r1', ...wait });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ acquired: true, fencing_token: expect.any(Number) });
    const held = memory.readNow(lockRef('jobs/a'));
    t.now += 1;
    const second = await acquire('jobs/a', { client_id: 'two', request_id: 'r2', ...wait });
    expect(second.status).toBe(429);
    expect(second.body.error.code).toBe('TOO_MANY_WAITS');
    expect(memory.readNow(lockRef('jobs/a'))).toEqual(held);
    // The first request asked again (its answer lost): its record answers, with the same grant.
    const again = await acquire('jobs/a', { client_id: 'one', request_id: 'r1', ...wait });
    expect(again.body).toMatchObject({ acquired: true, fencing_token: first.body.fencing_token });
  });
});
