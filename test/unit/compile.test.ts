import { describe, expect, it } from 'vitest';
import { add, and, eq, gt, le, missing, ne, or, remove, set } from '../../lambdas/core/expr';
import { acquireProtocol, releaseProtocol } from '../../lambdas/core/lock';
import { compile } from '../../lambdas/store/compile';
import { lockWriteRequest } from '../../lambdas/store/lock-requests';

describe('compile', () => {
  it('names every attribute and value with placeholders', () => {
    const out = compile(and(or(missing('holder'), le('expires_at', 10)), ne('x', 'y')), [
      set('holder', 'a'),
      add('fence', 1, 5000),
      remove('gone'),
    ]);
    expect(out.ConditionExpression).toBe('((attribute_not_exists(#a0) OR #a1 <= :v0) AND #a2 <> :v1)');
    expect(out.UpdateExpression).toBe('SET #a0 = :v2, #a3 = if_not_exists(#a3, :v3) + :v4 REMOVE #a4');
    expect(out.ExpressionAttributeNames).toEqual({
      '#a0': 'holder',
      '#a1': 'expires_at',
      '#a2': 'x',
      '#a3': 'fence',
      '#a4': 'gone',
    });
    expect(out.ExpressionAttributeValues).toEqual({
      ':v0': 10,
      ':v1': 'y',
      ':v2': 'a',
      ':v3': 5000,
      ':v4': 1,
    });
  });

  it('refuses an empty and/or instead of emitting invalid syntax', () => {
    expect(() => compile(and(), [set('a', 1)])).toThrow(/empty and/);
  });

  it('keeps a single-part group unparenthesised', () => {
    expect(compile(and(gt('a', 1)), [set('a', 2)]).ConditionExpression).toBe('#a0 > :v0');
    expect(compile(eq('a', 1), [set('a', 2)]).ConditionExpression).toBe('#a0 = :v0');
  });
});

describe('lock write requests', () => {
  const settings = { tableName: 'locks', retentionSeconds: 3600 };

  it('acquire is one conditional UpdateItem that returns the old item on refusal', () => {
    const now = 1_700_000_000_123;
    const write = acquireProtocol({ name: 'jobs/nightly', clientId: 'worker-1', ttlMs: 30_000 }, now).first;
    const request = lockWriteRequest(settings, 'jobs/nightly', write, now);
    expect(request).toMatchObject({
      TableName: 'locks',
      Key: { pk: 'LOCK#jobs/nightly', sk: 'LOCK' },
      ReturnValues: 'ALL_NEW',
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      // Free (no holder, no lease end, or lapsed), not under lock-delay, and nobody queued (the queue owns a
      // free lock with waiters).
      ConditionExpression:
        '(((attribute_not_exists(#a0) OR attribute_not_exists(#a1) OR #a1 <= :v0) AND (attribute_not_exists(#a2) OR #a2 <= :v1)) AND (attribute_not_exists(#a3) OR #a3 <= :v2))',
    });
    expect(request.ExpressionAttributeNames).toMatchObject({
      '#a0': 'holder',
      '#a1': 'expires_at',
      '#a2': 'blocked_until',
      '#a3': 'queued',
    });
    const names = request.ExpressionAttributeNames ?? {};
    const fence = Object.keys(names).find((placeholder) => names[placeholder] === 'fence');
    const counter = request.UpdateExpression?.match(
      new RegExp(`${fence} = if_not_exists\\(${fence}, (:v\\d+)\\) \\+ (:v\\d+)`),
    );
    expect(counter).not.toBeNull();
    expect(request.ExpressionAttributeValues?.[counter?.[1] as string]).toBe(1_700_000_000_123_000);
    expect(request.ExpressionAttributeValues?.[counter?.[2] as string]).toBe(1);
    // Listing index keys and the garbage-collection time ride along.
    const values = Object.values(request.ExpressionAttributeValues ?? {});
    expect(values).toContain('LOCK');
    expect(values).toContain(Math.ceil((now + 30_000) / 1000) + 3600);
  });

  it('release is conditioned on holder, token, a live lease and no outstanding reentry', () => {
    const now = 1_000;
    const write = releaseProtocol({ name: 'n', clientId: 'c', fencingToken: 7 }, now).first;
    expect(compile(write.condition, write.update).ConditionExpression).toBe(
      '((#a0 = :v0 AND #a1 = :v1) AND #a2 > :v2 AND (attribute_not_exists(#a3) OR #a3 <= :v3))',
    );
  });
});
