/**
 * `latchkey deadlocks` and `latchkey waits`, and how `run` and `acquire` say a wait refused as a
 * deadlock: the merging and wording as pure functions, and the commands against a client stubbed
 * at its methods (no service).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  cycleKey,
  cycleText,
  DEADLOCK_EXIT,
  deadlockJson,
  deadlockLines,
  deadlockReport,
  describeDeadlocks,
  describeWaits,
  edgeText,
  inBatches,
  mergeCycles,
  rotated,
} from '../../sdk/cli/deadlocks';
import { main } from '../../sdk/cli/main';
import { EXIT } from '../../sdk/cli/run';
import type { WaitGraph } from '../../sdk/client';
import { DeadlockError, LeaseLostError, LockHeldError, type WaitEdge } from '../../sdk/errors';
import { Lease, LockClient } from '../../sdk/index';

/** Each client's opaque party id (as the service hashes principal and client id). */
const ids: Record<string, string> = { c1: 'pa1', c2: 'pb2', c3: 'pc3', c4: 'pd4', c5: 'pe5' };
/** A party; c1 is the caller's own (`mine`), the others are other principals'. */
const party = (clientId: string, id = ids[clientId] as string, mine = clientId === 'c1') => ({
  clientId,
  party: id,
  mine,
});
const edge = (
  waiter: string,
  lock: string,
  blocker: string,
  blockerIs: 'holder' | 'ahead' = 'holder',
): WaitEdge => ({ waiter: party(waiter), lock, blocker: party(blocker), blockerIs });

/** c1 (yours) waits for jobs/a held by c2, c2 for jobs/b held by c1. */
const two = [edge('c1', 'jobs/a', 'c2'), edge('c2', 'jobs/b', 'c1')];
/** c3 → c4 → c5 → c3, one of them queued behind the other. */
const three = [edge('c4', 'jobs/d', 'c5'), edge('c5', 'jobs/e', 'c3', 'ahead'), edge('c3', 'jobs/c', 'c4')];
const graph = (lock: string, cycles: WaitEdge[][], complete = true): WaitGraph => ({
  lock,
  edges: cycles.flat(),
  cycles,
  complete,
});

describe('merging the cycles several locks report', () => {
  it('the same cycle from any lock, in any rotation, is one; each starts at its least edge', () => {
    const reversed = [two[1] as WaitEdge, two[0] as WaitEdge];
    expect(cycleKey(two)).toBe(cycleKey(reversed));
    expect(rotated(reversed)).toEqual(two);
    const merged = mergeCycles([
      graph('jobs/a', [two]),
      graph('jobs/b', [reversed]),
      graph('jobs/d', [three]),
      graph('jobs/e', [[...three.slice(1), three[0] as WaitEdge]]),
    ]);
    expect(merged).toEqual([two, rotated(three)]);
    expect(rotated(three)[0]).toMatchObject({ waiter: { clientId: 'c3' }, lock: 'jobs/c' });
  });

  it('a holder that became one ahead (or back) between two reads is the same cycle; other parties are not', () => {
    const asAhead = [{ ...(two[0] as WaitEdge), blockerIs: 'ahead' as const }, two[1] as WaitEdge];
    expect(mergeCycles([graph('jobs/a', [two]), graph('jobs/b', [asAhead])])).toHaveLength(1);
    const otherPrincipal = [{ ...(two[0] as WaitEdge), blocker: party('c2', 'px9') }, two[1] as WaitEdge];
    expect(mergeCycles([graph('jobs/a', [two]), graph('jobs/b', [otherPrincipal])])).toHaveLength(2);
    expect(mergeCycles([graph('jobs/a', [[]]), graph('jobs/b', [])])).toEqual([]);
  });
});

describe('the words', () => {
  it('a cycle on one line, parties by client id (yours marked), ids only when needed; an edge with both ids', () => {
    // Your own party is marked `(yours)` wherever it is named; no ids when the client ids tell all apart.
    expect(cycleText(two)).toBe(
      'c1 (yours) waits for jobs/a held by c2 → c2 waits for jobs/b held by c1 (yours)',
    );
    expect(cycleText(rotated(three))).toBe(
      'c3 waits for jobs/c held by c4 → c4 waits for jobs/d held by c5 → c5 waits for jobs/e behind c3',
    );
    expect(cycleText(rotated(three))).not.toContain('(yours)');
    expect(cycleText(rotated(three))).not.toContain('[');
    // An edge on its own line always says both parties' ids.
    // An edge alone names parties by client id; with ids where the listing needs them.
    expect(edgeText(two[0] as WaitEdge)).toBe('c1 (yours) waits for jobs/a held by c2');
    expect(edgeText(two[0] as WaitEdge, true)).toBe('c1 (yours) [pa1] waits for jobs/a held by c2 [pb2]');
    expect(edgeText(two[1] as WaitEdge, true)).toBe('c2 [pb2] waits for jobs/b held by c1 (yours) [pa1]');
    // Through a hierarchy: the blocker holds another lock, above or below.
    expect(edgeText({ ...edge('c1', 't/a/b', 'c1'), through: 't/a' })).toBe(
      'c1 (yours) waits for t/a/b kept out by c1 (yours) holding t/a',
    );
    // One client id under two principals: every mention says which, by its party id.
    const twins = [
      { ...(two[0] as WaitEdge), blocker: party('c1', 'px9', false) },
      { ...(two[1] as WaitEdge), waiter: party('c1', 'px9', false) },
    ];
    expect(cycleText(twins)).toBe(
      'c1 (yours) [pa1] waits for jobs/a held by c1 [px9] → c1 [px9] waits for jobs/b held by c1 (yours) [pa1]',
    );
    // Two other principals' parties under one client id are told apart by their ids alone.
    const otherCycle = [
      edge('c3', 'jobs/c', 'c4'),
      { ...edge('c4', 'jobs/d', 'c3'), blocker: party('c4', 'pz7') },
      { ...edge('c4', 'jobs/e', 'c3'), waiter: party('c4', 'pz7') },
    ];
    expect(cycleText(otherCycle)).toBe(
      'c3 [pc3] waits for jobs/c held by c4 [pd4] → c4 [pd4] waits for jobs/d held by c4 [pz7] → c4 [pz7] waits for jobs/e held by c3 [pc3]',
    );
  });

  it('deadlocks: none found, or each cycle numbered, with notes for cut-short walks and a cut listing', () => {
    expect(describeDeadlocks(deadlockReport('', 12, false, [graph('jobs/x', []), graph('jobs/y', [])]))).toBe(
      'no deadlock among 2 locks with waiters',
    );
    expect(describeDeadlocks(deadlockReport('jobs/', 3, false, [graph('jobs/x', [])]))).toBe(
      "no deadlock among 1 lock with waiters under 'jobs/'",
    );
    const report = deadlockReport('jobs/', 40, true, [
      graph('jobs/a', [two]),
      graph('jobs/b', [two]),
      graph('jobs/d', [three], false),
    ]);
    expect(describeDeadlocks(report).split('\n')).toEqual([
      `cycle 1: ${cycleText(two)}`,
      `cycle 2: ${cycleText(rotated(three))}`,
      "2 cycles of waits among 3 locks with waiters under 'jobs/': each lasts until a holder in it releases, its lease ends, or a wait in it times out (latchkey admin queue NAME, latchkey admin force-release NAME)",
      "note: the walk from jobs/d stopped at the service's bounds: a longer cycle through it may not be shown",
      "note: only the first 40 locks under 'jobs/' were listed: use --prefix to look at the others",
    ]);
    expect(deadlockJson(report)).toEqual({
      prefix: 'jobs/',
      locks: 40,
      truncated: true,
      locks_with_waiters: 3,
      cycles: [
        [
          {
            waiter: { client_id: 'c1', party: 'pa1', mine: true },
            lock: 'jobs/a',
            blocker: { client_id: 'c2', party: 'pb2', mine: false },
            blocker_is: 'holder',
          },
          {
            waiter: { client_id: 'c2', party: 'pb2', mine: false },
            lock: 'jobs/b',
            blocker: { client_id: 'c1', party: 'pa1', mine: true },
            blocker_is: 'holder',
          },
        ],
        expect.any(Array),
      ],
      incomplete: ['jobs/d'],
    });
  });

  it('waits: the edges one a line, then the cycles', () => {
    expect(describeWaits({ lock: 'jobs/a', edges: two, cycles: [two], complete: true }).split('\n')).toEqual([
      'jobs/a: 2 clients wait for another, from its queue outward',
      `  ${edgeText(two[0] as WaitEdge)}`,
      `  ${edgeText(two[1] as WaitEdge)}`,
      `cycle 1: ${cycleText(two)}`,
    ]);
    // One client waiting for the holder and for one ahead of it is one client, two edges.
    const behind = [edge('c1', 'jobs/a', 'c2'), edge('c1', 'jobs/a', 'c3', 'ahead')];
    expect(describeWaits({ lock: 'jobs/a', edges: behind, cycles: [], complete: true }).split('\n')[0]).toBe(
      'jobs/a: 1 client waits for another (2 waits-for edges), from its queue outward',
    );
    expect(describeWaits({ lock: 'jobs/q', edges: [], cycles: [], complete: false })).toBe(
      "jobs/q: nobody waits for anyone from its queue\nno cycle of waits\nnote: the walk stopped at the service's bounds: longer chains of waits are not shown",
    );
  });

  it('a refused wait: what happened, its cycle one edge a line, what to do; or the service’s message', () => {
    expect(deadlockLines(new DeadlockError('refused', two))).toEqual([
      'latchkey: not acquired: waiting for jobs/a would close a cycle of waits (a deadlock), so the service refused this wait (the first below) [DEADLOCK]:',
      `latchkey:   ${edgeText(two[0] as WaitEdge)}`,
      `latchkey:   ${edgeText(two[1] as WaitEdge)}`,
      'latchkey: release what this client holds that the others wait for, then try again',
    ]);
    // Runs nested in opposite orders: c3 runs inside c2, c4 inside c1; c3's wait was refused.
    const nested = [edge('c3', 'jobs/x', 'c1'), edge('c4', 'jobs/y', 'c2')];
    expect(deadlockLines(new DeadlockError('refused', nested))).toEqual([
      'latchkey: not acquired: waiting for jobs/x would close a cycle of waits (a deadlock), so the service refused this wait (the first below) [DEADLOCK]:',
      'latchkey:   c3, inside c2, which waits for it, waits for jobs/x held by c1 (yours)',
      'latchkey:   c4, inside c1 (yours), which waits for it, waits for jobs/y held by c2',
      'latchkey: the run this one runs inside holds jobs/y: take these locks in the same order everywhere (or together in one run: --lock A --lock B), then try again',
    ]);
    // A run further out holds the very lock: a cycle of one.
    expect(deadlockLines(new DeadlockError('refused', [edge('c3', 'jobs/x', 'c1')])).at(-1)).toBe(
      'latchkey: a run this one runs inside holds jobs/x, and ends only after this one: waiting would never end; take the lock in one of them, not both',
    );
    expect(deadlockLines(new DeadlockError('request r1 was refused'))).toEqual([
      'latchkey: request r1 was refused [DEADLOCK]',
    ]);
  });

  it('inBatches keeps the order and at most `limit` in flight', async () => {
    let inFlight = 0;
    let most = 0;
    const out = await inBatches([5, 1, 4, 2, 3], 2, async (n) => {
      most = Math.max(most, ++inFlight);
      await new Promise((resolve) => setTimeout(resolve, n));
      inFlight--;
      return n * 10;
    });
    expect(out).toEqual([50, 10, 40, 20, 30]);
    expect(most).toBe(2);
    expect(await inBatches([], 8, async () => 1)).toEqual([]);
  });
});

describe('the commands', () => {
  const endpoint = ['--endpoint', 'http://127.0.0.1:9', '--ws-endpoint', 'ws://127.0.0.1:9/v1'];
  let out: string[];
  let err: string[];
  const cli = async (...args: string[]) => {
    out = [];
    err = [];
    vi.spyOn(console, 'log').mockImplementation((line: string) => void out.push(line));
    vi.spyOn(console, 'error').mockImplementation((line: string) => void err.push(line));
    process.exitCode = undefined;
    await main(['node', 'latchkey', ...endpoint, ...args]);
    const code = process.exitCode ?? 0;
    process.exitCode = undefined;
    return code;
  };
  afterEach(() => {
    vi.restoreAllMocks();
    process.exitCode = undefined;
  });

  it('deadlocks reads the graph of each lock with waiters only; exit 0 without a cycle, 1 with one', async () => {
    const list = vi.spyOn(LockClient.prototype, 'list').mockResolvedValue([
      { lock: 'jobs/a', queued: 1 },
      { lock: 'jobs/b', queued: 2 },
      { lock: 'jobs/free', queued: 0 },
    ]);
    const waits = vi
      .spyOn(LockClient.prototype, 'waits')
      .mockImplementation(async (name) => graph(name, name === 'jobs/free' ? [] : [two]));
    expect(await cli('deadlocks', '--prefix', 'jobs/')).toBe(DEADLOCK_EXIT.FOUND);
    expect(list).toHaveBeenCalledWith('jobs/', 10_000);
    expect(waits.mock.calls.map(([name]) => name)).toEqual(['jobs/a', 'jobs/b']);
    expect(out.join('\n').split('\n')[0]).toBe(`cycle 1: ${cycleText(two)}`);
    expect(await cli('deadlocks', '--json')).toBe(1);
    expect(JSON.parse(out[0] as string)).toMatchObject({
      prefix: '',
      locks_with_waiters: 2,
      cycles: [[{}, {}]],
    });

    waits.mockImplementation(async (name) => graph(name, []));
    expect(await cli('deadlocks')).toBe(DEADLOCK_EXIT.NONE);
    expect(out).toEqual(['no deadlock among 2 locks with waiters']);
  });

  it('waits NAME prints the graph; exit 0 even with a cycle', async () => {
    vi.spyOn(LockClient.prototype, 'waits').mockResolvedValue(graph('jobs/a', [two]));
    expect(await cli('waits', 'jobs/a')).toBe(0);
    expect(out[0]).toBe(describeWaits(graph('jobs/a', [two])));
    expect(await cli('waits', 'jobs/a', '--json')).toBe(0);
    expect(JSON.parse(out[0] as string)).toMatchObject({
      lock: 'jobs/a',
      complete: true,
      cycles: [[{}, {}]],
    });
  });

  it('run and acquire refuse --wait with -n/--no-wait, in either order, before anything is sent', async () => {
    const sent = [
      vi.spyOn(LockClient.prototype, 'withLock'),
      vi.spyOn(LockClient.prototype, 'acquire'),
      vi.spyOn(LockClient.prototype, 'acquireNow'),
    ];
    for (const args of [
      ['run', 'jobs/a', '-n', '--wait', '5m', '--', 'true'],
      ['run', 'jobs/a', '--wait=5m', '--no-wait', '--', 'true'],
      ['acquire', 'jobs/a', '--wait', '1m', '-n'],
    ]) {
      expect(await cli(...args), args.join(' ')).toBe(1);
      expect(err.join('\n')).toMatch(/--wait and -n\/--no-wait contradict each other: give one.*\[USAGE\]/);
    }
    // A command line's own contradiction is a usage error, as commander's are.
    expect(await cli('--json', 'acquire', 'jobs/a', '--wait', '1m', '-n')).toBe(1);
    expect(JSON.parse(out.at(-1) ?? '{}')).toMatchObject({ error: { code: 'USAGE', retryable: false } });
    expect(await cli('--json', 'acquire', 'jobs/a', '--max-holders', '2')).toBe(1);
    expect(JSON.parse(out.at(-1) ?? '{}')).toMatchObject({ error: { code: 'USAGE' } });
    for (const spy of sent) expect(spy).not.toHaveBeenCalled();
    // They agree when the wait is 0: it tries once.
    const tried = vi
      .spyOn(LockClient.prototype, 'acquireNow')
      .mockResolvedValue(new LockHeldError('jobs/a', 'w1', 1_000));
    expect(await cli('acquire', 'jobs/a', '-n', '--wait', '0s')).toBe(EXIT.NOT_ACQUIRED);
    expect(tried).toHaveBeenCalledTimes(1);
  });

  it('run: a lease found lost only when the command ended (its deadline passed unnoticed) exits 4 and says so', async () => {
    const lease = new Lease(
      {
        lock: 'jobs/a',
        client_id: 'me',
        fencing_token: 3,
        expires_at: new Date().toISOString(),
        remaining_ms: 1_000,
        ttl_ms: 1_000,
      },
      performance.now(),
    );
    vi.spyOn(LockClient.prototype, 'withLock').mockImplementation(async (_name, _options, fn) => {
      await (fn as (l: Lease, s: AbortSignal) => Promise<unknown>)(lease, new AbortController().signal);
      throw new LeaseLostError('lease on jobs/a passed its deadline before the callback settled');
    });
    expect(await cli('run', 'jobs/a', '--', 'true')).toBe(EXIT.LEASE_LOST);
    expect(err).toContain(
      'latchkey: the lease on jobs/a was lost: lease on jobs/a passed its deadline before the callback settled',
    );
  });

  it('run and acquire: a DeadlockError exits 3 (not acquired), the cycle on stderr', async () => {
    const refusal = new DeadlockError('waiting for jobs/a would close a cycle of waits', two);
    vi.spyOn(LockClient.prototype, 'withLock').mockRejectedValue(refusal);
    vi.spyOn(LockClient.prototype, 'withLocks').mockRejectedValue(refusal);
    vi.spyOn(LockClient.prototype, 'acquire').mockRejectedValue(refusal);
    expect(await cli('run', 'jobs/a', '--', 'true')).toBe(EXIT.NOT_ACQUIRED);
    expect(err).toEqual(deadlockLines(refusal));
    expect(await cli('run', '--lock', 'jobs/a', '--lock', 'jobs/b', '--', 'true')).toBe(EXIT.NOT_ACQUIRED);
    expect(err).toEqual(deadlockLines(refusal));
    expect(await cli('acquire', 'jobs/a', '--wait', '1m')).toBe(EXIT.NOT_ACQUIRED);
    expect(err).toEqual(deadlockLines(refusal));
    expect(out).toEqual([]);
  });
});
