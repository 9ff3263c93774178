/**
 * The lock-name rule (sdk/names.ts), which the service, the local gateway and the SDK share: what
 * it refuses and says, and why a name it accepts is safe in a path, whoever builds or signs it.
 */
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LatchkeyError } from '../../lambdas/core/errors';
import { lockCommandFrom, lockNameFrom } from '../../lambdas/http/lock-path';
import { nameArg } from '../../sdk/arguments';
import { InvalidArgumentError } from '../../sdk/errors';
import {
  LOCK_NAME_MAX_LENGTH,
  lockNameProblem,
  lockNameRefusal,
  lockPrefixRefusal,
  RESERVED_LAST_LEVELS,
} from '../../sdk/names';

const level = fc.stringMatching(/^[A-Za-z0-9._\-:]{1,12}$/).filter((l) => l !== '.' && l !== '..');
const validName = fc
  .array(level, { minLength: 1, maxLength: 5 })
  .map((levels) => levels.join('/'))
  .filter(
    (n) => n.length <= LOCK_NAME_MAX_LENGTH && !RESERVED_LAST_LEVELS.includes(n.split('/').at(-1) ?? ''),
  );

describe('lock names', () => {
  it('says what is wrong, naming the allowed characters, the offending one, or the reserved words', () => {
    expect(lockNameRefusal('a b')).toEqual({
      code: 'INVALID_NAME',
      message: 'lock name "a b" may contain only A-Z a-z 0-9 . _ - : / (it contains " ")',
      details: [
        { path: 'name', message: 'lock name "a b" may contain only A-Z a-z 0-9 . _ - : / (it contains " ")' },
      ],
    });
    expect(lockNameProblem('café')).toBe('may contain only A-Z a-z 0-9 . _ - : / (it contains "é")');
    expect(lockNameProblem('a%20b')).toMatch(/it contains "%": write the name as it is, not percent-encoded/);
    expect(lockNameProblem('a//b')).toMatch(/has an empty level/);
    expect(lockNameProblem('/a')).toMatch(/has an empty level/);
    expect(lockNameProblem('a/./b')).toMatch(/'\.' or '\.\.'/);
    expect(lockNameProblem('')).toBe('must not be empty');
    expect(lockNameProblem('n'.repeat(257))).toBe('is 257 characters long; the limit is 256');
    expect(lockNameProblem('jobs/billing/acquire')).toBe(
      'ends in "acquire", a reserved word: a name\'s last level may not be acquire, release, renew, cancel, force-release or waits, because the routes read the action from the path\'s last level (POST /api/v1/locks/jobs/billing/acquire is the action acquire on the lock "jobs/billing"; GET /api/v1/locks/jobs/billing inspects it)',
    );
    expect(lockNameProblem('cancel')).toMatch(/^ends in "cancel", a reserved word/);
    // A long name is cut short in the message.
    expect(lockNameRefusal(`${'x'.repeat(300)} `)?.message).toMatch(/^lock name "x{64}…" is 301 characters/);
    // Prefixes: any characters of names, a trailing '/', and action words (a listing has no action).
    expect(lockPrefixRefusal('jobs/')).toBeUndefined();
    expect(lockPrefixRefusal('jobs/acquire')).toBeUndefined();
    expect(lockPrefixRefusal('a b')?.message).toMatch(/^lock prefix "a b" may contain only/);
  });

  it('the service and the SDK refuse a name with the same words', () => {
    for (const name of ['a b', 'café', 'a//b', 'a/release', 'n'.repeat(300)]) {
      const refusal = lockNameRefusal(name);
      let service: unknown;
      try {
        lockNameFrom({ rawPath: `/api/v1/locks/${name}`, pathParameters: { proxy: name } });
      } catch (error) {
        service = error;
      }
      expect(service).toBeInstanceOf(LatchkeyError);
      expect(service).toMatchObject({ code: 'INVALID_NAME', status: 400, message: refusal?.message });
      expect(() => nameArg('tryAcquire', name)).toThrow(InvalidArgumentError);
      expect(() => nameArg('tryAcquire', name)).toThrow(`tryAcquire: ${refusal?.message}`);
    }
  });

  it('a percent-encoded path with a good name in it is refused for its escape', () => {
    const event = {
      rawPath: '/api/v1/locks/jobs%2Fnightly/acquire',
      pathParameters: { proxy: 'jobs/nightly/acquire' },
    };
    expect(() => lockCommandFrom(event)).toThrow(/may not be percent-encoded \(it contains "%2F"\)/);
  });

  it('a name it accepts goes into a URL unchanged, and signers agree on its path but for its colons', async () => {
    const signer = (uriEscapePath: boolean) =>
      new SignatureV4({
        credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
        region: 'us-east-1',
        service: 'execute-api',
        sha256: Sha256,
        uriEscapePath,
      });
    const [doubled, asSent] = [signer(true), signer(false)];
    const signingDate = new Date('2026-01-01T00:00:00Z');
    await fc.assert(
      fc.asyncProperty(validName, async (name) => {
        expect(lockNameProblem(name)).toBeUndefined();
        const path = `/api/v1/locks/${name}/acquire`;
        // The SDK builds its URLs with new URL(): nothing is rewritten or escaped.
        expect(new URL(path, 'http://127.0.0.1:3000').pathname).toBe(path);
        const request = new HttpRequest({ method: 'POST', hostname: 'h', path, headers: { host: 'h' } });
        const [a, b] = await Promise.all([
          doubled.sign(request, { signingDate }),
          asSent.sign(request, { signingDate }),
        ]);
        // SigV4 escapes ':' in the canonical path; a signer that signs the path as sent does not.
        if (!name.includes(':')) expect(a.headers.authorization).toBe(b.headers.authorization);
      }),
      { numRuns: 200 },
    );
  });
});
