/**
 * SigV4 for one request: the GET that opens the relay's WebSocket connection
 * (service/relay.ts) to the stack's IAM-authorized WebSocket API. Written out
 * here (node:crypto, about 40 lines) rather than bundled: the AWS SDK's signer
 * (@smithy/signature-v4) weighs 140 KiB minified, more than the 250 KiB bundle
 * budget leaves. The tests check these signatures with that signer
 * (local/sigv4.ts verifies with it).
 */
import { createHash, createHmac } from 'node:crypto';

export interface SigningCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string | undefined;
}

const SERVICE = 'execute-api';
const sha256 = (data: string) => createHash('sha256').update(data, 'utf8').digest('hex');
const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data, 'utf8').digest();
/** RFC 3986 encoding, as SigV4 wants it. */
const encode = (s: string) =>
  encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/**
 * The headers to send with `GET url` at `now` for `region`: x-amz-date, the session token and the
 * authorization. The Host header is signed too, as `url.host`: every WebSocket client sets it so.
 */
export function signHandshake(
  url: URL,
  now: Date,
  region: string,
  credentials: SigningCredentials,
): Record<string, string> {
  const amzDate = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
  const day = amzDate.slice(0, 8);
  const headers: Record<string, string> = {
    host: url.host,
    'x-amz-date': amzDate,
    ...(credentials.sessionToken ? { 'x-amz-security-token': credentials.sessionToken } : {}),
  };
  const names = Object.keys(headers).sort();
  const query = [...url.searchParams]
    .map(([k, v]) => [encode(k), encode(v)] as const)
    .sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const path = url.pathname.split('/').map(encode).join('/') || '/';
  const canonical = [
    'GET',
    path,
    query,
    ...names.map((n) => `${n}:${String(headers[n]).trim()}`),
    '',
    names.join(';'),
    sha256(''),
  ].join('\n');
  const scope = `${day}/${region}/${SERVICE}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  const key = hmac(
    hmac(hmac(hmac(`AWS4${credentials.secretAccessKey}`, day), region), SERVICE),
    'aws4_request',
  );
  const signature = createHmac('sha256', key).update(toSign, 'utf8').digest('hex');
  const { host: _signed, ...sent } = headers;
  return {
    ...sent,
    authorization: `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`,
  };
}
