import { describe, expect, it } from 'vitest';
import type { ContentionStats } from '../bench/contention-stats';
import { type StoreRates, storeCeiling, transactionSizes } from '../bench/store-rate';

const mix = (m: Partial<ContentionStats>): ContentionStats =>
  ({
    singleWritesPerGrant: 0,
    readsPerGrant: 0,
    transactionsPerGrant: 0,
    itemsPerTransaction: 0,
    ...m,
  }) as ContentionStats;

const rates: StoreRates = { singleWrites: 800, reads: 1000, transactions: new Map([[5, 200]]) };

describe("the bench's store ceiling", () => {
  it('is one over the store time each call of a grant takes at its own rate', () => {
    // 2/200 + 1/800 + 0.5/1000 = 0.01175 s a grant
    const ceiling = storeCeiling(
      mix({ transactionsPerGrant: 2, itemsPerTransaction: 5.4, singleWritesPerGrant: 1, readsPerGrant: 0.5 }),
      rates,
    );
    expect(ceiling).toBeCloseTo(1 / 0.01175, 6);
  });

  it('needs no transaction rate for a mix without transactions', () => {
    expect(storeCeiling(mix({ singleWritesPerGrant: 4 }), rates)).toBeCloseTo(200, 6);
  });

  it('is unknown when the transaction size was not measured', () => {
    expect(storeCeiling(mix({ transactionsPerGrant: 1, itemsPerTransaction: 3 }), rates)).toBeNaN();
  });

  it('measures each run’s rounded transaction size once', () => {
    const sizes = transactionSizes([
      mix({ transactionsPerGrant: 2, itemsPerTransaction: 5.5 }),
      mix({ transactionsPerGrant: 2, itemsPerTransaction: 4 }),
      mix({ transactionsPerGrant: 2, itemsPerTransaction: 5.6 }),
      mix({ singleWritesPerGrant: 3 }),
    ]);
    expect(sizes).toEqual([6, 4]);
  });
});
