/**
 * Plays the DynamoDB stream event source on localhost: reads DynamoDB
 * Local's stream for the table and calls the notifier with Lambda-shaped
 * batches, shard by shard in order. A failing batch is retried (up to 3
 * times, as the CDK event source is configured to), then skipped with a log
 * line, where AWS would send it to the on-failure queue.
 */
import { DescribeTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  type _Record,
  DescribeStreamCommand,
  DynamoDBStreamsClient,
  GetRecordsCommand,
  GetShardIteratorCommand,
} from '@aws-sdk/client-dynamodb-streams';
import type { StreamRecord } from '../lambdas/service/stream-changes';
import { describeError, log } from '../lambdas/shared/log';
import { lambdaContext } from './handlers';

type Notifier = (
  event: { Records: StreamRecord[] },
  context: ReturnType<typeof lambdaContext>,
) => Promise<void>;

export interface StreamPoller {
  stop(): Promise<void>;
}

const POLL_MS = 20;
const DISCOVER_MS = 1_000;
const RETRIES = 3;

/** The record as Lambda delivers it: same attribute-value JSON, creation time in epoch seconds. */
function toLambdaRecord(r: _Record, streamArn: string) {
  const created = r.dynamodb?.ApproximateCreationDateTime;
  return {
    ...r,
    eventSourceARN: streamArn,
    dynamodb: {
      ...r.dynamodb,
      ApproximateCreationDateTime: created instanceof Date ? created.getTime() / 1000 : created,
    },
  } as StreamRecord;
}

export async function startStreamPoller(options: {
  endpoint: string;
  tableName: string;
  notifier: Notifier;
}): Promise<StreamPoller> {
  const db = new DynamoDBClient({ endpoint: options.endpoint });
  const streams = new DynamoDBStreamsClient({ endpoint: options.endpoint });
  const { Table } = await db.send(new DescribeTableCommand({ TableName: options.tableName }));
  const streamArn = Table?.LatestStreamArn;
  if (!streamArn) throw new Error(`table ${options.tableName} has no stream`);
  const iterators = new Map<string, string | undefined>();
  let stopped = false;
  let first = true;

  async function discover(): Promise<void> {
    const { StreamDescription } = await streams.send(new DescribeStreamCommand({ StreamArn: streamArn }));
    for (const shard of StreamDescription?.Shards ?? []) {
      const id = shard.ShardId as string;
      if (iterators.has(id)) continue;
      // Shards open at start are read from now on; shards born later from their beginning.
      const type = first ? 'LATEST' : 'TRIM_HORIZON';
      const out = await streams.send(
        new GetShardIteratorCommand({ StreamArn: streamArn, ShardId: id, ShardIteratorType: type }),
      );
      iterators.set(id, out.ShardIterator);
    }
    first = false;
  }

  async function deliver(records: _Record[]): Promise<void> {
    const event = { Records: records.map((r) => toLambdaRecord(r, streamArn as string)) };
    for (let attempt = 1; attempt <= RETRIES + 1; attempt++) {
      try {
        return await options.notifier(event, lambdaContext('stream'));
      } catch (error) {
        if (stopped) return;
        log('error', `local stream: notifier failed (attempt ${attempt})`, describeError(error));
      }
    }
    log('error', 'local stream: batch skipped after retries', { records: records.length });
  }

  async function pollShard(id: string, iterator: string): Promise<void> {
    const out = await streams.send(new GetRecordsCommand({ ShardIterator: iterator, Limit: 100 }));
    if (out.Records?.length) await deliver(out.Records);
    iterators.set(id, out.NextShardIterator ?? undefined);
  }

  await discover();
  let lastDiscovery = Date.now();
  const loop = (async () => {
    while (!stopped) {
      try {
        if (Date.now() - lastDiscovery > DISCOVER_MS) {
          await discover();
          lastDiscovery = Date.now();
        }
        await Promise.all(
          [...iterators].flatMap(([id, it]) => (it === undefined ? [] : [pollShard(id, it)])),
        );
      } catch (error) {
        if (!stopped) log('warn', 'local stream: poll failed', describeError(error));
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  })();

  return {
    async stop() {
      stopped = true;
      await loop;
      db.destroy();
      streams.destroy();
    },
  };
}
