/**
 * The peer the waiting bench measures latchkey against, in the same run: the fastest DynamoDB
 * lock of issue 14's table, dynamodb-lock-client's `FailClosed` with a 50 ms acquire period.
 * Its calls are replayed here as the package (0.7.3, index.js) makes them, not imported: the
 * package needs the AWS SDK v2 as a peer dependency, which this project does not carry.
 *   - acquire: PutItem {id, owner, guid: 64 random bytes} if attribute_not_exists(id); when that
 *     is refused, the same PutItem again every 50 ms;
 *   - release: DeleteItem if attribute_exists(id) and guid = the holder's.
 * What it does not do, and latchkey does: no fencing token, no lease (a crashed holder's lock
 * never frees), no queue (whoever polls first after a release wins), no wait deadline.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { CreateTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, DynamoDBDocumentClient, PutCommand } from '@aws-sdk/lib-dynamodb';
import { measurementWindow, sleep } from './common';
import {
  type ContendedGrant,
  type ContentionStats,
  contentionStats,
  fmt,
  runTable,
} from './contention-stats';
import type { Counts } from './waiting';

const ACQUIRE_PERIOD_MS = 50;
const WARM_UP_MS = 2_000;

export const pollingPeerName = 'peer: conditional PutItem polled every 50 ms';

export async function pollingPeer(
  proxy: { url: string; take(): Counts },
  options: { readonly workers: number; readonly holdMs: number; readonly seconds: number },
): Promise<{ lines: string[]; stats: ContentionStats }> {
  // Region and credentials come from the environment common.ts sets, as in the other sections.
  const client = (endpoint: string) => new DynamoDBClient({ endpoint });
  const tableName = `bench-peer-${randomUUID()}`;
  const admin = client(proxy.url);
  await admin.send(
    new CreateTableCommand({
      TableName: tableName,
      KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
      AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'S' }],
      BillingMode: 'PAY_PER_REQUEST',
    }),
  );
  admin.destroy();

  const lock = 'bench/peer';
  const grants: ContendedGrant[] = [];
  const releaseSent = new Map<number, number>();
  const problems = new Map<string, number>();
  const bump = (key: string) => problems.set(key, (problems.get(key) ?? 0) + 1);
  let counts: Counts | undefined;
  let order = 0;
  const window = measurementWindow(
    WARM_UP_MS,
    options.seconds,
    () => proxy.take(),
    () => {
      counts = proxy.take();
    },
  );
  const { deadline } = window;

  // One DynamoDB client per worker, as separate processes would have.
  const clients = Array.from({ length: options.workers }, () =>
    DynamoDBDocumentClient.from(client(proxy.url)),
  );
  await Promise.all(
    clients.map(async (dynamo, worker) => {
      const owner = `w${worker}`;
      while (performance.now() < deadline) {
        const sentAt = performance.now();
        const guid = randomBytes(64);
        let held = false;
        while (!held && performance.now() < deadline) {
          try {
            await dynamo.send(
              new PutCommand({
                TableName: tableName,
                Item: { id: lock, owner, guid },
                ConditionExpression: 'attribute_not_exists(#partitionKey)',
                ExpressionAttributeNames: { '#partitionKey': 'id' },
              }),
            );
            held = true;
          } catch (error) {
            if ((error as Error).name !== 'ConditionalCheckFailedException') bump((error as Error).name);
            await sleep(ACQUIRE_PERIOD_MS);
          }
        }
        if (!held) break;
        const at = performance.now();
        const mine = ++order;
        grants.push({ worker, order: mine, at, waitMs: at - sentAt });
        await sleep(options.holdMs);
        releaseSent.set(mine, performance.now());
        await dynamo
          .send(
            new DeleteCommand({
              TableName: tableName,
              Key: { id: lock },
              ConditionExpression: 'attribute_exists(#partitionKey) and guid = :guid',
              ExpressionAttributeNames: { '#partitionKey': 'id' },
              ExpressionAttributeValues: { ':guid': guid },
            }),
          )
          .catch((error: unknown) => bump(`release ${(error as Error).name}`));
      }
    }),
  );
  window.stop();
  for (const dynamo of clients) dynamo.destroy();

  const stats = contentionStats({
    grants,
    releaseSent,
    window,
    counts: counts ?? proxy.take(),
    workers: options.workers,
  });
  const lines = runTable(
    `${pollingPeerName} (dynamodb-lock-client FailClosed's calls)`,
    { ...options, warmUpMs: WARM_UP_MS },
    stats,
    [
      ['failed conditional writes per grant', fmt(stats.failedWritesPerGrant, 2)],
      ['wait longest ms', fmt(stats.waits.at(-1) ?? Number.NaN)],
      [
        'client-side problems',
        problems.size ? [...problems].map(([k, v]) => `${k}: ${v}`).join(', ') : 'none',
      ],
    ],
  );
  return { lines, stats };
}
