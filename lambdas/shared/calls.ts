/**
 * Every request a function sends to DynamoDB, retries included, can be
 * observed: the command and its input. The functions pass `onDynamoCall` to
 * their DynamoDB client; nothing observes by default. Tests use it to check
 * each function's calls against the grants of its role.
 */
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
