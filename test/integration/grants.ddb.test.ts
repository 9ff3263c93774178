/**
 * Every DynamoDB call a function makes is one its role allows. The CDK stack
 * grants each function exactly the actions of its spec (function-spec.ts,
 * checked against the template by test/infra), on exactly the partitions its
 * spec names (a `dynamodb:LeadingKeys` condition on the key prefixes of
 * store/table.ts PARTITIONS); here the local stack runs a workload that takes
 * every path (acquire, waits over HTTP and pushed over WebSocket, releases
 * that hand over, grants taken back from a vanished connection, cancels,
 * ephemeral locks, sessions, listing, an administrator's forced release,
 * expiry timers, the sweeper, $disconnect), records each call with the
 * function it ran in, and checks its actions and every key it touches
 * against that function's spec.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROUTES } from '../../lambdas/http/routes';
import { observeDynamoCalls } from '../../lambdas/shared/calls';
import { type FunctionSpec, NOTIFIER, SWEEPER, TIMER } from '../../lambdas/shared/function-spec';
import { KEY, PARTITIONS } from '../../lambdas/store/table';
import { WS_ROUTES } from '../../lambdas/ws/routes';
import { invocation } from '../../local/handlers';
import type { LocalStack } from '../../local/stack';
import { queueBehindLapsedLease, queueVanishedWaiter } from '../support/dynamo';
import { PushClient } from '../support/push-client';
import { signedClient } from '../support/signed-fetch';
import { startTestStack } from '../support/stack';

/**
 * Each module's spec. A module may serve several routes (GET /api/v1/list and /api/v1/list/{prefix}):
 * their specs must then grant the same, or a call could not be checked against one of them.
 */
const SPECS: Record<string, FunctionSpec> = {};
for (const spec of [...ROUTES, ...WS_ROUTES, NOTIFIER, TIMER, SWEEPER]) {
  const known = SPECS[spec.module];
  if (known) {
    const grants = (s: FunctionSpec) => JSON.stringify([s.table, [...s.partitions].sort(), s.indexes ?? {}]);
    if (grants(known) !== grants(spec))
      throw new Error(`${spec.module} has two specs that grant differently`);
  }
  SPECS[spec.module] = spec;
}

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

/** A string attribute value as the request carries it: marshalled ({S: ...}) by the time it is observed, or plain. */
function stringValue(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  const s = (value as { S?: unknown } | null | undefined)?.S;
  return typeof s === 'string' ? s : undefined;
}

/** The partition key value of a Key (or Put Item) map. */
const pkOf = (key: unknown): string | undefined =>
  stringValue((key as Record<string, unknown> | null | undefined)?.[KEY.pk]);

/**
 * The partition key of the table's own key condition (`#pk = :pk`, names and values by placeholder
 * or literally): what `dynamodb:LeadingKeys` sees of a Query.
 */
function queryPartition(input: Record<string, unknown>): string | undefined {
  const expression = String(input.KeyConditionExpression ?? '');
  const names = (input.ExpressionAttributeNames ?? {}) as Record<string, string>;
  const values = (input.ExpressionAttributeValues ?? {}) as Record<string, unknown>;
  for (const m of expression.matchAll(/([#\w]+)\s*=\s*(:\w+)/g)) {
    const attr = m[1]?.startsWith('#') ? names[m[1]] : m[1];
    if (attr === KEY.pk) return stringValue(values[m[2] as string]);
  }
  return undefined;
}

/**
 * Every partition key value a request touches on the table itself (its index queries are not
 * conditioned on leading keys), or `undefined` for a key that could not be read (a problem too).
 */
function partitionsOf(command: string, input: Record<string, unknown>): (string | undefined)[] {
  switch (command) {
    case 'GetItemCommand':
    case 'UpdateItemCommand':
    case 'DeleteItemCommand':
      return [pkOf(input.Key)];
    case 'PutItemCommand':
      return [pkOf(input.Item)];
    case 'TransactWriteItemsCommand':
      return ((input.TransactItems ?? []) as Record<string, { Key?: unknown; Item?: unknown }>[]).flatMap(
        (part) => Object.values(part).map((op) => pkOf(op.Key ?? op.Item)),
      );
    case 'BatchGetItemCommand':
      return Object.values((input.RequestItems ?? {}) as Record<string, { Keys?: unknown[] }>).flatMap(
        (table) => (table.Keys ?? []).map(pkOf),
      );
    case 'QueryCommand':
      return input.IndexName === undefined ? [queryPartition(input)] : [];
    default:
      return [undefined];
  }
}

/** Which of the spec's partitions a key is in, or undefined when none (the role would be refused). */
const partitionOf = (spec: FunctionSpec, pk: string) =>
  spec.partitions.find((p) => pk.startsWith(PARTITIONS[p]));

/** The partition a key value is in, whoever's spec: to say what a refused key is. */
const anyPartition = (pk: string) =>
  (Object.keys(PARTITIONS) as (keyof typeof PARTITIONS)[]).find((p) => pk.startsWith(PARTITIONS[p]));

let stack: LocalStack;
let api: ReturnType<typeof signedClient>;
/** Per module: the actions it needed, and the partitions its keys were in (with an example key). */
const calls = new Map<string, Set<string>>();
const keys = new Map<string, Map<string, string>>();
/** Keys outside the partitions of the spec of the function that touched them. */
const keyProblems = new Map<string, string>();
const sockets: PushClient[] = [];
let stop: () => void;

beforeAll(async () => {
  stop = observeDynamoCalls((command, input) => {
    const module = invocation.getStore()?.module;
    if (!module) return; // a call made by the test itself
    const seen = calls.get(module) ?? new Set<string>();
    for (const need of actionsOf(command, input)) seen.add(JSON.stringify(need));
    calls.set(module, seen);
    const touched = keys.get(module) ?? new Map<string, string>();
    const spec = SPECS[module];
    for (const pk of partitionsOf(command, input)) {
      if (pk === undefined) {
        keyProblems.set(
          `${module}: ${command} without a readable partition key`,
          JSON.stringify(input).slice(0, 300),
        );
        continue;
      }
      // What the role's dynamodb:LeadingKeys condition checks: the key starts with one of the spec's prefixes.
      if (spec && partitionOf(spec, pk) === undefined) {
        const what = `${module} ${command} touches ${anyPartition(pk) ?? 'no known partition'}, not in its partitions [${spec.partitions.join(', ')}]`;
        if (!keyProblems.has(what)) keyProblems.set(what, pk);
      }
      // One example key per partition is enough to show what was covered.
      const where = anyPartition(pk) ?? `unknown:${pk}`;
      if (!touched.has(where)) touched.set(where, pk);
    }
    keys.set(module, touched);
  });
  stack = await startTestStack('grants', { sweepIntervalMs: 300 });
  api = signedClient(stack.url);
});
afterAll(async () => {
  stop();
  await Promise.all(sockets.map((s) => s.close()));
  await stack.stop();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const lockName = () => `grants/${randomUUID()}`;

describe('what each function does with DynamoDB', () => {
  // Every path, one after another: about 40 s here, several times that on a loaded machine.
  it('stays within the actions and partitions its spec grants it, on every path', {
    timeout: 240_000,
  }, async () => {
    const lock = lockName();
    // HTTP: acquire, a refused try, an HTTP wait that times out, renew, a wait served by the release.
    // Leases and waits are generous: a slow machine must not change which paths are taken.
    const held = await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'a', ttl_ms: 10_000 });
    expect(held.body).toMatchObject({ acquired: true });
    await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'b', ttl_ms: 2_000, request_id: 'try-1' });
    await api.post(`/api/v1/locks/${lock}/acquire`, {
      client_id: 'b',
      ttl_ms: 2_000,
      wait_timeout_ms: 100,
    });
    await api.post(`/api/v1/locks/${lock}/renew`, {
      client_id: 'a',
      fencing_token: held.body.fencing_token,
      ttl_ms: 10_000,
    });
    // WebSocket: hello (its connection id), ping, and a wait pushed to it, asked for over HTTP.
    const socket = await PushClient.open(stack.wsUrl, api, 'ws');
    sockets.push(socket);
    socket.socket.send({ action: 'ping' });
    await socket.next((f) => f.type === 'pong');
    expect(await socket.queue(lock, { wait_timeout_ms: 20_000, ttl_ms: 1_000 })).toMatchObject({
      queued: true,
    });
    const waited = api.post(`/api/v1/locks/${lock}/acquire`, {
      client_id: 'c',
      ttl_ms: 1_000,
      wait_timeout_ms: 15_000,
    });
    await sleep(100);
    await api.post(`/api/v1/locks/${lock}/release`, {
      client_id: 'a',
      fencing_token: held.body.fencing_token,
    });
    // The WebSocket waiter's lease lapses (a timer serves c), c releases.
    const c = await waited;
    expect(c.body).toMatchObject({ acquired: true, client_id: 'c' });
    await api.post(`/api/v1/locks/${lock}/release`, {
      client_id: 'c',
      fencing_token: c.body.fencing_token,
    });
    // A grant to a vanished connection is taken back (the release's handoff, then the notifier's).
    const other = lockName();
    const h2 = await api.post(`/api/v1/locks/${other}/acquire`, { client_id: 'a', ttl_ms: 2_000 });
    await queueVanishedWaiter(stack.tableName, other);
    await api.post(`/api/v1/locks/${other}/release`, {
      client_id: 'a',
      fencing_token: h2.body.fencing_token,
    });
    // Cancels (one request before it queued, every wait of a client), an ephemeral lock, a disconnect that releases it.
    await socket.cancel(lockName(), { request_id: 'nothing-yet' });
    const cancelled = lockName();
    const h3 = await api.post(`/api/v1/locks/${cancelled}/acquire`, { client_id: 'a', ttl_ms: 5_000 });
    await socket.queue(cancelled, { wait_timeout_ms: 20_000 });
    expect((await socket.cancel(cancelled)).body).toMatchObject({ cancelled: true, removed: 1 });
    await api.post(`/api/v1/locks/${cancelled}/release`, {
      client_id: 'a',
      fencing_token: h3.body.fencing_token,
    });
    const eph = lockName();
    expect((await socket.acquire(eph, { ephemeral: true, ttl_ms: undefined })).body).toMatchObject({
      acquired: true,
    });
    // Sessions: open, acquire in it, wait in it, heartbeat, listing and inspect, close.
    const s = (await api.post('/api/v1/sessions', { client_id: 'lead', ttl_ms: 1_000, grace_ms: 0 })).body;
    const leader = lockName();
    await api.post(`/api/v1/locks/${leader}/acquire`, { client_id: 'lead', session_id: s.session_id });
    await api.post(`/api/v1/sessions/${s.session_id}/heartbeat`, { client_id: 'lead' });
    await api.get(`/api/v1/locks/${leader}`);
    expect((await api.get('/api/v1/list/grants/?limit=2')).status).toBe(200);
    expect((await api.get('/api/v1/list')).status).toBe(200);
    await api.get('/api/v1/health');
    const s2 = (await api.post('/api/v1/sessions', { client_id: 'standby', ttl_ms: 5_000 })).body;
    const standby = api.post(`/api/v1/locks/${leader}/acquire`, {
      client_id: 'standby',
      session_id: s2.session_id,
      wait_timeout_ms: 15_000,
    });
    // The leader stops heartbeating: its session's timer (or the sweeper) ends it; the standby leads.
    expect((await standby).body).toMatchObject({ acquired: true, client_id: 'standby' });
    await api.delete(`/api/v1/sessions/${s2.session_id}?client_id=standby`);
    // An administrator forces a release, with a waiter to hand the lock to; and one of a free lock.
    const stuck = lockName();
    await api.post(`/api/v1/locks/${stuck}/acquire`, { client_id: 'stuck', ttl_ms: 60_000 });
    await socket.queue(stuck, { wait_timeout_ms: 20_000, ttl_ms: 1_000 });
    const forced = await api.post(`/api/v1/admin/locks/${stuck}/force-release`, { reason: 'grants test' });
    expect(forced.body).toMatchObject({ released: true, lock: stuck });
    await socket.granted();
    expect(
      (await api.post(`/api/v1/admin/locks/${lockName()}/force-release`, { reason: 'free' })).body,
    ).toMatchObject({
      released: false,
    });
    // An administrator lists sessions and ends one that holds a lock.
    expect((await api.get('/api/v1/admin/sessions?limit=5')).status).toBe(200);
    const s3 = (await api.post('/api/v1/sessions', { client_id: 'ended', ttl_ms: 60_000 })).body;
    await api.post(`/api/v1/locks/${lockName()}/acquire`, {
      client_id: 'ended',
      session_id: s3.session_id,
    });
    const endedByAdmin = await api.request('DELETE', `/api/v1/admin/sessions/${s3.session_id}`, {
      reason: 'grants test',
    });
    expect(endedByAdmin.body).toMatchObject({ state: 'ended', locks_released: 1 });
    // The notifier serves what nobody else will: a waiter queued behind a lease that lapsed unseen.
    await queueBehindLapsedLease(stack.tableName, lockName());
    await socket.close();
    await sleep(1_500); // $disconnect, timers for the leases that lapsed, a few sweeper runs

    // The stream notifier works behind the requests (the local stream poller reads every 50 ms or
    // so): on a loaded machine it may not have run yet.
    await expect.poll(() => calls.has('stream/notifier'), { timeout: 60_000 }).toBe(true);
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
    for (const [problem, example] of keyProblems) problems.push(`${problem} (e.g. ${example})`);
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
        'http/admin-locks',
        'http/admin-sessions',
        'http/admin-end-session',
        'stream/notifier',
        'schedule/timer',
        'schedule/sweeper',
      ]),
    );
    // And the keys of every partition the specs name, so the check above was not vacuous.
    const touched = new Set([...keys.values()].flatMap((m) => [...m.keys()]));
    expect([...touched].sort()).toEqual(
      expect.arrayContaining(['lock', 'request', 'session', 'connection', 'quota', 'httpWait', 'sweeper']),
    );
  });
});
