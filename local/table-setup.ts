/** Creates the latchkey table (and its TTL setting) in a DynamoDB endpoint, if missing. */
import {
  CreateTableCommand,
  DescribeTableCommand,
  type DynamoDBClient,
  ResourceInUseException,
  UpdateTableCommand,
  UpdateTimeToLiveCommand,
} from '@aws-sdk/client-dynamodb';
import { GC_ATTRIBUTE, tableDefinition } from '../lambdas/store/table';

export async function ensureTable(
  client: DynamoDBClient,
  tableName: string,
  options: {
    /**
     * Whether a table it creates has its stream (default true). Only a caller that runs no
     * notifier may go without: a benchmark of the services alone, where DynamoDB Local's stream
     * records would cost every write something DynamoDB's stream does not.
     */
    readonly stream?: boolean;
  } = {},
): Promise<'created' | 'existing'> {
  const { StreamSpecification, ...withoutStream } = tableDefinition(tableName);
  try {
    await client.send(
      new CreateTableCommand(
        options.stream === false ? withoutStream : { ...withoutStream, StreamSpecification },
      ),
    );
  } catch (error) {
    if (error instanceof ResourceInUseException) {
      await addMissingIndexes(client, tableName);
      return 'existing';
    }
    throw error;
  }
  await waitUntilActive(client, tableName);
  await client.send(
    new UpdateTimeToLiveCommand({
      TableName: tableName,
      TimeToLiveSpecification: { Enabled: true, AttributeName: GC_ATTRIBUTE },
    }),
  );
  return 'created';
}

async function waitUntilActive(client: DynamoDBClient, tableName: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const { Table } = await client.send(new DescribeTableCommand({ TableName: tableName }));
    const indexesReady = (Table?.GlobalSecondaryIndexes ?? []).every((i) => i.IndexStatus === 'ACTIVE');
    if (Table?.TableStatus === 'ACTIVE' && indexesReady) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A table kept by `--db-path` from an older version gets the indexes added since. */
async function addMissingIndexes(client: DynamoDBClient, tableName: string): Promise<void> {
  const { Table } = await client.send(new DescribeTableCommand({ TableName: tableName }));
  const present = new Set((Table?.GlobalSecondaryIndexes ?? []).map((i) => i.IndexName));
  const wanted = tableDefinition(tableName);
  for (const index of wanted.GlobalSecondaryIndexes.filter((i) => !present.has(i.IndexName))) {
    await client.send(
      new UpdateTableCommand({
        TableName: tableName,
        AttributeDefinitions: wanted.AttributeDefinitions,
        GlobalSecondaryIndexUpdates: [{ Create: index }],
      }),
    );
    await waitUntilActive(client, tableName);
  }
}
