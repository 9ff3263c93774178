/**
 * SHA-256 and HMAC-SHA256 for SigV4 from node:crypto (OpenSSL), in the shape @smithy/signature-v4
 * takes (`sha256`): several times faster than the pure-JavaScript @aws-crypto/sha256-js, which is
 * built for browsers. The AWS SDK for JavaScript does the same on Node (@smithy's node Hash).
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import type { Checksum, SourceData } from '@smithy/types';

const bytes = (data: SourceData): Buffer | Uint8Array =>
  typeof data === 'string'
    ? Buffer.from(data, 'utf8')
    : ArrayBuffer.isView(data)
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : new Uint8Array(data);

export class NodeSha256 implements Checksum {
  private hash: Hash | Hmac;
  private digested: Uint8Array | undefined;

  constructor(private readonly secret?: SourceData) {
    this.hash = this.fresh();
  }

  private fresh(): Hash | Hmac {
    // An empty string is no key, as in @aws-crypto/sha256-js (SigV4 never passes one).
    return this.secret ? createHmac('sha256', bytes(this.secret)) : createHash('sha256');
  }

  update(data: Uint8Array | string): void {
    this.hash.update(bytes(data));
  }

  digest(): Promise<Uint8Array> {
    // Asked again, the same digest (as @aws-crypto/sha256-js answers; node:crypto would throw).
    this.digested ??= new Uint8Array(this.hash.digest());
    return Promise.resolve(this.digested);
  }

  reset(): void {
    this.hash = this.fresh();
    this.digested = undefined;
  }
}
