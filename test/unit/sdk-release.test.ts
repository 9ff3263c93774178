/**
 * A release the SDK sends again (a 503, a lost answer) carries the same release_id every time, so
 * the service answers the retry of a release it applied instead of applying it twice (a re-entered
 * lock would otherwise count down twice and be freed under its outer scope). And acquire's
 * confirming renewal after a long wait is not cut short by the lease estimate the wait left.
 * Against loopback HTTP servers that answer as each test needs.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Lease, LeaseLostError, LockClient } from '../../sdk/index';

let server: Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve) ?? resolve(undefined));
  server = undefined;
});

/** A client of a server answering its requests with `statuses` in turn (then 200), and the bodies it got. */
async function clientOfServer(statuses: number[]) {
  const bodies: Record<string, unknown>[] = [];
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      bodies.push(JSON.parse(Buffer.concat(chunks).toString() || '{}'));
      const status = statuses.shift() ?? 200;
      const body =
        status === 200
          ? { released: true, lock: 'jobs/x', remaining_reentries: 1 }
          : { error: { code: 'UNAVAILABLE', message: 'try again' } };
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return { client: new LockClient({ endpoint: `http://127.0.0.1:${port}`, clientId: 'me' }), bodies };
}

const lease = () =>
  new Lease(
    { lock: 'jobs/x', client_id: 'me', fencing_token: 7, ttl_ms: 30_000, remaining_ms: 30_000 } as never,
    0,
  );

describe('release retries', () => {
  it('release: every attempt of one release carries one release_id; the next release another', async () => {
    const { client, bodies } = await clientOfServer([503, 503, 200, 200]);
    await client.release(lease());
    await client.release(lease());
    expect(bodies).toHaveLength(4);
    const ids = bodies.map((b) => b.release_id);
    expect(ids[0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(ids[1]).toBe(ids[0]);
    expect(ids[2]).toBe(ids[0]);
    expect(ids[3]).not.toBe(ids[0]);
  });

  it("withLock's cleanup never releases again what the callback released (a re-entry counted down, or one still on its way)", async () => {
    const { client, bodies } = await clientOfServer([]);
    const counted = lease();
    expect(await client.release(counted)).toEqual({ remainingReentries: 1 }); // another entry holds it still
    expect(await client.releaseQuietly(counted)).toBe(true);
    expect(bodies).toHaveLength(1); // a second would have freed the lock under that other entry
    const onItsWay = lease();
    const released = client.release(onItsWay); // not awaited by the callback
    expect(await client.releaseQuietly(onItsWay)).toBe(true);
    await released;
    expect(bodies).toHaveLength(2);
  });

  it('releaseQuietly (withLock, withLocks) too', async () => {
    const { client, bodies } = await clientOfServer([503, 200]);
    expect(await client.releaseQuietly(lease())).toBe(true);
    expect(bodies.map((b) => b.release_id)).toEqual([bodies[0]?.release_id, bodies[0]?.release_id]);
    expect(bodies[0]?.release_id).toEqual(expect.any(String));
  });
});

/**
 * A server that grants every acquire (a 3 s lease), answers renewals with `renewal`, and each
 * release with the next of `releases` (a status, and how long it takes), recording release bodies.
 */
async function lockServer(renewal: number, releases: { status: number; afterMs: number }[]) {
  const released: Record<string, unknown>[] = [];
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const send = (status: number, body: object) =>
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      const notHolder = { error: { code: 'NOT_HOLDER', message: 'me does not hold jobs/x: force-released' } };
      const lease = { lock: 'jobs/x', client_id: 'me', fencing_token: 3, ttl_ms: 3_000, remaining_ms: 3_000 };
      if (req.url?.endsWith('/acquire'))
        return send(200, {
          acquired: true,
          ...lease,
          expires_at: new Date(Date.now() + 3_000).toISOString(),
        });
      if (req.url?.endsWith('/renew'))
        return send(
          renewal,
          renewal === 200 ? { renewed: true, ...lease, expires_at: new Date().toISOString() } : notHolder,
        );
      released.push(JSON.parse(Buffer.concat(chunks).toString() || '{}'));
      const { status, afterMs } = releases.shift() ?? { status: 409, afterMs: 0 };
      setTimeout(
        () =>
          send(
            status,
            status === 200 ? { released: true, lock: 'jobs/x', remaining_reentries: 0 } : notHolder,
          ),
        afterMs,
      );
    });
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return { client: new LockClient({ endpoint: `http://127.0.0.1:${port}`, clientId: 'me' }), released };
}

describe("a callback's own release", () => {
  it('still on its way when the callback returns, refused as ended: withLock throws that loss, and sends no other', async () => {
    const { client, released } = await lockServer(409, [{ status: 409, afterMs: 300 }]);
    const outcome = await client
      .withLock('jobs/x', { ttlMs: 3_000 }, async (lease) => {
        void client.release(lease).catch(() => undefined); // best effort, not awaited
        return 'done';
      })
      .catch((e) => e);
    expect(outcome).toBeInstanceOf(LeaseLostError);
    expect(outcome).toMatchObject({ lock: 'jobs/x', code: 'NOT_HOLDER', sessionId: undefined });
    expect(released).toHaveLength(1);
  });

  it('applied while the callback returns: its result, and no second release', async () => {
    const { client, released } = await lockServer(409, [{ status: 200, afterMs: 300 }]);
    const value = await client.withLock('jobs/x', { ttlMs: 3_000 }, async (lease) => {
      void client.release(lease);
      return 'done';
    });
    expect(value).toBe('done');
    expect(released).toHaveLength(1);
  });

  it('two at once, or one after a failure: every release of a lease carries one release_id, and one applied stays applied', async () => {
    const { client, released } = await lockServer(200, [
      { status: 200, afterMs: 50 },
      { status: 409, afterMs: 100 },
      { status: 503, afterMs: 0 },
    ]);
    const lease = await client.tryAcquire('jobs/x', { ttlMs: 3_000 });
    const both = await Promise.allSettled([client.release(lease as Lease), client.release(lease as Lease)]);
    expect(both.map((r) => r.status)).toEqual(['fulfilled', 'rejected']);
    expect(await client.releaseQuietly(lease as Lease)).toBe(true); // applied: nothing sent
    expect(released).toHaveLength(2);
    expect(new Set(released.map((b) => b.release_id)).size).toBe(1);
  });
});

describe("acquire's confirming renewal after a long wait", () => {
  it('gets a third of the ttl per attempt, not a third of the short estimate the wait left', async () => {
    // Granted after a 2.2 s HTTP wait with a 3 s ttl: the SDK counts the lease from the wait's
    // start, so it has 0.8 s left by its estimate and renews at once. The renewal takes 0.7 s: more
    // than the 0.5 s a third of the estimate allows (every attempt of which would time out), within
    // the 1 s a third of the ttl allows.
    const paths: string[] = [];
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        paths.push(req.url ?? '');
        const acquiring = req.url?.endsWith('/acquire');
        const body = acquiring
          ? {
              acquired: true,
              lock: 'jobs/x',
              client_id: 'me',
              fencing_token: 3,
              ttl_ms: 3_000,
              remaining_ms: 3_000,
            }
          : {
              renewed: true,
              lock: 'jobs/x',
              expires_at: new Date().toISOString(),
              remaining_ms: 3_000,
              ttl_ms: 3_000,
            };
        setTimeout(
          () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body)),
          acquiring ? 2_200 : 700,
        );
      });
    });
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const client = new LockClient({ endpoint: `http://127.0.0.1:${port}`, clientId: 'me' });
    const granted = await client.acquire('jobs/x', { ttlMs: 3_000, waitTimeoutMs: 10_000 });
    expect(paths).toEqual(['/api/v1/locks/jobs/x/acquire', '/api/v1/locks/jobs/x/renew']);
    expect(granted.remainingMs()).toBeGreaterThan(2_000);
  });
});

describe('force-release retries', () => {
  it('without a token it is sent once: no answer is an unknown outcome, not a second force-release', async () => {
    const { client, bodies } = await clientOfServer([503, 200]);
    await expect(client.forceRelease('jobs/x', 'host died')).rejects.toThrow(
      /may or may not have ended the holder.*not sent again/,
    );
    expect(bodies).toEqual([{ reason: 'host died' }]);
  });

  it('naming the grant’s token it is sent again (a second delivery ends that grant or nothing)', async () => {
    const { client, bodies } = await clientOfServer([503, 200]);
    await client.forceRelease('jobs/x', 'host died', { fencingToken: 7 });
    expect(bodies).toEqual([
      { reason: 'host died', fencing_token: 7 },
      { reason: 'host died', fencing_token: 7 },
    ]);
    await expect(client.forceRelease('jobs/x', 'r', { fencingToken: 1.5 })).rejects.toThrow(/fencingToken/);
  });
});

describe('a wait aborted while its granted answer is on its way', () => {
  it('releases the grant and rejects with the abort reason (a session lost meanwhile)', async () => {
    const seen: string[] = [];
    const abort = new AbortController();
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        seen.push(String(req.url));
        if (String(req.url).endsWith('/release')) {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ released: true, lock: 'jobs/x', remaining_reentries: 0 }));
          return;
        }
        // The signal aborts while the grant is on its way back.
        abort.abort(new Error('session lost'));
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            acquired: true,
            lock: 'jobs/x',
            client_id: 'me',
            fencing_token: 9,
            expires_at: null,
            remaining_ms: null,
            ttl_ms: null,
            session_id: 's-1',
            mode: 'exclusive',
            reentry: 1,
          }),
        );
      });
    });
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const client = new LockClient({ endpoint: `http://127.0.0.1:${port}`, clientId: 'me' });
    await expect(client.acquire('jobs/x', { waitTimeoutMs: 5_000, signal: abort.signal })).rejects.toThrow(
      'session lost',
    );
    // The grant goes back: released from the answer, or (the answer cut off by the abort) from the
    // cancel's, which answers with the grant that came first.
    expect(seen[0]).toBe('/api/v1/locks/jobs/x/acquire');
    expect(seen.at(-1)).toBe('/api/v1/locks/jobs/x/release');
    expect(seen.slice(1, -1).every((path) => path === '/api/v1/locks/jobs/x/cancel')).toBe(true);
  });
});

describe('an HTTP wait given up while it waits (a signal: Ctrl-C in `latchkey run`)', () => {
  it('ends at once, not when its 25 s are up, and its request leaves the queue (a grant that came first goes back)', async () => {
    for (const grantedFirst of [false, true]) {
      const seen: { path: string; body: Record<string, unknown> }[] = [];
      server = createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => {
          const body = JSON.parse(Buffer.concat(chunks).toString() || '{}');
          seen.push({ path: req.url ?? '', body });
          if (req.url?.endsWith('/acquire')) return; // waits: no answer within the test
          const granted = {
            acquired: true,
            lock: 'jobs/x',
            client_id: 'me',
            fencing_token: 9,
            ttl_ms: 30_000,
          };
          const answer = req.url?.endsWith('/cancel')
            ? grantedFirst
              ? { ...granted, expires_at: new Date(Date.now() + 30_000).toISOString(), remaining_ms: 30_000 }
              : { acquired: false, lock: 'jobs/x', cancelled: true }
            : { released: true, lock: 'jobs/x', remaining_reentries: 0 };
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
        });
      });
      await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as AddressInfo).port;
      const client = new LockClient({ endpoint: `http://127.0.0.1:${port}`, clientId: 'me' });
      const stop = new AbortController();
      const waiting = client.acquire('jobs/x', { waitTimeoutMs: 60_000, signal: stop.signal });
      await expect.poll(() => seen.length).toBe(1);
      // The server never answers the acquire: only ending the request in flight settles the wait.
      stop.abort(new Error('SIGINT while waiting for jobs/x'));
      await expect(waiting).rejects.toThrow('SIGINT while waiting for jobs/x');
      const [acquire, cancel, release] = seen;
      expect(cancel).toMatchObject({
        path: '/api/v1/locks/jobs/x/cancel',
        body: { client_id: 'me', request_id: acquire?.body.request_id },
      });
      if (grantedFirst)
        expect(release).toMatchObject({ path: '/api/v1/locks/jobs/x/release', body: { fencing_token: 9 } });
      else expect(seen).toHaveLength(2);
      server.closeAllConnections();
      await new Promise((resolve) => server?.close(resolve));
    }
    server = undefined;
  });
});
