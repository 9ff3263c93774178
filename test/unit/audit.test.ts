/**
 * The audit trail: every change of state is one `audit` line, logged by the service that made it
 * after the write succeeded, with the same fields (lock, principal, client_id, fencing_token,
 * session_id, reason); a refused write logs none. Driven through the real services on the
 * in-memory storage (test/support/queue-harness.ts), reading what they write to stdout.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LatchkeyError } from '../../lambdas/core/errors';
import { localPrincipal } from '../../lambdas/core/principal';
import { withRequestContext } from '../../lambdas/shared/request-context';
import { LOCK, OWNER, QueueHarness } from '../support/queue-harness';

type Line = Record<string, unknown>;
let lines: Line[] = [];
let level: string | undefined;

beforeEach(() => {
  lines = [];
  level = process.env.LOG_LEVEL;
  // Audit lines are written at any level but silent; other lines at warn and above.
  process.env.LOG_LEVEL = 'warn';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    for (const text of String(chunk).split('\n').filter(Boolean)) {
      try {
        lines.push(JSON.parse(text) as Line);
      } catch {
        // not a log line
      }
    }
    return true;
  });
});
afterEach(() => {
  vi.restoreAllMocks();
  process.env.LOG_LEVEL = level;
});

/** The audit events logged since the last call, and forgets them. */
function audits(): Line[] {
  const found = lines.filter((l) => typeof l.audit === 'string');
  lines = [];
  return found;
}

describe('audit events', () => {
  it('grant, renew, release: one each, with the grant fields; refusals log nothing', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a');
    expect(audits()).toEqual([
      expect.objectContaining({
        audit: 'grant',
        lock: LOCK,
        principal: OWNER,
        client_id: 'a',
        fencing_token: a.fencingToken,
        reason: 'acquired',
        level: 'info',
        message: 'audit: grant',
      }),
    ]);
    // A refused acquire, a refused release (wrong token) and a renew by another principal: nothing.
    await h.services.locks.acquire(h.command('b'));
    await expect(h.release({ ...a, fencingToken: a.fencingToken + 5 })).rejects.toThrow(LatchkeyError);
    await expect(
      h.services.locks.renew({
        name: LOCK,
        owner: localPrincipal('eve'),
        clientId: 'a',
        fencingToken: a.fencingToken,
        ttlMs: 5_000,
      }),
    ).rejects.toThrow(/another principal/);
    expect(audits()).toEqual([]);
    await h.services.locks.renew({
      name: LOCK,
      owner: OWNER,
      clientId: 'a',
      fencingToken: a.fencingToken,
      ttlMs: 5_000,
    });
    expect(audits()).toEqual([
      expect.objectContaining({
        audit: 'renew',
        lock: LOCK,
        client_id: 'a',
        fencing_token: a.fencingToken,
        ttl_ms: 5_000,
      }),
    ]);
    await h.release(a);
    expect(audits()).toEqual([
      expect.objectContaining({
        audit: 'release',
        lock: LOCK,
        principal: OWNER,
        client_id: 'a',
        fencing_token: a.fencingToken,
        reason: 'released',
        remaining_reentries: 0,
      }),
    ]);
    // Releasing again is refused: nothing more.
    await expect(h.release(a)).rejects.toThrow(LatchkeyError);
    expect(audits()).toEqual([]);
  });

  it('a replayed acquire (same request id) logs its grant again marked replayed (its first line may be lost); a re-entry is a reenter', async () => {
    const h = new QueueHarness();
    const first = await h.hold('a', { requestId: 'r1' });
    expect(audits()).toEqual([expect.not.objectContaining({ replayed: expect.anything() })]);
    // The first attempt's answer was lost after its write (its function may have died before
    // logging): the retry is the one chance left to put the grant in the trail.
    const again = await h.hold('a', { requestId: 'r1' });
    expect(again.fencingToken).toBe(first.fencingToken);
    expect(audits()).toEqual([
      expect.objectContaining({
        audit: 'grant',
        client_id: 'a',
        fencing_token: first.fencingToken,
        request_id: 'r1',
        replayed: true,
      }),
    ]);
    await h.hold('a', { reentrant: true });
    expect(audits()).toEqual([expect.objectContaining({ audit: 'reenter', client_id: 'a', reentry: 2 })]);
  });

  it('a waiting acquire granted at once, retried: its grant logged again, marked replayed', async () => {
    const h = new QueueHarness();
    const first = await h.wait('a', { requestId: 'w1' });
    expect(first).toMatchObject({ kind: 'done', outcome: { acquired: true, replayed: false } });
    expect(audits()).toEqual([expect.objectContaining({ audit: 'grant', client_id: 'a', request_id: 'w1' })]);
    const again = await h.wait('a', { requestId: 'w1' });
    expect(again).toMatchObject({ kind: 'done', outcome: { acquired: true, replayed: true } });
    expect(audits()).toEqual([
      expect.objectContaining({ audit: 'grant', client_id: 'a', request_id: 'w1', replayed: true }),
    ]);
    // Re-entered since: the retry still logs the grant it was (with the count as it is now).
    await h.hold('a', { reentrant: true });
    expect(audits()).toEqual([expect.objectContaining({ audit: 'reenter', reentry: 2 })]);
    await h.wait('a', { requestId: 'w1' });
    expect(audits()).toEqual([
      expect.objectContaining({
        audit: 'grant',
        reason: 'acquired',
        request_id: 'w1',
        replayed: true,
        reentry: 2,
      }),
    ]);
  });

  it('wait, handoff on release, wait-end on timeout and cancel', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a', { ttl: 60_000 });
    await h.wait('b', { requestId: 'wb', priority: 1 });
    await h.wait('c', { requestId: 'wc', waitMs: 100 });
    await h.wait('d', { requestId: 'wd' });
    expect(audits()).toEqual([
      expect.objectContaining({ audit: 'grant' }),
      expect.objectContaining({
        audit: 'wait',
        lock: LOCK,
        client_id: 'b',
        request_id: 'wb',
        priority: 1,
        reason: 'queued',
      }),
      expect.objectContaining({ audit: 'wait', client_id: 'c', request_id: 'wc' }),
      expect.objectContaining({ audit: 'wait', client_id: 'd', request_id: 'wd' }),
    ]);
    await h.services.locks.cancel({ lock: LOCK, owner: OWNER, clientId: 'd', requestId: 'wd' });
    expect(audits()).toEqual([
      expect.objectContaining({
        audit: 'wait-end',
        lock: LOCK,
        principal: OWNER,
        client_id: 'd',
        request_id: 'wd',
        reason: 'cancelled',
      }),
    ]);
    h.now += 1_000; // c's wait runs out (b, of higher priority, is ahead of it)
    await h.release(a);
    const after = audits();
    expect(after.map((l) => l.audit)).toEqual(['release', 'handoff']);
    expect(after[1]).toMatchObject({
      audit: 'handoff',
      lock: LOCK,
      principal: OWNER,
      client_id: 'b',
      request_id: 'wb',
      fencing_token: a.fencingToken + 1,
      reason: 'next-in-queue',
    });
    // b asks again (its answer lost): answered with the grant its handoff made and logged, no line.
    const answered = await h.wait('b', { requestId: 'wb', priority: 1 });
    expect(answered).toMatchObject({ kind: 'done', outcome: { acquired: true, replayed: true } });
    expect(audits()).toEqual([]);
    // c's timer (armed for its deadline) serves the queue: its wait ends.
    await h.services.locks.handoff.serve(LOCK);
    expect(audits()).toEqual([
      expect.objectContaining({ audit: 'wait-end', client_id: 'c', request_id: 'wc', reason: 'timeout' }),
    ]);
  });

  it('a lapsed lease is logged once, by the handoff that replaces it', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a', { ttl: 1_000 });
    await h.wait('b', { requestId: 'wb' });
    audits();
    h.now += 2_000; // the lease lapses: nothing is written
    expect(audits()).toEqual([]);
    // The timer serves the queue; a second serve (the notifier, say) finds it held and logs nothing.
    await h.services.handoff.serve(LOCK);
    await h.services.handoff.serve(LOCK);
    const seen = audits();
    expect(seen.map((l) => l.audit)).toEqual(['lapse', 'handoff']);
    expect(seen[0]).toMatchObject({
      lock: LOCK,
      principal: OWNER,
      client_id: 'a',
      fencing_token: a.fencingToken,
      reason: 'lease-ended',
    });
  });

  it('a grant pushed to a vanished connection: handoff, take-back, then the next handoff', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a', { ttl: 60_000 });
    await h.wait('ws', { requestId: 'gone', connection: 'conn-1' });
    await h.wait('http', { requestId: 'here' });
    audits();
    h.pushOutcome = (connection) => (connection === 'conn-1' ? 'gone' : 'sent');
    await h.release(a);
    const seen = audits();
    expect(seen.map((l) => l.audit)).toEqual(['release', 'handoff', 'take-back', 'handoff']);
    expect(seen[2]).toMatchObject({ client_id: 'ws', connection_id: 'conn-1', reason: 'connection-gone' });
    expect(seen[3]).toMatchObject({ client_id: 'http', fencing_token: a.fencingToken + 2 });
  });

  it('force-release: one event naming the holder, the operator and the reason', async () => {
    const h = new QueueHarness();
    const a = await h.hold('a', { ttl: 60_000 });
    audits();
    const admin = localPrincipal('admin');
    await h.services.locks.forceRelease(LOCK, admin, 'host died');
    expect(audits()).toEqual([
      expect.objectContaining({
        audit: 'force-release',
        level: 'warn',
        lock: LOCK,
        principal: OWNER,
        client_id: 'a',
        fencing_token: a.fencingToken,
        reason: 'host died',
        by: admin,
        fenced_to: a.fencingToken + 1,
      }),
    ]);
    // Nothing held: nothing forced, nothing logged.
    await h.services.locks.forceRelease(LOCK, admin, 'again');
    expect(audits()).toEqual([]);
  });

  it('sessions: open, a lock in it, closed (its lock released), expired', async () => {
    const h = new QueueHarness();
    const settings = { ttlMs: 10_000, graceMs: 0, lockDelayMs: 0 };
    const s = await h.services.sessions.create(OWNER, 'lead', settings);
    expect(audits()).toEqual([
      expect.objectContaining({
        audit: 'session-open',
        session_id: s.id,
        principal: OWNER,
        client_id: 'lead',
        ttl_ms: 10_000,
        reason: 'opened',
      }),
    ]);
    const g = await h.hold('lead', { session: s.id });
    expect(audits()).toEqual([
      expect.objectContaining({ audit: 'grant', session_id: s.id, fencing_token: g.fencingToken }),
    ]);
    // Closed by another principal: refused, nothing logged.
    await expect(h.services.sessions.close(s.id, localPrincipal('eve'), 'lead')).rejects.toThrow(
      LatchkeyError,
    );
    expect(audits()).toEqual([]);
    await h.services.sessions.close(s.id, OWNER, 'lead');
    expect(audits()).toEqual([
      expect.objectContaining({
        audit: 'session-end',
        session_id: s.id,
        principal: OWNER,
        client_id: 'lead',
        reason: 'closed',
      }),
      expect.objectContaining({
        audit: 'release',
        lock: LOCK,
        session_id: s.id,
        client_id: 'lead',
        fencing_token: g.fencingToken,
        reason: 'session-ended',
      }),
    ]);
    // Closing again (a retry) changes nothing and logs nothing.
    await h.services.sessions.close(s.id, OWNER, 'lead');
    expect(audits()).toEqual([]);

    const t = await h.services.sessions.create(OWNER, 'late', { ...settings, lockDelayMs: 500 });
    await h.hold('late', { session: t.id });
    audits();
    h.now += 20_000;
    await h.services.sweeper.sweep();
    await h.services.sweeper.sweep();
    expect(audits()).toEqual([
      expect.objectContaining({
        audit: 'session-end',
        session_id: t.id,
        reason: 'expired',
        lock_delay_ms: 500,
      }),
      expect.objectContaining({
        audit: 'release',
        session_id: t.id,
        reason: 'session-ended',
        lock_delay_ms: 500,
      }),
    ]);
  });

  it('an operator ends a session: session-end with the operator and reason, then each lock', async () => {
    const h = new QueueHarness();
    const s = await h.services.sessions.create(OWNER, 'lead', { ttlMs: 10_000, graceMs: 0, lockDelayMs: 0 });
    await h.hold('lead', { session: s.id });
    audits();
    const admin = localPrincipal('admin');
    const out = await h.services.sessionAdmin.end(s.id, admin, 'stuck deploy');
    expect(out).toMatchObject({ locksReleased: 1, wasState: 'alive', alreadyEnded: false });
    expect(audits()).toEqual([
      expect.objectContaining({
        audit: 'session-end',
        session_id: s.id,
        principal: OWNER,
        client_id: 'lead',
        by: admin,
        reason: 'stuck deploy',
        admin: true,
      }),
      expect.objectContaining({ audit: 'release', session_id: s.id, reason: 'session-ended', by: admin }),
    ]);
    await h.services.sessionAdmin.end(s.id, admin, 'again');
    expect(audits()).toEqual([]);
    await expect(h.services.sessionAdmin.end('no-such', admin, 'x')).rejects.toThrow(/no session/);
  });

  it('`by` is the caller from the request context, or the component for internal work', async () => {
    const h = new QueueHarness();
    const caller = localPrincipal('caller');
    await withRequestContext({ request_id: 'req-1', principal: caller, operation: 'acquire' }, () =>
      h.services.locks.acquire(h.command('a', { owner: caller })),
    );
    expect(audits()).toEqual([
      expect.objectContaining({
        audit: 'grant',
        by: caller,
        principal: caller,
        request_id: 'req-1',
        operation: 'acquire',
      }),
    ]);
    await h.wait('b', { requestId: 'wb', owner: caller });
    audits();
    h.now += 2_000;
    await withRequestContext({ request_id: 'm-1', operation: 'timer' }, () => h.services.handoff.serve(LOCK));
    expect(audits()).toEqual([
      expect.objectContaining({ audit: 'lapse', by: 'timer', request_id: 'm-1' }),
      expect.objectContaining({ audit: 'handoff', by: 'timer', request_id: 'wb' }),
    ]);
  });
});
