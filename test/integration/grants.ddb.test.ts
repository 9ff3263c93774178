/**
 * Every DynamoDB call a function makes is one its role allows. The CDK stack
 * grants each function exactly the actions of its spec (function-spec.ts,
 * checked against the template by test/infra); here the local stack runs a
 * workload that takes every path (acquire, waits over HTTP and WebSocket,
 * releases that hand over, grants taken back from a vanished connection,
 * sessions, expiry timers, the sweeper, $disconnect), records each call with
 * the function it ran in, and checks it against that function's spec.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROUTES } from '../../lambdas/http/routes';
import { observeDynamoCalls } from '../../lambdas/shared/calls';
import { type FunctionSpec, NOTIFIER, SWEEPER, TIMER } from '../../lambdas/shared/function-spec';
import { WS_ROUTES } from '../../lambdas/ws/routes';
import { invocation } from '../../local/handlers';
import type { LocalStack } from '../../local/stack';
import { queueVanishedWaiter } from '../support/dynamo';
import { signedClient } from '../support/signed-fetch';
import { startTestStack } from '../support/stack';
import { TestSocket } from '../support/ws-client';

const SPECS: Record<string, FunctionSpec> = Object.fromEntries(
  [...ROUTES, ...WS_ROUTES, NOTIFIER, TIMER, SWEEPER].map((spec) => [spec.module, spec]),
);

/** The IAM actions a DynamoDB request needs, on the table or on an index. */
function actionsOf(command: string, input: Record<string, unknown>): { index?: string; action: string }[] {
  const index = typeof input.IndexName === 'string' ? input.IndexName : undefined;
  const on = (action: string) => ({ action: `dynamodb:${action}`, ...(index ? { index } : {}) });
  if (command === 'TransactWriteItemsCommand') {
    const parts = (input.TransactItems ?? []) as Record<string, unknown>[];
    const kinds: Record<string, string> = {
      Update: 'UpdateItem',
      Delete: 'DeleteItem',
      Put: 'PutItem',
      ConditionCheck: 'ConditionCheckItem',
    };
    return parts.flatMap((part) => Object.keys(part).map((kind) => on(kinds[kind] ?? kind)));
  }
  return [on(command.replace(/Command$/, ''))];
}

const allowed = (spec: FunctionSpec, need: { index?: string; action: string }) =>
  need.index === undefined
    ? spec.table.includes(need.action as never)
    : (spec.indexes?.[need.index as keyof NonNullable<FunctionSpec['indexes']>] ?? []).includes(
        need.action as never,
      );

let stack: LocalStack;
let api: ReturnType<typeof signedClient>;
const calls = new Map<string, Set<string>>();
let stop: () => void;

beforeAll(async () => {
  stop = observeDynamoCalls((command, input) => {
    const module = invocation.getStore()?.module;
    if (!module) return; // a call made by the test itself
    const seen = calls.get(module) ?? new Set<string>();
    for (const need of actionsOf(command, input)) seen.add(JSON.stringify(need));
    calls.set(module, seen);
  });
  stack = await startTestStack('grants', { sweepIntervalMs: 300 });
  api = signedClient(stack.url);
});
afterAll(async () => {
  stop();
  await stack.stop();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const lockName = () => `grants/${randomUUID()}`;

describe('what each function does with DynamoDB', () => {
  it('stays within the actions its spec grants it, on every path', async () => {
    const lock = lockName();
    // HTTP: acquire, a refused try, an HTTP wait that times out, renew, a wait served by the release.
    const held = await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'a', ttl_ms: 2_000 });
    await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'b', ttl_ms: 2_000, request_id: 'try-1' });
    await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'b', ttl_ms: 2_000, wait_timeout_ms: 100 });
    await api.post(`/api/v1/locks/${lock}/renew`, {
      client_id: 'a',
      fencing_token: held.body.fencing_token,
      ttl_ms: 2_000,
    });
    const socket = await TestSocket.open(stack.wsUrl, 'ws');
    expect(await socket.acquire(lock, { wait_timeout_ms: 20_000, ttl_ms: 1_000 })).toMatchObject({
      type: 'queued',
    });
    const waited = api.post(`/api/v1/locks/${lock}/acquire`, {
      client_id: 'c',
      ttl_ms: 1_000,
      wait_timeout_ms: 5_000,
    });
    await sleep(100);
    await api.post(`/api/v1/locks/${lock}/release`, {
      client_id: 'a',
      fencing_token: held.body.fencing_token,
    });
    // The WebSocket waiter's lease lapses (a timer serves c), c releases.
    const c = await waited;
    expect(c.body).toMatchObject({ acquired: true, client_id: 'c' });
    await api.post(`/api/v1/locks/${lock}/release`, { client_id: 'c', fencing_token: c.body.fencing_token });
    // A grant to a vanished connection is taken back (the release's handoff, then the notifier's).
    const other = lockName();
    const h2 = await api.post(`/api/v1/locks/${other}/acquire`, { client_id: 'a', ttl_ms: 2_000 });
    await queueVanishedWaiter(stack.tableName, other);
    await api.post(`/api/v1/locks/${other}/release`, {
      client_id: 'a',
      fencing_token: h2.body.fencing_token,
    });
    // A cancel, an ephemeral lock, ping, and a disconnect that releases it.
    socket.send({ action: 'cancel', lock: lockName(), request_id: 'nothing-yet' });
    await socket.next((f) => f.type === 'cancelled');
    const eph = lockName();
    expect(await socket.acquire(eph, { ephemeral: true, ttl_ms: undefined })).toMatchObject({
      type: 'granted',
    });
    // Sessions: open, acquire in it, wait in it, heartbeat, renew refused, listing and inspect, close.
    const s = (await api.post('/api/v1/sessions', { client_id: 'lead', ttl_ms: 1_000, grace_ms: 0 })).body;
    const leader = lockName();
    await api.post(`/api/v1/locks/${leader}/acquire`, { client_id: 'lead', session_id: s.session_id });
    await api.post(`/api/v1/sessions/${s.session_id}/heartbeat`, { client_id: 'lead' });
    await api.get(`/api/v1/locks/${leader}`);
    await api.get('/api/v1/locks?prefix=grants%2F');
    await api.get('/api/v1/health');
    const s2 = (await api.post('/api/v1/sessions', { client_id: 'standby', ttl_ms: 5_000 })).body;
    const standby = api.post(`/api/v1/locks/${leader}/acquire`, {
      client_id: 'standby',
      session_id: s2.session_id,
      wait_timeout_ms: 5_000,
    });
    // The leader stops heartbeating: its session's timer (or the sweeper) ends it; the standby leads.
    expect((await standby).body).toMatchObject({ acquired: true, client_id: 'standby' });
    await api.delete(`/api/v1/sessions/${s2.session_id}?client_id=standby`);
    // The notifier serves what nobody else will: a waiter that joined just before a lease lapsed unseen.
    for (let attempt = 0; attempt < 8 && !calls.has('stream/notifier'); attempt++) {
      const lapsing = lockName();
      await api.post(`/api/v1/locks/${lapsing}/acquire`, { client_id: 'short', ttl_ms: 1_000 });
      await sleep(975);
      await socket.acquire(lapsing, { wait_timeout_ms: 5_000, ttl_ms: 1_000 });
      await sleep(300);
    }
    await socket.close();
    await sleep(1_500); // $disconnect, timers for the leases that lapsed, a few sweeper runs

    const problems: string[] = [];
    for (const [module, needs] of calls) {
      const spec = SPECS[module];
      if (!spec) {
        problems.push(`${module}: no function spec`);
        continue;
      }
      for (const text of needs) {
        const need = JSON.parse(text) as { index?: string; action: string };
        if (!allowed(spec, need))
          problems.push(
            `${module} calls ${need.action}${need.index ? ` on index ${need.index}` : ''}, not granted`,
          );
      }
    }
    expect(problems).toEqual([]);
    // The workload reached every function that touches DynamoDB.
    expect([...calls.keys()].sort()).toEqual(
      expect.arrayContaining([
        'http/lock-commands',
        'http/get-lock',
        'http/list-locks',
        'http/open-session',
        'http/session-heartbeat',
        'http/close-session',
        'ws/connect',
        'ws/disconnect',
        'ws/messages',
        'stream/notifier',
        'schedule/timer',
        'schedule/sweeper',
      ]),
    );
  });
});
