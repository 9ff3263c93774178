/**
 * Configuration from the environment, validated once at cold start.
 * A bad value stops the function with a message naming the variable.
 */

import * as z from 'zod/mini';
import { lockPrefixProblem } from '../../sdk/names';
import { parsePrefixes, prefixesProblem } from '../core/hierarchy';
import { PRIORITY } from '../core/queue';
import '../core/zod-messages';
import { DEFAULT_LIMITS, retentionProblem, type ServiceLimits } from '../core/wire';
import type { StoreSettings } from '../store/requests';

/** A whole number from the environment's text, `fallback` where unset. */
const intFrom = (fallback: number, ...checks: z.core.$ZodCheck<number>[]) =>
  z._default(z.pipe(z.coerce.number(), z.int().check(...checks)), fallback);
const positiveInt = (fallback: number) => intFrom(fallback, z.positive());

const environment = z
  .object({
    TABLE_NAME: z.string().check(z.regex(/^[A-Za-z0-9_.-]{3,255}$/, 'must be a DynamoDB table name')),
    LOCK_MIN_TTL_MS: positiveInt(DEFAULT_LIMITS.minTtlMs),
    LOCK_MAX_TTL_MS: positiveInt(DEFAULT_LIMITS.maxTtlMs),
    LOCK_RETENTION_SECONDS: positiveInt(86_400),
    LOCK_MIN_PRIORITY: intFrom(PRIORITY.min, z.minimum(PRIORITY.min), z.maximum(PRIORITY.max)),
    LOCK_MAX_PRIORITY: intFrom(PRIORITY.max, z.minimum(PRIORITY.min), z.maximum(PRIORITY.max)),
    MAX_QUEUE_LENGTH: positiveInt(DEFAULT_LIMITS.maxQueueLength),
    MAX_WAITERS_PER_CONNECTION: positiveInt(DEFAULT_LIMITS.maxWaitersPerConnection),
    MAX_WAITERS_PER_PRINCIPAL: positiveInt(DEFAULT_LIMITS.maxWaitersPerPrincipal),
    /** 0: no HTTP waits at all (every wait goes over the WebSocket API). */
    MAX_HTTP_WAITS: intFrom(DEFAULT_LIMITS.maxHttpWaits, z.minimum(0)),
    AWS_ENDPOINT_URL_DYNAMODB: z.optional(z.url()),
    /** The WebSocket API's management endpoint (https://{api}.execute-api.{region}.amazonaws.com/{stage}). */
    WS_MANAGEMENT_ENDPOINT: z.optional(z.url()),
    /**
     * The WebSocket API's URL (wss://{api}.execute-api.{region}.amazonaws.com/{stage}) for the relay
     * of a function that waits for HTTP waiters (service/relay.ts); unset: HTTP waits only poll.
     */
    WS_RELAY_URL: z.optional(z.url()),
    /** The SQS queue that carries expiry timers. */
    TIMER_QUEUE_URL: z.optional(z.url()),
    /** Comma-separated namespaces where lock names form a hierarchy (core/hierarchy.ts), each ending with '/'. */
    HIERARCHICAL_PREFIXES: z
      .pipe(
        z._default(z.string(), ''),
        z.transform((text: string) => parsePrefixes(text)),
      )
      .check(
        z.superRefine((prefixes, ctx) => {
          const problem = prefixesProblem(prefixes, lockPrefixProblem);
          if (problem) ctx.addIssue({ code: 'custom', message: problem });
        }),
      ),
  })
  .check(
    z.refine((env) => env.LOCK_MIN_TTL_MS <= env.LOCK_MAX_TTL_MS, {
      message: 'LOCK_MIN_TTL_MS must not exceed LOCK_MAX_TTL_MS',
    }),
    z.refine((env) => env.LOCK_MIN_PRIORITY <= 0 && env.LOCK_MAX_PRIORITY >= 0, {
      message:
        'LOCK_MIN_PRIORITY..LOCK_MAX_PRIORITY must include 0 (the priority of a request that names none)',
    }),
    z.superRefine((env, ctx) => {
      const problem = retentionProblem(env.LOCK_RETENTION_SECONDS, env.LOCK_MAX_TTL_MS);
      if (problem) ctx.addIssue({ code: 'custom', path: ['LOCK_RETENTION_SECONDS'], message: problem });
    }),
  );

export interface Config {
  readonly limits: ServiceLimits;
  readonly store: StoreSettings;
  readonly dynamoEndpoint: string | undefined;
  readonly wsManagementEndpoint: string | undefined;
  readonly wsRelayUrl: string | undefined;
  readonly timerQueueUrl: string | undefined;
  /** The namespaces where lock names form a hierarchy; empty: none. */
  readonly hierarchicalPrefixes: readonly string[];
}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const parsed = environment.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || 'environment'}: ${i.message}`);
    throw new Error(`latchkey configuration is invalid: ${problems.join('; ')}`);
  }
  const e = parsed.data;
  return {
    limits: {
      minTtlMs: e.LOCK_MIN_TTL_MS,
      maxTtlMs: e.LOCK_MAX_TTL_MS,
      minPriority: e.LOCK_MIN_PRIORITY,
      maxPriority: e.LOCK_MAX_PRIORITY,
      maxQueueLength: e.MAX_QUEUE_LENGTH,
      maxWaitersPerConnection: e.MAX_WAITERS_PER_CONNECTION,
      maxWaitersPerPrincipal: e.MAX_WAITERS_PER_PRINCIPAL,
      maxHttpWaits: e.MAX_HTTP_WAITS,
    },
    store: { tableName: e.TABLE_NAME, retentionSeconds: e.LOCK_RETENTION_SECONDS },
    dynamoEndpoint: e.AWS_ENDPOINT_URL_DYNAMODB,
    wsManagementEndpoint: e.WS_MANAGEMENT_ENDPOINT,
    wsRelayUrl: e.WS_RELAY_URL,
    timerQueueUrl: e.TIMER_QUEUE_URL,
    hierarchicalPrefixes: e.HIERARCHICAL_PREFIXES,
  };
}
