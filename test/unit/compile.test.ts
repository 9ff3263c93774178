import { describe, expect, it } from 'vitest';
import { keeperOf, keeperSteps } from '../../lambdas/core/deadlock';
import { add, and, applyUpdate, eq, gt, le, missing, ne, or, remove, set } from '../../lambdas/core/expr';
import { freeSlotWrite, takeSlotWrite } from '../../lambdas/core/http-wait';
import { httpWaitRef, lockRef, type Step, sessionRef } from '../../lambdas/core/items';
import {
  acquireProtocol,
  grantOf,
  LockAttr,
  lease,
  pinnedGrant,
  releaseProtocol,
  renewProtocol,
  requestKey,
  throughSession,
} from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import {
  enqueueSteps,
  handoffSteps,
  leaveSteps,
  moveDeliverySteps,
  orphanLeaveSteps,
  queueOrder,
  takeBackSteps,
  type Waiter,
  waiterOf,
} from '../../lambdas/core/queue';
import { createWrite, endWrite, heartbeatWrite, sessionOfItem } from '../../lambdas/core/session';
import { DEFAULT_LIMITS } from '../../lambdas/core/wire';
import { compile } from '../../lambdas/store/compile';
import { fullUpdate, transactRequest, updateRequest } from '../../lambdas/store/requests';
import {
  GC_ATTRIBUTE,
  KEY,
  keyOf,
  LIST_INDEX,
  LIST_PARTITIONS,
  LOCK_SK,
  lockListing,
  refOfKey,
} from '../../lambdas/store/table';

const OWNER = localPrincipal('worker');

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
      { name: 'jobs/nightly', owner: OWNER, clientId: 'worker-1', tenure: lease(30_000) },
      now,
    ).first;
    const request = updateRequest(settings, lockRef('jobs/nightly'), write);
    expect(request).toMatchObject({
      TableName: 'locks',
      Key: { pk: 'LOCK#jobs/nightly', sk: 'LOCK' },
      ReturnValues: 'ALL_NEW',
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      // Free (no holder; or no session and no lease end, or lapsed), not under lock-delay (of any
      // holder, or of a shared holder's session: writers), nobody queued (the queue owns a free lock
      // with waiters), and no shared entry at all (one that lapsed needs a second, informed write).
      ConditionExpression:
        '(((attribute_not_exists(#a0) OR (attribute_not_exists(#a1) AND (attribute_not_exists(#a2) OR #a2 <= :v0))) AND (attribute_not_exists(#a3) OR #a3 <= :v1)) AND (attribute_not_exists(#a4) OR #a4 <= :v2) AND (attribute_not_exists(#a5) OR #a5 <= :v3) AND (attribute_not_exists(#a6) OR #a6 <= :v4))',
    });
    expect(request.ExpressionAttributeNames).toMatchObject({
      '#a0': 'holder',
      '#a1': 'session_id',
      '#a2': 'expires_at',
      '#a3': 'blocked_until',
      '#a4': 'writers_blocked_until',
      '#a5': 'queued',
      '#a6': 'shared_count',
    });
    const names = request.ExpressionAttributeNames ?? {};
    const fence = Object.keys(names).find((placeholder) => names[placeholder] === 'fence');
    const counter = request.UpdateExpression?.match(
      new RegExp(`${fence} = if_not_exists\\(${fence}, (:v\\d+)\\) \\+ (:v\\d+)`),
    );
    expect(counter).not.toBeNull();
    expect(request.ExpressionAttributeValues?.[counter?.[1] as string]).toBe(1_700_000_000_123_000);
    expect(request.ExpressionAttributeValues?.[counter?.[2] as string]).toBe(1);
    // The grant records the caller's principal.
    const owner = Object.keys(names).find((placeholder) => names[placeholder] === LockAttr.owner);
    const ownerValue = request.UpdateExpression?.match(new RegExp(`${owner} = (:v\\d+)`))?.[1];
    expect(request.ExpressionAttributeValues?.[ownerValue as string]).toBe(OWNER);
    // Listing index keys (the name's shard of the listing index) and the garbage-collection time ride along.
    const values = Object.values(request.ExpressionAttributeValues ?? {});
    const listing = lockListing('jobs/nightly');
    expect(LIST_PARTITIONS).toContain(listing[LIST_INDEX.pk]);
    expect(values).toContain(listing[LIST_INDEX.pk]);
    expect(values).toContain('jobs/nightly');
    expect(values).toContain(Math.ceil((now + 30_000) / 1000) + 3600);
  });

  it('release is conditioned on owner, holder, token, a live lease, no outstanding reentry and no count-down to check', () => {
    const now = 1_000;
    const write = releaseProtocol({ name: 'n', owner: OWNER, clientId: 'c', fencingToken: 7 }, now).first;
    const compiled = compile(write.condition, write.update);
    expect(compiled.ConditionExpression).toBe(
      '(((#a0 = :v0 AND #a1 = :v1 AND #a2 = :v2) AND (attribute_exists(#a1) AND (attribute_exists(#a3) OR #a4 > :v3)) AND (attribute_not_exists(#a5) OR #a5 <= :v4)) AND attribute_not_exists(#a6))',
    );
    expect(compiled.ExpressionAttributeNames).toMatchObject({
      '#a0': 'principal',
      '#a1': 'holder',
      '#a2': 'fence',
      '#a3': 'session_id',
      '#a4': 'expires_at',
      '#a5': 'reentry',
      '#a6': 'releases',
    });
    expect(compiled.ExpressionAttributeValues).toMatchObject({ ':v0': OWNER, ':v1': 'c', ':v2': 7 });
  });

  it('a grant held through a session removes the TTL attribute; a lease sets it past the lease end', () => {
    const now = 1_700_000_000_000;
    const grantee = { name: 'leader', owner: OWNER, clientId: 'a' };
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
    const write = pinnedGrant(
      { name: 'n', owner: OWNER, clientId: 'a', tenure: lease(1000) },
      undefined,
      5,
      'w',
    ).write;
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

describe('every write is one DynamoDB accepts', () => {
  const settings = { tableName: 'locks', retentionSeconds: 86_400 };
  const now = 1_800_000_000_000;
  const waiter = (connectionId: string | undefined, tenure = lease(1_000)): Waiter => ({
    lock: 'jobs/nightly',
    order: queueOrder(0, now, 'n'),
    owner: OWNER,
    clientId: 'worker-2',
    tenure,
    requestId: 'r1',
    requestKey: requestKey(OWNER, 'worker-2', 'r1'),
    deadline: now + 10_000,
    priority: 0,
    arrivedAt: now,
    connectionId,
    mode: 'exclusive',
    maxHolders: undefined,
  });
  const held = pinnedGrant(
    { name: 'jobs/nightly', owner: OWNER, clientId: 'worker-1', tenure: lease(1_000) },
    undefined,
    now - 10,
    'w0',
  ).grant;
  const session = sessionOfItem('s', {
    owner: OWNER,
    client_id: 'worker-2',
    ttl_ms: 3_000,
    grace_ms: 0,
    deadline: now + 3_000,
    expires_at: now + 3_000,
  });
  const cases: [string, Step[]][] = [
    ['enqueue over HTTP', enqueueSteps(waiter(undefined), now, DEFAULT_LIMITS)],
    ['enqueue over WebSocket', enqueueSteps(waiter('conn-1'), now, DEFAULT_LIMITS)],
    ['enqueue through a session', enqueueSteps(waiter('conn-1', throughSession('s')), now, DEFAULT_LIMITS)],
    ['leave', leaveSteps(waiter('conn-1'), 'cancelled', now)],
    ['orphan leave', orphanLeaveSteps(waiter(undefined), 'timeout', now)],
    ['move delivery', moveDeliverySteps(waiter('conn-1'), 'conn-2', now)],
    ['move delivery from HTTP', moveDeliverySteps(waiter(undefined), 'conn-2', now)],
    ['handoff', handoffSteps(waiter('conn-1'), undefined, now, 'w1').steps],
    [
      'handoff through a session',
      handoffSteps(waiter(undefined, throughSession('s')), undefined, now, 'w1').steps,
    ],
    ['take back', takeBackSteps(held, waiter('conn-1'), 'w1', now)],
    [
      'lock protocols',
      [
        acquireProtocol({ name: 'n', owner: OWNER, clientId: 'c', tenure: lease(1_000), requestId: 'r' }, now)
          .first,
        releaseProtocol({ name: 'n', owner: OWNER, clientId: 'c', fencingToken: 7 }, now).first,
        renewProtocol({ name: 'n', owner: OWNER, clientId: 'c', fencingToken: 7, ttlMs: 1_000 }, now).first,
      ].map((write) => ({ kind: 'update' as const, ref: lockRef('n'), ...write })),
    ],
    [
      'sessions',
      [
        createWrite(OWNER, 'worker-2', { ttlMs: 3_000, graceMs: 0, lockDelayMs: 0 }, now),
        heartbeatWrite(session, now),
        endWrite(session, 'closed', now),
      ].map((write) => ({ kind: 'update' as const, ref: sessionRef('s'), ...write })),
    ],
    [
      'HTTP wait slots',
      [takeSlotWrite('h', now, now + 1_000), freeSlotWrite('h')].map((write) => ({
        kind: 'update' as const,
        ref: httpWaitRef(0),
        ...write,
      })),
    ],
  ];

  // DynamoDB refuses an UpdateExpression whose paths overlap ("Two document paths overlap"): every
  // attribute a write sets or removes, its housekeeping (index keys, TTL) included, must be named once.
  it.each(cases)('%s: no update names one attribute twice, housekeeping included', (_, steps) => {
    const updates = steps.flatMap((step) => (step.kind === 'update' ? [step] : []));
    expect(updates.length).toBeGreaterThan(0);
    for (const step of updates) {
      const attrs = fullUpdate(settings, step.ref, step).map((action) => action.attr);
      const twice = attrs.filter((attr, i) => attrs.indexOf(attr) !== i);
      expect(twice, `${step.ref.kind} update names ${twice.join(', ')} twice`).toEqual([]);
    }
  });

  it('a waiter item, stored with its housekeeping, keeps the principal it waits for', () => {
    for (const connection of [undefined, 'conn-1']) {
      const plain = waiter(connection);
      // With and without the locks its task keeps (deadlock detection).
      for (const w of [plain, { ...plain, holding: ['jobs/a', 'jobs/b/c'] }]) {
        const step = enqueueSteps(w, now, DEFAULT_LIMITS)[1] as Step & { kind: 'update' };
        const stored = applyUpdate(undefined, fullUpdate(settings, step.ref, step));
        expect(waiterOf(w.order, stored)).toEqual(w);
        // Moving its delivery to another connection keeps it too.
        const move = moveDeliverySteps(w, 'conn-2', now)[0] as Step & { kind: 'update' };
        const moved = applyUpdate(stored, fullUpdate(settings, move.ref, move));
        expect(waiterOf(w.order, moved)).toEqual({ ...w, connectionId: 'conn-2' });
      }
    }
  });

  it("a keeper record sits in its lock's partition outside the queue's range, names the wait, and is collected after it", () => {
    const w = { ...waiter(undefined), holding: ['jobs/held', 'jobs/other'] };
    const steps = keeperSteps(w);
    expect(steps).toHaveLength(2);
    const step = steps[0] as Step & { kind: 'update' };
    const key = keyOf(step.ref);
    expect(key.pk).toBe(keyOf(lockRef('jobs/held')).pk);
    // The queue is read as the range LOCK..WAIT#\uffff: a keeper sorts before it.
    expect(key.sk < LOCK_SK).toBe(true);
    expect(refOfKey({ [KEY.pk]: key.pk, [KEY.sk]: key.sk })).toEqual(step.ref);
    expect(step.condition).toBeUndefined();
    const stored = applyUpdate(undefined, fullUpdate(settings, step.ref, step));
    expect(keeperOf(stored)).toEqual({ lock: w.lock, order: w.order });
    expect(stored[GC_ATTRIBUTE]).toBe(Math.ceil(w.deadline / 1000) + settings.retentionSeconds);
    expect(keeperSteps({ ...w, holding: undefined })).toEqual([]);
  });

  it('a grant, stored with its housekeeping, names its principal', () => {
    const { write } = pinnedGrant(
      { name: 'n', owner: OWNER, clientId: 'c', tenure: lease(1_000) },
      undefined,
      now,
      'w',
    );
    const stored = applyUpdate(undefined, fullUpdate(settings, lockRef('n'), write));
    expect(grantOf(stored)).toMatchObject({ owner: OWNER, clientId: 'c' });
  });
});
