/** Every item a Query matches, following its pages; failures become typed store errors. */
import { type DynamoDBDocumentClient, QueryCommand, type QueryCommandInput } from '@aws-sdk/lib-dynamodb';
import { toStoreError } from './errors';
import { DEFAULT_DEADLINE_MS, type StoreSettings } from './lock-requests';

export async function queryAll(
  db: DynamoDBDocumentClient,
  settings: StoreSettings,
  input: Omit<QueryCommandInput, 'TableName' | 'ExclusiveStartKey'>,
): Promise<Record<string, unknown>[]> {
  const items: Record<string, unknown>[] = [];
  const abortSignal = AbortSignal.timeout(settings.deadlineMs ?? DEFAULT_DEADLINE_MS);
  let startKey: Record<string, unknown> | undefined;
  do {
    try {
      const page = await db.send(
        new QueryCommand({ ...input, TableName: settings.tableName, ExclusiveStartKey: startKey }),
        { abortSignal },
      );
      items.push(...(page.Items ?? []));
      startKey = page.LastEvaluatedKey;
    } catch (error) {
      throw toStoreError(error);
    }
  } while (startKey);
  return items;
}
