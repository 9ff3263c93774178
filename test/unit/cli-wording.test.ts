/**
 * The CLI's errors in its own words: flags and durations, not the SDK's calls and arguments or the
 * HTTP API's fields; and its --json views of leases, refusals and errors.
 */
import { describe, expect, it, vi } from 'vitest';
import { resolveEndpoints } from '../../sdk/cli/endpoints';
import {
  errorView,
  httpWaitsNote,
  leaseView,
  notAcquiredView,
  priorityNeedsWait,
  retryLine,
} from '../../sdk/cli/main';
import { graceRefusal, leastTtlFor, waitingLine, waitingNote } from '../../sdk/cli/run';
import { heldIn } from '../../sdk/cli/timed-out';
import { cliMessage, maybeGrantedHint, mayHaveBeenGranted } from '../../sdk/cli/wording';
import { formatDuration, parseDuration } from '../../sdk/duration';
import {
  DeadlockError,
  errorFromResponse,
  InvalidArgumentError,
  LeaseLostError,
  LockHeldError,
  RetryWarning,
  UnavailableError,
  WaitTimeoutError,
} from '../../sdk/errors';
import { Lease } from '../../sdk/lease';

const refused = (details: { path: string; message: string }[]) =>
  errorFromResponse(400, {
    error: { code: 'INVALID_REQUEST', message: 'request body is invalid: …', details },
  });

describe('cliMessage', () => {
  it("the service's refusal of a field the CLI takes as a flag: the flag, durations as durations", () => {
    expect(cliMessage(refused([{ path: 'ttl_ms', message: 'ttl_ms must be at least 1000' }]))).toBe(
      '--ttl must be at least 1s',
    );
    expect(cliMessage(refused([{ path: 'ttl_ms', message: 'ttl_ms must be at most 3600000' }]))).toBe(
      '--ttl must be at most 1h',
    );
    // A bound exactly, never rounded to one the service would refuse.
    expect(cliMessage(refused([{ path: 'ttl_ms', message: 'ttl_ms must be at most 7140000' }]))).toBe(
      '--ttl must be at most 1h59m',
    );
    expect(cliMessage(refused([{ path: 'ttl_ms', message: 'ttl_ms must be at least 59990' }]))).toBe(
      '--ttl must be at least 59s990ms',
    );
    expect(
      cliMessage(refused([{ path: 'wait_timeout_ms', message: 'wait_timeout_ms must be at most 900000' }])),
    ).toBe('--wait must be at most 15m');
    expect(
      cliMessage(
        refused([{ path: 'priority', message: "priority must be at most 10 (this service's range)" }]),
      ),
    ).toBe("--priority must be at most 10 (this service's range)");
    expect(
      cliMessage(
        refused([
          { path: 'ttl_ms', message: 'ttl_ms must be at least 1000' },
          { path: 'max_holders', message: 'max_holders must be at most 1000' },
        ]),
      ),
    ).toBe('--ttl must be at least 1s; --max-holders must be at most 1000');
  });

  it('a refusal of anything else reads as the service wrote it', () => {
    const other = refused([
      { path: 'ttl_ms', message: 'ttl_ms must be at least 1000' },
      { path: 'client_id', message: 'client_id may contain only …' },
    ]);
    expect(cliMessage(other)).toBe('request body is invalid: …');
  });

  it("the SDK's argument errors: without the call, by flag; an empty --reason says why it is needed", () => {
    expect(
      cliMessage(
        new InvalidArgumentError(
          'priority',
          'acquire: priority must be an integer from -100 to 100 (got 1000)',
        ),
      ),
    ).toBe('--priority must be an integer from -100 to 100 (got 1000)');
    expect(
      cliMessage(
        new InvalidArgumentError('reason', "endSession: needs a reason: a non-empty string (got '')"),
      ),
    ).toBe('--reason must not be empty: it is recorded with your identity in the audit log');
    expect(
      cliMessage(new InvalidArgumentError('id', "endSession: the session id must be a UUID (got 'x')")),
    ).toBe("the session id must be a UUID (got 'x')");
  });

  it('a wait that ran out says for how long; behind its own hold, what to do, in CLI terms', () => {
    expect(cliMessage(new WaitTimeoutError('jobs/a', 90_000))).toBe(
      'lock jobs/a was not granted within 1.5m',
    );
    const own = cliMessage(new WaitTimeoutError('jobs/a', 2_000, 'ops@host'));
    expect(own).toBe(
      'lock jobs/a was not granted within 2s: this client id (ops@host) holds it already, and a wait does not queue behind its own hold; release it first, or wait as another --client-id',
    );
    expect(own).not.toMatch(/tryAcquire|reentrant/);
    // Whom it waited for, where the service said (or a lookup found): as a refusal says it.
    const held = new WaitTimeoutError('pool/gpu', 2_000, undefined, {
      holderSummary: {
        clientId: 'w1',
        expiresAt: new Date(Date.now() + 9_000),
        heldBy: 'lease',
        mine: false,
      },
      shared: { holders: 2, maxHolders: 2 },
    });
    expect(cliMessage(held)).toMatch(
      /^lock pool\/gpu was not granted within 2s: it is full: 2 of 2 holders \(w1 among them\), w1's lease ends in [89](\.\d)?s$/,
    );
    expect(held.message).toBe(
      'lock pool/gpu was not granted within 2000 ms: it is full: 2 of 2 holders (w1 among them)',
    );
  });

  it('a timed-out wait names the hold to wait out for its mode: the first lease to end for a shared wait, the last for an exclusive one', () => {
    const view = {
      mode: 'shared',
      max_holders: 3,
      holders: [
        { client_id: 'late', expires_at: '2030-01-01T00:00:09.000Z', held_by: 'lease', mine: true },
        { client_id: 'soon', expires_at: '2030-01-01T00:00:01.000Z', held_by: 'lease', mine: false },
        { client_id: 'sess', expires_at: null, held_by: 'session', mine: false },
      ],
    };
    expect(heldIn(view, true, 'me')).toEqual({
      holderSummary: {
        clientId: 'soon',
        expiresAt: new Date('2030-01-01T00:00:01.000Z'),
        heldBy: 'lease',
        mine: false,
      },
      shared: { holders: 3, maxHolders: 3 },
    });
    // A session's hold has no end: the last to wait out. Another principal's `mine` is not this client's.
    expect(heldIn(view, false, 'me')?.holderSummary).toEqual({
      clientId: 'sess',
      expiresAt: null,
      heldBy: 'session',
      mine: false,
    });
    // This very client's hold, found after its wait ended: a late grant being given back, not named.
    expect(heldIn({ ...view, holders: view.holders.slice(0, 1) }, false, 'late')).toBeUndefined();
    expect(heldIn({ ...view, holders: view.holders.slice(0, 1) }, false, 'me')?.holderSummary?.mine).toBe(
      false,
    );
    expect(heldIn({ mode: null, holders: [] }, false, 'me')).toBeUndefined();
    expect(heldIn(undefined, false, 'me')).toBeUndefined();
  });

  it('a release with the right token from another client id names the flag to give', () => {
    const error = new LeaseLostError(
      'ops does not hold jobs/a with fencing token 7: that token is held by client w-1: send the client_id that acquired it',
      'NOT_HOLDER',
    );
    expect(cliMessage(error)).toBe(
      'ops does not hold jobs/a with fencing token 7: that token is held by client w-1: give --client-id w-1',
    );
  });

  it('a refusal says until when the holder holds it, and whether it is this client id', () => {
    const expiresAt = new Date(Date.now() + 42_000);
    const theirs = new LockHeldError('jobs/a', 'ops', 42_000, undefined, {
      clientId: 'ops',
      expiresAt,
      heldBy: 'lease',
      mine: false,
    });
    expect(cliMessage(theirs)).toMatch(/^lock jobs\/a is held by ops, its lease ends in 4[12](\.\d)?s$/);
    const session = new LockHeldError('jobs/a', 'me', 1_000, undefined, {
      clientId: 'me',
      expiresAt: null,
      heldBy: 'session',
      mine: true,
    });
    expect(cliMessage(session)).toBe(
      'lock jobs/a is held by me (this client id), for as long as its session lives',
    );
    // The SDK's message says it is the caller's own hold, and how to take it again, in SDK terms.
    expect(session.message).toBe(
      'lock jobs/a is held by me: this client itself holds it; release that hold first, or take it again with tryAcquire(name, { reentrant: true })',
    );
    expect(theirs.message).toBe('lock jobs/a is held by ops');
    // Held shared: how many, a semaphore's N, and whose lease it is.
    const full = new LockHeldError(
      'pool/gpu',
      'w1',
      9_000,
      undefined,
      { clientId: 'w1', expiresAt: new Date(Date.now() + 9_000), heldBy: 'lease', mine: false },
      { holders: 2, maxHolders: 2 },
    );
    expect(full.message).toBe('lock pool/gpu is full: 2 of 2 holders (w1 among them)');
    expect(cliMessage(full)).toMatch(
      /^lock pool\/gpu is full: 2 of 2 holders \(w1 among them\), w1's lease ends in [89](\.\d)?s$/,
    );
    const readers = new LockHeldError('cfg', 'r1', 1, undefined, undefined, {
      holders: 1,
      maxHolders: undefined,
    });
    expect(readers.message).toBe('lock cfg is held shared by 1 holder (r1)');
    // Being handed to a waiter: no holder to describe.
    expect(cliMessage(new LockHeldError('jobs/a', undefined, 50))).toBe(
      'lock jobs/a is held (being handed to a waiter)',
    );
  });
});

describe('cliMessage, more', () => {
  it('a semaphore asked for with another N: the flag, and the N to give', () => {
    const mismatch = errorFromResponse(409, {
      error: {
        code: 'MAX_HOLDERS_MISMATCH',
        message:
          'pool/gpu is held as a semaphore of max_holders 2: every holder must ask for the same max_holders',
        details: [{ path: 'max_holders', message: '2 in force' }],
      },
    });
    expect(cliMessage(mismatch)).toBe(
      'pool/gpu is held as a semaphore of --max-holders 2: every holder must ask for the same --max-holders (give --shared --max-holders 2)',
    );
  });

  it('an acquire that failed as unavailable may have been granted, unless no attempt reached anyone', () => {
    const failed = (mayHaveApplied: boolean | undefined) => {
      const error = new UnavailableError('…', 503);
      error.mayHaveApplied = mayHaveApplied;
      return error;
    };
    expect(mayHaveBeenGranted(failed(true))).toBe(true);
    expect(mayHaveBeenGranted(failed(undefined))).toBe(true); // not known: maybe
    expect(mayHaveBeenGranted(failed(false))).toBe(false);
    expect(mayHaveBeenGranted(new LockHeldError('a', 'b', 1))).toBe(false);
    expect(maybeGrantedHint('acquire', 'jobs/a')).toContain('latchkey show jobs/a shows a grant of yours');
    expect(maybeGrantedHint('run', undefined)).toContain('it lapses at its --ttl');
  });
});

describe('retry lines', () => {
  const refusedAt = (attempt: number, call = 'inspect jobs/a') =>
    new RetryWarning(
      new UnavailableError('latchkey at … is unreachable', undefined, {
        endpoint: 'http://127.0.0.1:3000',
        reason: 'connect ECONNREFUSED 127.0.0.1:3000',
      }),
      attempt,
      5,
      call,
    );
  it('nothing at the default endpoint: once per call, with what to do; anywhere else, each retry', () => {
    const local = resolveEndpoints({}, {});
    expect([2, 3, 4, 5].map((n) => retryLine(refusedAt(n), local))).toEqual([
      'latchkey: inspect jobs/a: nothing answers at http://127.0.0.1:3000 (the HTTP API endpoint is the default, the local stack (start it with npm start); to use another, give --endpoint URL or set LATCHKEY_ENDPOINT=URL): trying again',
      undefined,
      undefined,
      undefined,
    ]);
    // The next call (a renewal, later) says it again.
    expect(retryLine(refusedAt(2, 'renew jobs/a'), local)).toMatch(
      /^latchkey: renew jobs\/a: nothing answers at/,
    );
    // Given explicitly, even the same URL: every retry, as an outage of a service that was there.
    const flag = resolveEndpoints({ endpoint: 'http://127.0.0.1:3000' }, {});
    expect(retryLine(refusedAt(3), flag)).toBe(
      'latchkey: inspect jobs/a: latchkey at http://127.0.0.1:3000 is unreachable (connect ECONNREFUSED 127.0.0.1:3000): trying again (attempt 3 of 5)',
    );
    // Not a refused connection (DynamoDB unavailable): every retry.
    const outage = new RetryWarning(
      new UnavailableError('DynamoDB is unavailable (TimeoutError)'),
      3,
      5,
      'renew jobs/a',
    );
    expect(retryLine(outage, local)).toBe(
      'latchkey: renew jobs/a: DynamoDB is unavailable (TimeoutError): trying again (attempt 3 of 5)',
    );
  });
});

describe('waitingLine', () => {
  const now = Date.parse('2026-12-04T12:00:00.000Z');
  it("behind this client id's own hold (an earlier acquire's): says it waits for that hold's end", () => {
    const view = {
      holders: [{ client_id: 'me', expires_at: '2026-12-04T12:09:30.000Z', mine: true }],
      queued: 0,
    };
    expect(waitingLine(['jobs/a'], view, 'me', now)).toBe(
      "waiting for jobs/a: held by this client id (me) itself, and a wait does not queue behind its own hold: it waits for that hold's end (release it, or wait as another --client-id)",
    );
    // Another principal's client of the same name is someone else.
    const theirs = {
      holders: [{ client_id: 'me', expires_at: '2026-12-04T12:09:30.000Z', mine: false }],
      queued: 0,
    };
    expect(waitingLine(['jobs/a'], theirs, 'me', now)).toBe(
      'waiting for jobs/a: held by me (lease ends in 9.5m), 0 queued',
    );
  });

  it('the note says nothing when its lookup failed, and nothing once the wait ended', async () => {
    vi.useFakeTimers();
    try {
      const said: string[] = [];
      const failing = { clientId: 'me', inspect: () => Promise.reject(new Error('unavailable')) };
      waitingNote(failing as never, ['jobs/a'], (line) => said.push(line));
      await vi.advanceTimersByTimeAsync(1_500);
      expect(said).toEqual([]);
      let answer: (view: unknown) => void = () => {};
      const slow = { clientId: 'me', inspect: () => new Promise((resolve) => (answer = resolve)) };
      const note = waitingNote(slow as never, ['jobs/a'], (line) => said.push(line));
      await vi.advanceTimersByTimeAsync(1_500);
      note.end();
      answer({ holders: [{ client_id: 'w', expires_at: null }], queued: 1 });
      await vi.advanceTimersByTimeAsync(10);
      expect(said).toEqual([]);
      // Several locks: no lookup, the names alone.
      waitingNote(slow as never, ['a', 'b'], (line) => said.push(line));
      await vi.advanceTimersByTimeAsync(1_500);
      expect(said).toEqual(['latchkey: waiting for a, b...']);
      // A wait that ends about when the note would come: its end says whom it waited for.
      for (const waitMs of [0, 1_000, 1_999])
        waitingNote(slow as never, ['c', 'd'], (line) => said.push(line), waitMs);
      await vi.advanceTimersByTimeAsync(1_500);
      expect(said).toHaveLength(1);
      waitingNote(slow as never, ['c', 'd'], (line) => said.push(line), 2_000);
      await vi.advanceTimersByTimeAsync(1_500);
      expect(said).toEqual(['latchkey: waiting for a, b...', 'latchkey: waiting for c, d...']);
    } finally {
      vi.useRealTimers();
    }
  });

  it('whom a waiting run waits for: the holder and its lease, shared holders, the queue', () => {
    expect(
      waitingLine(
        ['jobs/a'],
        { holders: [{ client_id: 'w-1', expires_at: '2026-12-04T12:00:25.000Z' }], queued: 2 },
        undefined,
        now,
      ),
    ).toBe('waiting for jobs/a: held by w-1 (lease ends in 25s), 2 queued');
    // Its own place, when the view shows it among the waiters.
    expect(
      waitingLine(
        ['jobs/a'],
        {
          holders: [{ client_id: 'w-1', expires_at: '2026-12-04T12:00:25.000Z' }],
          queued: 3,
          waiters: [
            { client_id: 'x', position: 1 },
            { client_id: 'me', position: 2 },
          ],
        },
        'me',
        now,
      ),
    ).toBe('waiting for jobs/a: held by w-1 (lease ends in 25s), 2nd of 3 in the queue');
    expect(
      waitingLine(
        ['pool/gpu'],
        {
          holders: [
            { client_id: 'a', expires_at: '2026-12-04T12:00:09.000Z' },
            { client_id: 'b', expires_at: '2026-12-04T12:00:19.000Z' },
          ],
          mode: 'shared',
          max_holders: 2,
          queued: 1,
        },
        undefined,
        now,
      ),
    ).toBe('waiting for pool/gpu: held by a, b (shared, 2 of 2), 1 queued');
    expect(
      waitingLine(
        ['pool/one'],
        {
          holders: [{ client_id: 'a', expires_at: '2026-12-04T12:00:25.000Z' }],
          mode: 'shared',
          max_holders: 1,
          queued: 1,
        },
        undefined,
        now,
      ),
    ).toBe('waiting for pool/one: held by a (shared, 1 of 1; lease ends in 25s), 1 queued');
    expect(
      waitingLine(['jobs/s'], { holders: [{ client_id: 's', expires_at: null }], queued: 1 }, undefined, now),
    ).toBe('waiting for jobs/s: held by s (through a session), 1 queued');
    // Several locks, or no view: only what for.
    expect(waitingLine(['jobs/a', 'jobs/b'])).toBe('waiting for jobs/a, jobs/b...');
    expect(waitingLine(['jobs/a'], { holders: [], queued: 1 })).toBe('waiting for jobs/a...');
  });
});

describe('graceRefusal', () => {
  it('a --kill-grace that does not fit in --ttl: the ttl it suggests is one the service takes too', () => {
    // Below the service's least ttl with a grace that fits it: the service's own refusal says so.
    expect(graceRefusal(0, 0)).toBeUndefined();
    expect(graceRefusal(3_000, 2_000)).toMatch(
      /^--kill-grace 2s does not fit in --ttl 3s: .*give a --ttl of at least 3\.\d+s/,
    );
    expect(graceRefusal(30_000, 5_000)).toBeUndefined();
  });

  it('the ttl it suggests fits, as printed, and is the least that does (to a tenth of a second)', () => {
    for (const grace of [0, 1, 50, 999, 1_000, 2_000, 5_000, 12_345, 30_000, 60_000, 600_000]) {
      const least = leastTtlFor(grace);
      const printed = parseDuration(formatDuration(least));
      expect(printed, `grace ${grace}`).toBe(least);
      expect(graceRefusal(least, grace), `grace ${grace}`).toBeUndefined();
      // Following the advice from any refused ttl ends there at once: no chain of suggestions.
      // The figure printed just below it (a tenth of its unit) does not fit.
      const step = least < 59_950 ? 100 : least < 3_597_000 ? 6_000 : 360_000;
      for (const ttl of [1_000, least - step, Math.floor(least / 2)].filter((t) => t >= 1_000 && t < least))
        expect(graceRefusal(ttl, grace)).toContain(`at least ${formatDuration(least)} `);
    }
    // The default --kill-grace 5s: about 8.83 s is the edge, printed 8.9s (8.8s does not fit).
    expect(leastTtlFor(5_000)).toBe(8_900);
    expect(graceRefusal(8_800, 5_000)).toBeDefined();
  });
});

describe('priorityNeedsWait', () => {
  it('--priority is refused where nothing waits (it would be ignored), taken where something does', () => {
    expect(() => priorityNeedsWait(5, 0)).toThrow(
      /--priority 5 orders a wait in the lock's queue.*give --wait with it/,
    );
    expect(() => priorityNeedsWait(5, 1_000)).not.toThrow();
    expect(() => priorityNeedsWait(5, undefined)).not.toThrow(); // run: waits until granted
    expect(() => priorityNeedsWait(undefined, 0)).not.toThrow();
  });
});

describe('--json views', () => {
  it("a lease: the HTTP API's grant, acquired: true, with what is left of it and its reentry count", () => {
    const lease = new Lease(
      {
        lock: 'jobs/a',
        client_id: 'ops',
        fencing_token: 7,
        expires_at: new Date(Date.now() + 30_000).toISOString(),
        remaining_ms: 30_000,
        ttl_ms: 30_000,
        reentry: 2,
      },
      performance.now(),
    );
    const view = leaseView(lease);
    expect(view).toMatchObject({
      acquired: true,
      lock: 'jobs/a',
      client_id: 'ops',
      fencing_token: 7,
      ttl_ms: 30_000,
      mode: 'exclusive',
      reentry: 2,
    });
    expect(view.remaining_ms).toBeGreaterThan(29_000);
    expect(view.remaining_ms).toBeLessThanOrEqual(30_000);
    expect(Number.isInteger(view.remaining_ms)).toBe(true);
  });

  it("a refusal's holder is the HTTP API's object, not a bare client id", () => {
    const error = new LockHeldError('jobs/a', 'ops', 5_000, undefined, {
      clientId: 'ops',
      expiresAt: new Date('2026-12-04T12:00:00.000Z'),
      heldBy: 'lease',
      mine: false,
    });
    expect(notAcquiredView('jobs/a', error)).toEqual({
      acquired: false,
      lock: 'jobs/a',
      holder: { client_id: 'ops', expires_at: '2026-12-04T12:00:00.000Z', held_by: 'lease' },
      retry_after_ms: 5_000,
    });
  });

  it("an error: the HTTP API's error shape, a deadlock with its cycle as the service writes it", () => {
    expect(errorView(refused([{ path: 'ttl_ms', message: 'ttl_ms must be at least 1000' }]))).toEqual({
      error: { code: 'INVALID_REQUEST', message: '--ttl must be at least 1s', retryable: false },
    });
    const deadlock = new DeadlockError('would deadlock', [
      {
        waiter: { clientId: 'a', party: 'p1', mine: true },
        lock: 'x',
        blocker: { clientId: 'b', party: 'p2', mine: false },
        blockerIs: 'holder',
      },
    ]);
    expect(errorView(deadlock).error).toMatchObject({
      code: 'DEADLOCK',
      cycle: [{ waiter: { client_id: 'a' }, lock: 'x', blocker: { client_id: 'b' }, blocker_is: 'holder' }],
    });
    expect(errorView(new Error('boom'))).toEqual({
      error: { code: 'CLI_ERROR', message: 'boom', retryable: false },
    });
  });
});

describe('httpWaitsNote', () => {
  it('a long wait over HTTP, when only the HTTP API endpoint is known, says so with its waiting note', async () => {
    const httpOnly = resolveEndpoints({}, { LATCHKEY_ENDPOINT: 'http://127.0.0.1:3756' });
    expect(httpOnly.ws).toBeUndefined();
    expect(httpWaitsNote(undefined, httpOnly)).toMatch(
      /no WebSocket endpoint \(give --ws-endpoint URL or set LATCHKEY_WS_ENDPOINT\): this wait goes over HTTP, rejoining the queue at its end every 25s/,
    );
    expect(httpWaitsNote(60_000, httpOnly)).toBeDefined();
    // A wait one HTTP wait covers, or none, or a WebSocket endpoint known: nothing to say.
    expect(httpWaitsNote(25_000, httpOnly)).toBeUndefined();
    expect(httpWaitsNote(0, httpOnly)).toBeUndefined();
    expect(httpWaitsNote(undefined, resolveEndpoints({}, {}))).toBeUndefined();
    // Said only once the wait has lasted a moment: a lock granted at once says nothing.
    vi.useFakeTimers();
    try {
      const said: string[] = [];
      const lookup = { clientId: 'me', inspect: () => new Promise(() => {}) };
      const granted = waitingNote(lookup as never, ['a'], (line) => said.push(line), Infinity, 'over HTTP');
      granted.end();
      await vi.advanceTimersByTimeAsync(1_500);
      expect(said).toEqual([]);
      waitingNote(lookup as never, ['a'], (line) => said.push(line), Infinity, 'over HTTP');
      await vi.advanceTimersByTimeAsync(1_500);
      expect(said).toEqual(['over HTTP']);
    } finally {
      vi.useRealTimers();
    }
  });
});
