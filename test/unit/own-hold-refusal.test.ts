/**
 * A wait is never queued behind its caller's own hold: it is answered at once, and the answer
 * marks the hold as the caller's (`holder.mine`), naming that hold (not another holder's), so the
 * SDK pauses on it (sdk/own-holds.ts) instead of asking again at once. The real LockService on the
 * in-memory harness.
 */
import { describe, expect, it } from 'vitest';
import { localPrincipal } from '../../lambdas/core/principal';
import { acquireResponse } from '../../lambdas/core/wire';
import type { AcquireResult } from '../../lambdas/service/lock-service';
import { QueueHarness } from '../support/queue-harness';

const answerOf = (h: QueueHarness, result: AcquireResult) => {
  expect(result.kind).toBe('done');
  return acquireResponse((result as Extract<AcquireResult, { kind: 'done' }>).outcome, h.now);
};

describe("a wait behind the caller's own hold", () => {
  it('exclusive: answered at once, naming its own lease as mine, retry_after_ms to its end', async () => {
    const h = new QueueHarness();
    await h.hold('me', { ttl: 30_000 });
    const answer = answerOf(h, await h.wait('me', { connection: 'c1', requestId: 'r1' }));
    expect(answer).toMatchObject({
      acquired: false,
      holder: { client_id: 'me', held_by: 'lease', mine: true },
      retry_after_ms: 30_000,
    });
  });

  it('shared, or exclusive while holding it shared: names its own entry, not the holder ending first', async () => {
    for (const mode of ['shared', 'exclusive'] as const) {
      const h = new QueueHarness();
      await h.hold('me', { mode: 'shared', ttl: 30_000 });
      await h.hold('other', { mode: 'shared', ttl: 5_000 });
      const answer = answerOf(
        h,
        await h.wait('me', {
          ...(mode === 'shared' ? { mode } : {}),
          connection: 'c1',
          requestId: `r-${mode}`,
        }),
      );
      expect(answer).toMatchObject({
        acquired: false,
        holder: { client_id: 'me', mine: true },
        retry_after_ms: 30_000,
      });
    }
  });

  it("another principal's wait under the same client id is queued, and its ended wait does not say mine", async () => {
    const h = new QueueHarness();
    await h.hold('me', { ttl: 60_000 });
    const alice = localPrincipal('alice');
    const queued = await h.wait('me', { owner: alice, connection: 'c1', requestId: 'ra' });
    expect(queued.kind).toBe('queued');
    const ended = answerOf(
      h,
      await h.services.locks.acquireOverHttp(h.command('me', { owner: alice, requestId: 'rb', ttl: 1_000 }), {
        waitMs: 2_000,
      }),
    );
    expect(ended).toMatchObject({ acquired: false, holder: { client_id: 'me' } });
    expect(ended.acquired === false && ended.holder && 'mine' in ended.holder).toBe(false);
  });

  it('a refusal of a try by someone else never says mine', async () => {
    const h = new QueueHarness();
    await h.hold('other', { ttl: 30_000 });
    const answer = answerOf(h, await h.wait('me', { connection: 'c1', requestId: 'r3', waitMs: 0 }));
    expect(answer.acquired === false && answer.holder && 'mine' in answer.holder).toBe(false);
  });
});
