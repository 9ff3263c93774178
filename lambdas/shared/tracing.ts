/**
 * X-Ray tracing of the functions' AWS SDK calls (Powertools Tracer). On only where the stack turned
 * active tracing on (`tracing`: the function runs in Lambda with POWERTOOLS_TRACE_ENABLED=true);
 * everywhere else (off, tests, the local stack) the tracer is not even loaded and `traced` hands
 * the client back as it is. Each DynamoDB, SQS and API Gateway management call becomes a
 * subsegment of the invocation's trace.
 */
import type * as TracerModule from '@aws-lambda-powertools/tracer';
import type { Tracer } from '@aws-lambda-powertools/tracer';

/**
 * Bundled (lib/bundling.ts), the tracer is a file of its own beside the handler's, tracer.mjs, and
 * the bundling's `define` puts its path here: esbuild does not follow an import of a variable, so
 * the X-Ray SDK stays out of the handler's bundle. Unbundled (tests, the local stack): undefined.
 */
declare const LATCHKEY_TRACER_MODULE: string | undefined;
const tracerModule: string =
  typeof LATCHKEY_TRACER_MODULE === 'string' ? LATCHKEY_TRACER_MODULE : '@aws-lambda-powertools/tracer';

/** The tracer, when tracing is on (loaded only then: the X-Ray SDK costs cold-start time). */
export const tracer: Tracer | undefined =
  process.env.POWERTOOLS_TRACE_ENABLED === 'true'
    ? new ((await import(tracerModule)) as typeof TracerModule).Tracer({ serviceName: 'latchkey' })
    : undefined;

/** The client, its calls recorded as subsegments when tracing is on (the same client otherwise). */
export function traced<Client>(client: Client): Client {
  return tracer ? tracer.captureAWSv3Client(client) : client;
}
