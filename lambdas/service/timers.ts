/**
 * Timers for what writes nothing: a lease that lapses and a waiter whose
 * deadline passes raise no stream record, so a timer looks at the lock then
 * (one per contended lock, not per grant: core/lock-timer.ts). On AWS a timer is an SQS message delayed by whole seconds (at most
 * 15 minutes); the timer function sleeps the sub-second rest, so it acts
 * within tens of milliseconds of the due time. A timer that is early
 * re-arms itself; one that is late or doubled is harmless: acting on it is
 * a conditional handoff.
 */
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import * as z from 'zod/mini';
import '../core/zod-messages';
import { traced } from '../shared/tracing';
import { toStoreError } from '../store/errors';

export interface Timers {
  /**
   * Serve the queue of `lock` at `at` (ms since the epoch), then make sure
   * of the next look (service/timekeeper.ts). Most callers go through
   * LockTimers, which sends one only where the lock's timer does not cover
   * it already.
   */
  schedule(lock: string, at: number): Promise<void>;
  /** Check session `id` at `at` (its due time): end it if no heartbeat came, else check again later. */
  scheduleSession(id: string, at: number): Promise<void>;
}

export const SQS_MAX_DELAY_SECONDS = 900;

export const timerMessage = z.union([
  // `fence`: sent by versions that armed a timer per grant; such a timer now serves like any other.
  z.strictObject({
    lock: z.string().check(z.minLength(1)),
    due_at: z.number(),
    fence: z.optional(z.number()),
  }),
  z.strictObject({ session: z.string().check(z.minLength(1)), due_at: z.number() }),
]);
export type TimerMessage = z.infer<typeof timerMessage>;

/** Whole seconds to delay a message due at `at`: never late, at most SQS's limit. */
export const delaySeconds = (at: number, now: number): number =>
  Math.min(SQS_MAX_DELAY_SECONDS, Math.max(0, Math.floor((at - now) / 1000)));

export class SqsTimers implements Timers {
  private readonly client = traced(new SQSClient({ maxAttempts: 3 }));

  constructor(
    private readonly queueUrl: string,
    private readonly clock: () => number = Date.now,
  ) {}

  schedule(lock: string, at: number): Promise<void> {
    return this.send({ lock, due_at: at }, at);
  }

  scheduleSession(id: string, at: number): Promise<void> {
    return this.send({ session: id, due_at: at }, at);
  }

  private async send(body: TimerMessage, at: number): Promise<void> {
    try {
      await this.client.send(
        new SendMessageCommand({
          QueueUrl: this.queueUrl,
          MessageBody: JSON.stringify(body),
          DelaySeconds: delaySeconds(at, this.clock()),
        }),
        { abortSignal: AbortSignal.timeout(3_000) },
      );
    } catch (error) {
      throw toStoreError(error);
    }
  }
}
