/**
 * The WebSocket API's messages (client to server) and frames (server to
 * client). Every message gets an answer: a frame of its own type, or an
 * `error` frame with a code. Shared by the handlers and (later) the SDK.
 */
import { z } from 'zod';
import type { LatchkeyError } from './errors';
import type { AcquireOutcome, Grant } from './lock';
import {
  clientId,
  holderSummary,
  isoTime,
  type Limits,
  lockName,
  MAX_WAIT_MS,
  priority,
  requestId,
  SESSION_TTL_MESSAGE,
  sessionId,
  tenureView,
  ttlMs,
  waitTimeoutMs,
} from './wire';

/** API Gateway's WebSocket frame limit is 128 KiB; latchkey's messages are tiny. */
export const MAX_MESSAGE_BYTES = 16 * 1024;
/** A WebSocket acquire may wait this long (API Gateway closes a connection after 2 hours). */
export const MAX_WS_WAIT_MS = MAX_WAIT_MS;

export const connectQuery = z.strictObject({ client_id: clientId });

export const wsMessage = (limits: Limits) =>
  z.discriminatedUnion(
    'action',
    [
      z
        .strictObject({
          action: z.literal('acquire'),
          lock: lockName,
          /** Required, except for a lock tied to a session or to this connection. */
          ttl_ms: ttlMs(limits).optional(),
          wait_timeout_ms: waitTimeoutMs(MAX_WS_WAIT_MS, '').optional(),
          priority: priority.optional(),
          request_id: requestId.optional(),
          mode: z
            .literal('exclusive', "mode must be 'exclusive' (shared locks are not available yet)")
            .optional(),
          /** Tie the lock to a session (POST /api/v1/sessions), or (`ephemeral`) to this connection. */
          session_id: sessionId.optional(),
          ephemeral: z.boolean().optional(),
        })
        .refine((m) => !(m.ephemeral && m.session_id !== undefined), {
          message: 'give session_id or ephemeral, not both',
          path: ['ephemeral'],
        })
        .refine((m) => m.ttl_ms !== undefined || m.ephemeral || m.session_id !== undefined, {
          message: 'ttl_ms is required (unless session_id or ephemeral is given)',
          path: ['ttl_ms'],
        })
        .refine((m) => m.ttl_ms === undefined || !(m.ephemeral || m.session_id !== undefined), {
          message: SESSION_TTL_MESSAGE,
          path: ['ttl_ms'],
        }),
      z.strictObject({ action: z.literal('cancel'), lock: lockName, request_id: requestId.optional() }),
      z.strictObject({ action: z.literal('ping'), request_id: requestId.optional() }),
    ],
    { error: "action must be 'acquire', 'cancel' or 'ping'" },
  );

export type WsMessage = z.infer<ReturnType<typeof wsMessage>>;

export const queuedFrame = (lock: string, request: string, position: number, deadline: number) => ({
  type: 'queued' as const,
  lock,
  request_id: request,
  position,
  wait_until: isoTime(deadline),
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
});

export const timeoutFrame = (lock: string, request: string) => ({
  type: 'timeout' as const,
  lock,
  request_id: request,
});

/** A try (wait_timeout_ms 0) that found the lock taken. */
export const busyFrame = (outcome: Extract<AcquireOutcome, { acquired: false }>, request: string) => ({
  type: 'busy' as const,
  lock: outcome.lock,
  request_id: request,
  holder: holderSummary(outcome.holder),
  queued: outcome.queued,
  retry_after_ms: outcome.retryAfterMs,
});

export const cancelledFrame = (lock: string, removed: number, request?: string) => ({
  type: 'cancelled' as const,
  lock,
  removed,
  ...(request === undefined ? {} : { request_id: request }),
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

export type Frame =
  | ReturnType<typeof queuedFrame>
  | ReturnType<typeof grantedFrame>
  | ReturnType<typeof timeoutFrame>
  | ReturnType<typeof busyFrame>
  | ReturnType<typeof cancelledFrame>
  | ReturnType<typeof pongFrame>
  | ReturnType<typeof errorFrame>;
