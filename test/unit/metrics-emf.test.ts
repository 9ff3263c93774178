/**
 * The functions' metrics (shared/metrics.ts): every handler kind (HTTP routes, the WebSocket
 * routes, the stream notifier, the timer, the sweeper) runs on the real services over the
 * in-memory storage (test/support/queue-harness.ts), and every EMF line it writes is checked
 * against the embedded metric format's specification and against the catalog
 * (shared/metric-catalog.ts): names, units, dimensions, namespace.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { countedPusher } from '../../lambdas/service/counted-pusher';
import { wireServices } from '../../lambdas/service/services';
import type { StreamRecord } from '../../lambdas/service/stream-changes';
import { onDynamoAttempt } from '../../lambdas/shared/calls';
import type { HttpEvent, HttpResult } from '../../lambdas/shared/http';
import {
  METRIC_NAMESPACE,
  METRIC_NAMESPACE_VARIABLE,
  METRICS,
  type MetricName,
  metricNamespaceFor,
  OPERATIONS,
} from '../../lambdas/shared/metric-catalog';
import { emittedNamespace, flushMetrics, setEmfSink } from '../../lambdas/shared/metrics';

/** The namespace the construct gives this file's functions (a deployed stack's own). */
const STACK_NAMESPACE = metricNamespaceFor('Latchkey-test');

import { internalContext, withRequestContext } from '../../lambdas/shared/request-context';
import type { WsEvent } from '../../lambdas/shared/ws';
import { handlerDeps, steppedClock } from '../support/handler-deps';
import { httpEvent } from '../support/http-event';
import { MemoryStorage } from '../support/memory-storage';
import { START } from '../support/queue-harness';

const state = vi.hoisted(() => ({ deps: undefined as unknown }));
vi.mock('../../lambdas/shared/deps', () => ({ getDeps: () => state.deps }));

/** CloudWatch's units (MetricDatum), the only ones EMF takes. */
const UNITS = new Set([
  'Seconds',
  'Microseconds',
  'Milliseconds',
  'Bytes',
  'Kilobytes',
  'Megabytes',
  'Gigabytes',
  'Terabytes',
  'Bits',
  'Kilobits',
  'Megabits',
  'Gigabits',
  'Terabits',
  'Percent',
  'Count',
  'Bytes/Second',
  'Kilobytes/Second',
  'Megabytes/Second',
  'Gigabytes/Second',
  'Terabytes/Second',
  'Bits/Second',
  'Kilobits/Second',
  'Megabits/Second',
  'Gigabits/Second',
  'Terabits/Second',
  'Count/Second',
  'None',
]);

type Doc = Record<string, unknown> & {
  _aws: {
    Timestamp: unknown;
    CloudWatchMetrics: { Namespace: unknown; Dimensions: unknown; Metrics: unknown }[];
  };
};

/** Every rule of the EMF specification a line must meet, and the catalog's; the problems found. */
function emfProblems(line: string): string[] {
  const problems: string[] = [];
  const fail = (why: string) => problems.push(`${why}: ${line}`);
  if (!line.endsWith('\n') || line.slice(0, -1).includes('\n')) fail('not one line');
  let doc: Doc;
  try {
    doc = JSON.parse(line) as Doc;
  } catch {
    return [`not JSON: ${line}`];
  }
  const aws = doc._aws;
  if (typeof aws !== 'object' || aws === null) return [`no _aws object: ${line}`];
  if (!Number.isInteger(aws.Timestamp) || Math.abs((aws.Timestamp as number) - Date.now()) > 3_600_000)
    fail('Timestamp is not epoch milliseconds of now');
  if (!Array.isArray(aws.CloudWatchMetrics) || aws.CloudWatchMetrics.length === 0)
    return [...problems, `no CloudWatchMetrics: ${line}`];
  for (const directive of aws.CloudWatchMetrics) {
    if (directive.Namespace !== STACK_NAMESPACE) fail('namespace');
    if (
      typeof directive.Namespace !== 'string' ||
      directive.Namespace.length < 1 ||
      directive.Namespace.length > 255
    )
      fail('Namespace must be 1-255 characters');
    const sets = directive.Dimensions;
    if (!Array.isArray(sets) || sets.length === 0) {
      fail('Dimensions must be an array of dimension sets');
      continue;
    }
    for (const set of sets) {
      if (!Array.isArray(set) || set.some((key) => typeof key !== 'string'))
        fail('a dimension set is not strings');
      else if (set.length > 30) fail('more than 30 dimensions');
      else
        for (const key of set as string[])
          if (typeof doc[key] !== 'string' || (doc[key] as string).length === 0)
            fail(`dimension ${key} has no top-level string value`);
    }
    const metrics = directive.Metrics;
    if (!Array.isArray(metrics) || metrics.length === 0 || metrics.length > 100) {
      fail('Metrics must have 1-100 entries');
      continue;
    }
    for (const m of metrics as { Name?: unknown; Unit?: unknown; StorageResolution?: unknown }[]) {
      const name = m.Name;
      if (typeof name !== 'string' || name.length < 1 || name.length > 255) {
        fail('a metric without a name');
        continue;
      }
      if (m.Unit !== undefined && !UNITS.has(m.Unit as string)) fail(`${name}: unit ${String(m.Unit)}`);
      const value = doc[name];
      const values = Array.isArray(value) ? value : [value];
      if (
        values.length === 0 ||
        values.length > 100 ||
        values.some((v) => typeof v !== 'number' || !Number.isFinite(v))
      )
        fail(`${name} has no top-level number value (or array of 1-100 numbers)`);
      // The catalog: the name, its unit, its dimensions exactly.
      const spec = (METRICS as Record<string, { unit: string; dimensions: readonly string[] }>)[name];
      if (!spec) {
        fail(`${name} is not in the catalog`);
        continue;
      }
      if (m.Unit !== spec.unit) fail(`${name} unit ${String(m.Unit)}, the catalog says ${spec.unit}`);
      for (const set of sets as string[][])
        if ([...set].sort().join() !== [...spec.dimensions].sort().join())
          fail(`${name} dimensions [${set.join()}], the catalog says [${spec.dimensions.join()}]`);
    }
  }
  if ('service' in doc) fail('a service dimension or key');
  const operation = doc.Operation;
  if (operation !== undefined && !(OPERATIONS as readonly unknown[]).includes(operation))
    fail(`operation ${String(operation)} is not in the catalog`);
  return problems;
}

/** A handler run: the EMF lines written while it ran, parsed. */
const lines: string[] = [];
const seen = new Map<string, Record<string, unknown>[]>();
let invocationLines: string[] = [];

function record(line: string) {
  lines.push(line);
  invocationLines.push(line);
  const doc = JSON.parse(line) as Doc;
  for (const directive of doc._aws.CloudWatchMetrics)
    for (const { Name } of directive.Metrics as { Name: string }[]) {
      const list = seen.get(Name) ?? [];
      list.push(doc);
      seen.set(Name, list);
    }
}

/** The values of `name` written so far whose dimensions include `dims`, flattened. */
function valuesOf(name: MetricName, dims: Record<string, string> = {}): number[] {
  return (seen.get(name) ?? [])
    .filter((doc) => Object.entries(dims).every(([k, v]) => doc[k] === v))
    .flatMap((doc) => {
      const v = doc[name];
      return Array.isArray(v) ? (v as number[]) : [v as number];
    });
}
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** Runs one invocation and checks it flushed once: one line per set of dimension values. */
async function invoke<T>(run: () => Promise<T>): Promise<T> {
  invocationLines = [];
  const result = await run();
  const keys = invocationLines.map((l) => {
    const doc = JSON.parse(l) as Doc;
    const sets = (doc._aws.CloudWatchMetrics[0]?.Dimensions ?? []) as string[][];
    const dims = sets[0] ?? [];
    return dims.map((d) => `${d}=${String(doc[d])}`).join(',');
  });
  expect(new Set(keys).size).toBe(keys.length);
  return result;
}

const ARN = 'arn:aws:iam::000000000000:user/metrics';
const t = { now: START };
const memory = new MemoryStorage({ tableName: 'metrics', retentionSeconds: 86_400 }, () => t.now);
const services = wireServices({
  storage: memory,
  // Counted as the functions' pusher is (shared/deps.ts); every push is delivered.
  pusher: countedPusher({ push: async () => 'sent' }),
  timers: { schedule: async () => undefined, scheduleSession: async () => undefined },
  clock: steppedClock(t),
  ids: randomUUID,
});
const records: StreamRecord[] = [];

/** An HTTP event signed by ARN. */
const signedEvent = (
  routeKey: string,
  rawPath: string,
  body?: unknown,
  pathParameters?: Record<string, string>,
) => httpEvent(routeKey, rawPath, { body, userArn: ARN, ...(pathParameters ? { pathParameters } : {}) });

const lockCommand = (name: string, action: string, body: unknown) =>
  signedEvent('POST /api/v1/locks/{proxy+}', `/api/v1/locks/${name}/${action}`, body, {
    proxy: `${name}/${action}`,
  });

const wsEvent = (routeKey: string, body?: string): WsEvent => ({
  requestContext: {
    connectionId: 'conn-1',
    routeKey,
    requestId: `w-${Math.random()}`,
    identity: { userArn: ARN },
  },
  queryStringParameters: { client_id: 'ws-client' },
  ...(body === undefined ? {} : { body }),
});

/** Feeds the stream records written since the last call to the notifier's handler. */
async function stream() {
  const { handler } = await import('../../lambdas/stream/notifier');
  const batch = records.splice(0);
  if (batch.length) await invoke(() => handler({ Records: batch }));
}

beforeAll(() => {
  // As the construct sets it on every function, before any metric is recorded.
  process.env[METRIC_NAMESPACE_VARIABLE] = STACK_NAMESPACE;
  setEmfSink(record);
  memory.onRecord = (r) => records.push(r as StreamRecord);
  state.deps = handlerDeps(services);
});
afterAll(() => {
  setEmfSink(undefined);
  delete process.env[METRIC_NAMESPACE_VARIABLE];
});

describe('the namespace', () => {
  it('is the stack’s from the environment; without one (the local stack) or with an invalid one, Latchkey', () => {
    expect(emittedNamespace({ [METRIC_NAMESPACE_VARIABLE]: 'Latchkey/Latchkey-prod' })).toBe(
      'Latchkey/Latchkey-prod',
    );
    expect(emittedNamespace({})).toBe(METRIC_NAMESPACE);
    expect(emittedNamespace({ [METRIC_NAMESPACE_VARIABLE]: '' })).toBe(METRIC_NAMESPACE);
    const warned = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      for (const invalid of ['AWS/Lambda', 'semi;colon', 'x'.repeat(256)])
        expect(emittedNamespace({ [METRIC_NAMESPACE_VARIABLE]: invalid })).toBe(METRIC_NAMESPACE);
      // Said once, on stderr, as one JSON line.
      expect(warned).toHaveBeenCalledTimes(1);
      expect(String(warned.mock.calls[0]?.[0])).toMatch(/"level":"warn".*is not a namespace/);
    } finally {
      warned.mockRestore();
    }
  });
});

describe('EMF metrics of every handler kind', () => {
  it('HTTP routes: Requests by operation and outcome, Latency, Contention, QueueDepth, WaitTime', async () => {
    const locks = await import('../../lambdas/http/lock-commands');
    const call = (event: HttpEvent) => invoke(() => locks.handler(event, {} as never) as Promise<HttpResult>);
    const granted = JSON.parse(
      (await call(lockCommand('m/a', 'acquire', { client_id: 'one', ttl_ms: 10_000 }))).body as string,
    );
    expect(granted.acquired).toBe(true);
    await call(lockCommand('m/a', 'acquire', { client_id: 'two', ttl_ms: 10_000 })); // refused
    // A WebSocket wait: queued (its grant is pushed).
    const connect = await import('../../lambdas/ws/connect');
    await invoke(() => connect.handler(wsEvent('$connect')));
    const queued = await call(
      lockCommand('m/a', 'acquire', {
        client_id: 'ws-client',
        ttl_ms: 10_000,
        wait_timeout_ms: 60_000,
        connection_id: 'conn-1',
      }),
    );
    expect(JSON.parse(queued.body as string).queued).toBe(true);
    t.now += 250;
    await call(lockCommand('m/a', 'release', { client_id: 'one', fencing_token: granted.fencing_token }));
    const bad = await call(
      lockCommand('m/a', 'release', { client_id: 'one', fencing_token: granted.fencing_token }),
    );
    expect(bad.statusCode).toBe(409);
    await call(lockCommand('m/b', 'acquire', { nope: true })); // INVALID_REQUEST

    expect(sum(valuesOf('Requests', { Operation: 'acquire', Outcome: 'granted' }))).toBe(1);
    expect(sum(valuesOf('Requests', { Operation: 'acquire', Outcome: 'refused' }))).toBe(1);
    expect(sum(valuesOf('Requests', { Operation: 'acquire', Outcome: 'queued' }))).toBe(1);
    expect(sum(valuesOf('Requests', { Operation: 'acquire', Outcome: 'INVALID_REQUEST' }))).toBe(1);
    expect(sum(valuesOf('Requests', { Operation: 'release', Outcome: 'ok' }))).toBe(1);
    expect(sum(valuesOf('Requests', { Operation: 'release', Outcome: 'NOT_HOLDER' }))).toBe(1);
    expect(valuesOf('Latency', { Operation: 'acquire' })).toHaveLength(4);
    expect(sum(valuesOf('Contention', { Outcome: 'granted' }))).toBe(1);
    expect(sum(valuesOf('Contention', { Outcome: 'refused' }))).toBe(1);
    expect(sum(valuesOf('Contention', { Outcome: 'queued' }))).toBe(1);
    expect(valuesOf('QueueDepth')).toEqual([0]);
    expect(valuesOf('WaitTime')).toEqual([250]); // handed over by the release
    expect(sum(valuesOf('Pushes', { Outcome: 'delivered' }))).toBe(1); // the grant
  });

  it('the stream notifier: HoldDuration, HandoffLatency, LeasesLapsed, sessions, LockDelays', async () => {
    await stream();
    expect(valuesOf('HoldDuration')).toEqual([250]);
    expect(valuesOf('HandoffLatency')).toEqual([0]);
    // A lease that lapses, replaced by another acquire.
    const locks = await import('../../lambdas/http/lock-commands');
    const call = (event: HttpEvent) => invoke(() => locks.handler(event, {} as never) as Promise<HttpResult>);
    await call(lockCommand('m/c', 'acquire', { client_id: 'one', ttl_ms: 1_000 }));
    t.now += 5_000;
    await call(lockCommand('m/c', 'acquire', { client_id: 'two', ttl_ms: 1_000 }));
    // A session with lock-delay that expires holding a lock, and one closed by its client.
    const open = await import('../../lambdas/http/open-session');
    const close = await import('../../lambdas/http/close-session');
    const s1 = JSON.parse(
      (
        (await invoke(() =>
          open.handler(
            signedEvent('POST /api/v1/sessions', '/api/v1/sessions', {
              client_id: 's',
              ttl_ms: 5_000,
              lock_delay_ms: 1_000,
            }),
            {} as never,
          ),
        )) as HttpResult
      ).body as string,
    );
    await call(lockCommand('m/d', 'acquire', { client_id: 's', session_id: s1.session_id }));
    const s2 = JSON.parse(
      (
        (await invoke(() =>
          open.handler(
            signedEvent('POST /api/v1/sessions', '/api/v1/sessions', { client_id: 't', ttl_ms: 5_000 }),
            {} as never,
          ),
        )) as HttpResult
      ).body as string,
    );
    const closed = await invoke(() =>
      close.handler(
        {
          ...signedEvent('DELETE /api/v1/sessions/{id}', `/api/v1/sessions/${s2.session_id}`, undefined, {
            id: s2.session_id,
          }),
          queryStringParameters: { client_id: 't' },
        },
        {} as never,
      ),
    );
    expect((closed as HttpResult).statusCode, (closed as HttpResult).body).toBe(200);
    t.now += 60_000;
    const sweeper = await import('../../lambdas/schedule/sweeper');
    await invoke(() => sweeper.handler());
    await stream();
    expect(sum(valuesOf('LeasesLapsed'))).toBe(1);
    expect(valuesOf('HoldDuration')).toContain(1_000); // the lapsed lease, to its end
    expect(sum(valuesOf('SessionsOpened'))).toBe(2);
    expect(sum(valuesOf('SessionsClosed'))).toBe(1);
    expect(sum(valuesOf('SessionsExpired'))).toBe(1);
    expect(sum(valuesOf('LockDelays'))).toBe(1);
    expect(valuesOf('SweeperLag').length).toBe(1);
    expect(sum(valuesOf('Requests', { Operation: 'sweep', Outcome: 'ok' }))).toBe(1);
    expect(sum(valuesOf('Requests', { Operation: 'notify', Outcome: 'ok' }))).toBe(2);
    expect(sum(valuesOf('Requests', { Operation: 'open', Outcome: 'ok' }))).toBe(2);
    expect(sum(valuesOf('Requests', { Operation: 'close', Outcome: 'ok' }))).toBe(1);
  });

  it('the timer: TimerLateness, and Requests per message', async () => {
    const timer = await import('../../lambdas/schedule/timer');
    const due = t.now - 40;
    await invoke(() =>
      timer.handler({
        Records: [{ messageId: 'm-1', body: JSON.stringify({ lock: 'm/e', due_at: due }) }],
      } as never),
    );
    expect(valuesOf('TimerLateness')).toEqual([40]);
    expect(sum(valuesOf('Requests', { Operation: 'timer', Outcome: 'ok' }))).toBe(1);
  });

  it('the WebSocket routes: Requests, and Pushes by outcome', async () => {
    const messages = await import('../../lambdas/ws/messages');
    const disconnect = await import('../../lambdas/ws/disconnect');
    await invoke(() => messages.handler(wsEvent('$default', '{"action":"hello"}')));
    await invoke(() => messages.handler(wsEvent('$default', '{"action":"ping"}')));
    await invoke(() => disconnect.handler(wsEvent('$disconnect')));
    expect(sum(valuesOf('Requests', { Operation: 'connect', Outcome: 'ok' }))).toBe(1);
    expect(sum(valuesOf('Requests', { Operation: 'message', Outcome: 'ok' }))).toBe(2);
    expect(sum(valuesOf('Requests', { Operation: 'disconnect', Outcome: 'ok' }))).toBe(1);
    expect(sum(valuesOf('Pushes', { Outcome: 'delivered' }))).toBe(3); // and welcome, pong
  });

  it('DynamoDB calls: calls, latency, throttles and refused conditions, by operation', async () => {
    const conditional = Object.assign(new Error('refused'), { name: 'ConditionalCheckFailedException' });
    const throttled = Object.assign(new Error('slow down'), {
      name: 'ProvisionedThroughputExceededException',
    });
    const cancelled = Object.assign(new Error('cancelled'), {
      name: 'TransactionCanceledException',
      CancellationReasons: [{ Code: 'None' }, { Code: 'ConditionalCheckFailed' }],
    });
    await invoke(async () =>
      withRequestContext({ ...internalContext('timer'), operation: 'release' }, () => {
        onDynamoAttempt('UpdateItemCommand', 4);
        onDynamoAttempt('UpdateItemCommand', 6, conditional);
        onDynamoAttempt('UpdateItemCommand', 8, throttled);
        onDynamoAttempt('TransactWriteItemsCommand', 9, cancelled);
        flushMetrics();
      }),
    );
    expect(sum(valuesOf('DynamoCalls', { Operation: 'release' }))).toBe(4);
    expect(valuesOf('DynamoLatency', { Operation: 'release' })).toEqual([4, 6, 8, 9]);
    expect(sum(valuesOf('DynamoThrottles', { Operation: 'release' }))).toBe(1);
    expect(sum(valuesOf('DynamoConditionFailures', { Operation: 'release' }))).toBe(2);
  });

  it('a release whose serve cannot arm the lock timer: TimerArmFailures, and the release still answers', async () => {
    const locks = await import('../../lambdas/http/lock-commands');
    const call = (event: HttpEvent) => invoke(() => locks.handler(event, {} as never) as Promise<HttpResult>);
    const held = JSON.parse(
      (await call(lockCommand('m/t', 'acquire', { client_id: 'one', ttl_ms: 10_000 }))).body as string,
    );
    // A reader, then a writer, wait over a connection (a reader at the head: the release is the
    // plain one, then the queue is served, and the writer is left waiting).
    const connect = await import('../../lambdas/ws/connect');
    const opening = wsEvent('$connect');
    await invoke(() =>
      connect.handler({ ...opening, requestContext: { ...opening.requestContext, connectionId: 'conn-t' } }),
    );
    for (const [client, mode] of [
      ['reader', 'shared'],
      ['writer', 'exclusive'],
    ] as const) {
      const body = {
        client_id: client,
        ttl_ms: 10_000,
        wait_timeout_ms: 60_000,
        connection_id: 'conn-t',
        mode,
      };
      const answer = await call(lockCommand('m/t', 'acquire', body));
      expect(JSON.parse(answer.body as string).queued, answer.body).toBe(true);
      t.now += 1;
    }
    const down = new Error('SQS is down');
    const spy = vi.spyOn(services.lockTimers, 'lookBy').mockRejectedValue(down);
    const released = await call(
      lockCommand('m/t', 'release', { client_id: 'one', fencing_token: held.fencing_token }),
    );
    spy.mockRestore();
    expect(released.statusCode, released.body).toBe(200);
    expect(sum(valuesOf('TimerArmFailures'))).toBe(1);
  });

  it('every line is valid EMF and matches the catalog; every metric of the catalog was seen', () => {
    expect(lines.length).toBeGreaterThan(20);
    expect(lines.flatMap(emfProblems)).toEqual([]);
    expect([...seen.keys()].sort()).toEqual(Object.keys(METRICS).sort());
  });

  it('the validator catches what EMF forbids', () => {
    const good = JSON.parse(lines[0] as string) as Doc;
    const bad = (change: (doc: Doc) => void) => {
      const doc = structuredClone(good);
      change(doc);
      return emfProblems(`${JSON.stringify(doc)}\n`);
    };
    expect(bad(() => undefined)).toEqual([]);
    expect(bad((d) => (d._aws.Timestamp = 'now'))).not.toEqual([]);
    expect(bad((d) => ((d._aws.CloudWatchMetrics[0] as { Namespace: unknown }).Namespace = ''))).not.toEqual(
      [],
    );
    expect(
      bad(
        (d) =>
          ((
            (d._aws.CloudWatchMetrics[0] as { Metrics: { Unit: string }[] }).Metrics[0] as { Unit: string }
          ).Unit = 'Widgets'),
      ),
    ).not.toEqual([]);
    expect(
      bad((d) => ((d._aws.CloudWatchMetrics[0] as { Dimensions: unknown }).Dimensions = [['Missing']])),
    ).not.toEqual([]);
    const first = (
      (good._aws.CloudWatchMetrics[0] as { Metrics: { Name: string }[] }).Metrics[0] as { Name: string }
    ).Name;
    expect(bad((d) => delete d[first])).not.toEqual([]);
    expect(bad((d) => (d.service = 'x'))).not.toEqual([]);
  });
});
