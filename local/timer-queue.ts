/**
 * Plays the SQS timer queue on localhost: accepts SendMessage (the AWS JSON
 * protocol the SDK speaks, so `SqsTimers` runs unchanged), honours
 * DelaySeconds, and delivers each message to the timer function in an
 * SQS-shaped event. A message the function reports as failed comes back
 * after a second, five times at most, like a queue with a DLQ.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { describeError, log } from '../lambdas/shared/log';
import { lambdaContext } from './handlers';

type TimerHandler = (event: SQSEvent, context: ReturnType<typeof lambdaContext>) => Promise<SQSBatchResponse>;

const QUEUE_ARN = 'arn:aws:sqs:us-east-1:000000000000:latchkey-timers';
const MAX_RECEIVES = 5;

export interface TimerQueue {
  readonly server: Server;
  /** Pending deliveries (delayed or being retried). */
  pending(): number;
  close(): void;
}

export function createTimerQueue(handler: TimerHandler): TimerQueue {
  const timeouts = new Set<NodeJS.Timeout>();
  let closing = false;

  function deliverLater(id: string, body: string, delayMs: number, receive: number): void {
    const timeout = setTimeout(async () => {
      timeouts.delete(timeout);
      if (closing) return;
      const record = {
        messageId: id,
        receiptHandle: randomUUID(),
        body,
        attributes: {
          ApproximateReceiveCount: String(receive),
          SentTimestamp: String(Date.now()),
          SenderId: 'local',
          ApproximateFirstReceiveTimestamp: String(Date.now()),
        },
        messageAttributes: {},
        md5OfBody: createHash('md5').update(body).digest('hex'),
        eventSource: 'aws:sqs',
        eventSourceARN: QUEUE_ARN,
        awsRegion: 'us-east-1',
      } as SQSEvent['Records'][number];
      let failed = true;
      try {
        const out = await handler({ Records: [record] }, lambdaContext(randomUUID()));
        failed = out.batchItemFailures.some((f) => f.itemIdentifier === id);
      } catch (error) {
        log('error', 'local timer queue: function failed', describeError(error));
      }
      if (failed && receive < MAX_RECEIVES) deliverLater(id, body, 1_000, receive + 1);
      else if (failed) log('error', 'local timer queue: message dropped after 5 receives', { body });
    }, delayMs);
    timeouts.add(timeout);
  }

  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const target = req.headers['x-amz-target'];
    if (target !== 'AmazonSQS.SendMessage') {
      res.writeHead(400, { 'content-type': 'application/x-amz-json-1.0' });
      res.end(JSON.stringify({ __type: 'com.amazonaws.sqs#UnsupportedOperation', message: `${target}` }));
      return;
    }
    const input = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
      MessageBody: string;
      DelaySeconds?: number;
    };
    const id = randomUUID();
    deliverLater(id, input.MessageBody, (input.DelaySeconds ?? 0) * 1000, 1);
    res.writeHead(200, { 'content-type': 'application/x-amz-json-1.0' });
    res.end(
      JSON.stringify({
        MessageId: id,
        MD5OfMessageBody: createHash('md5').update(input.MessageBody).digest('hex'),
      }),
    );
  });

  return {
    server,
    pending: () => timeouts.size,
    close() {
      closing = true;
      for (const t of timeouts) clearTimeout(t);
      timeouts.clear();
    },
  };
}
