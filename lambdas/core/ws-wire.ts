/**
 * The WebSocket API's messages (client to server) and frames (server to
 * client). Every message gets an answer: a frame of its own type, or an
 * `error` frame with a code. Shared by the handlers and (later) the SDK.
 */

import * as z from 'zod/mini';
import type { LatchkeyError } from './errors';
import type { Grant } from './lock';
import './zod-messages';
import { clientId, requestId, tenureView } from './wire';

/** API Gateway's WebSocket frame limit is 128 KiB; latchkey's messages are tiny. */
export const MAX_MESSAGE_BYTES = 16 * 1024;

export const connectQuery = z.strictObject({ client_id: clientId });

/**
 * What a client may say over the connection. A wait is not one of them: the
 * WebSocket only delivers grants. A wait is asked for over HTTP
 * (`POST /api/v1/locks/{name}/acquire` with `connection_id`), where IAM
 * authorizes the lock name; `hello` tells the client its connection id.
 */
export const wsMessage = z.discriminatedUnion(
  'action',
  [
    z.strictObject({ action: z.literal('hello'), request_id: z.optional(requestId) }),
    z.strictObject({ action: z.literal('ping'), request_id: z.optional(requestId) }),
  ],
  {
    // For an unknown discriminator, zod hands over the whole message as `input`.
    error: (issue) => {
      const action = (issue.input as { action?: unknown } | undefined)?.action;
      return action === 'acquire' || action === 'cancel'
        ? `'${action}' moved to HTTP, where IAM authorizes the lock name: POST /api/v1/locks/{name}/${action} with "connection_id" (ask for it with {"action":"hello"})`
        : "action must be 'hello' or 'ping'";
    },
  },
);

export type WsMessage = z.infer<typeof wsMessage>;

/** The answer to `hello`: the id to name in HTTP acquires whose grant is to be pushed here. */
export const welcomeFrame = (connectionId: string, clientId: string, request?: string) => ({
  type: 'welcome' as const,
  connection_id: connectionId,
  client_id: clientId,
  ...(request === undefined ? {} : { request_id: request }),
});

/** A grant, pushed or answered at once. `remaining_ms` is the lease left when the frame was built. */
export const grantedFrame = (grant: Grant, request: string, now: number) => ({
  type: 'granted' as const,
  lock: grant.lock,
  request_id: request,
  client_id: grant.clientId,
  fencing_token: grant.fencingToken,
  ...tenureView(grant.held, now),
  mode: grant.mode,
  ...(grant.maxHolders === undefined ? {} : { max_holders: grant.maxHolders }),
});

export const timeoutFrame = (lock: string, request: string) => ({
  type: 'timeout' as const,
  lock,
  request_id: request,
});

export const pongFrame = (request?: string) => ({
  type: 'pong' as const,
  ...(request === undefined ? {} : { request_id: request }),
});

export const errorFrame = (error: LatchkeyError, request?: string) => ({
  type: 'error' as const,
  ...(request === undefined ? {} : { request_id: request }),
  ...error.toBody(),
});

/**
 * Wakes the HTTP wait queued at `order` on `lock` (service/relay.ts): pushed to its function's
 * relay by whoever granted or ended it, after that write. A ring after a grant carries it, as the
 * write made it, for the request it was made for; the wait answers with it and reads nothing.
 */
export const ringFrame = (lock: string, order: string, granted?: RungGrant) => ({
  type: 'ring' as const,
  lock,
  order,
  ...(granted === undefined
    ? {}
    : {
        request_id: granted.requestId,
        grant: granted.grant,
        ...(granted.slotFreed ? { frees_slot: true } : {}),
      }),
});

/** The grant a ring carries, and the request it was made for. */
export interface RungGrant {
  readonly requestId: string;
  readonly grant: Grant;
  /** Whether the granter frees the waiting function's HTTP-wait slot (right after this ring). */
  readonly slotFreed: boolean;
}

const positiveInt = () => z.int().check(z.positive());

const ringedHeld = z.union([
  z.object({ kind: z.literal('lease'), ttlMs: positiveInt(), expiresAt: z.number() }),
  z.object({ kind: z.literal('session'), sessionId: z.string() }),
]);

const ringedGrant = z.object({
  lock: z.string(),
  owner: z.string(),
  clientId: z.string(),
  fencingToken: positiveInt(),
  held: ringedHeld,
  mode: z.enum(['exclusive', 'shared']),
  acquiredAt: z.number(),
  reentry: positiveInt(),
  maxHolders: z.optional(positiveInt()),
});

/** The grant a ring frame carries, if it carries a well-formed one for its own lock; else undefined. */
export function rungGrantOf(frame: {
  lock?: unknown;
  request_id?: unknown;
  grant?: unknown;
  frees_slot?: unknown;
}): RungGrant | undefined {
  if (typeof frame.request_id !== 'string' || frame.grant === undefined) return undefined;
  const grant = ringedGrant.safeParse(frame.grant);
  if (!grant.success || grant.data.lock !== frame.lock) return undefined;
  return { requestId: frame.request_id, grant: grant.data as Grant, slotFreed: frame.frees_slot === true };
}

export type Frame =
  | ReturnType<typeof ringFrame>
  | ReturnType<typeof grantedFrame>
  | ReturnType<typeof timeoutFrame>
  | ReturnType<typeof pongFrame>
  | ReturnType<typeof welcomeFrame>
  | ReturnType<typeof errorFrame>;
