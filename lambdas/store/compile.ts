/**
 * Compiles the core's condition/update language (lambdas/core/expr.ts) to
 * DynamoDB expression strings. Pure: the unit tests read the output as text.
 */
import type { Condition, Scalar, Update } from '../core/expr';

export interface CompiledExpressions {
  /** Absent for an unconditional update. */
  ConditionExpression?: string;
  UpdateExpression: string;
  ExpressionAttributeNames: Record<string, string>;
  /** Absent when nothing needs a value (DynamoDB refuses an empty map). */
  ExpressionAttributeValues?: Record<string, Scalar>;
}

class Placeholders {
  readonly names: Record<string, string> = {};
  readonly values: Record<string, Scalar> = {};
  private readonly nameOf = new Map<string, string>();
  private valueCount = 0;

  name(attr: string): string {
    let placeholder = this.nameOf.get(attr);
    if (!placeholder) {
      placeholder = `#a${this.nameOf.size}`;
      this.nameOf.set(attr, placeholder);
      this.names[placeholder] = attr;
    }
    return placeholder;
  }

  value(value: Scalar): string {
    const placeholder = `:v${this.valueCount++}`;
    this.values[placeholder] = value;
    return placeholder;
  }
}

function conditionText(c: Condition, p: Placeholders): string {
  switch (c.kind) {
    case 'exists':
      return `attribute_exists(${p.name(c.attr)})`;
    case 'missing':
      return `attribute_not_exists(${p.name(c.attr)})`;
    case 'compare':
      return `${p.name(c.attr)} ${c.op} ${p.value(c.value)}`;
    case 'and':
    case 'or': {
      const parts = c.kind === 'and' ? c.all : c.any;
      if (parts.length === 0) throw new Error(`empty ${c.kind} in a condition`);
      const texts = parts.map((part) => conditionText(part, p));
      return texts.length === 1
        ? (texts[0] as string)
        : `(${texts.join(c.kind === 'and' ? ' AND ' : ' OR ')})`;
    }
  }
}

function updateText(update: Update, p: Placeholders): string {
  const sets: string[] = [];
  const removes: string[] = [];
  for (const action of update) {
    const attr = p.name(action.attr);
    if (action.kind === 'set') sets.push(`${attr} = ${p.value(action.value)}`);
    else if (action.kind === 'add')
      sets.push(
        `${attr} = if_not_exists(${action.from === undefined ? attr : p.name(action.from)}, ${p.value(action.initial)}) + ${p.value(action.by)}`,
      );
    else removes.push(attr);
  }
  return [sets.length ? `SET ${sets.join(', ')}` : '', removes.length ? `REMOVE ${removes.join(', ')}` : '']
    .filter(Boolean)
    .join(' ');
}

export function compile(condition: Condition | undefined, update: Update): CompiledExpressions {
  const p = new Placeholders();
  const ConditionExpression = condition === undefined ? undefined : conditionText(condition, p);
  const UpdateExpression = updateText(update, p);
  return {
    ...(ConditionExpression === undefined ? {} : { ConditionExpression }),
    UpdateExpression,
    ExpressionAttributeNames: p.names,
    ...(Object.keys(p.values).length ? { ExpressionAttributeValues: p.values } : {}),
  };
}

/** A condition alone, for a conditional delete. */
export function compileCondition(condition: Condition): {
  ConditionExpression: string;
  ExpressionAttributeNames: Record<string, string>;
  ExpressionAttributeValues?: Record<string, Scalar>;
} {
  const p = new Placeholders();
  const ConditionExpression = conditionText(condition, p);
  // DynamoDB refuses an empty ExpressionAttributeValues map.
  const values = Object.keys(p.values).length ? { ExpressionAttributeValues: p.values } : {};
  return { ConditionExpression, ExpressionAttributeNames: p.names, ...values };
}
