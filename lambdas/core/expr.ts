/**
 * A tiny language for DynamoDB conditions and updates, written as data.
 *
 * The lock rules are expressed once in this language. The same rule is
 * evaluated in memory by `evaluate` / `applyUpdate` (property tests, refusal
 * explanations) and compiled to a ConditionExpression / UpdateExpression by
 * the store. A differential test against DynamoDB Local checks that both
 * interpretations agree, so the rules cannot drift apart.
 *
 * Semantics follow DynamoDB (checked against DynamoDB Local by
 * test/integration/differential.ddb.test.ts): a comparison involving a
 * missing attribute, or values of different types, is false, except `<>`,
 * which is then true.
 */

export type Scalar = string | number;
export type Item = Readonly<Record<string, Scalar | undefined>>;

export type Comparator = '=' | '<>' | '<' | '<=' | '>' | '>=';

export type Condition =
  | { readonly kind: 'exists'; readonly attr: string }
  | { readonly kind: 'missing'; readonly attr: string }
  | { readonly kind: 'compare'; readonly attr: string; readonly op: Comparator; readonly value: Scalar }
  | { readonly kind: 'and'; readonly all: readonly Condition[] }
  | { readonly kind: 'or'; readonly any: readonly Condition[] };

export type UpdateAction =
  | { readonly kind: 'set'; readonly attr: string; readonly value: Scalar }
  /**
   * `SET attr = if_not_exists(from, initial) + by`, `from` being `attr` itself unless named. Like
   * every right-hand side of an UpdateExpression, `from` is read from the item before the update:
   * two actions adding to the same source both see its old value.
   */
  | {
      readonly kind: 'add';
      readonly attr: string;
      readonly by: number;
      readonly initial: number;
      readonly from?: string;
    }
  | { readonly kind: 'remove'; readonly attr: string };

export type Update = readonly UpdateAction[];

/** A conditional write: apply `update` only if `condition` holds. */
export interface Write {
  readonly condition: Condition;
  readonly update: Update;
}

export const exists = (attr: string): Condition => ({ kind: 'exists', attr });
export const missing = (attr: string): Condition => ({ kind: 'missing', attr });
const compare =
  (op: Comparator) =>
  (attr: string, value: Scalar): Condition => ({ kind: 'compare', attr, op, value });
export const eq = compare('=');
export const ne = compare('<>');
export const lt = compare('<');
export const le = compare('<=');
export const gt = compare('>');
export const ge = compare('>=');
export const and = (...all: Condition[]): Condition => ({ kind: 'and', all });
export const or = (...any: Condition[]): Condition => ({ kind: 'or', any });

export const set = (attr: string, value: Scalar): UpdateAction => ({ kind: 'set', attr, value });
export const add = (attr: string, by: number, initial: number): UpdateAction => ({
  kind: 'add',
  attr,
  by,
  initial,
});
/** `SET attr = if_not_exists(from, initial) + by`: a copy of a counter's next value. */
export const addFrom = (attr: string, from: string, by: number, initial: number): UpdateAction => ({
  kind: 'add',
  attr,
  by,
  initial,
  from,
});
export const remove = (attr: string): UpdateAction => ({ kind: 'remove', attr });

function compareScalars(left: Scalar, op: Comparator, right: Scalar): boolean {
  switch (op) {
    case '=':
      return left === right;
    case '<>':
      return left !== right;
    case '<':
      return left < right;
    case '<=':
      return left <= right;
    case '>':
      return left > right;
    case '>=':
      return left >= right;
  }
}

/** Evaluates a condition against an item (undefined: the item does not exist). */
export function evaluate(condition: Condition, item: Item | undefined): boolean {
  switch (condition.kind) {
    case 'exists':
      return item?.[condition.attr] !== undefined;
    case 'missing':
      return item?.[condition.attr] === undefined;
    case 'compare': {
      const actual = item?.[condition.attr];
      if (actual === undefined || typeof actual !== typeof condition.value) return condition.op === '<>';
      return compareScalars(actual, condition.op, condition.value);
    }
    case 'and':
      return condition.all.every((c) => evaluate(c, item));
    case 'or':
      return condition.any.some((c) => evaluate(c, item));
  }
}

/** Applies an update to an item, creating it if absent, like UpdateItem does. */
export function applyUpdate(item: Item | undefined, update: Update): Record<string, Scalar> {
  const next: Record<string, Scalar> = {};
  for (const [key, value] of Object.entries(item ?? {})) if (value !== undefined) next[key] = value;
  const touched = new Set<string>();
  for (const action of update) {
    // DynamoDB refuses an UpdateExpression naming one path twice (ValidationException).
    if (touched.has(action.attr)) throw new Error(`an update names ${action.attr} twice`);
    touched.add(action.attr);
    switch (action.kind) {
      case 'set':
        next[action.attr] = action.value;
        break;
      case 'add': {
        const current = item?.[action.from ?? action.attr];
        const base = typeof current === 'number' ? current : action.initial;
        next[action.attr] = base + action.by;
        break;
      }
      case 'remove':
        delete next[action.attr];
        break;
    }
  }
  return next;
}
