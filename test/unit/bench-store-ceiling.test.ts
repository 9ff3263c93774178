import { describe, expect, it } from 'vitest';
import type { ContentionStats } from '../bench/contention-stats';
import { type StoreRates, storeCeiling, transactionSizes } from '../bench/store-rate';

const mix = (m: Partial<ContentionStats>): ContentionStats =>
  ({
    singleWritesPerGrant: 0,
    readsPerGrant: 0,
    transactionsBySize: new Map(),
    ...m,
  }) as ContentionStats;

const rates: StoreRates = {
  singleWrites: 800,
  reads: 1000,
  transactions: new Map([
    [5, 200],
    [6, 160],
  ]),
};

describe("the bench's store ceiling", () => {
  it('is one over the store time each call of a grant takes at its own rate, each transaction size at its own', () => {
    // 1/200 + 1/160 + 1/800 + 0.5/1000 = 0.013 s a grant
    const ceiling = storeCeiling(
      mix({
        transactionsBySize: new Map([
          [5, 1],
          [6, 1],
        ]),
        singleWritesPerGrant: 1,
        readsPerGrant: 0.5,
      }),
      rates,
    );
    expect(ceiling).toBeCloseTo(1 / 0.013, 6);
  });

  it('needs no transaction rate for a mix without transactions', () => {
    expect(storeCeiling(mix({ singleWritesPerGrant: 4 }), rates)).toBeCloseTo(200, 6);
  });

  it('is unknown when a transaction size was not measured', () => {
    expect(storeCeiling(mix({ transactionsBySize: new Map([[3, 1]]) }), rates)).toBeNaN();
  });

  it('measures every transaction size the runs sent, once', () => {
    const sizes = transactionSizes([
      mix({
        transactionsBySize: new Map([
          [6, 1],
          [5, 1],
        ]),
      }),
      mix({ transactionsBySize: new Map([[4, 2]]) }),
      mix({ singleWritesPerGrant: 3 }),
    ]);
    expect(sizes).toEqual([4, 5, 6]);
  });
});
