/** A SigV4-signing fetch for tests, signing like the AWS SDK does (execute-api, us-east-1). */

import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { NodeSha256 } from '../../sdk/sha256';

// biome-ignore lint/suspicious/noExplicitAny: test responses are inspected field by field
export interface SignedResponse<T = any> {
  status: number;
  headers: Headers;
  body: T;
  text: string;
}

/** A signer for the local stack's credentials, region and service, as the AWS SDKs sign. */
export const localSigner = (credentials = { accessKeyId: 'local', secretAccessKey: 'local' }) =>
  new SignatureV4({ credentials, region: 'us-east-1', service: 'execute-api', sha256: NodeSha256 });

export function signedClient(
  baseUrl: string,
  credentials = { accessKeyId: 'local', secretAccessKey: 'local' },
) {
  const signer = localSigner(credentials);

  async function send(
    method: string,
    path: string,
    body?: unknown,
    options: { sign?: boolean; raw?: string; signal?: AbortSignal } = {},
  ) {
    const url = new URL(path, baseUrl);
    const payload = options.raw ?? (body === undefined ? undefined : JSON.stringify(body));
    const headers: Record<string, string> = { host: url.host };
    if (payload !== undefined) headers['content-type'] = 'application/json';
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) query[k] = v;
    const request = new HttpRequest({
      method,
      protocol: url.protocol,
      hostname: url.hostname,
      port: Number(url.port),
      path: url.pathname,
      query,
      headers,
      ...(payload !== undefined ? { body: payload } : {}),
    });
    const signed = options.sign === false ? request : await signer.sign(request);
    const response = await fetch(url, {
      method,
      headers: signed.headers,
      ...(payload !== undefined ? { body: payload } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    return { status: response.status, headers: response.headers, body: parsed, text } as SignedResponse;
  }

  return {
    get: (path: string, options?: { sign?: boolean }) => send('GET', path, undefined, options),
    post: (path: string, body?: unknown, options?: { sign?: boolean; raw?: string; signal?: AbortSignal }) =>
      send('POST', path, body, options),
    delete: (path: string, options?: { sign?: boolean }) => send('DELETE', path, undefined, options),
    /** Any method, with an optional JSON body (a DELETE with a body, say). */
    request: (method: string, path: string, body?: unknown, options?: { sign?: boolean }) =>
      send(method, path, body, options),
  };
}
