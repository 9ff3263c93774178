/**
 * The DynamoDB document client every handler and the local stack use:
 * bounded timeouts so an outage becomes a typed 503 quickly instead of a
 * Lambda timeout, and an optional per-request hook that counts calls.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { traced } from '../shared/tracing';

export interface DocumentClientOptions {
  readonly region?: string;
  /** Overrides AWS_ENDPOINT_URL_DYNAMODB (tests, the local stack). */
  readonly endpoint?: string;
  readonly maxAttempts?: number;
  /** Called once per HTTP request sent to DynamoDB, retries included, with the command and its input. */
  readonly onCall?: (commandName: string, input: Readonly<Record<string, unknown>>) => void;
  /** Called once per request DynamoDB answered with success (the command and its input). */
  readonly onSuccess?: (commandName: string, input: Readonly<Record<string, unknown>>) => void;
  /**
   * Called once per HTTP request sent to DynamoDB, retries included, when it is answered: how long
   * it took and, if it failed, the error (a refused condition, a throttle, a timeout…).
   */
  readonly onAttempt?: (commandName: string, ms: number, error?: unknown) => void;
}

export function createDocumentClient(options: DocumentClientOptions = {}): DynamoDBDocumentClient {
  // Traced (X-Ray subsegments) only where the stack turned tracing on.
  const client = traced(
    new DynamoDBClient({
      ...(options.region ? { region: options.region } : {}),
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      maxAttempts: options.maxAttempts ?? 3,
      // The handler's options, not a NodeHttpHandler: the SDK makes its own (in Lambda, the
      // runtime's SDK: lib/bundling.ts), and nothing of @smithy/* is imported or bundled here.
      // throwOnRequestTimeout: a request past its timeout fails (and is retried) rather than only
      // logging a warning, as newer SDKs otherwise do.
      requestHandler: { connectionTimeout: 1_000, requestTimeout: 3_000, throwOnRequestTimeout: true },
    }),
  );
  const onCall = options.onCall;
  if (onCall) {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        onCall(context.commandName ?? 'unknown', (args.input ?? {}) as Record<string, unknown>);
        return next(args);
      },
      // The deserialize step runs once per attempt, inside the retry loop.
      { step: 'deserialize', name: 'latchkeyCallCounter', override: true },
    );
  }
  const onAttempt = options.onAttempt;
  if (onAttempt) {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const started = performance.now();
        const command = context.commandName ?? 'unknown';
        try {
          const output = await next(args);
          onAttempt(command, performance.now() - started);
          return output;
        } catch (error) {
          onAttempt(command, performance.now() - started, error);
          throw error;
        }
      },
      // Once per attempt (inside the retry loop), and before the deserializer (priority high), so
      // that it sees the error DynamoDB's answer becomes.
      { step: 'deserialize', priority: 'high', name: 'latchkeyAttemptObserver', override: true },
    );
  }
  const onSuccess = options.onSuccess;
  if (onSuccess) {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const output = await next(args);
        onSuccess(context.commandName ?? 'unknown', (args.input ?? {}) as Record<string, unknown>);
        return output;
      },
      { step: 'initialize', name: 'latchkeySuccessObserver', override: true },
    );
  }
  return DynamoDBDocumentClient.from(client, { marshallOptions: { removeUndefinedValues: true } });
}
