/**
 * The sweeper (EventBridge, every minute; every few seconds locally): ends
 * expired sessions, drops timed-out waiters and dead connections, and
 * retries whatever failed before. See service/sweeper.ts.
 */
import { sweeperOf } from '../service/services';
import type { SweepReport } from '../service/sweeper';
import { getDeps } from '../shared/deps';
import { log } from '../shared/log';
import { instrumented, okOutcome } from '../shared/metrics';
import { internalContext, withRequestContext } from '../shared/request-context';

export const handler = (): Promise<SweepReport> =>
  withRequestContext(internalContext('sweep'), () => instrumented(sweep, okOutcome));

async function sweep(): Promise<SweepReport> {
  const report = await sweeperOf(getDeps()).sweep();
  const { expired, queuesServed, waitsEnded, connectionsClosed, retried, behind } = report;
  if (expired || queuesServed || waitsEnded || connectionsClosed || retried || behind)
    log(report.retried || report.behind ? 'warn' : 'info', 'sweeper run', { ...report });
  return report;
}
