/**
 * The defects of "Trust I", reproduced end to end through the local stack:
 * each test failed on the code before the fix.
 */
import { randomUUID } from 'node:crypto';
import { GetCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockRef } from '../../lambdas/core/items';
import { createDocumentClient } from '../../lambdas/store/document-client';
import { tableKey } from '../../lambdas/store/requests';
import type { LocalStack } from '../../local/stack';
import { dynamoEndpoint } from '../support/dynamo';
import { PushClient } from '../support/push-client';
import { signedClient } from '../support/signed-fetch';
import { startTestStack } from '../support/stack';

let stack: LocalStack;
let api: ReturnType<typeof signedClient>;
const sockets: PushClient[] = [];

beforeAll(async () => {
  stack = await startTestStack('trust', { sweepIntervalMs: 0 });
  api = signedClient(stack.url);
});
afterAll(async () => {
  await Promise.all(sockets.map((s) => s.close()));
  await stack.stop();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const lockName = () => `trust/${randomUUID()}`;
const rawLockItem = async (name: string) => {
  const db = createDocumentClient({ endpoint: dynamoEndpoint() });
  const out = await db.send(
    new GetCommand({ TableName: stack.tableName, Key: tableKey(lockRef(name)), ConsistentRead: true }),
  );
  db.destroy();
  return out.Item;
};

/** A leader holding a fresh lock through its session. */
async function leaderHolding() {
  const lock = lockName();
  const session = await api.post('/api/v1/sessions', { client_id: 'leader', ttl_ms: 10_000 });
  const sessionId = session.body.session_id as string;
  const took = await api.post(`/api/v1/locks/${lock}/acquire`, {
    client_id: 'leader',
    session_id: sessionId,
  });
  expect(took.body).toMatchObject({ acquired: true });
  return { lock, sessionId, token: took.body.fencing_token as number };
}

describe('a lock held through a session', () => {
  it('is never scheduled for collection while held, whatever writes the queue makes', async () => {
    const { lock, sessionId } = await leaderHolding();
    // A standby joins the queue and leaves it again (the README's leader election does this).
    const standby = await PushClient.open(stack.wsUrl, api, 'standby');
    sockets.push(standby);
    expect(
      await standby.queue(lock, { wait_timeout_ms: 60_000, ttl_ms: 5_000, with_position: true }),
    ).toMatchObject({ queued: true, position: 1 });
    expect((await standby.cancel(lock)).body).toMatchObject({ cancelled: true, removed: 1 });
    const item = await rawLockItem(lock);
    expect(item?.holder).toBe('leader');
    expect(item?.gc_at).toBeUndefined();
    await api.delete(`/api/v1/sessions/${sessionId}?client_id=leader`);
  });

  it('refuses a renew with a clear 409 instead of giving it a lease that would lapse', async () => {
    const { lock, sessionId, token } = await leaderHolding();
    const renew = await api.post(`/api/v1/locks/${lock}/renew`, {
      client_id: 'leader',
      fencing_token: token,
      ttl_ms: 1_000,
    });
    expect(renew).toMatchObject({
      status: 409,
      body: { renewed: false, error: { code: 'HELD_BY_SESSION' } },
    });
    await sleep(1_200);
    const other = await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'other', ttl_ms: 5_000 });
    expect(other.body).toMatchObject({ acquired: false, holder: { client_id: 'leader' } });
    await api.delete(`/api/v1/sessions/${sessionId}?client_id=leader`);
  });
});

describe('a request answered "not acquired"', () => {
  it('is never granted afterwards, even when an earlier attempt of it is still queued', async () => {
    const lock = lockName();
    const held = await api.post(`/api/v1/locks/${lock}/acquire`, { client_id: 'holder', ttl_ms: 10_000 });
    const request_id = randomUUID();
    // The first attempt waits; its caller gives up on it (the answer is lost, say) ...
    const first = new AbortController();
    const attempt1 = api
      .post(
        `/api/v1/locks/${lock}/acquire`,
        { client_id: 'c02', ttl_ms: 5_000, wait_timeout_ms: 3_000, request_id },
        { signal: first.signal },
      )
      .catch(() => undefined);
    await sleep(300);
    first.abort();
    // ... and retries the same request without waiting: not acquired.
    const attempt2 = await api.post(`/api/v1/locks/${lock}/acquire`, {
      client_id: 'c02',
      ttl_ms: 5_000,
      request_id,
    });
    expect(attempt2.body).toMatchObject({ acquired: false });
    // The holder releases: the lock must not go to the request that was answered "not acquired".
    await api.post(`/api/v1/locks/${lock}/release`, {
      client_id: 'holder',
      fencing_token: held.body.fencing_token,
    });
    await attempt1;
    await sleep(300);
    const view = await api.get(`/api/v1/locks/${lock}`);
    expect(view.body.holders).toEqual([]);
    expect(view.body.queued).toBe(0);
  });
});
