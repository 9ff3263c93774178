/**
 * The whole service on localhost: DynamoDB Local (or an endpoint you name),
 * the table, and the HTTP API served by the same handler modules Lambda runs.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { ROUTES } from '../lambdas/http/routes';
import { type DynamoDbLocal, startDynamoDbLocal } from './dynamodb-local';
import { loadHandler } from './handlers';
import { createHttpGateway } from './http-gateway';
import { LOCAL_REGION } from './sigv4';
import { ensureTable } from './table-setup';

export interface LocalStackOptions {
  /** HTTP port; 0 picks a free one. Default 3000. */
  readonly port?: number;
  readonly host?: string;
  /** Use this DynamoDB instead of starting DynamoDB Local (default: AWS_ENDPOINT_URL_DYNAMODB). */
  readonly dynamoEndpoint?: string;
  /** Persist DynamoDB Local's data here instead of in memory. */
  readonly dbPath?: string;
  readonly tableName?: string;
  readonly auth?: 'sigv4' | 'none';
}

export interface LocalStack {
  readonly url: string;
  readonly dynamoEndpoint: string;
  readonly tableName: string;
  readonly dynamoPid: number | undefined;
  stop(): Promise<void>;
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}

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
  try {
    process.env.TABLE_NAME = tableName;
    process.env.AWS_ENDPOINT_URL_DYNAMODB = dynamoEndpoint;
    process.env.AWS_REGION ??= LOCAL_REGION;
    if (!process.env.AWS_ACCESS_KEY_ID) {
      // DynamoDB Local accepts any credentials; the SDK still wants some.
      process.env.AWS_ACCESS_KEY_ID = 'local';
      process.env.AWS_SECRET_ACCESS_KEY = 'local';
    }
    const admin = new DynamoDBClient({ endpoint: dynamoEndpoint, region: process.env.AWS_REGION });
    await ensureTable(admin, tableName);
    admin.destroy();

    const routes = await Promise.all(
      ROUTES.map(async (r) => ({ key: r.key, handler: await loadHandler(r.key) })),
    );
    const server = createHttpGateway({ routes, auth: options.auth ?? 'sigv4' });
    server.keepAliveTimeout = 65_000;
    const host = options.host ?? '127.0.0.1';
    const port = await listen(server, options.port ?? 3000, host);
    return {
      url: `http://${host}:${port}`,
      dynamoEndpoint,
      tableName,
      dynamoPid: dynamo?.pid,
      async stop() {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
        await dynamo?.stop();
        running = false;
      },
    };
  } catch (error) {
    await dynamo?.stop();
    running = false;
    throw error;
  }
}
