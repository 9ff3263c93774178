/**
 * A release the SDK sends again (a 503, a lost answer) carries the same release_id every time, so
 * the service answers the retry of a release it applied instead of applying it twice (a re-entered
 * lock would otherwise count down twice and be freed under its outer scope). No network: fetch is
 * stubbed.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Lease, LockClient } from '../../sdk/index';

afterEach(() => {
  vi.unstubAllGlobals();
});

function stubFetch(statuses: number[]) {
  const bodies: Record<string, unknown>[] = [];
  vi.stubGlobal('fetch', async (_url: URL, init: { body?: string }) => {
    bodies.push(JSON.parse(init.body ?? '{}'));
    const status = statuses.shift() ?? 200;
    const body =
      status === 200
        ? { released: true, lock: 'jobs/x', remaining_reentries: 1 }
        : { error: { code: 'UNAVAILABLE', message: 'try again' } };
    return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
  });
  return bodies;
}

const lease = () =>
  new Lease(
    { lock: 'jobs/x', client_id: 'me', fencing_token: 7, ttl_ms: 30_000, remaining_ms: 30_000 } as never,
    0,
  );

describe('release retries', () => {
  it('release: every attempt of one release carries one release_id; the next release another', async () => {
    const client = new LockClient({ endpoint: 'http://127.0.0.1:9', clientId: 'me' });
    const bodies = stubFetch([503, 503, 200, 200]);
    await client.release(lease());
    await client.release(lease());
    expect(bodies).toHaveLength(4);
    const ids = bodies.map((b) => b.release_id);
    expect(ids[0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(ids[1]).toBe(ids[0]);
    expect(ids[2]).toBe(ids[0]);
    expect(ids[3]).not.toBe(ids[0]);
  });

  it('releaseQuietly (withLock, withLocks) too', async () => {
    const client = new LockClient({ endpoint: 'http://127.0.0.1:9', clientId: 'me' });
    const bodies = stubFetch([503, 200]);
    expect(await client.releaseQuietly(lease())).toBe(true);
    expect(bodies.map((b) => b.release_id)).toEqual([bodies[0]?.release_id, bodies[0]?.release_id]);
    expect(bodies[0]?.release_id).toEqual(expect.any(String));
  });
});
