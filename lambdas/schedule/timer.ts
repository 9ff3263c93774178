/**
 * Expiry timers (SQS): each message is a lock's lease end or waiter
 * deadline, or a session's expiry (see service/timekeeper.ts). A failed
 * message is reported per message, so SQS retries only it.
 */
import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { timekeeperOf } from '../service/services';
import { type TimerMessage, timerMessage } from '../service/timers';
import { getDeps } from '../shared/deps';
import { describeError, log } from '../shared/log';
import { flushMetrics, measured } from '../shared/metrics';
import { internalContext, withRequestContext } from '../shared/request-context';

export async function handler(event: SQSEvent): Promise<SQSBatchResponse> {
  const timekeeper = timekeeperOf(getDeps());
  const failures: { itemIdentifier: string }[] = [];
  await Promise.all(
    event.Records.map((record) =>
      withRequestContext(internalContext('timer', record.messageId), () =>
        measured(
          () => fire(record),
          () => (failures.some((f) => f.itemIdentifier === record.messageId) ? 'failed' : 'ok'),
        ),
      ),
    ),
  ).finally(flushMetrics);
  return { batchItemFailures: failures };

  async function fire(record: SQSRecord): Promise<void> {
    let message: TimerMessage;
    try {
      message = timerMessage.parse(JSON.parse(record.body));
    } catch {
      log('warn', 'dropping a malformed timer message', { body: record.body.slice(0, 200) });
      return;
    }
    try {
      await timekeeper.fire(message);
    } catch (error) {
      const about = 'session' in message ? { session: message.session } : { lock: message.lock };
      log('error', 'timer failed; SQS will retry it', { ...about, ...describeError(error) });
      failures.push({ itemIdentifier: record.messageId });
    }
  }
}
