/**
 * DynamoDB refuses an expression over 4 KB (a ValidationException, which would be a 500). The
 * writes that add or remove many shared entries at once stay under it in their worst case: a run
 * of MAX_RUN readers granted through sessions over MAX_DROP lapsed entries, an exclusive grant
 * (and a release handing over) clearing them, a forced release, a pruning.
 */
import { describe, expect, it } from 'vitest';
import { applyUpdate, type Item } from '../../lambdas/core/expr';
import { MAX_DROP, sharedEntries } from '../../lambdas/core/holders';
import { type ItemWrite, lockRef } from '../../lambdas/core/items';
import { lease, pinnedGrant, throughSession } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { MAX_RUN } from '../../lambdas/core/queue';
import {
  forceReleaseSharedWrite,
  pinnedSharedGrants,
  pruneLapsedWrite,
} from '../../lambdas/core/shared-lock';
import { updateRequest } from '../../lambdas/store/requests';

const NOW = 1_800_000_000_000;
const LIMIT = 4 * 1024;
const settings = { tableName: 'locks', retentionSeconds: 86_400 };
const owner = localPrincipal('a-rather-long-access-key-name-for-a-principal');

/** A lock item with `n` shared entries whose leases ended long ago. */
function withLapsed(n: number): Item {
  const { write } = pinnedSharedGrants(
    Array.from({ length: n }, (_, i) => ({ name: 'L', owner, clientId: `old-${i}`, tenure: lease(1) })),
    undefined,
    NOW - 10_000,
    'w0',
  );
  return applyUpdate(undefined, write.update);
}

function sizes(write: ItemWrite) {
  const request = updateRequest(settings, lockRef('L'), write);
  return {
    update: request.UpdateExpression?.length ?? 0,
    condition: request.ConditionExpression?.length ?? 0,
  };
}

describe('expressions stay under DynamoDB 4 KB limit', () => {
  const seen = withLapsed(MAX_DROP * 3);

  it('a run of readers through sessions, over lapsed entries', () => {
    const grantees = Array.from({ length: MAX_RUN }, (_, i) => ({
      name: 'L',
      owner,
      clientId: `reader-${i}-with-a-long-client-id`,
      tenure: throughSession(`0f0e0d0c-0b0a-4909-8807-06050403020${i % 10}`),
      requestKey: `a-request-key-${i}-${'x'.repeat(100)}`,
      maxHolders: 1_000,
    }));
    const { write } = pinnedSharedGrants(grantees, seen, NOW, 'write-id');
    expect(sizes(write).update).toBeLessThanOrEqual(LIMIT);
    expect(sizes(write).condition).toBeLessThanOrEqual(LIMIT);
    // It removed MAX_DROP of the lapsed entries and kept the count exact.
    const after = applyUpdate(seen, write.update);
    expect(after.shared_count).toBe(sharedEntries(after).length);
  });

  it('an exclusive grant over lapsed entries, and one handed over by a release', () => {
    const grantee = {
      name: 'L',
      owner,
      clientId: 'writer',
      tenure: lease(30_000),
      requestKey: 'k'.repeat(200),
    };
    const { write } = pinnedGrant(grantee, seen, NOW, 'write-id');
    expect(sizes(write).update).toBeLessThanOrEqual(LIMIT);
    const after = applyUpdate(seen, write.update);
    expect(after.shared_count).toBe(sharedEntries(after).length);
    expect(sharedEntries(after).length).toBe(MAX_DROP * 2);
  });

  it('a forced release and a pruning of MAX_DROP entries', () => {
    const live = withLapsed(MAX_DROP * 2);
    expect(
      sizes(forceReleaseSharedWrite(sharedEntries(live).slice(0, MAX_DROP), live, owner, 'r', NOW)).update,
    ).toBeLessThanOrEqual(LIMIT);
    const prune = pruneLapsedWrite(seen, NOW);
    expect(prune).toBeDefined();
    expect(sizes(prune as ItemWrite).update).toBeLessThanOrEqual(LIMIT);
  });
});
