/**
 * Expiry timers (SQS): at a lease's end or a waiter's deadline, serve the
 * lock's queue. SQS delays by whole seconds, so a message arrives up to a
 * second early and the function sleeps the rest; one due later than that
 * (SQS delays at most 15 minutes) goes back with a new delay. A timer that
 * watches a grant (`fence`) re-arms while that grant is renewed and waiters
 * remain; a failed message is retried by SQS (reported per message).
 * A session timer (armed by the notifier when a session opens) ends the
 * session at its due time unless heartbeats moved it, then re-arms.
 */
import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { type TimerMessage, timerMessage } from '../service/timers';
import { getDeps } from '../shared/deps';
import { describeError, log } from '../shared/log';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function fire(message: TimerMessage): Promise<void> {
  if ('session' in message) return fireSession(message.session);
  const { handoff, timers } = getDeps();
  const wait = message.due_at - Date.now();
  if (wait > 1_000) return timers.schedule(message.lock, message.due_at, message.fence);
  if (wait > 0) await sleep(wait);
  const served = await handoff.serve(message.lock, message.fence);
  if (served.kind === 'held' && served.waiting && served.fence === message.fence)
    await timers.schedule(message.lock, served.expiresAt, served.fence);
}

/** A session's due time: end it unless a heartbeat moved it, in which case check again then. */
async function fireSession(id: string): Promise<void> {
  const { sessions, timers } = getDeps();
  for (let round = 0; round < 2; round++) {
    const due = await sessions.dueAt(id);
    if (due === undefined) return; // ended already
    const wait = due - Date.now();
    if (wait > 1_000) return timers.scheduleSession(id, due);
    if (wait > 0) await sleep(wait);
    if ((await sessions.expire(id)) !== undefined) return;
    // A heartbeat landed in the last instant: look again.
  }
  const due = await sessions.dueAt(id);
  if (due !== undefined) await timers.scheduleSession(id, due);
}

export async function handler(event: SQSEvent): Promise<SQSBatchResponse> {
  const failures: { itemIdentifier: string }[] = [];
  await Promise.all(
    event.Records.map(async (record) => {
      let message: TimerMessage;
      try {
        message = timerMessage.parse(JSON.parse(record.body));
      } catch {
        log('warn', 'dropping a malformed timer message', { body: record.body.slice(0, 200) });
        return;
      }
      try {
        await fire(message);
      } catch (error) {
        const about = 'session' in message ? { session: message.session } : { lock: message.lock };
        log('error', 'timer failed; SQS will retry it', { ...about, ...describeError(error) });
        failures.push({ itemIdentifier: record.messageId });
      }
    }),
  );
  return { batchItemFailures: failures };
}
