/**
 * Every request a function sends to DynamoDB, retries included, can be
 * observed: the command and its input. The functions pass `onDynamoCall` to
 * their DynamoDB client; nothing observes by default. Tests use it to check
 * each function's calls against the grants of its role. `onDynamoAttempt` counts them as
 * metrics (shared/metrics.ts).
 */
import { metric } from './metrics';

export type CallObserver = (command: string, input: Readonly<Record<string, unknown>>) => void;

let observer: CallObserver | undefined;

export const onDynamoCall: CallObserver = (command, input) => observer?.(command, input);

/** Observes every DynamoDB request until the returned function is called. */
export function observeDynamoCalls(fn: CallObserver): () => void {
  observer = fn;
  return () => {
    if (observer === fn) observer = undefined;
  };
}

/** Told of every DynamoDB request that succeeded (a refused condition or any error is not one). */
export type ResultObserver = (command: string, input: Readonly<Record<string, unknown>>) => void;

let resultObserver: ResultObserver | undefined;

export const onDynamoSuccess: ResultObserver = (command, input) => resultObserver?.(command, input);

/**
 * Observes every DynamoDB request that succeeded until the returned function is called: with the
 * local stack's `invocation` (which request of which function made it), what changed state.
 */
export function observeDynamoSuccesses(fn: ResultObserver): () => void {
  resultObserver = fn;
  return () => {
    if (resultObserver === fn) resultObserver = undefined;
  };
}

const THROTTLES = new Set([
  'ProvisionedThroughputExceededException',
  'ThrottlingException',
  'RequestLimitExceeded',
  'TooManyRequestsException',
]);

/** The codes of a cancelled transaction's reasons (`ConditionalCheckFailed`, `ThrottlingError`…). */
function cancellationCodes(error: { CancellationReasons?: unknown }): string[] {
  const reasons = Array.isArray(error.CancellationReasons) ? error.CancellationReasons : [];
  return reasons.map((reason: { Code?: unknown }) => (typeof reason?.Code === 'string' ? reason.Code : ''));
}

/**
 * Counts every DynamoDB request (each attempt) under the current request's operation (metrics
 * DynamoCalls, DynamoLatency, DynamoThrottles, DynamoConditionFailures): a refused condition,
 * of a single write or inside a transaction, and a throttle are counted apart.
 */
export const onDynamoAttempt = (_command: string, ms: number, error?: unknown): void => {
  metric('DynamoCalls', 1);
  metric('DynamoLatency', ms);
  if (error === undefined) return;
  const name = error instanceof Error ? error.name : '';
  const codes = name === 'TransactionCanceledException' ? cancellationCodes(error as object) : [];
  if (
    THROTTLES.has(name) ||
    codes.some((code) => code === 'ThrottlingError' || code === 'ProvisionedThroughputExceeded')
  )
    metric('DynamoThrottles', 1);
  if (name === 'ConditionalCheckFailedException' || codes.includes('ConditionalCheckFailed'))
    metric('DynamoConditionFailures', 1);
};
