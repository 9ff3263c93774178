/** A hand-made API Gateway HTTP API (v2) event, as a unit test hands it to a handler. */
import type { HttpEvent } from '../../lambdas/shared/http';

export interface HttpEventOptions {
  readonly body?: unknown;
  readonly pathParameters?: Record<string, string>;
  /** The signer's ARN (what API Gateway's IAM authorizer puts in the context); null: unsigned. */
  readonly userArn?: string | null;
  readonly requestId?: string;
}

export function httpEvent(routeKey: string, rawPath: string, options: HttpEventOptions = {}): HttpEvent {
  const [method] = routeKey.split(' ');
  const { body, pathParameters = {}, userArn = null, requestId = `r-${Math.random()}` } = options;
  return {
    version: '2.0',
    routeKey,
    rawPath,
    rawQueryString: '',
    headers: {},
    ...(Object.keys(pathParameters).length ? { pathParameters } : {}),
    requestContext: {
      requestId,
      routeKey,
      http: { method, path: rawPath },
      ...(userArn === null ? {} : { authorizer: { iam: { userArn } } }),
    } as unknown as HttpEvent['requestContext'],
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    isBase64Encoded: false,
  };
}
