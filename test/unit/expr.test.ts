import { describe, expect, it } from 'vitest';
import {
  add,
  and,
  applyUpdate,
  eq,
  evaluate,
  exists,
  gt,
  le,
  missing,
  ne,
  or,
  remove,
  set,
} from '../../lambdas/core/expr';

describe('evaluate follows DynamoDB semantics', () => {
  it('treats comparisons with a missing attribute as false, except <>', () => {
    expect(evaluate(eq('a', 1), {})).toBe(false);
    expect(evaluate(ne('a', 1), {})).toBe(true);
    expect(evaluate(gt('a', 1), undefined)).toBe(false);
  });

  it('treats comparisons across types as false, except <>', () => {
    expect(evaluate(eq('a', '1'), { a: 1 })).toBe(false);
    expect(evaluate(ne('a', '1'), { a: 1 })).toBe(true);
    expect(evaluate(le('a', 5), { a: 'x' })).toBe(false);
  });

  it('combines with and/or', () => {
    const item = { a: 1, b: 'x' };
    expect(evaluate(and(eq('a', 1), eq('b', 'x')), item)).toBe(true);
    expect(evaluate(and(eq('a', 1), eq('b', 'y')), item)).toBe(false);
    expect(evaluate(or(missing('c'), eq('c', 1)), item)).toBe(true);
    expect(evaluate(exists('b'), item)).toBe(true);
    expect(evaluate(missing('b'), item)).toBe(false);
  });
});

describe('applyUpdate follows UpdateItem semantics', () => {
  it('creates the item, sets, removes and counts with if_not_exists', () => {
    const created = applyUpdate(undefined, [set('a', 'x'), add('n', 1, 1000)]);
    expect(created).toEqual({ a: 'x', n: 1001 });
    const next = applyUpdate(created, [add('n', 1, 1000), remove('a')]);
    expect(next).toEqual({ n: 1002 });
  });

  it('does not modify its input', () => {
    const item = { a: 1 };
    applyUpdate(item, [set('a', 2)]);
    expect(item).toEqual({ a: 1 });
  });
});
