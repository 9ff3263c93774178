/**
 * The sweeper (EventBridge, every minute; every few seconds locally): ends
 * the sessions that expired and releases their locks. It reads the due
 * index from where the last run finished, so its cost follows the sessions
 * due, never the sessions alive. Two sweepers may run at once, and one that
 * dies midway is finished by the next run: see service/sessions.ts.
 */
import { getDeps } from '../shared/deps';
import { log } from '../shared/log';

export async function handler(): Promise<{ minutes: number; expired: number; locksReleased: number }> {
  const report = await getDeps().sessions.sweep();
  if (report.expired) log('info', 'sweeper ended expired sessions', { ...report });
  return report;
}
