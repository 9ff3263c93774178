/**
 * Plays the SQS timer queue on localhost: accepts SendMessage (the AWS JSON
 * protocol the SDK speaks, so `SqsTimers` runs unchanged), honours
 * DelaySeconds, and delivers each message to the timer function in an
 * SQS-shaped event. A message the function reports as failed comes back
 * after a second, five times at most, like a queue with a DLQ.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { describeError, log } from '../lambdas/shared/log';
import { lambdaContext } from './handlers';
import { hardenServer, SERVER_OPTIONS } from './origin';

/** SQS's own limit on a message (256 KiB). */
const MAX_MESSAGE_BYTES = 256 * 1024;

type TimerHandler = (event: SQSEvent, context: ReturnType<typeof lambdaContext>) => Promise<SQSBatchResponse>;

const QUEUE_ARN = 'arn:aws:sqs:us-east-1:000000000000:latchkey-timers';
const MAX_RECEIVES = 5;

export interface TimerQueue {
  readonly server: Server;
  /** The path every request must start with (a random secret per run): the SQS endpoint is `http://host:port<base>`. */
  readonly base: string;
  /** Pending deliveries (delayed or being retried). */
  pending(): number;
  /** Delivers nothing more, and waits for the deliveries under way (so none acts after the stack stopped). */
  close(): Promise<void>;
}

export function createTimerQueue(handler: TimerHandler): TimerQueue {
  const timeouts = new Set<NodeJS.Timeout>();
  const running = new Set<Promise<unknown>>();
  let closing = false;

  function deliverLater(id: string, body: string, delayMs: number, receive: number): void {
    if (closing) return; // a run under way at the close may still send: nothing is delivered after it
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
      const run = handler({ Records: [record] }, lambdaContext(randomUUID()));
      running.add(run);
      try {
        const out = await run;
        failed = out.batchItemFailures.some((f) => f.itemIdentifier === id);
      } catch (error) {
        log('error', 'local timer queue: function failed', describeError(error));
      } finally {
        running.delete(run);
      }
      if (closing) return;
      if (failed && receive < MAX_RECEIVES) deliverLater(id, body, 1_000, receive + 1);
      else if (failed) log('error', 'local timer queue: message dropped after 5 receives', { body });
    }, delayMs);
    timeouts.add(timeout);
  }

  // Only the functions (this process) know the path: other local processes cannot forge timers.
  const base = `/${randomBytes(16).toString('hex')}`;
  const refuse = (res: ServerResponse, status: number, message: string) => {
    res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0' });
    res.end(JSON.stringify({ __type: 'com.amazonaws.sqs#InvalidParameterValue', message }));
  };
  const server = hardenServer(
    createServer(SERVER_OPTIONS, async (req, res) => {
      if (!(req.url ?? '').startsWith(`${base}/`) && req.url !== base) return refuse(res, 403, 'Forbidden');
      const target = req.headers['x-amz-target'];
      if (target !== 'AmazonSQS.SendMessage') return refuse(res, 400, `unsupported operation ${target}`);
      let input: { MessageBody?: unknown; DelaySeconds?: unknown };
      try {
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const chunk of req) {
          size += (chunk as Buffer).byteLength;
          if (size > MAX_MESSAGE_BYTES) return refuse(res, 400, 'message too long');
          chunks.push(chunk as Buffer);
        }
        input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return res.destroyed ? undefined : refuse(res, 400, 'not a SendMessage request');
      }
      if (typeof input?.MessageBody !== 'string') return refuse(res, 400, 'MessageBody is required');
      const delay = Number(input.DelaySeconds ?? 0);
      const id = randomUUID();
      deliverLater(id, input.MessageBody, Number.isFinite(delay) ? Math.max(0, delay) * 1000 : 0, 1);
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.0' });
      res.end(
        JSON.stringify({
          MessageId: id,
          MD5OfMessageBody: createHash('md5').update(input.MessageBody).digest('hex'),
        }),
      );
    }),
  );

  return {
    server,
    base,
    pending: () => timeouts.size,
    async close() {
      closing = true;
      for (const t of timeouts) clearTimeout(t);
      timeouts.clear();
      await Promise.allSettled([...running]);
    },
  };
}
