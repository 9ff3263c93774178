/**
 * Pushes frames to WebSocket clients through API Gateway's management API
 * (`POST /<stage>/@connections/<id>`). The local stack serves the same
 * endpoint, so this code runs unchanged there.
 */
import {
  ApiGatewayManagementApiClient,
  PostToConnectionCommand,
} from '@aws-sdk/client-apigatewaymanagementapi';
import type { Frame } from '../core/ws-wire';
import { toStoreError } from '../store/errors';

export interface Pusher {
  /** 'gone' when the connection no longer exists: the caller undoes whatever the frame announced. */
  push(connectionId: string, frame: Frame): Promise<'sent' | 'gone'>;
}

export class ApiGatewayPusher implements Pusher {
  private readonly client: ApiGatewayManagementApiClient;

  constructor(endpoint: string) {
    this.client = new ApiGatewayManagementApiClient({ endpoint, maxAttempts: 3 });
  }

  async push(connectionId: string, frame: Frame): Promise<'sent' | 'gone'> {
    try {
      await this.client.send(
        new PostToConnectionCommand({ ConnectionId: connectionId, Data: JSON.stringify(frame) }),
        { abortSignal: AbortSignal.timeout(3_000) },
      );
      return 'sent';
    } catch (error) {
      if (error instanceof Error && error.name === 'GoneException') return 'gone';
      throw toStoreError(error);
    }
  }
}
