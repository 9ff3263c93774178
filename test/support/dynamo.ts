/** Per-file tables in the shared DynamoDB Local, and clients that count calls. */
import { randomUUID } from 'node:crypto';
import { DeleteTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { inject } from 'vitest';
import { createDocumentClient } from '../../lambdas/store/document-client';
import type { StoreSettings } from '../../lambdas/store/lock-requests';
import { LockStore } from '../../lambdas/store/lock-store';
import { ensureTable } from '../../local/table-setup';

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

export function testStore(tableName: string, options: { clock?: () => number; counter?: CallCounter } = {}) {
  const settings: StoreSettings = { tableName, retentionSeconds: 86_400 };
  const db = createDocumentClient({
    endpoint: dynamoEndpoint(),
    ...(options.counter ? { onCall: options.counter.record } : {}),
  });
  return { db, settings, store: new LockStore(db, settings, options.clock) };
}
