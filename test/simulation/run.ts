/**
 * `npm run simulate`: runs seeded histories of the real services on a
 * virtual clock with injected faults (see simulate.ts).
 *
 *   npm run simulate                      100 seeds from 1
 *   npm run simulate -- --seeds 100000    a long run
 *   npm run simulate -- --seed 4242       replays one seed exactly, printing its trace on failure
 *   npm run simulate -- --from 5000 --seeds 200
 *   npm run simulate -- --seeds 1000 --stop   stops at the first failing seed
 */
import { parseArgs } from 'node:util';
import { simulate } from './simulate';

// The services log (the sweeper's retries, say); a simulation prints only its verdicts.
process.env.LOG_LEVEL ??= 'silent';

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    seeds: { type: 'string', default: '100' },
    from: { type: 'string', default: '1' },
    'active-ms': { type: 'string' },
    /** Chance that an acquire is shared (0: exclusive-only histories); default: chosen per seed. */
    shared: { type: 'string' },
    /** Every history with hierarchical locks (true) or none (false); default: chosen per seed. */
    tree: { type: 'string' },
    trace: { type: 'boolean', default: false },
    /** Stop at the first failing seed (to find a seed for a planted defect, say). */
    stop: { type: 'boolean', default: false },
  },
});

async function main(): Promise<void> {
  const one = values.seed === undefined ? undefined : Number(values.seed);
  const first = one ?? Number(values.from);
  const count = one === undefined ? Number(values.seeds) : 1;
  const activeMs = values['active-ms'] === undefined ? undefined : Number(values['active-ms']);
  const shared = values.shared === undefined ? undefined : Number(values.shared);
  const tree = values.tree === undefined ? undefined : values.tree === 'true';
  const started = performance.now();
  let failed = 0;
  let turns = 0;
  for (let seed = first; seed < first + count; seed++) {
    const result = await simulate(seed, {
      ...(activeMs === undefined ? {} : { activeMs }),
      ...(shared === undefined ? {} : { shared }),
      ...(tree === undefined ? {} : { tree }),
    });
    turns += result.turns;
    if (!result.ok) {
      failed++;
      console.log(`seed ${seed}: FAILED\n  ${result.violations.join('\n  ')}`);
      if (one !== undefined || values.trace)
        console.log(`--- last events (virtual ms, client, event) ---\n${result.trace}`);
      console.log(
        `replay: npm run simulate -- --seed ${seed}${shared === undefined ? '' : ` --shared ${shared}`}`,
      );
      if (values.stop) {
        console.log(`stopped after ${seed - first + 1} histories`);
        process.exitCode = 1;
        return;
      }
    } else if (one !== undefined) {
      console.log(`seed ${seed}: ok (${result.turns} turns; ${JSON.stringify(result.stats)})`);
    }
    if (count > 1 && (seed - first + 1) % 100 === 0) {
      const rate = (seed - first + 1) / ((performance.now() - started) / 1000);
      console.log(`${seed - first + 1} seeds, ${failed} failed, ${rate.toFixed(1)} histories/s`);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `${count} histories in ${seconds.toFixed(1)} s (${(count / seconds).toFixed(1)}/s, ${Math.round(turns / count)} turns each): ${failed} failed`,
  );
  process.exitCode = failed ? 1 : 0;
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(2);
});
