/**
 * What a new wait keeps while it waits (lock-service newWaiter, for core/deadlock.ts keptBy): its
 * own holds named in `holding` without the lock it waits for (a party's own hold never blocks its
 * wait), and its enclosing client's holds in `enclosing`, that lock included (a hold of it by the
 * enclosing client does block the wait: a cycle of one). An enclosing client id that is the
 * waiter's own is its own holding. The waiter item keeps both through storage.
 */
import { describe, expect, it } from 'vitest';
import { keeperSteps, keptBy } from '../../lambdas/core/deadlock';
import { keeperRef } from '../../lambdas/core/items';
import { lease } from '../../lambdas/core/lock';
import { waiterItem, waiterOf } from '../../lambdas/core/queue';
import { newWaiter } from '../../lambdas/service/lock-service';

const cmd = (more: object = {}) => ({
  name: 'jobs/b',
  owner: 'arn:aws:iam::1:role/a',
  clientId: 'inner',
  tenure: lease(30_000),
  requestId: 'r1',
  ...more,
});
const kept = (more: object) =>
  keptBy(newWaiter(cmd(more), { waitMs: 1_000 }, 1_000)).map((k) => `${k.party.clientId}:${k.lock}`);

describe('what a new wait keeps', () => {
  it('its own holding, never the lock it waits for; its enclosing client holds, that lock included', () => {
    expect(kept({ holding: ['jobs/a', 'jobs/b'] })).toEqual(['inner:jobs/a']);
    expect(kept({ enclosing: [{ clientId: 'outer', holding: ['jobs/b', 'jobs/c'] }] })).toEqual([
      'outer:jobs/b',
      'outer:jobs/c',
    ]);
    expect(kept({ holding: ['jobs/a'], enclosing: [{ clientId: 'outer', holding: ['jobs/a'] }] })).toEqual([
      'inner:jobs/a',
      'outer:jobs/a',
    ]);
  });

  it('an enclosing client id that is its own is its own holding (merged, the waited-for lock left out); one named twice is one', () => {
    const w = newWaiter(
      cmd({
        holding: ['jobs/a'],
        enclosing: [
          { clientId: 'inner', holding: ['jobs/a', 'jobs/b', 'jobs/c'] },
          { clientId: 'outer', holding: ['jobs/x'] },
          { clientId: 'outer', holding: ['jobs/y'] },
        ],
      }),
      { waitMs: 1_000 },
      1_000,
    );
    expect(w.enclosing).toEqual([{ clientId: 'outer', holding: ['jobs/x', 'jobs/y'] }]);
    expect(w.holding).toEqual(['jobs/a', 'jobs/c']);
  });

  it('survives storage, and writes one keeper record per hold it keeps, under the holding party', () => {
    const w = newWaiter(
      cmd({
        holding: ['jobs/a'],
        enclosing: [
          { clientId: 'outer', holding: ['jobs/b'] },
          { clientId: 'middle', holding: ['jobs/c'] },
        ],
      }),
      { waitMs: 1_000 },
      1_000,
    );
    const back = waiterOf(w.order, waiterItem(w));
    expect(back.holding).toEqual(['jobs/a']);
    expect(back.enclosing).toEqual([
      { clientId: 'outer', holding: ['jobs/b'] },
      { clientId: 'middle', holding: ['jobs/c'] },
    ]);
    const refs = keeperSteps(back).map((s) => (s.kind === 'update' ? s.ref : undefined));
    expect(refs).toEqual([
      keeperRef('jobs/a', 'arn:aws:iam::1:role/a', 'inner'),
      keeperRef('jobs/b', 'arn:aws:iam::1:role/a', 'outer'),
      keeperRef('jobs/c', 'arn:aws:iam::1:role/a', 'middle'),
    ]);
  });
});
