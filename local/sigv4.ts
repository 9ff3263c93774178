/**
 * Verifies AWS Signature Version 4 on requests to the local stack, the way
 * API Gateway does for IAM-authorized routes: the signature is recomputed
 * with @smithy/signature-v4 (the AWS SDK's own signer) from the request as
 * received and compared in constant time.
 */
import { timingSafeEqual } from 'node:crypto';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { NodeSha256 } from '../sdk/sha256';

export interface LocalCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

export const LOCAL_CREDENTIALS: LocalCredentials = { accessKeyId: 'local', secretAccessKey: 'local' };

/** The key pairs the local stack accepts, by access key: each access key is its own principal. */
export type LocalKeys = ReadonlyMap<string, string>;

const KEY_PAIR = /^([A-Za-z0-9_.-]{1,64}):([^,\s]{1,128})$/;

/**
 * `local:local` plus the pairs of `spec` ("alice:alice-secret,bob:bob-secret", the syntax of
 * LATCHKEY_LOCAL_CREDENTIALS and --credentials). Throws on a malformed pair, naming it.
 */
export function localKeys(spec = ''): LocalKeys {
  const keys = new Map([[LOCAL_CREDENTIALS.accessKeyId, LOCAL_CREDENTIALS.secretAccessKey]]);
  for (const pair of spec
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const m = KEY_PAIR.exec(pair);
    if (!m)
      throw new Error(
        `invalid credentials '${pair.replace(/:.*/, ':…')}': use ACCESS_KEY:SECRET, comma-separated (access keys: letters, digits, '_', '.', '-')`,
      );
    keys.set(m[1] as string, m[2] as string);
  }
  return keys;
}

const DEFAULT_KEYS = localKeys();
export const LOCAL_REGION = 'us-east-1';
export const SIGNING_SERVICE = 'execute-api';
const MAX_CLOCK_SKEW_MS = 15 * 60 * 1000;

export interface IncomingSignedRequest {
  readonly method: string;
  /** Path exactly as received, still percent-encoded, without the query string. */
  readonly rawPath: string;
  readonly rawQuery: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Uint8Array;
}

export type Verification =
  | { readonly ok: true; readonly accessKeyId: string }
  | { readonly ok: false; readonly reason: string };

const AUTH_PATTERN =
  /^AWS4-HMAC-SHA256 Credential=([^/,\s]+)\/(\d{8})\/([^/,\s]+)\/([^/,\s]+)\/aws4_request,\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/;

function parseAmzDate(value: string | undefined): Date | undefined {
  const m = value?.match(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/);
  if (!m) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  return new Date(Date.UTC(year, month - 1, day, hour, minute, second));
}

async function sha256Hex(body: Uint8Array): Promise<string> {
  const hash = new NodeSha256();
  hash.update(body);
  return Buffer.from(await hash.digest()).toString('hex');
}

function queryOf(rawQuery: string): Record<string, string | string[]> {
  const query: Record<string, string | string[]> = {};
  for (const [key, value] of new URLSearchParams(rawQuery)) {
    const prior = query[key];
    query[key] = prior === undefined ? value : Array.isArray(prior) ? [...prior, value] : [prior, value];
  }
  return query;
}

export async function verifySigV4(
  request: IncomingSignedRequest,
  keys: LocalKeys = DEFAULT_KEYS,
  now: number = Date.now(),
): Promise<Verification> {
  const authorization = request.headers.authorization;
  if (!authorization)
    return { ok: false, reason: 'missing Authorization header: requests must be signed with SigV4' };
  const m = authorization.match(AUTH_PATTERN);
  if (!m) return { ok: false, reason: 'Authorization header is not an AWS4-HMAC-SHA256 signature' };
  const [, accessKeyId, scopeDate, region, service, signedHeaderList, signature] = m as unknown as string[];
  const secretAccessKey = keys.get(accessKeyId as string);
  if (secretAccessKey === undefined) return { ok: false, reason: `unknown access key ${accessKeyId}` };
  if (service !== SIGNING_SERVICE)
    return { ok: false, reason: `signed for service ${service}, expected ${SIGNING_SERVICE}` };
  if (region !== LOCAL_REGION)
    return { ok: false, reason: `signed for region ${region}, expected ${LOCAL_REGION}` };
  const signingDate = parseAmzDate(request.headers['x-amz-date']);
  if (!signingDate) return { ok: false, reason: 'missing or malformed X-Amz-Date header' };
  if (!request.headers['x-amz-date']?.startsWith(scopeDate as string)) {
    return { ok: false, reason: 'credential scope date does not match X-Amz-Date' };
  }
  if (Math.abs(now - signingDate.getTime()) > MAX_CLOCK_SKEW_MS) {
    return {
      ok: false,
      reason: 'signature expired: X-Amz-Date is more than 15 minutes from the server time',
    };
  }
  const declaredHash = request.headers['x-amz-content-sha256'];
  if (declaredHash !== undefined && declaredHash !== (await sha256Hex(request.body))) {
    return { ok: false, reason: 'x-amz-content-sha256 does not match the request body' };
  }
  const signedHeaders = (signedHeaderList as string).split(';');
  if (!signedHeaders.includes('host')) return { ok: false, reason: 'the host header must be signed' };
  const headers: Record<string, string> = {};
  for (const name of signedHeaders) {
    const value = request.headers[name];
    if (value === undefined) return { ok: false, reason: `signed header ${name} is missing` };
    headers[name] = value;
  }
  const signer = new SignatureV4({
    credentials: { accessKeyId: accessKeyId as string, secretAccessKey },
    region: LOCAL_REGION,
    service: SIGNING_SERVICE,
    sha256: NodeSha256,
    uriEscapePath: true,
    // Sign exactly the headers the client signed; do not add x-amz-content-sha256.
    applyChecksum: false,
  });
  const signed = await signer.sign(
    new HttpRequest({
      method: request.method,
      protocol: 'http:',
      hostname: 'localhost',
      path: request.rawPath,
      query: queryOf(request.rawQuery),
      headers,
      body: request.body,
    }),
    { signingDate, signableHeaders: new Set(signedHeaders) },
  );
  const expected = String(signed.headers.authorization ?? '').match(/Signature=([0-9a-f]{64})/)?.[1] ?? '';
  const match =
    expected.length === 64 && timingSafeEqual(Buffer.from(expected), Buffer.from(signature as string));
  return match
    ? { ok: true, accessKeyId: accessKeyId as string }
    : {
        ok: false,
        reason: `the request signature does not match: check the secret of access key ${accessKeyId} and region us-east-1`,
      };
}
