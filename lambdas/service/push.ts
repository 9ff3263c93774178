/**
 * Pushes frames to WebSocket clients through API Gateway's management API
 * (`POST /<stage>/@connections/<id>`). The local stack serves the same
 * endpoint, so this code runs unchanged there.
 *
 * A push has three outcomes. `sent`: API Gateway took the frame. `gone`:
 * API Gateway said the connection does not exist on an attempt before
 * which no attempt could have delivered it. `unknown`: anything else (an
 * attempt timed out or failed after reaching API Gateway, then perhaps a
 * retry found the connection gone): the frame may have been delivered, so
 * whoever pushed a grant must treat it as delivered and never take it back.
 */
import {
  ApiGatewayManagementApiClient,
  PostToConnectionCommand,
} from '@aws-sdk/client-apigatewaymanagementapi';
import type { Frame } from '../core/ws-wire';
import { traced } from '../shared/tracing';

export type PushOutcome = 'sent' | 'gone' | 'unknown';

export interface Pusher {
  push(connectionId: string, frame: Frame): Promise<PushOutcome>;
}

/** Failures that prove the frame was not taken: API Gateway refused it before delivering anything. */
const NOT_DELIVERED = new Set(['LimitExceededException', 'ThrottlingException', 'ForbiddenException']);
const ATTEMPTS = 3;
/** A ring (service/relay.ts) is a hint its waiter does without: one attempt, and a short wait for it. */
const RING = { attempts: 1, timeoutMs: 1_000 };

export class ApiGatewayPusher implements Pusher {
  private readonly client: ApiGatewayManagementApiClient;

  constructor(endpoint: string) {
    // One attempt per send: the retries below know which attempts may have delivered.
    this.client = traced(new ApiGatewayManagementApiClient({ endpoint, maxAttempts: 1 }));
  }

  async push(connectionId: string, frame: Frame): Promise<PushOutcome> {
    const data = JSON.stringify(frame);
    const { attempts, timeoutMs } = frame.type === 'ring' ? RING : { attempts: ATTEMPTS, timeoutMs: 3_000 };
    let maybeDelivered = false;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      try {
        await this.client.send(new PostToConnectionCommand({ ConnectionId: connectionId, Data: data }), {
          abortSignal: AbortSignal.timeout(timeoutMs),
        });
        return 'sent';
      } catch (error) {
        const name = error instanceof Error ? error.name : '';
        if (name === 'GoneException') return maybeDelivered ? 'unknown' : 'gone';
        if (!NOT_DELIVERED.has(name)) maybeDelivered = true;
        if (attempt < attempts) await new Promise((resolve) => setTimeout(resolve, 25 * 2 ** attempt));
      }
    }
    return 'unknown';
  }
}
