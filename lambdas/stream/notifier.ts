/**
 * The DynamoDB stream notifier (see service/notifier.ts). A failure throws,
 * so Lambda retries the batch (bisecting it) and finally sends it to the
 * on-failure queue.
 */
import type { StreamRecord } from '../service/stream-changes';
import { getDeps } from '../shared/deps';

export async function handler(event: { Records: readonly StreamRecord[] }): Promise<void> {
  await getDeps().notifier.handle(event.Records);
}
