import { describe, expect, it } from 'vitest';
import { add, and, eq, gt, le, missing, ne, or, remove, set } from '../../lambdas/core/expr';
import { lockRef } from '../../lambdas/core/items';
import {
  acquireProtocol,
  lease,
  pinnedGrant,
  releaseProtocol,
  throughSession,
} from '../../lambdas/core/lock';
import { compile } from '../../lambdas/store/compile';
import { transactRequest, updateRequest } from '../../lambdas/store/requests';

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
    const write = acquireProtocol(
      { name: 'jobs/nightly', clientId: 'worker-1', tenure: lease(30_000) },
      now,
    ).first;
    const request = updateRequest(settings, lockRef('jobs/nightly'), write);
    expect(request).toMatchObject({
      TableName: 'locks',
      Key: { pk: 'LOCK#jobs/nightly', sk: 'LOCK' },
      ReturnValues: 'ALL_NEW',
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      // Free (no holder; or no session and no lease end, or lapsed), not under lock-delay, and nobody
      // queued (the queue owns a free lock with waiters).
      ConditionExpression:
        '(((attribute_not_exists(#a0) OR (attribute_not_exists(#a1) AND (attribute_not_exists(#a2) OR #a2 <= :v0))) AND (attribute_not_exists(#a3) OR #a3 <= :v1)) AND (attribute_not_exists(#a4) OR #a4 <= :v2))',
    });
    expect(request.ExpressionAttributeNames).toMatchObject({
      '#a0': 'holder',
      '#a1': 'session_id',
      '#a2': 'expires_at',
      '#a3': 'blocked_until',
      '#a4': 'queued',
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
      '((#a0 = :v0 AND #a1 = :v1) AND (attribute_exists(#a0) AND (attribute_exists(#a2) OR #a3 > :v2)) AND (attribute_not_exists(#a4) OR #a4 <= :v3))',
    );
  });

  it('a grant held through a session removes the TTL attribute; a lease sets it past the lease end', () => {
    const now = 1_700_000_000_000;
    const grantee = { name: 'leader', clientId: 'a' };
    const session = pinnedGrant({ ...grantee, tenure: throughSession('s') }, undefined, now, 'w').write;
    const leased = pinnedGrant({ ...grantee, tenure: lease(60_000) }, undefined, now, 'w').write;
    const sessionRequest = updateRequest(settings, lockRef('leader'), session);
    const gc = Object.entries(sessionRequest.ExpressionAttributeNames ?? {}).find(
      ([, n]) => n === 'gc_at',
    )?.[0];
    expect(sessionRequest.UpdateExpression).toMatch(new RegExp(`REMOVE .*${gc}`));
    const leasedRequest = updateRequest(settings, lockRef('leader'), leased);
    expect(Object.values(leasedRequest.ExpressionAttributeValues ?? {})).toContain(
      Math.ceil((now + 60_000) / 1000) + 3600,
    );
  });

  it('a transaction step that refuses returns the item as it was', () => {
    const write = pinnedGrant({ name: 'n', clientId: 'a', tenure: lease(1000) }, undefined, 5, 'w').write;
    const { TransactItems } = transactRequest(settings, [
      { kind: 'update', ref: lockRef('n'), ...write },
      { kind: 'delete', ref: { kind: 'waiter', lock: 'n', order: 'o' } },
      {
        kind: 'check',
        ref: { kind: 'session', session: 's' },
        condition: { kind: 'exists', attr: 'client_id' },
      },
    ]);
    expect(TransactItems?.[0]?.Update).toMatchObject({
      Key: { pk: 'LOCK#n', sk: 'LOCK' },
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
    });
    expect(TransactItems?.[1]?.Delete).toMatchObject({ Key: { pk: 'LOCK#n', sk: 'WAIT#o' } });
    expect(TransactItems?.[2]?.ConditionCheck).toMatchObject({
      Key: { pk: 'SESS#s', sk: 'SESS' },
      ConditionExpression: 'attribute_exists(#a0)',
    });
  });
});
