import { Sha256 } from '@aws-crypto/sha256-js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NodeSha256 } from '../../sdk/sha256';

/** The digest of `parts`, fed one by one, by a hash built with `Hash` (and `secret`: an HMAC). */
async function digest(
  Hash: new (
    secret?: string | Uint8Array,
  ) => { update(d: string | Uint8Array): void; digest(): Promise<Uint8Array> },
  parts: readonly (string | Uint8Array)[],
  secret?: string | Uint8Array,
): Promise<string> {
  const hash = new Hash(secret);
  for (const part of parts) hash.update(part);
  return Buffer.from(await hash.digest()).toString('hex');
}

const part = fc.oneof(fc.string({ unit: 'grapheme' }), fc.uint8Array({ maxLength: 200 }));

describe('NodeSha256, the SigV4 hash the SDK and the local gateway use', () => {
  it('agrees with the reference implementation on hashes and HMACs of any input, fed in any pieces', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(part, { maxLength: 5 }),
        fc.option(part, { nil: undefined }),
        async (parts, secret) => {
          expect(await digest(NodeSha256, parts, secret)).toBe(await digest(Sha256, parts, secret));
        },
      ),
    );
  });

  it('hashes a view into a larger buffer by its own bytes only', async () => {
    const buffer = new Uint8Array([1, 2, 3, 4, 5, 6]);
    expect(await digest(NodeSha256, [buffer.subarray(2, 4)])).toBe(
      await digest(Sha256, [new Uint8Array([3, 4])]),
    );
  });

  it('answers the same digest when asked twice, as the reference does', async () => {
    const hash = new NodeSha256();
    hash.update('once');
    const first = Buffer.from(await hash.digest()).toString('hex');
    expect(Buffer.from(await hash.digest()).toString('hex')).toBe(first);
    expect(first).toBe(await digest(Sha256, ['once']));
  });

  it('starts over after reset, keeping its HMAC key', async () => {
    const hash = new NodeSha256('key');
    hash.update('thrown away');
    hash.reset();
    hash.update('kept');
    expect(Buffer.from(await hash.digest()).toString('hex')).toBe(await digest(Sha256, ['kept'], 'key'));
  });
});
