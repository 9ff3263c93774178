/** The SDK's pure parts: durations, endpoint resolution, error mapping, fencing, lease arithmetic. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LOCAL_HTTP, LOCAL_WS, resolveEndpoints } from '../../sdk/cli/endpoints';
import { formatDuration, formatExactDuration } from '../../sdk/duration';
import { errorFromResponse } from '../../sdk/errors';
import {
  FenceGuard,
  ForbiddenError,
  InvalidRequestError,
  Lease,
  LeaseLostError,
  LimitExceededError,
  parseDuration,
  SessionExpiredError,
  StaleTokenError,
  UnauthorizedError,
  UnavailableError,
} from '../../sdk/index';
import { regionOf } from '../../sdk/transport';

describe('durations', () => {
  it('reads ms, s, m and h, and refuses anything else with a clear message', () => {
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('30s')).toBe(30_000);
    expect(parseDuration('1.5s')).toBe(1_500);
    expect(parseDuration('5m')).toBe(300_000);
    expect(parseDuration('2h')).toBe(7_200_000);
    expect(parseDuration('1m30s')).toBe(90_000);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration(' 2s ')).toBe(2_000);
    expect(parseDuration('0.0005s')).toBe(1); // rounded to whole ms
    expect(parseDuration('0')).toBe(0); // the same in every unit
    for (const bad of ['', 'soon', '-5s', '5 minutes', '1e3', '5d', '1m30', 's', '1..5s', '30 s'])
      expect(() => parseDuration(bad)).toThrow(/not a duration/);
  });

  it('formatDuration rounds to a tenth of its unit and never writes a trailing .0', () => {
    const f = (ms: number) => formatDuration(ms);
    expect([999, 1_000, 1_500, 59_900, 59_960, 299_500, 300_000, 3_598_000, 9_000_000].map(f)).toEqual([
      '999ms',
      '1s',
      '1.5s',
      '59.9s',
      '1m',
      '5m',
      '5m',
      '1h',
      '2.5h',
    ]);
  });

  it('formatExactDuration writes a whole ms exactly, in units parseDuration reads back', () => {
    expect(formatExactDuration(3_600_000)).toBe('1h');
    expect(formatExactDuration(7_140_000)).toBe('1h59m');
    expect(formatExactDuration(59_990)).toBe('59s990ms');
    expect(formatExactDuration(1_000)).toBe('1s');
    expect(formatExactDuration(0)).toBe('0');
    for (const ms of [1, 999, 1_001, 61_500, 3_599_999, 3_600_001, 86_400_000])
      expect(parseDuration(formatExactDuration(ms))).toBe(ms);
  });

  it('refuses a bare number: 30 could be 30 ms or 30 s', () => {
    for (const bare of ['30', '1500', '2.5'])
      expect(() => parseDuration(bare)).toThrow(/has no unit: give a unit, e\.g\. 30s or 30000ms/);
  });
});

describe('endpoint resolution', () => {
  it('--endpoint, then LATCHKEY_ENDPOINT, then the CDK outputs file, then the local stack', () => {
    const dir = mkdtempSync(join(tmpdir(), 'latchkey-out-'));
    const outputs = join(dir, 'out.json');
    writeFileSync(
      outputs,
      JSON.stringify({
        Latchkey: {
          ApiUrl: 'https://abc.execute-api.eu-west-1.amazonaws.com',
          WebSocketUrl: 'wss://ws.execute-api.eu-west-1.amazonaws.com/v1',
        },
      }),
    );
    const env = { LATCHKEY_ENDPOINT: 'https://env.example', LATCHKEY_OUTPUTS_FILE: outputs };
    expect(resolveEndpoints({ endpoint: 'https://flag.example' }, env)).toMatchObject({
      http: 'https://flag.example',
    });
    expect(resolveEndpoints({}, env)).toMatchObject({ http: 'https://env.example', ws: undefined });
    expect(resolveEndpoints({}, { LATCHKEY_OUTPUTS_FILE: outputs })).toMatchObject({
      http: 'https://abc.execute-api.eu-west-1.amazonaws.com',
      ws: 'wss://ws.execute-api.eu-west-1.amazonaws.com/v1',
    });
    expect(resolveEndpoints({}, {})).toMatchObject({ http: LOCAL_HTTP, ws: LOCAL_WS });
    writeFileSync(outputs, '{"Other": {"TableName": "t"}}');
    expect(() => resolveEndpoints({}, { LATCHKEY_OUTPUTS_FILE: outputs })).toThrow(/no stack with an ApiUrl/);
    expect(regionOf('https://abc.execute-api.eu-west-1.amazonaws.com', 'x')).toBe('eu-west-1');
    expect(regionOf('http://127.0.0.1:3000', 'us-east-1')).toBe('us-east-1');
  });
});

describe('errors from answers', () => {
  it('maps statuses and codes to typed errors, retryable only when a retry can help', () => {
    const e = (status: number, code?: string) => errorFromResponse(status, { error: { code, message: 'm' } });
    expect(e(400, 'INVALID_REQUEST')).toBeInstanceOf(InvalidRequestError);
    expect(e(403, 'UNAUTHORIZED')).toBeInstanceOf(UnauthorizedError);
    // Another principal's lock, session or connection: not a signing problem, and no retry helps.
    expect(e(403, 'FORBIDDEN')).toBeInstanceOf(ForbiddenError);
    expect(e(403, 'FORBIDDEN')).toMatchObject({ code: 'FORBIDDEN', retryable: false });
    expect(e(403, 'FORBIDDEN')).not.toBeInstanceOf(UnauthorizedError);
    // A limit's 429 says when to try again; a throttle's 429 is unavailability.
    for (const code of ['QUEUE_FULL', 'TOO_MANY_WAITERS', 'TOO_MANY_WAITS']) {
      const limit = errorFromResponse(429, { error: { code, message: 'm', retry_after_ms: 2_500 } });
      expect(limit).toBeInstanceOf(LimitExceededError);
      expect(limit).toMatchObject({ code, retryable: true, retryAfterMs: 2_500, status: 429 });
    }
    expect(e(429, 'THROTTLED')).toBeInstanceOf(UnavailableError);
    expect(e(409, 'NOT_HOLDER')).toBeInstanceOf(LeaseLostError);
    expect(e(409, 'LEASE_EXPIRED')).toBeInstanceOf(LeaseLostError);
    expect(e(409, 'SESSION_EXPIRED')).toBeInstanceOf(SessionExpiredError);
    expect(e(503, 'UNAVAILABLE')).toBeInstanceOf(UnavailableError);
    expect(e(429)).toMatchObject({ retryable: true });
    expect(e(409, 'NOT_HOLDER')).toMatchObject({ retryable: false, code: 'NOT_HOLDER' });
    // A loss names the lock the call was about, when it was about one.
    const about = (code: string, status = 409) =>
      errorFromResponse(status, { error: { code, message: 'm' } }, 'jobs/a') as LeaseLostError;
    expect(about('NOT_HOLDER').lock).toBe('jobs/a');
    expect(about('LEASE_EXPIRED').lock).toBe('jobs/a');
    expect(about('FORBIDDEN', 403).lock).toBe('jobs/a');
    expect(e(409, 'NOT_HOLDER')).toMatchObject({ lock: undefined, sessionId: undefined });
    expect(errorFromResponse(403, { message: 'Forbidden' }).message).toBe('Forbidden'); // API Gateway's own
  });

  it("a 400 about fields the SDK's options set reads in the options' names; its details keep the API's", () => {
    const refused = (details: { path: string; message: string }[]) =>
      errorFromResponse(400, {
        error: {
          code: 'INVALID_REQUEST',
          message: `request body is invalid: ${details[0]?.path}: …`,
          details,
        },
      }) as InvalidRequestError;
    const ttl = refused([{ path: 'ttl_ms', message: 'ttl_ms must be at least 1000' }]);
    expect(ttl.message).toBe('ttlMs must be at least 1000');
    expect(ttl.details).toEqual([{ path: 'ttl_ms', message: 'ttl_ms must be at least 1000' }]);
    expect(
      refused([
        { path: 'wait_timeout_ms', message: 'wait_timeout_ms must be at most 900000' },
        { path: 'priority', message: "priority must be at most 10 (this service's range)" },
      ]).message,
    ).toBe("waitTimeoutMs must be at most 900000; priority must be at most 10 (this service's range)");
    // A field no option sets: the service's message as it is.
    expect(refused([{ path: 'client_id', message: 'client_id may contain only …' }]).message).toBe(
      'request body is invalid: client_id: …',
    );
  });
});

describe('FenceGuard', () => {
  it('accepts equal or higher tokens per lock, refuses lower ones', () => {
    const guard = new FenceGuard();
    guard.check('a', 10);
    guard.check('a', 10);
    guard.check('b', 3);
    expect(() => guard.check('a', 9)).toThrow(StaleTokenError);
    expect(guard.accepts('a', 11)).toBe(true);
    expect(guard.highestSeen('a')).toBe(10);
    expect(() => guard.check('a', 0)).toThrow(RangeError);
  });
});

describe('Lease', () => {
  it('judges its deadline by the send time on the local clock, never the server timestamp', () => {
    const answer = {
      lock: 'l',
      client_id: 'c',
      fencing_token: 5,
      expires_at: '2000-01-01T00:00:00.000Z', // a server clock far behind must not matter
      remaining_ms: 30_000,
      ttl_ms: 30_000,
    };
    const lease = new Lease(answer, 1_000);
    expect(lease.deadline).toBe(31_000);
    expect(lease.remainingMs(11_000)).toBe(20_000);
    lease.renewed({ expires_at: answer.expires_at, remaining_ms: 30_000 }, 20_000);
    expect(lease.deadline).toBe(50_000);
    // A renewal to a shorter ttl shortens the deadline too: never later than the server's lease end.
    lease.renewed({ expires_at: answer.expires_at, remaining_ms: 5_000, ttl_ms: 5_000 }, 21_000);
    expect(lease.deadline).toBe(26_000);
    expect(lease.ttlMs).toBe(5_000);
  });
});

describe('durations sent to the service', () => {
  it('are whole milliseconds: any finite, non-negative number is rounded, anything else refused before a call', async () => {
    const { wholeMs } = await import('../../sdk/client');
    expect(wholeMs('waitTimeoutMs', 2_499.7)).toBe(2_500);
    expect(wholeMs('waitTimeoutMs', 0)).toBe(0);
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, -1])
      expect(() => wholeMs('waitTimeoutMs', bad)).toThrow(InvalidRequestError);
  });
});

describe('a lease held through a session', () => {
  it('has no lease end of its own: its deadline is the session’s to tell', () => {
    const lease = new Lease(
      {
        lock: 'leader',
        client_id: 'a',
        fencing_token: 3,
        expires_at: null,
        remaining_ms: null,
        ttl_ms: null,
        session_id: 's-1',
      },
      100,
    );
    expect(lease).toMatchObject({ sessionId: 's-1', ttlMs: 0, expiresAt: undefined });
    expect(lease.remainingMs()).toBe(Number.POSITIVE_INFINITY);
  });
});
