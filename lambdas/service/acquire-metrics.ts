/**
 * What an acquire found (metric Contention), counted once per acquire by the lock service: granted
 * at once (the lock was free, or the caller's own), queued (held: it joined the queue), or refused
 * (held, and the caller would not wait or could not queue). A retry answered with an earlier
 * attempt's outcome is not counted again. (QueueDepth is counted at each handoff: handoff.ts.)
 */
import { metric } from '../shared/metrics';
import type { AcquireResult } from './lock-service';

export function countAcquire(result: AcquireResult): void {
  if (result.kind === 'queued') {
    metric('Contention', 1, { Outcome: 'queued' });
    return;
  }
  const { outcome } = result;
  if (outcome.acquired) {
    if (!outcome.replayed) metric('Contention', 1, { Outcome: 'granted' });
  } else if (!('ended' in outcome && outcome.ended !== undefined))
    metric('Contention', 1, { Outcome: 'refused' });
}
