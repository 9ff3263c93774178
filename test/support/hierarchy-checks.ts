/**
 * The hierarchy's invariant on stored items, for the tests that check it after every step (the
 * property test and the simulation): each lock's live intentions are exactly the live grants
 * below it, and its counts are exact. A grant held through a session that expired under
 * lock-delay leaves its intentions, as leases to the delay's end (its holder may still be at
 * work below): those are expected too.
 */
import type { Item } from '../../lambdas/core/expr';
import { IntentAttr, intentionFor, intentionsOf, liveIntentions } from '../../lambdas/core/hierarchy';
import { writersBlockedUntil } from '../../lambdas/core/holders';
import { blockedUntil, liveGrants } from '../../lambdas/core/lock';

/** What is wrong with the intentions of `locks` (a whole tree) at `now`; empty when nothing is. */
export function intentionProblems(
  locks: readonly string[],
  read: (lock: string) => Item | undefined,
  now: number,
): string[] {
  const grants = locks.flatMap((lock) => liveGrants(read(lock), now).map((g) => ({ ...g, lock })));
  const delayedTo = (name: string, kind: 'IS' | 'IX') =>
    (kind === 'IX' ? blockedUntil(read(name), now) : writersBlockedUntil(read(name), now)) ?? 0;
  const problems: string[] = [];
  for (const lock of locks) {
    const item = read(lock);
    const intended = liveIntentions(item, now)
      .filter((i) => {
        const granted = grants.some((g) => g.lock === i.name && g.fencingToken === i.fencingToken);
        return granted || i.expiresAt === undefined || i.expiresAt > delayedTo(i.name, i.kind);
      })
      .map((i) => `${i.name}#${i.fencingToken}:${i.kind}`)
      .sort();
    const below = grants
      .filter((g) => g.lock.startsWith(`${lock}/`))
      .map((g) => `${g.lock}#${g.fencingToken}:${intentionFor(g.mode)}`)
      .sort();
    if (intended.join() !== below.join())
      problems.push(
        `${lock}'s intentions [${intended.join(', ')}] are not the grants below it [${below.join(', ')}]`,
      );
    const present = intentionsOf(item);
    const count = (attr: string) => (typeof item?.[attr] === 'number' ? (item[attr] as number) : 0);
    const expected = {
      [IntentAttr.count]: present.length,
      [IntentAttr.ix]: present.filter((i) => i.kind === 'IX').length,
      [IntentAttr.sessions]: present.filter((i) => i.session !== undefined).length,
    };
    for (const [attr, n] of Object.entries(expected))
      if (count(attr) !== n) problems.push(`${lock}'s ${attr} is ${count(attr)}; it records ${n}`);
  }
  return problems;
}
