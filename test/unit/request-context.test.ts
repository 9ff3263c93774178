/**
 * Every log line of a request carries its request_id, the caller's principal and the operation:
 * the request context (lambdas/shared/request-context.ts) set by the entry points and merged by
 * log(). Checked through httpRoute with a real API Gateway event shape, nested and concurrent runs.
 */
import type { Context } from 'aws-lambda';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { httpContext, httpRoute, json, operationOf } from '../../lambdas/shared/http';
import { audit, log } from '../../lambdas/shared/log';
import { currentContext, internalContext, withRequestContext } from '../../lambdas/shared/request-context';
import { wsContext } from '../../lambdas/shared/ws';
import { httpEvent } from '../support/http-event';

type Line = Record<string, unknown>;
let lines: Line[] = [];
let summaries: Line[] = [];
let level: string | undefined;

beforeEach(() => {
  lines = [];
  summaries = [];
  level = process.env.LOG_LEVEL;
  process.env.LOG_LEVEL = 'info';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    for (const text of String(chunk).split('\n').filter(Boolean)) {
      try {
        const line = JSON.parse(text) as Line;
        // Each request's closing summary line (metrics.ts) is kept apart from what the route logged.
        if (line.message === 'request') summaries.push(line);
        else if (typeof line.message === 'string') lines.push(line);
      } catch {
        // not a log line (a metric, say)
      }
    }
    return true;
  });
});
afterEach(() => {
  vi.restoreAllMocks();
  process.env.LOG_LEVEL = level;
});

const ARN = 'arn:aws:sts::123456789012:assumed-role/Worker/i-0abc';
const ROLE = 'arn:aws:sts::123456789012:assumed-role/Worker';

const event = (routeKey: string, rawPath: string, signed = true) =>
  httpEvent(routeKey, rawPath, { requestId: 'gw-req-1', userArn: signed ? ARN : null });
const context = {} as Context;

describe('request context', () => {
  it('httpRoute: every line of the request carries request_id, principal and operation', async () => {
    const handler = httpRoute(
      async () => {
        log('info', 'inside', { lock: 'jobs/a' });
        await new Promise((resolve) => setTimeout(resolve, 5));
        log('info', 'after an await');
        return json(200, { ok: true });
      },
      () => ({}) as never,
    );
    await handler(event('POST /api/v1/locks/{proxy+}', '/api/v1/locks/jobs/a/acquire'), context);
    expect(lines).toEqual([
      expect.objectContaining({
        message: 'inside',
        request_id: 'gw-req-1',
        principal: ROLE,
        operation: 'acquire',
        lock: 'jobs/a',
      }),
      expect.objectContaining({
        message: 'after an await',
        request_id: 'gw-req-1',
        principal: ROLE,
        operation: 'acquire',
      }),
    ]);
    // And one summary line per request, with its outcome, for Contributor Insights.
    expect(summaries).toEqual([
      expect.objectContaining({
        request_id: 'gw-req-1',
        principal: ROLE,
        operation: 'acquire',
        outcome: 'ok',
      }),
    ]);
    expect(currentContext()).toBeUndefined();
  });

  it("an error's log line carries the context too, and an unsigned request has no principal", async () => {
    const handler = httpRoute(
      async () => {
        throw new Error('boom');
      },
      () => ({}) as never,
    );
    const answer = await handler(event('GET /api/v1/health', '/api/v1/health', false), context);
    expect(answer.statusCode).toBe(500);
    expect(lines).toEqual([
      expect.objectContaining({
        level: 'error',
        message: 'unexpected failure',
        request_id: 'gw-req-1',
        operation: 'health',
      }),
    ]);
    expect(lines[0]).not.toHaveProperty('principal');
  });

  it('concurrent requests keep their own context', async () => {
    const handler = httpRoute(
      async (e) => {
        await new Promise((resolve) => setTimeout(resolve, e.rawPath.endsWith('release') ? 1 : 10));
        log('info', 'done');
        return json(200, {});
      },
      () => ({}) as never,
    );
    const a = {
      ...event('POST /api/v1/locks/{proxy+}', '/api/v1/locks/x/acquire'),
      requestContext: { requestId: 'A', authorizer: { iam: { userArn: ARN } } },
    };
    const b = {
      ...event('POST /api/v1/locks/{proxy+}', '/api/v1/locks/x/release'),
      requestContext: { requestId: 'B', authorizer: { iam: { userArn: ARN } } },
    };
    await Promise.all([handler(a as never, context), handler(b as never, context)]);
    expect(lines.map((l) => [l.request_id, l.operation])).toEqual([
      ['B', 'release'],
      ['A', 'acquire'],
    ]);
  });

  it('operations by route', () => {
    expect(operationOf({ routeKey: 'POST /api/v1/locks/{proxy+}', rawPath: '/api/v1/locks/a/b/renew' })).toBe(
      'renew',
    );
    expect(operationOf({ routeKey: 'POST /api/v1/locks/{proxy+}', rawPath: '/api/v1/locks/a/b/nope' })).toBe(
      'lock-command',
    );
    expect(operationOf({ routeKey: 'GET /api/v1/admin/sessions', rawPath: '' })).toBe('admin-list-sessions');
    expect(operationOf({ routeKey: 'DELETE /api/v1/admin/sessions/{id}', rawPath: '' })).toBe(
      'admin-end-session',
    );
    expect(operationOf({ routeKey: 'POST /api/v1/admin/locks/{proxy+}', rawPath: '' })).toBe('force-release');
    expect(httpContext(event('GET /api/v1/list', '/api/v1/list'))).toEqual({
      request_id: 'gw-req-1',
      principal: ROLE,
      operation: 'list',
    });
  });

  it('WebSocket and internal contexts; a field a line names itself wins', () => {
    expect(
      wsContext(
        {
          requestContext: {
            connectionId: 'c1',
            routeKey: '$connect',
            requestId: 'w1',
            identity: { userArn: ARN },
          },
        },
        'connect',
      ),
    ).toEqual({ request_id: 'w1', principal: ROLE, operation: 'connect', connection_id: 'c1' });
    withRequestContext(internalContext('timer', 'msg-1'), () => {
      log('info', 'fired');
      log('info', 'overridden', { operation: 'mine' });
      audit('handoff', { lock: 'l', principal: ROLE, client_id: 'c', fencing_token: 2 });
    });
    expect(lines).toEqual([
      expect.objectContaining({ message: 'fired', request_id: 'msg-1', operation: 'timer' }),
      expect.objectContaining({ message: 'overridden', operation: 'mine' }),
      expect.objectContaining({ audit: 'handoff', request_id: 'msg-1', by: 'timer', principal: ROLE }),
    ]);
  });

  it('audit lines are written at any LOG_LEVEL but silent', () => {
    process.env.LOG_LEVEL = 'error';
    log('info', 'muted');
    audit('grant', { lock: 'l' });
    process.env.LOG_LEVEL = 'silent';
    audit('grant', { lock: 'quiet' });
    expect(lines.map((l) => l.message)).toEqual(['audit: grant']);
  });
});
