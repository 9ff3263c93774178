/** The HTTP API's lock routes, as the SDK's HTTP calls and its WebSocket waiter both use them. */
import type { Answer, SignedTransport } from './transport';

/** A lock's route for `action` (acquire, release, renew, cancel, waits). */
export const lockPath = (name: string, action: string) => `/api/v1/locks/${name}/${action}`;

/**
 * Cancels waiting request `requestId` of `clientId` (asked from `connectionId`, if over a
 * WebSocket), quietly and with a few quick tries: nobody asked for it but a wait given up. The
 * service answers with the grant instead if one came first.
 */
export const cancelRequest = (
  transport: SignedTransport,
  lock: string,
  request: {
    readonly clientId: string;
    readonly requestId: string;
    readonly connectionId?: string | undefined;
  },
): Promise<Answer> =>
  transport.send(
    'POST',
    lockPath(lock, 'cancel'),
    {
      client_id: request.clientId,
      request_id: request.requestId,
      ...(request.connectionId ? { connection_id: request.connectionId } : {}),
    },
    { attempts: 3, timeoutMs: 5_000, quiet: true },
  );
