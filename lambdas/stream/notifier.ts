/**
 * The DynamoDB stream notifier (see service/notifier.ts). A failure throws,
 * so Lambda retries the batch (bisecting it) and finally sends it to the
 * on-failure queue.
 */
import { notifierOf } from '../service/services';
import type { StreamRecord } from '../service/stream-changes';
import { getDeps } from '../shared/deps';
import { instrumented, okOutcome } from '../shared/metrics';
import { internalContext, withRequestContext } from '../shared/request-context';

export async function handler(event: { Records: readonly StreamRecord[] }): Promise<void> {
  // One context per batch, named by its first record's event id.
  const id = (event.Records[0] as { eventID?: string } | undefined)?.eventID;
  await withRequestContext(internalContext('notify', id), () =>
    instrumented(() => notifierOf(getDeps()).handle(event.Records), okOutcome),
  );
}
