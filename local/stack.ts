/**
 * The whole service on localhost: DynamoDB Local (or an endpoint you name),
 * the table, the HTTP API and the WebSocket API (with its @connections
 * management endpoint), the stream notifier fed from DynamoDB Local's
 * stream, and the timer queue: all served by the same handler modules
 * Lambda runs.
 */

import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { WebSocket } from 'ws';
import { parsePrefixes } from '../lambdas/core/hierarchy';
import { PATH_READERS } from '../lambdas/http/lock-path';
import { ROUTES } from '../lambdas/http/routes';
import { NOTIFIER, SWEEPER, TIMER } from '../lambdas/shared/function-spec';
import { describeError, log } from '../lambdas/shared/log';
import { setEmfSink } from '../lambdas/shared/metrics';
import { provideRelaySocket } from '../lambdas/shared/relay-socket';
import { WS_STAGE } from '../lambdas/ws/routes';
import { type DynamoDbLocal, startDynamoDbLocal } from './dynamodb-local';
import { type AnyHandler, lambdaContext, loadHandler } from './handlers';
import { createHttpGateway } from './http-gateway';
import { HostCheck, type RequestTimeouts } from './origin';
import { PrometheusRegistry } from './prometheus';
import { LOCAL_REGION, type LocalKeys, localKeys } from './sigv4';
import { type StreamPoller, startStreamPoller } from './stream-poller';
import { ensureTable } from './table-setup';
import { createTimerQueue } from './timer-queue';
import { createWsGateway } from './ws-gateway';

export interface LocalStackOptions {
  /** HTTP port; 0 picks a free one. Default 3000. */
  readonly port?: number;
  /** WebSocket port; 0 picks a free one. Default 3001. */
  readonly wsPort?: number;
  readonly host?: string;
  /** Use this DynamoDB instead of starting DynamoDB Local (default: AWS_ENDPOINT_URL_DYNAMODB). */
  readonly dynamoEndpoint?: string;
  /** Persist DynamoDB Local's data here instead of a scratch directory removed on stop. */
  readonly dbPath?: string;
  readonly tableName?: string;
  readonly auth?: 'sigv4' | 'none';
  /**
   * More SigV4 key pairs, "alice:alice-secret,bob:bob-secret" (default: LATCHKEY_LOCAL_CREDENTIALS).
   * Each access key is its own principal, arn:aws:iam::000000000000:user/<access key>; local:local stays.
   */
  readonly credentials?: string;
  /** Host names besides localhost, 127.0.0.1 and ::1 that requests may be addressed to. */
  readonly allowedHosts?: readonly string[];
  /** How long an HTTP client may take to send its headers and its whole request (tests shorten them). */
  readonly requestTimeouts?: RequestTimeouts;
  /** How often the sweeper runs (EventBridge runs it every minute on AWS); 0 never. Default 5000. */
  readonly sweepIntervalMs?: number;
  /**
   * Namespaces where lock names form a hierarchy (the stack's hierarchicalPrefixes), each ending
   * with '/' (default: LATCHKEY_HIERARCHICAL_PREFIXES, comma-separated; none).
   */
  readonly hierarchicalPrefixes?: readonly string[];
}

export interface LocalStack {
  readonly url: string;
  /** Where WebSocket clients connect, e.g. ws://127.0.0.1:3001/v1 */
  readonly wsUrl: string;
  readonly dynamoEndpoint: string;
  readonly tableName: string;
  /** The namespaces where lock names form a hierarchy (none: empty). */
  readonly hierarchicalPrefixes: readonly string[];
  readonly dynamoPid: number | undefined;
  /** The functions' metrics so far, as `GET /metrics` serves them (Prometheus text format). */
  metrics(): string;
  stop(): Promise<void>;
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}

/**
 * The WebSocket gateway also takes the functions' own signature (the process's AWS credentials), as
 * IAM takes a function role's: their relay connects with it. A connection can only say hello and
 * ping; waits are asked for over HTTP, which takes only `keys`.
 */
function withFunctionsKey(keys: LocalKeys): LocalKeys {
  const id = process.env.AWS_ACCESS_KEY_ID;
  const secret = process.env.AWS_SECRET_ACCESS_KEY;
  return id && secret && !keys.has(id) ? new Map([...keys, [id, secret]]) : keys;
}

/** An address to reach a server listening on `host` from this machine. */
const dialable = (host: string) =>
  host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;

/** Handlers keep one configuration per process, as in Lambda: so one stack per process. */
let running = false;

export async function startLocalStack(options: LocalStackOptions = {}): Promise<LocalStack> {
  if (running) throw new Error('a latchkey local stack is already running in this process');
  running = true;
  const tableName = options.tableName ?? 'latchkey-local';
  const external = options.dynamoEndpoint || process.env.AWS_ENDPOINT_URL_DYNAMODB || undefined;
  let dynamo: DynamoDbLocal | undefined;
  if (!external) dynamo = await startDynamoDbLocal(options.dbPath ? { dbPath: options.dbPath } : {});
  const dynamoEndpoint = external ?? (dynamo as DynamoDbLocal).endpoint;
  const servers: Server[] = [];
  let poller: StreamPoller | undefined;
  let sweeper: { stop(): Promise<void> } | undefined;
  const stopServers = async () => {
    await poller?.stop();
    for (const server of servers) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  };
  try {
    process.env.TABLE_NAME = tableName;
    process.env.AWS_ENDPOINT_URL_DYNAMODB = dynamoEndpoint;
    // What the stack's functions get as HIERARCHICAL_PREFIXES (checked when they load their config).
    process.env.HIERARCHICAL_PREFIXES = (
      options.hierarchicalPrefixes ?? parsePrefixes(process.env.LATCHKEY_HIERARCHICAL_PREFIXES)
    ).join(',');
    process.env.AWS_REGION ??= LOCAL_REGION;
    if (!process.env.AWS_ACCESS_KEY_ID) {
      // DynamoDB Local accepts any credentials; the SDK still wants some.
      process.env.AWS_ACCESS_KEY_ID = 'local';
      process.env.AWS_SECRET_ACCESS_KEY = 'local';
    }
    // The functions' EMF lines feed GET /metrics instead of stdout (LATCHKEY_LOCAL_EMF=1 prints them too).
    const registry = new PrometheusRegistry();
    const echo = process.env.LATCHKEY_LOCAL_EMF === '1';
    setEmfSink((line) => {
      registry.ingest(line);
      if (echo) process.stdout.write(line);
    });
    const admin = new DynamoDBClient({ endpoint: dynamoEndpoint, region: process.env.AWS_REGION });
    await ensureTable(admin, tableName);
    admin.destroy();

    const host = options.host ?? '127.0.0.1';
    const auth = options.auth ?? 'sigv4';
    const keys = localKeys(options.credentials ?? process.env.LATCHKEY_LOCAL_CREDENTIALS);
    const hosts = new HostCheck(host, options.allowedHosts);
    const timerQueue = createTimerQueue(await loadHandler(TIMER.module));
    servers.push(timerQueue.server);
    const timerPort = await listen(timerQueue.server, 0, '127.0.0.1');
    process.env.TIMER_QUEUE_URL = `http://127.0.0.1:${timerPort}/000000000000/latchkey-timers`;
    process.env.AWS_ENDPOINT_URL_SQS = `http://127.0.0.1:${timerPort}${timerQueue.base}`;

    const ws = createWsGateway({
      stage: WS_STAGE,
      auth,
      keys: withFunctionsKey(keys),
      hosts,
      handlers: {
        connect: await loadHandler('ws/connect'),
        disconnect: await loadHandler('ws/disconnect'),
        message: await loadHandler('ws/messages'),
      },
    });
    servers.push(ws.server, ws.management);
    const wsPort = await listen(ws.server, options.wsPort ?? 3001, host);
    // @connections: only the functions (this process) know where, and the secret in its path.
    const managementPort = await listen(ws.management, 0, '127.0.0.1');
    process.env.WS_MANAGEMENT_ENDPOINT = `http://127.0.0.1:${managementPort}${ws.managementBase}`;
    // HTTP waits are rung over a relay connection to this WebSocket API (lambdas/service/relay.ts).
    provideRelaySocket((url, headers) => new WebSocket(url, { headers }));
    process.env.WS_RELAY_URL = `ws://${dialable(host)}:${wsPort}/${WS_STAGE}`;

    const routes = await Promise.all(
      ROUTES.map(async (r) => ({
        key: r.key,
        handler: await loadHandler(r.module),
        ...(PATH_READERS[r.key] ? { readPath: PATH_READERS[r.key] } : {}),
        ...(r.timeoutSeconds === undefined ? {} : { timeoutMs: r.timeoutSeconds * 1000 }),
      })),
    );
    const server = createHttpGateway({
      routes,
      auth,
      keys,
      hosts,
      ...(options.requestTimeouts ? { timeouts: options.requestTimeouts } : {}),
      metrics: () => registry.render(),
    });
    server.keepAliveTimeout = 65_000;
    servers.push(server);
    const port = await listen(server, options.port ?? 3000, host);
    poller = await startStreamPoller({
      endpoint: dynamoEndpoint,
      tableName,
      notifier: await loadHandler(NOTIFIER.module),
    });
    sweeper = startSweeper(await loadHandler(SWEEPER.module), options.sweepIntervalMs ?? 5_000);
    return {
      url: `http://${host}:${port}`,
      wsUrl: `ws://${host}:${wsPort}/${WS_STAGE}`,
      dynamoEndpoint,
      tableName,
      hierarchicalPrefixes: parsePrefixes(process.env.HIERARCHICAL_PREFIXES),
      dynamoPid: dynamo?.pid,
      metrics: () => registry.render(),
      async stop() {
        await sweeper?.stop();
        await ws.close();
        await timerQueue.close();
        await stopServers();
        await dynamo?.stop();
        setEmfSink(undefined);
        running = false;
      },
    };
  } catch (error) {
    await sweeper?.stop();
    await stopServers();
    await dynamo?.stop();
    setEmfSink(undefined);
    running = false;
    throw error;
  }
}

/** Runs the sweeper handler every `intervalMs`, one run at a time, as EventBridge would on AWS. */
function startSweeper(handler: AnyHandler, intervalMs: number) {
  let running: Promise<unknown> = Promise.resolve();
  const timer =
    intervalMs > 0
      ? setInterval(() => {
          running = running.then(() =>
            handler({}, lambdaContext(`sweep-${Date.now()}`)).catch((error: unknown) =>
              log('error', 'local sweeper run failed', describeError(error)),
            ),
          );
        }, intervalMs)
      : undefined;
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
