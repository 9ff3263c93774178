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
