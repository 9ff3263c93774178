/** Per-file tables in the shared DynamoDB Local, services wired to them, and clients that count calls. */
import { randomUUID } from 'node:crypto';
import { DeleteTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { inject } from 'vitest';
import { lease } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { enqueueSteps } from '../../lambdas/core/queue';
import { DEFAULT_LIMITS } from '../../lambdas/core/wire';
import { newWaiter } from '../../lambdas/service/lock-service';
import { ensureTable } from '../../local/table-setup';
import { manualClock, type ServicesOptions, servicesOn } from './services';

export const dynamoEndpoint = (): string => inject('dynamoEndpoint');

process.env.AWS_REGION ??= 'us-east-1';
process.env.AWS_ACCESS_KEY_ID ??= 'local';
process.env.AWS_SECRET_ACCESS_KEY ??= 'local';

export async function createTestTable(): Promise<{ tableName: string; drop: () => Promise<void> }> {
  const tableName = `test-${randomUUID()}`;
  const admin = new DynamoDBClient({ endpoint: dynamoEndpoint() });
  await ensureTable(admin, tableName);
  return {
    tableName,
    drop: async () => {
      await admin.send(new DeleteTableCommand({ TableName: tableName }));
      admin.destroy();
    },
  };
}

/** Counts DynamoDB HTTP requests by command name (retries included). */
export class CallCounter {
  readonly calls: string[] = [];
  record = (command: string) => {
    this.calls.push(command);
  };
  reset() {
    this.calls.length = 0;
  }
  get total() {
    return this.calls.length;
  }
}

/** The services on the run's DynamoDB Local (or `endpoint`: a proxy in front of it, say). */
export const testServices = (
  tableName: string,
  options: Omit<ServicesOptions, 'endpoint'> & { readonly endpoint?: string } = {},
) => servicesOn(tableName, { ...options, endpoint: options.endpoint ?? dynamoEndpoint() });

export { manualClock };

/**
 * Queues a WebSocket waiter whose connection has vanished without a $disconnect (API Gateway does
 * not promise one): the next handoff's push finds it gone. Written straight to the table.
 */
export async function queueVanishedWaiter(tableName: string, lock: string, now = Date.now()): Promise<void> {
  const { storage } = testServices(tableName);
  const ghost = newWaiter(
    {
      name: lock,
      owner: localPrincipal('ghost'),
      clientId: 'ghost',
      tenure: lease(10_000),
      requestId: `g-${randomUUID()}`,
    },
    { waitMs: 20_000, connectionId: 'vanished=' },
    now,
  );
  const queued = await storage.transact(enqueueSteps(ghost, now, DEFAULT_LIMITS));
  if (!queued.ok) throw new Error(`could not queue the vanished waiter on ${lock}`);
}

/**
 * Leaves `lock` as a join that raced its lease's lapse leaves it: a lease that has ended (written as
 * if 10 s ago) with a waiter queued behind it, and no request serving it. Only the stream notifier
 * (or the sweeper) will.
 */
export async function queueBehindLapsedLease(tableName: string, lock: string): Promise<void> {
  const past = Date.now() - 10_000;
  const { acquire } = testServices(tableName, { clock: manualClock(() => past) });
  const held = await acquire({
    name: lock,
    owner: localPrincipal('lapsed'),
    clientId: 'lapsed',
    tenure: lease(1_000),
  });
  if (!held.acquired) throw new Error(`could not take ${lock} for the lapsed lease`);
  await queueVanishedWaiter(tableName, lock, past + 500);
}
