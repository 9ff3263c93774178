/**
 * The pure core of "Trust II": ownership bound to the caller's IAM principal
 * (who may release, renew, heartbeat, close, cancel; who is shown a
 * holder's capabilities), the limits on waiting (queue length, waiters per
 * connection and per principal, counted in quota items that every way into
 * and out of a queue moves), the slots of HTTP waits, and the sharded
 * listing and due indexes. Through the real services on the in-memory
 * storage where a rule spans items.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, LatchkeyError } from '../../lambdas/core/errors';
import { applyUpdate, type Condition, evaluate, type Item, remove, set } from '../../lambdas/core/expr';
import { freeSlotWrite, SLOT_GRACE_MS, takeSlotWrite } from '../../lambdas/core/http-wait';
import { httpWaitRef, lockRef, quotaRef, sessionRef } from '../../lambdas/core/items';
import {
  type Grant,
  LockAttr as L,
  lease,
  liveHolder,
  requestKey,
  throughSession,
} from '../../lambdas/core/lock';
import { ANONYMOUS, LOCAL_ACCOUNT, localPrincipal, principalOf } from '../../lambdas/core/principal';
import {
  connectionQuotaScope,
  enqueueSteps,
  handoffSteps,
  leaveSteps,
  moveDeliverySteps,
  orphanLeaveSteps,
  principalQuotaScope,
  QUOTA_SHARDS,
  queueOrder,
  type Waiter,
} from '../../lambdas/core/queue';
import {
  acquireBody,
  acquireCommand,
  DEFAULT_LIMITS,
  holderView,
  lockView,
  priority,
  releaseCommand,
  renewCommand,
  type ServiceLimits,
} from '../../lambdas/core/wire';
import { HttpWaits, probeOrder } from '../../lambdas/service/http-waits';
import { newWaiter } from '../../lambdas/service/lock-service';
import {
  DUE_SHARDS,
  decodeListCursor,
  dueBucket,
  dueBuckets,
  encodeListCursor,
  KEY,
  keyOf,
  LIST_INDEX,
  LIST_PARTITIONS,
  LIST_SHARDS,
  listRange,
  lockListing,
} from '../../lambdas/store/table';
import { MemoryStorage } from '../support/memory-storage';
import { LOCK, OWNER, QueueHarness, START } from '../support/queue-harness';

/** Another principal: it knows (or guessed) OWNER's client ids, tokens and request ids. */
const MALLORY = localPrincipal('mallory');

describe('principals', () => {
  it('an assumed-role session is its role: every session of one role is one principal', () => {
    const role = 'arn:aws:sts::123456789012:assumed-role/Worker';
    expect(principalOf(`${role}/i-0abc`)).toBe(role);
    expect(principalOf(`${role}/i-0def`)).toBe(role);
    expect(principalOf('arn:aws:sts::123456789012:assumed-role/Other/i-0abc')).not.toBe(role);
    // Other partitions too.
    expect(principalOf('arn:aws-cn:sts::123456789012:assumed-role/Worker/s1')).toBe(
      'arn:aws-cn:sts::123456789012:assumed-role/Worker',
    );
    expect(principalOf('arn:aws-us-gov:sts::123456789012:assumed-role/Worker/s1')).toBe(
      'arn:aws-us-gov:sts::123456789012:assumed-role/Worker',
    );
    // The same role name in another account is another principal.
    expect(principalOf('arn:aws:sts::210987654321:assumed-role/Worker/i-0abc')).not.toBe(role);
  });

  it('users, roles and anything that is not an assumed-role session are unchanged', () => {
    for (const arn of [
      'arn:aws:iam::123456789012:user/alice',
      'arn:aws:iam::123456789012:user/division/alice',
      'arn:aws:iam::123456789012:role/Worker',
      'arn:aws:iam::123456789012:root',
      'arn:aws:sts::123456789012:federated-user/bob',
      'arn:aws:sts::123456789012:assumed-role/Worker', // no session part
      'arn:aws:sts::12345:assumed-role/Worker/s1', // not an account id
      localPrincipal('alice'),
      ANONYMOUS,
    ])
      expect(principalOf(arn), arn).toBe(arn);
  });

  it('a local access key is a user of the local account; --no-auth is anonymous', () => {
    expect(LOCAL_ACCOUNT).toBe('000000000000');
    expect(localPrincipal('alice')).toBe('arn:aws:iam::000000000000:user/alice');
    expect(localPrincipal('alice')).not.toBe(localPrincipal('bob'));
    expect(ANONYMOUS).toBe(localPrincipal('anonymous'));
  });

  it('names the principal in every command the wire makes', () => {
    const acquire = acquireCommand('L', OWNER, { client_id: 'a', ttl_ms: 5_000, request_id: 'r' });
    expect(acquire).toMatchObject({ name: 'L', owner: OWNER, clientId: 'a', requestId: 'r' });
    expect(releaseCommand('L', OWNER, { client_id: 'a', fencing_token: 7 })).toEqual({
      name: 'L',
      owner: OWNER,
      clientId: 'a',
      fencingToken: 7,
    });
    expect(renewCommand('L', MALLORY, { client_id: 'a', fencing_token: 7, ttl_ms: 2_000 })).toEqual({
      name: 'L',
      owner: MALLORY,
      clientId: 'a',
      fencingToken: 7,
      ttlMs: 2_000,
    });
    // Request ids are scoped to principal and client: no two of them share a key.
    expect(requestKey(OWNER, 'a', 'r')).not.toBe(requestKey(MALLORY, 'a', 'r'));
    // Lengths are part of the key, so no choice of client id can forge another principal's.
    expect(requestKey('p:1', '2', 'r')).not.toBe(requestKey('p', '1:2', 'r'));
  });
});

describe('only the principal that holds a lock may release or renew it', () => {
  async function held() {
    const h = new QueueHarness();
    const grant = await h.hold('a', { ttl: 5_000 });
    return { h, grant, snapshot: structuredClone(h.item) };
  }
  /** The holder's own client id and fencing token, sent by another principal. */
  const stolen = (grant: Grant) => ({
    name: LOCK,
    owner: MALLORY,
    clientId: grant.clientId,
    fencingToken: grant.fencingToken,
  });

  it('release by another principal with the right client id and token: FORBIDDEN, the item unchanged', async () => {
    const { h, grant, snapshot } = await held();
    h.now += 10;
    await expect(h.services.locks.release(stolen(grant))).rejects.toMatchObject({
      code: 'FORBIDDEN',
      status: 403,
      retryable: false,
    });
    expect(h.item).toEqual(snapshot);
    // The holder itself still may.
    expect(await h.release(grant)).toMatchObject({ remaining: 0 });
    expect(liveHolder(h.item, h.now)).toBeUndefined();
  });

  it('renew by another principal with the right client id and token: FORBIDDEN, the item unchanged', async () => {
    const { h, grant, snapshot } = await held();
    h.now += 10;
    await expect(h.services.locks.renew({ ...stolen(grant), ttlMs: 60_000 })).rejects.toMatchObject({
      code: 'FORBIDDEN',
      status: 403,
    });
    expect(h.item).toEqual(snapshot);
    const renewed = await h.services.locks.renew({ ...stolen(grant), owner: OWNER, ttlMs: 60_000 });
    expect(renewed.grant).toMatchObject({ owner: OWNER, held: { expiresAt: h.now + 60_000 } });
  });

  it('another principal cannot re-enter it, or hand it to its waiters by releasing it', async () => {
    const { h, grant, snapshot } = await held();
    h.now += 1;
    expect((await h.wait('b', { waitMs: 60_000 })).kind).toBe('queued');
    const queued = structuredClone(h.item);
    const reentered = await h.services.locks.acquire({
      ...h.command('a', { owner: MALLORY }),
      reentrant: true,
    });
    expect(reentered).toMatchObject({
      kind: 'done',
      outcome: { acquired: false, holder: { clientId: 'a' } },
    });
    await expect(h.services.locks.release(stolen(grant))).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect(h.item).toEqual(queued);
    expect(liveHolder(h.item, h.now)).toMatchObject({ owner: OWNER, clientId: 'a' });
    expect(h.waiters().map((w) => w.clientId)).toEqual(['b']);
    expect(snapshot?.[L.fence]).toBe(h.item?.[L.fence]);
  });

  it("a later force of shared grants does not tell the first force's holder its time or reason", async () => {
    const { h, grant } = await held();
    const admin = localPrincipal('admin');
    await h.services.locks.forceRelease(LOCK, admin, 'exclusive one stuck');
    h.now += 10;
    await h.hold('s', { owner: MALLORY, mode: 'shared' });
    const forced = await h.services.locks.forceRelease(LOCK, admin, "mallory's readers stuck");
    expect(forced).toMatchObject({ kind: 'released' });
    expect(h.item).not.toHaveProperty('forced_token');
    const late = await h.release(grant).catch((e: unknown) => e);
    expect(late).toMatchObject({ code: 'NOT_HOLDER' });
    expect((late as Error).message).not.toMatch(/force|stuck/);
  });

  it('an administrator may end it whoever holds it, fencing past it, and the queue is served', async () => {
    const { h, grant } = await held();
    h.now += 1;
    expect((await h.wait('b', { waitMs: 60_000, owner: MALLORY })).kind).toBe('queued');
    const admin = localPrincipal('admin');
    const forced = await h.services.locks.forceRelease(LOCK, admin, 'stuck job');
    expect(forced).toMatchObject({
      kind: 'released',
      released: { owner: OWNER, clientId: 'a', fencingToken: grant.fencingToken },
      fencedTo: grant.fencingToken + 1,
    });
    expect(h.item).toMatchObject({ forced_by: admin, forced_reason: 'stuck job', forced_at: h.now });
    // The next grant (to b, the waiter) is two above the old holder's.
    expect(liveHolder(h.item, h.now)).toMatchObject({
      owner: MALLORY,
      clientId: 'b',
      fencingToken: grant.fencingToken + 2,
    });
    // The old holder is refused from now on, told why (its own grant was forced; nothing about b's).
    await expect(h.release(grant)).rejects.toMatchObject({
      code: 'NOT_HOLDER',
      message: expect.stringMatching(/an operator force-released that grant at .* \(reason: stuck job\)$/),
    });
    expect(h.item).toMatchObject({ forced_token: grant.fencingToken, forced_owner: OWNER });
    // Another principal naming that token (here b's, which holds it now) learns nothing of the force.
    const other = await h.services.locks.release(stolen(grant)).catch((e: unknown) => e);
    expect(other).toMatchObject({ code: 'NOT_HOLDER' });
    expect((other as Error).message).not.toMatch(/force|stuck job/);
    // Nothing held: nothing to force.
    const free = new QueueHarness();
    expect(await free.services.locks.forceRelease(LOCK, admin, 'nothing')).toEqual({ kind: 'not-held' });
  });

  /**
   * A lock held with b waiting, whose next write applies and then is delivered again (refused by its
   * own condition) or loses its answer (UNAVAILABLE), as DynamoDB may.
   */
  async function heldWithFaultyWrite(fault: 'delivered twice' | 'answer lost') {
    const { h, grant } = await held();
    h.now += 1;
    expect((await h.wait('b', { waitMs: 60_000 })).kind).toBe('queued');
    const storage = h.memory;
    const write = storage.write.bind(storage);
    storage.write = async (ref, w) => {
      storage.write = write;
      await write(ref, w);
      if (fault === 'delivered twice') return write(ref, w);
      throw new LatchkeyError('UNAVAILABLE', 'the answer to an applied write was lost', undefined, 50);
    };
    return { h, grant, admin: localPrincipal('admin') };
  }

  it('a force-release delivered twice (its answer lost, the SDK sent it again) is answered as applied, and the queue is served', async () => {
    const { h, grant, admin } = await heldWithFaultyWrite('delivered twice');
    expect(await h.services.locks.forceRelease(LOCK, admin, 'sent twice')).toMatchObject({
      kind: 'released',
      fencedTo: grant.fencingToken + 1,
    });
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'b', fencingToken: grant.fencingToken + 2 });
  });

  it('a force-release retried after its answer was lost finds the lock free with waiters, and serves them', async () => {
    const { h, grant, admin } = await heldWithFaultyWrite('answer lost');
    await expect(h.services.locks.forceRelease(LOCK, admin, 'lost')).rejects.toMatchObject({
      code: 'UNAVAILABLE',
    });
    expect(liveHolder(h.item, h.now)).toBeUndefined();
    expect(await h.services.locks.forceRelease(LOCK, admin, 'lost')).toEqual({ kind: 'not-held' });
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'b', fencingToken: grant.fencingToken + 2 });
  });

  it('a force-release ends only the grant it saw (or was told): a later, innocent holder is left alone', async () => {
    const { h, grant } = await held();
    const admin = localPrincipal('admin');
    // Told a token that is not the current grant's: nothing is forced.
    expect(await h.services.locks.forceRelease(LOCK, admin, 'old', grant.fencingToken - 1)).toEqual({
      kind: 'moved-on',
    });
    expect(liveHolder(h.item, h.now)?.fencingToken).toBe(grant.fencingToken);
    // The holder changes between the read and the write: the write (conditioned on the grant read)
    // is refused, and nothing is retried onto the new holder.
    const storage = h.memory;
    const read = storage.read.bind(storage);
    storage.read = async (ref) => {
      const seen = await read(ref);
      storage.read = read;
      await h.release(grant);
      await h.hold('w');
      return seen;
    };
    expect(await h.services.locks.forceRelease(LOCK, admin, 'race')).toEqual({ kind: 'moved-on' });
    expect(liveHolder(h.item, h.now)).toMatchObject({ clientId: 'w' });
  });
});

describe('only the principal of a session may use it', () => {
  async function session() {
    const h = new QueueHarness();
    const s = await h.services.sessions.create(OWNER, 'a', { ttlMs: 10_000, graceMs: 0, lockDelayMs: 0 });
    return { h, s, item: () => h.memory.readNow(sessionRef(s.id)) };
  }

  it('heartbeat, close and live by another principal (same client id): FORBIDDEN, nothing changed', async () => {
    const { h, s, item } = await session();
    expect(s).toMatchObject({ owner: OWNER, clientId: 'a' });
    const before = item();
    h.now += 1_000;
    await expect(h.services.sessions.heartbeat(s.id, MALLORY, 'a')).rejects.toMatchObject({
      code: 'FORBIDDEN',
      status: 403,
    });
    await expect(h.services.sessions.close(s.id, MALLORY, 'a')).rejects.toMatchObject({ code: 'FORBIDDEN' });
    await expect(h.services.sessions.live(s.id, MALLORY, 'a')).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect(item()).toEqual(before);
    // Its own principal, with another client id, is told it is another client's.
    await expect(h.services.sessions.heartbeat(s.id, OWNER, 'b')).rejects.toMatchObject({
      code: 'NOT_SESSION_OWNER',
    });
    expect((await h.services.sessions.heartbeat(s.id, OWNER, 'a')).deadline).toBe(h.now + 10_000);
  });

  it('another principal cannot hold a lock through it, at once or by waiting', async () => {
    const { h, s } = await session();
    const through = { ...h.command('a', { owner: MALLORY }), tenure: throughSession(s.id) };
    await expect(h.services.locks.acquire(through)).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect(h.item?.[L.holder]).toBeUndefined();
    await h.hold('x');
    await expect(h.services.locks.acquire(through, { waitMs: 10_000 })).rejects.toMatchObject({
      code: 'FORBIDDEN',
    });
    expect(h.waiters()).toEqual([]);
    expect(await h.memory.sessionLocks(s.id)).toEqual([]);
  });
});

describe('a push waiter needs a connection of its own principal', () => {
  it('another principal’s connection: FORBIDDEN; an unknown one: NOT_FOUND; nothing queued', async () => {
    const h = new QueueHarness();
    await h.hold('x');
    await h.services.connections.open('c1', OWNER, 'b');
    const wait = { waitMs: 10_000, connectionId: 'c1' };
    await expect(
      h.services.locks.acquireByPush(h.command('b', { owner: MALLORY, requestId: 'r' }), wait, false),
    ).rejects.toMatchObject({ code: 'FORBIDDEN', status: 403 });
    await expect(
      h.services.locks.acquireByPush(
        h.command('b', { requestId: 'r' }),
        { ...wait, connectionId: 'c9' },
        false,
      ),
    ).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(h.waiters()).toEqual([]);
    expect(h.record('b', 'r', MALLORY)).toBeUndefined();
    expect(h.memory.readNow(quotaRef(connectionQuotaScope('c1')))).toBeUndefined();
    const own = await h.services.locks.acquireByPush(h.command('b', { requestId: 'r' }), wait, false);
    expect(own).toMatchObject({ kind: 'queued', wait: { connectionId: 'c1' } });
  });
});

describe('a lock held through a connection never outlives it', () => {
  it('a connection session asked for after $disconnect began is refused; one made just before is ended by it', async () => {
    const h = new QueueHarness();
    const seen = await h.services.connections.open('c1', OWNER, 'b');
    // Read as open by an acquire, then closed entirely, then the acquire makes its session: refused.
    await h.services.connections.closed('c1');
    await expect(h.services.sessions.ofConnection(seen)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(h.memory.readNow(sessionRef('conn-c1'))).toBeUndefined();
    // Made just before $disconnect: the lock taken through it is released by it.
    const open = await h.services.connections.open('c2', OWNER, 'b');
    const session = await h.services.sessions.ofConnection(open);
    const grant = await h.hold('b', { session });
    expect(grant.held).toEqual({ kind: 'session', sessionId: 'conn-c2' });
    await h.services.connections.closed('c2');
    expect(liveHolder(h.item, h.now)).toBeUndefined();
    // And another principal's connection cannot carry one.
    const theirs = await h.services.connections.open('c3', MALLORY, 'b');
    await expect(h.services.sessions.ofConnection({ ...theirs, owner: OWNER })).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
  });
});

describe('what a viewer is shown of a holder', () => {
  const NOW = START;
  const PRINCIPALS = [OWNER, MALLORY, localPrincipal('carol')];
  const itemArb: fc.Arbitrary<Item> = fc
    .record({
      owner: fc.constantFrom(...PRINCIPALS),
      holder: fc.constantFrom('a', 'b', 'worker-1'),
      fence: fc.integer({ min: 1, max: 2 ** 52 }),
      session: fc.option(fc.uuid(), { nil: undefined }),
      expiresIn: fc.integer({ min: -5_000, max: 60_000 }),
      reentry: fc.integer({ min: 1, max: 4 }),
      queued: fc.nat({ max: 5 }),
      acquiredAgo: fc.nat({ max: 100_000 }),
    })
    .map((r) => ({
      [L.name]: LOCK,
      [L.owner]: r.owner,
      [L.holder]: r.holder,
      [L.fence]: r.fence,
      [L.acquiredAt]: NOW - r.acquiredAgo,
      [L.reentry]: r.reentry,
      [L.mode]: 'exclusive',
      [L.queued]: r.queued,
      ...(r.session !== undefined
        ? { [L.session]: r.session }
        : { [L.expiresAt]: NOW + r.expiresIn, [L.ttlMs]: 30_000 }),
    }));

  it('another principal never sees the holder’s fencing token or session id; the owner does', () => {
    fc.assert(
      fc.property(itemArb, fc.constantFrom(...PRINCIPALS), (item, viewer) => {
        const live = liveHolder(item, NOW);
        const fence = item[L.fence] as number;
        const session = item[L.session];
        const token = `"fencing_token":${fence}`;
        const view = JSON.stringify(lockView(LOCK, item, NOW, viewer));
        if (!live) {
          // A lapsed lease holds nothing, yet its holder may still be at work with its token: only that
          // grant's principal is shown it (once released, it is nobody's).
          const recorded = item[L.holder] !== undefined ? item[L.owner] : undefined;
          const shown = recorded === undefined || recorded === viewer;
          expect(JSON.parse(view)).toMatchObject({
            state: 'free',
            holders: [],
            fencing_token: shown ? fence : null,
          });
          if (!shown) expect(view).not.toContain(token);
          return;
        }
        const holder = JSON.stringify(holderView(live, viewer));
        if (viewer !== live.owner) {
          for (const text of [view, holder]) {
            expect(text).not.toContain(token);
            if (typeof session === 'string') expect(text).not.toContain(session);
            expect(text).toContain('"mine":false');
          }
          expect(JSON.parse(view)).toMatchObject({ state: 'held', fencing_token: null });
          expect(JSON.parse(holder)).not.toHaveProperty('fencing_token');
          expect(JSON.parse(holder)).not.toHaveProperty('session_id');
        } else {
          expect(view).toContain(token);
          expect(JSON.parse(holder)).toMatchObject({
            mine: true,
            fencing_token: fence,
            ...(typeof session === 'string' ? { session_id: session } : {}),
          });
        }
        // Everyone sees that it is held, by which label, how, and until when.
        expect(JSON.parse(holder)).toMatchObject({
          client_id: live.clientId,
          held_by: live.held.kind,
          reentry: live.reentry,
          expires_at: live.held.kind === 'lease' ? new Date(live.held.expiresAt).toISOString() : null,
        });
      }),
      { numRuns: 1000 },
    );
  });

  it('by example: the holder’s view and a stranger’s view of one lock held through a session', () => {
    const item: Item = {
      [L.name]: LOCK,
      [L.owner]: OWNER,
      [L.holder]: 'a',
      [L.fence]: 42,
      [L.session]: '0b7c3c5e-1f6e-4a43-9a9c-0d1f2e3a4b5c',
      [L.acquiredAt]: NOW,
      [L.reentry]: 1,
    };
    expect(lockView(LOCK, item, NOW, OWNER)).toMatchObject({
      state: 'held',
      fencing_token: 42,
      holders: [{ client_id: 'a', mine: true, fencing_token: 42, session_id: item[L.session] }],
    });
    const stranger = lockView(LOCK, item, NOW, MALLORY);
    expect(stranger).toMatchObject({ state: 'held', fencing_token: null, holders: [{ mine: false }] });
    expect(stranger.holders[0]).not.toHaveProperty('fencing_token');
    expect(stranger.holders[0]).not.toHaveProperty('session_id');
  });
});

describe('waiter counters (quotas)', () => {
  /** Sum of `waiting` over every shard of `owner`'s counters. */
  function principalWaiting(memory: MemoryStorage, owner: string): number {
    const shard = keyOf(quotaRef(principalQuotaScope(requestKey(owner, 'x', 'y')))).pk;
    const prefix = shard.slice(0, shard.lastIndexOf('#') + 1);
    return memory
      .all()
      .filter(({ item }) => String(item[KEY.pk]).startsWith(prefix))
      .reduce((sum, { item }) => sum + (typeof item.waiting === 'number' ? item.waiting : 0), 0);
  }
  const connectionWaiting = (memory: MemoryStorage, connection: string) => {
    const item = memory.readNow(quotaRef(connectionQuotaScope(connection)));
    return typeof item?.waiting === 'number' ? item.waiting : 0;
  };

  /** a holds; `n` waiters w0..w{n-1} of OWNER queue, on connection `c` when given. */
  async function queued(n: number, connection?: string, limits?: ServiceLimits) {
    const h = new QueueHarness(limits);
    const holder = await h.hold('a', { ttl: 60_000 });
    for (let i = 0; i < n; i++) {
      h.now += 1;
      const out = await h.wait(`w${i}`, { requestId: `r${i}`, waitMs: 30_000, connection });
      expect(out.kind).toBe('queued');
    }
    return { h, holder };
  }

  it('a principal’s shards split its limit; request keys spread over them', () => {
    const scopes = new Set(
      Array.from({ length: 200 }, (_, i) => principalQuotaScope(requestKey(OWNER, 'c', `r${i}`))),
    );
    expect(scopes.size).toBe(QUOTA_SHARDS);
    const others = new Set(
      Array.from({ length: 50 }, (_, i) => principalQuotaScope(requestKey(MALLORY, 'c', `r${i}`))),
    );
    for (const scope of others) expect(scopes.has(scope)).toBe(false);
    expect(connectionQuotaScope('c1')).not.toBe(connectionQuotaScope('c2'));
  });

  it('queuing N waiters raises the counters to N; leaving brings them back to 0', async () => {
    const { h } = await queued(4, 'c1');
    expect(principalWaiting(h.memory, OWNER)).toBe(4);
    expect(connectionWaiting(h.memory, 'c1')).toBe(4);
    expect(principalWaiting(h.memory, MALLORY)).toBe(0);
    // Cancelled by request id (leaveSteps), one by one.
    for (let i = 0; i < 4; i++) {
      expect(
        await h.services.locks.cancel({ lock: LOCK, owner: OWNER, clientId: `w${i}`, requestId: `r${i}` }),
      ).toEqual({ removed: 1 });
      expect(principalWaiting(h.memory, OWNER)).toBe(3 - i);
      expect(connectionWaiting(h.memory, 'c1')).toBe(3 - i);
    }
    expect(h.waiters()).toEqual([]);
  });

  it('a retry of a queued request counts once', async () => {
    const { h } = await queued(2, 'c1');
    h.now += 5;
    expect((await h.wait('w0', { requestId: 'r0', waitMs: 30_000, connection: 'c1' })).kind).toBe('queued');
    expect(principalWaiting(h.memory, OWNER)).toBe(2);
    expect(connectionWaiting(h.memory, 'c1')).toBe(2);
  });

  it('every way out brings them back to 0: handoff, cancel, timeout, connection gone, orphan leave', async () => {
    const { h, holder } = await queued(5, 'c1');
    // Handoff: the head is served (and its grant pushed).
    await h.release(holder);
    expect(liveHolder(h.item, h.now)?.clientId).toBe('w0');
    expect(principalWaiting(h.memory, OWNER)).toBe(4);
    expect(connectionWaiting(h.memory, 'c1')).toBe(4);
    // Cancel of every wait of one client (no request id).
    expect(await h.services.locks.cancel({ lock: LOCK, owner: OWNER, clientId: 'w1' })).toEqual({
      removed: 1,
    });
    expect(principalWaiting(h.memory, OWNER)).toBe(3);
    // Orphan leave: the lock's count lost track of the waiters (items written by hand).
    await h.memory.write(lockRef(LOCK), { update: [set(L.queued, 0)] });
    expect(
      await h.services.locks.cancel({ lock: LOCK, owner: OWNER, clientId: 'w2', requestId: 'r2' }),
    ).toEqual({ removed: 1 });
    expect(principalWaiting(h.memory, OWNER)).toBe(2);
    expect(connectionWaiting(h.memory, 'c1')).toBe(2);
    await h.memory.write(lockRef(LOCK), { update: [set(L.queued, 2)] });
    // Connection gone: its waiters leave.
    h.now += 1;
    expect((await h.wait('v', { requestId: 'rv', waitMs: 100, connection: 'c2' })).kind).toBe('queued');
    expect(connectionWaiting(h.memory, 'c2')).toBe(1);
    await h.services.connections.open('c2', OWNER, 'v');
    expect(await h.services.connections.closed('c2')).toMatchObject({ waitersRemoved: 1 });
    expect(connectionWaiting(h.memory, 'c2')).toBe(0);
    // Timeout: the rest are dropped once their deadline passed, when the queue is served.
    h.now += 60_000;
    await h.services.handoff.serve(LOCK);
    expect(h.waiters()).toEqual([]);
    expect(principalWaiting(h.memory, OWNER)).toBe(0);
    expect(connectionWaiting(h.memory, 'c1')).toBe(0);
  });

  it('the steps themselves: enqueue counts up, leave, orphan leave and handoff count down', async () => {
    const memory = new MemoryStorage({ tableName: 't', retentionSeconds: 86_400 }, () => START);
    const now = START;
    // The lock is held, so a waiter may queue.
    await memory.write(lockRef(LOCK), {
      update: [set(L.holder, 'x'), set(L.owner, MALLORY), set(L.fence, 1), set(L.expiresAt, now + 1_000)],
    });
    const waiters: Waiter[] = ['p', 'q', 'r'].map((c, i) =>
      newWaiter(
        { name: LOCK, owner: OWNER, clientId: c, tenure: lease(1_000), requestId: `r-${c}` },
        { waitMs: 10_000, connectionId: i < 2 ? 'c1' : undefined },
        now + i,
      ),
    );
    for (const w of waiters)
      expect((await memory.transact(enqueueSteps(w, now, DEFAULT_LIMITS))).ok).toBe(true);
    expect(principalWaiting(memory, OWNER)).toBe(3);
    expect(connectionWaiting(memory, 'c1')).toBe(2);
    const [p, q, r] = waiters as [Waiter, Waiter, Waiter];
    // Move q's delivery to c2: one count moves from c1 to c2, the principal's stays.
    expect((await memory.transact(moveDeliverySteps(q, 'c2', now))).ok).toBe(true);
    expect(connectionWaiting(memory, 'c1')).toBe(1);
    expect(connectionWaiting(memory, 'c2')).toBe(1);
    expect(principalWaiting(memory, OWNER)).toBe(3);
    // The waiter delete is conditioned on its connection: leaving as if still on c1 changes nothing.
    const verdict = await memory.transact(leaveSteps(q, 'cancelled', now));
    expect(verdict.ok).toBe(false);
    expect(connectionWaiting(memory, 'c1')).toBe(1);
    expect(principalWaiting(memory, OWNER)).toBe(3);
    // leaveSteps (as moved) and orphanLeaveSteps count down.
    expect((await memory.transact(leaveSteps({ ...q, connectionId: 'c2' }, 'cancelled', now))).ok).toBe(true);
    expect(connectionWaiting(memory, 'c2')).toBe(0);
    // The lock's count lost track of r (drift): it leaves alone, the count untouched.
    await memory.write(lockRef(LOCK), { update: [set(L.queued, 1)] });
    expect((await memory.transact(orphanLeaveSteps(r, 'timeout', now))).ok).toBe(true);
    expect(memory.readNow(lockRef(LOCK))?.[L.queued]).toBe(1);
    expect(principalWaiting(memory, OWNER)).toBe(1);
    // The lock is freed: a handoff to p counts down the last.
    await memory.write(lockRef(LOCK), {
      update: [remove(L.holder), remove(L.owner), remove(L.expiresAt)],
    });
    const lock = await memory.read(lockRef(LOCK));
    const { steps, grant } = handoffSteps(p, lock, now, 'w1');
    expect((await memory.transact(steps)).ok).toBe(true);
    expect(grant).toMatchObject({ owner: OWNER, clientId: 'p' });
    expect(principalWaiting(memory, OWNER)).toBe(0);
    expect(connectionWaiting(memory, 'c1')).toBe(0);
    expect(memory.readNow(lockRef(LOCK))?.[L.queued]).toBe(0);
  });

  it('a retry from another connection moves its count there (moveDeliverySteps)', async () => {
    const { h } = await queued(1, 'c1');
    expect((await h.wait('w0', { requestId: 'r0', waitMs: 30_000, connection: 'c2' })).kind).toBe('queued');
    expect(connectionWaiting(h.memory, 'c1')).toBe(0);
    expect(connectionWaiting(h.memory, 'c2')).toBe(1);
    expect(principalWaiting(h.memory, OWNER)).toBe(1);
  });

  const limits = (l: Partial<ServiceLimits>): ServiceLimits => ({ ...DEFAULT_LIMITS, ...l });

  it('maxQueueLength: a waiting acquire past it is QUEUE_FULL and changes nothing', async () => {
    const { h } = await queued(2, 'c1', limits({ maxQueueLength: 2 }));
    const lockBefore = structuredClone(h.item);
    h.now += 1;
    const refused = h.wait('third', { requestId: 'r3', waitMs: 30_000, connection: 'c1' });
    await expect(refused).rejects.toBeInstanceOf(LatchkeyError);
    await expect(refused).rejects.toMatchObject({ code: 'QUEUE_FULL', status: 429, retryable: true });
    expect(h.waiters()).toHaveLength(2);
    expect(h.item).toEqual(lockBefore);
    expect(principalWaiting(h.memory, OWNER)).toBe(2);
    expect(connectionWaiting(h.memory, 'c1')).toBe(2);
    expect(h.record('third', 'r3')).toBeUndefined();
    // Another principal is refused the same way: the limit is the lock's.
    await expect(h.wait('third', { requestId: 'r3', waitMs: 30_000, owner: MALLORY })).rejects.toMatchObject({
      code: 'QUEUE_FULL',
    });
    expect(principalWaiting(h.memory, MALLORY)).toBe(0);
    // Room again once one leaves.
    await h.services.locks.cancel({ lock: LOCK, owner: OWNER, clientId: 'w0', requestId: 'r0' });
    expect((await h.wait('third', { requestId: 'r3', waitMs: 30_000 })).kind).toBe('queued');
  });

  it('a connection (or principal) at its limit still gets a free lock at once: the limit is on waiting', async () => {
    const h = new QueueHarness(limits({ maxWaitersPerConnection: 1 }));
    await h.hold('a', { ttl: 60_000 });
    await h.services.connections.open('c1', OWNER, 'b');
    const wait = { waitMs: 30_000, connectionId: 'c1' };
    expect(
      (await h.services.locks.acquireByPush(h.command('b', { requestId: 'r1' }), wait, false)).kind,
    ).toBe('queued');
    const free = { ...h.command('b', { requestId: 'r2' }), name: 'free' };
    const got = await h.services.locks.acquireByPush(free, wait, false);
    expect(got).toMatchObject({ kind: 'done', outcome: { acquired: true } });
    expect(connectionWaiting(h.memory, 'c1')).toBe(1);
  });

  it('maxWaitersPerConnection: a second push waiter on the connection is TOO_MANY_WAITERS and changes nothing', async () => {
    const h = new QueueHarness(limits({ maxWaitersPerConnection: 1 }));
    await h.hold('a', { ttl: 60_000 });
    await h.services.connections.open('c1', OWNER, 'b');
    await h.services.connections.open('c2', OWNER, 'b');
    const push = (client: string, requestId: string, connectionId: string) =>
      h.services.locks.acquireByPush(
        h.command(client, { requestId }),
        { waitMs: 30_000, connectionId },
        false,
      );
    expect((await push('b', 'r1', 'c1')).kind).toBe('queued');
    const lockBefore = structuredClone(h.item);
    h.now += 1;
    await expect(push('c', 'r2', 'c1')).rejects.toMatchObject({
      code: 'TOO_MANY_WAITERS',
      status: 429,
      retryable: true,
    });
    expect(h.waiters().map((w) => w.clientId)).toEqual(['b']);
    expect(h.item).toEqual(lockBefore);
    expect(connectionWaiting(h.memory, 'c1')).toBe(1);
    expect(principalWaiting(h.memory, OWNER)).toBe(1);
    expect(h.record('c', 'r2')).toBeUndefined();
    // Another connection has its own allowance.
    expect((await push('c', 'r2', 'c2')).kind).toBe('queued');
  });

  it('maxWaitersPerPrincipal: each shard holds its share; another principal is not slowed', async () => {
    // 16 per principal: one per shard. Two requests whose keys land in one shard cannot both wait.
    const h = new QueueHarness(limits({ maxWaitersPerPrincipal: QUOTA_SHARDS }));
    await h.hold('a', { ttl: 60_000 });
    const shardOf = (id: string) => principalQuotaScope(requestKey(OWNER, 'b', id));
    const first = 'r0';
    const twin = Array.from({ length: 500 }, (_, i) => `r${i + 1}`).find(
      (id) => shardOf(id) === shardOf(first),
    );
    const other = Array.from({ length: 500 }, (_, i) => `r${i + 1}`).find(
      (id) => shardOf(id) !== shardOf(first),
    );
    expect(twin).toBeDefined();
    expect(other).toBeDefined();
    expect((await h.wait('b', { requestId: first })).kind).toBe('queued');
    h.now += 1;
    await expect(h.wait('b', { requestId: twin as string })).rejects.toMatchObject({
      code: 'TOO_MANY_WAITERS',
    });
    expect(h.waiters()).toHaveLength(1);
    expect(h.record('b', twin as string)).toBeUndefined();
    expect((await h.wait('b', { requestId: other as string })).kind).toBe('queued');
    expect((await h.wait('b', { requestId: twin as string, owner: MALLORY })).kind).toBe('queued');
    expect(principalWaiting(h.memory, OWNER)).toBe(2);
    expect(principalWaiting(h.memory, MALLORY)).toBe(1);
  });
});

describe('slots of HTTP waits', () => {
  function slots(count: number) {
    const clock = { now: START, sleep: async () => {} };
    const memory = new MemoryStorage({ tableName: 't', retentionSeconds: 86_400 }, () => clock.now);
    const waits = new HttpWaits(memory, { now: () => clock.now, sleep: clock.sleep }, count);
    const slotItems = () => Array.from({ length: count }, (_, i) => memory.readNow(httpWaitRef(i)));
    return { clock, memory, waits, slotItems };
  }
  /** A wait that lasts until its `end` is called. */
  function blocking() {
    let end: (value: string) => void = () => {};
    const done = new Promise<string>((resolve) => {
      end = resolve;
    });
    return { wait: () => done, end: (value = 'done') => end(value) };
  }
  const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

  it('two waits hold both slots; a third is refused TOO_MANY_WAITS before it starts, changing nothing', async () => {
    const { waits, slotItems } = slots(2);
    const one = blocking();
    const two = blocking();
    const first = waits.during('h1', START + 10_000, one.wait);
    const second = waits.during('h2', START + 10_000, two.wait);
    await settle();
    expect(
      slotItems()
        .map((s) => s?.holder)
        .sort(),
    ).toEqual(['h1', 'h2']);
    const before = structuredClone(slotItems());
    let started = false;
    await expect(
      waits.during('h3', START + 10_000, async () => {
        started = true;
      }),
    ).rejects.toMatchObject({ code: 'TOO_MANY_WAITS', status: 429, retryable: true, retryAfterMs: 1_000 });
    expect(started).toBe(false);
    expect(slotItems()).toEqual(before);
    // A freed slot is taken again.
    one.end('first');
    expect(await first).toBe('first');
    expect(slotItems().filter((s) => s?.holder !== undefined)).toHaveLength(1);
    const three = blocking();
    const third = waits.during('h3', START + 10_000, three.wait);
    await settle();
    expect(
      slotItems()
        .map((s) => s?.holder)
        .sort(),
    ).toEqual(['h2', 'h3']);
    two.end();
    three.end();
    await Promise.all([second, third]);
    expect(slotItems().every((s) => s?.holder === undefined)).toBe(true);
  });

  it('a slot whose lease passed (its wait died) is taken again; not a moment before', async () => {
    const { clock, memory, waits, slotItems } = slots(2);
    // Two waits that never free their slots (their functions died).
    void waits.during('dead1', START + 1_000, () => new Promise(() => {}));
    void waits.during('dead2', START + 2_000, () => new Promise(() => {}));
    await settle();
    // Which slot each took depends on its holder id (a hash): find them by holder.
    const dead1 = slotItems().findIndex((s) => s?.holder === 'dead1');
    const dead2 = 1 - dead1;
    expect(slotItems()[dead1]?.until).toBe(START + 1_000 + SLOT_GRACE_MS);
    expect(slotItems()[dead2]?.until).toBe(START + 2_000 + SLOT_GRACE_MS);
    clock.now = START + 1_000 + SLOT_GRACE_MS - 1;
    await expect(waits.during('h', clock.now + 1_000, async () => 'x')).rejects.toMatchObject({
      code: 'TOO_MANY_WAITS',
    });
    clock.now = START + 1_000 + SLOT_GRACE_MS;
    const next = blocking();
    const taken = waits.during('h', clock.now + 1_000, next.wait);
    await settle();
    expect(slotItems()[dead1]).toMatchObject({ holder: 'h', until: clock.now + 1_000 + SLOT_GRACE_MS });
    expect(slotItems()[dead2]).toMatchObject({ holder: 'dead2' });
    // Should the dead wait come back and free its slot, it cannot free the one taken over.
    expect((await memory.write(httpWaitRef(dead1), freeSlotWrite('dead1'))).ok).toBe(false);
    expect(slotItems()[dead1]).toMatchObject({ holder: 'h' });
    next.end();
    await taken;
  });

  it('a wait that fails frees its slot too; no slots at all refuse every wait', async () => {
    const { waits, slotItems } = slots(1);
    await expect(
      waits.during('h1', START + 1_000, async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(slotItems()[0]?.holder).toBeUndefined();
    expect(await waits.during('h2', START + 1_000, async () => 'ok')).toBe('ok');
    const none = slots(0);
    await expect(none.waits.during('h', START + 1_000, async () => 'x')).rejects.toMatchObject({
      code: 'TOO_MANY_WAITS',
    });
  });

  it('the services’ slots come from the limits (maxHttpWaits)', async () => {
    const h = new QueueHarness({ ...DEFAULT_LIMITS, maxHttpWaits: 1 });
    const one = blocking();
    const first = h.services.httpWaits.during('h1', h.now + 1_000, one.wait);
    await settle();
    await expect(h.services.httpWaits.during('h2', h.now + 1_000, async () => 'x')).rejects.toMatchObject({
      code: 'TOO_MANY_WAITS',
    });
    one.end();
    await first;
    expect(await h.services.httpWaits.during('h2', h.now + 1_000, async () => 'x')).toBe('x');
  });

  it('the slot writes: taken only when free or lapsed, freed only by its holder', () => {
    const taken = applyUpdate(undefined, takeSlotWrite('h1', START, START + 100).update);
    const take = (item: Item | undefined, now: number) =>
      evaluate(takeSlotWrite('h2', now, now + 100).condition as Condition, item);
    expect(take(undefined, START)).toBe(true);
    expect(take(taken, START + 99)).toBe(false);
    expect(take(taken, START + 100)).toBe(true);
    expect(evaluate(freeSlotWrite('h2').condition as Condition, taken)).toBe(false);
    expect(evaluate(freeSlotWrite('h1').condition as Condition, taken)).toBe(true);
    const freed = applyUpdate(taken, freeSlotWrite('h1').update);
    expect(take(freed, START)).toBe(true);
    expect(takeSlotWrite('h1', START, START + 100).gcFrom).toBe(START + 100);
  });

  it('a wait probes 6 distinct slots, the same on every replay; every slot when there are at most 6', () => {
    fc.assert(
      fc.property(fc.string(), fc.integer({ min: 1, max: 500 }), (holder, count) => {
        const order = probeOrder(holder, count);
        expect(order).toEqual(probeOrder(holder, count));
        expect(new Set(order).size).toBe(order.length);
        expect(order.length).toBe(Math.min(6, count));
        expect(order.every((slot) => Number.isInteger(slot) && slot >= 0 && slot < count)).toBe(true);
      }),
    );
    expect(probeOrder('h', 0)).toEqual([]);
  });

  it('with half the slots in use, few waits are refused (probes hashed apart, not following on)', async () => {
    const { memory, waits } = slots(100);
    // 50 slots held by waits whose functions are busy, in runs as taken slots bunch (7 runs of 7, and one).
    const held = Array.from({ length: 50 }, (_, i) => (Math.floor(i / 7) * 14 + (i % 7)) % 100);
    expect(new Set(held).size).toBe(50);
    for (const slot of held)
      expect(
        (await memory.write(httpWaitRef(slot), takeSlotWrite(`busy-${slot}`, START, START + 60_000))).ok,
      ).toBe(true);
    let refused = 0;
    for (let i = 0; i < 1_000; i++)
      await waits
        .during(`request-${i}`, START + 1_000, async () => 'ok')
        .catch((error: unknown) => {
          expect(error).toMatchObject({ code: 'TOO_MANY_WAITS' });
          refused++;
        });
    // (1/2)^6 is 1.6 % (11 here). Three probes following on from one slot refused 316 here.
    expect(refused).toBeGreaterThan(0);
    expect(refused).toBeLessThan(40);
  });
});

describe('an HTTP attempt polls only for the wait it asked for', () => {
  it('a retry over HTTP of a request queued for a push is answered "queued" at once, and the wait goes on', async () => {
    const h = new QueueHarness();
    await h.hold('a');
    expect((await h.wait('b', { connection: 'c1', waitMs: 600_000, requestId: 'r1' })).kind).toBe('queued');
    const before = h.now;
    const retry = await h.services.locks.acquireOverHttp(h.command('b', { requestId: 'r1' }), { waitMs: 1 });
    expect(retry.kind).toBe('queued');
    expect(h.now - before).toBeLessThan(50); // no polling: no function held for a wait it did not ask for
    expect(h.record('b', 'r1')?.state).toBe('queued');
    expect(h.waiters()).toHaveLength(1);
  });

  it('a retry with a shorter wait polls until its own end, and then the request ends', async () => {
    const h = new QueueHarness();
    await h.hold('a', { ttl: 600_000 });
    expect((await h.wait('b', { waitMs: 20_000, requestId: 'r2' })).kind).toBe('queued');
    const before = h.now;
    const retry = await h.services.locks.acquireOverHttp(h.command('b', { requestId: 'r2' }), {
      waitMs: 1_000,
    });
    expect(retry).toMatchObject({ kind: 'done', outcome: { acquired: false } });
    expect(h.now - before).toBeGreaterThanOrEqual(1_000);
    expect(h.now - before).toBeLessThan(2_000);
    expect(h.record('b', 'r2')?.state).toBe('ended');
    expect(h.waiters()).toHaveLength(0);
  });
});

describe('the sharded listing index', () => {
  const names = Array.from({ length: 1_000 }, (_, i) => `jobs/n-${i}`);

  it('spreads names over LIST_SHARDS partitions, each name always to the same one', () => {
    expect(LIST_PARTITIONS).toHaveLength(LIST_SHARDS);
    expect(new Set(LIST_PARTITIONS).size).toBe(LIST_SHARDS);
    const used = new Set<string>();
    for (const name of names) {
      const listing = lockListing(name);
      expect(LIST_PARTITIONS).toContain(listing[LIST_INDEX.pk]);
      expect(listing[LIST_INDEX.sk]).toBe(name);
      expect(lockListing(name)).toEqual(listing);
      used.add(listing[LIST_INDEX.pk] as string);
    }
    expect(used.size).toBeGreaterThan(1);
    expect(used.size).toBe(LIST_SHARDS);
  });

  it('a cursor round-trips, and is refused (undefined) when forged or for another prefix', () => {
    expect(decodeListCursor(encodeListCursor('jobs/a'), 'jobs/')).toBe('jobs/a');
    expect(decodeListCursor(encodeListCursor('jobs/a'), '')).toBe('jobs/a');
    expect(decodeListCursor(encodeListCursor('jobs/a'), 'other/')).toBeUndefined();
    const forged = (text: string) => Buffer.from(text).toString('base64url');
    for (const cursor of [
      'not a cursor',
      '',
      forged('jobs/a'), // the old cursor format: not JSON
      forged('null'),
      forged('{}'),
      forged('{"after":7}'),
      forged('{"after":""}'),
      forged('{"after":"jobs//a"}'),
      forged('{"after":"jobs/../a"}'),
      forged('{"after":"jobs/a b"}'),
      forged(JSON.stringify({ after: `jobs/${'a'.repeat(300)}` })),
      forged('{"after":{"pk":"LIST#0"}}'),
    ])
      expect(decodeListCursor(cursor, 'jobs/'), cursor).toBeUndefined();
  });

  it('the range after a cursor holds exactly the names after it that start with the prefix', () => {
    // Names from a few characters, the smallest ('-') and largest ('z') of the charset among them.
    const char = fc.constantFrom('-', '.', '0', ':', 'A', '_', 'a', 'z', '/');
    const name = fc
      .array(char, { minLength: 1, maxLength: 6 })
      .map((cs) => cs.join(''))
      .filter((n) => decodeListCursor(encodeListCursor(n), '') !== undefined);
    fc.assert(
      fc.property(
        fc.array(name, { minLength: 1, maxLength: 30 }),
        fc.nat(),
        fc.nat(),
        (all, pickAfter, cut) => {
          const after = all[pickAfter % all.length] as string;
          const prefix = after.slice(0, cut % (after.length + 1));
          const { from, to } = listRange(prefix, after);
          // DynamoDB's BETWEEN compares UTF-8 bytes: for this charset, JavaScript's string order.
          const inRange = all.filter((n) => n >= from && n <= to);
          const expected = all.filter((n) => n.startsWith(prefix) && n > after);
          expect(new Set(inRange)).toEqual(new Set(expected));
        },
      ),
      { numRuns: 1_000 },
    );
  });

  it('pages through every lock of a prefix in name order, whatever shard each is in', async () => {
    const memory = new MemoryStorage({ tableName: 't', retentionSeconds: 86_400 }, () => START);
    const some = [...names.slice(0, 40), 'jobsx', 'job', 'other/a'];
    for (const n of some) await memory.write(lockRef(n), { update: [set(L.name, n)] });
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await memory.listLocks('jobs/', 7, cursor);
      seen.push(...page.locks.map((l) => l.name));
      cursor = page.nextCursor;
    } while (cursor !== undefined);
    expect(seen).toEqual(names.slice(0, 40).sort());
    await expect(memory.listLocks('other/', 7, encodeListCursor('jobs/n-1'))).rejects.toMatchObject({
      code: 'INVALID_REQUEST',
    });
  });
});

describe('the sharded due index', () => {
  it('an item falls due in one of its minute’s buckets, always the same one, and items spread over them', () => {
    expect(dueBuckets(7)).toHaveLength(DUE_SHARDS);
    expect(new Set(dueBuckets(7)).size).toBe(DUE_SHARDS);
    for (const bucket of dueBuckets(7)) expect(dueBuckets(8)).not.toContain(bucket);
    fc.assert(
      fc.property(fc.nat({ max: 60_000_000 }), fc.string({ minLength: 1 }), fc.string(), (minute, pk, sk) => {
        const bucket = dueBucket(minute, { pk, sk });
        expect(dueBuckets(minute)).toContain(bucket);
        expect(dueBucket(minute, { pk, sk })).toBe(bucket);
      }),
    );
    const used = new Set(Array.from({ length: 200 }, (_, i) => dueBucket(7, keyOf(sessionRef(`s-${i}`)))));
    expect(used.size).toBeGreaterThan(1);
  });

  it('the sweeper finds what fell due in any shard of the minute', async () => {
    const memory = new MemoryStorage({ tableName: 't', retentionSeconds: 86_400 }, () => START + 120_000);
    const due = Array.from({ length: 40 }, (_, i) => sessionRef(`s-${i}`));
    for (const [i, ref] of due.entries())
      await memory.write(ref, {
        update: [set('client_id', 'a')],
        sweepAt: START + i,
      });
    const minute = Math.floor(START / 60_000);
    const found = await memory.dueIn(minute, START + 120_000);
    expect(found).toEqual(due.filter((_, i) => Math.floor((START + i) / 60_000) === minute));
  });
});

describe('errors of Trust II', () => {
  it('FORBIDDEN is a 403; the limits are retryable 429s whose body says when to retry', () => {
    expect(ERROR_CODES.FORBIDDEN).toEqual({ status: 403, retryable: false });
    for (const code of ['QUEUE_FULL', 'TOO_MANY_WAITERS', 'TOO_MANY_WAITS'] as const)
      expect(ERROR_CODES[code]).toEqual({ status: 429, retryable: true });
    expect(new LatchkeyError('TOO_MANY_WAITS', 'busy', undefined, 1_000).toBody()).toEqual({
      error: { code: 'TOO_MANY_WAITS', message: 'busy', retry_after_ms: 1_000 },
    });
    expect(new LatchkeyError('FORBIDDEN', 'not yours').toBody()).toEqual({
      error: { code: 'FORBIDDEN', message: 'not yours' },
    });
  });

  it('priorities and ephemeral waits are checked against the limits on the wire', () => {
    const narrow = { ...DEFAULT_LIMITS, minPriority: -5, maxPriority: 5 };
    expect(priority(narrow).safeParse(5).success).toBe(true);
    expect(priority(narrow).safeParse(6).success).toBe(false);
    expect(priority(narrow).safeParse(-6).success).toBe(false);
    expect(acquireBody(narrow).safeParse({ client_id: 'a', ttl_ms: 5_000, priority: 6 }).success).toBe(false);
    expect(
      acquireBody(DEFAULT_LIMITS).safeParse({ client_id: 'a', ttl_ms: 5_000, priority: 6 }).success,
    ).toBe(true);
    // Ephemeral needs the connection it is held through, and no ttl.
    expect(acquireBody(DEFAULT_LIMITS).safeParse({ client_id: 'a', ephemeral: true }).success).toBe(false);
    expect(
      acquireBody(DEFAULT_LIMITS).safeParse({ client_id: 'a', ephemeral: true, connection_id: 'c1' }).success,
    ).toBe(true);
    expect(
      acquireBody(DEFAULT_LIMITS).safeParse({
        client_id: 'a',
        ephemeral: true,
        connection_id: 'c1',
        ttl_ms: 5_000,
      }).success,
    ).toBe(false);
    expect(queueOrder(narrow.maxPriority, START, 'n')).toMatch(/^095#/);
  });
});
