/**
 * A Pusher that counts each push by outcome (metric Pushes): `delivered` (API Gateway took the
 * frame), `gone` (the connection does not exist, and nothing was delivered), `unknown` (it may
 * have been delivered; see service/push.ts).
 */
import { metric } from '../shared/metrics';
import type { Pusher, PushOutcome } from './push';

const OUTCOMES: Record<PushOutcome, string> = { sent: 'delivered', gone: 'gone', unknown: 'unknown' };

export function countedPusher(pusher: Pusher): Pusher {
  return {
    async push(connectionId, frame) {
      const outcome = await pusher.push(connectionId, frame);
      metric('Pushes', 1, { Outcome: OUTCOMES[outcome] });
      return outcome;
    },
  };
}
