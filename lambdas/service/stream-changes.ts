/**
 * Reads a batch of DynamoDB stream records as what the notifier acts on:
 * per lock, the image before the batch and after it; and the WebSocket
 * waiters that joined a queue (their deadlines need timers). Records may
 * arrive twice; everything done with them is idempotent.
 *
 * A TTL deletion is a REMOVE on AWS; DynamoDB Local reports it with an
 * eventName the SDK does not know. Both have no NewImage, which is all
 * that matters here.
 */
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import type { Item } from '../core/expr';
import { queuedCount } from '../core/lock';
import { type LockChangeImages, tookHolderOff, WaitAttr } from '../core/queue';
import { SessionAttr } from '../core/session';
import { refOfKey } from '../store/table';

export interface StreamRecord {
  readonly eventName?: string;
  readonly dynamodb?: {
    readonly Keys?: Record<string, unknown>;
    readonly NewImage?: Record<string, unknown>;
    readonly OldImage?: Record<string, unknown>;
  };
}

export interface LockChange extends LockChangeImages {
  readonly lock: string;
}

export interface WaiterJoined {
  readonly lock: string;
  readonly deadline: number;
}

export interface SessionOpened {
  readonly id: string;
  readonly expiresAt: number;
}

const image = (raw: Record<string, unknown> | undefined): Item | undefined =>
  raw ? (unmarshall(raw as Record<string, AttributeValue>) as Item) : undefined;

export function readChanges(records: readonly StreamRecord[]): {
  locks: LockChange[];
  joined: WaiterJoined[];
  opened: SessionOpened[];
} {
  const locks = new Map<string, LockChangeImages>();
  const joined: WaiterJoined[] = [];
  const opened: SessionOpened[] = [];
  for (const record of records) {
    const ref = refOfKey(image(record.dynamodb?.Keys) ?? {});
    const before = image(record.dynamodb?.OldImage);
    const after = image(record.dynamodb?.NewImage);
    if (ref?.kind === 'session' && after && !before) {
      const expiresAt = after[SessionAttr.expiresAt];
      if (typeof expiresAt === 'number') opened.push({ id: ref.session, expiresAt });
    } else if (ref?.kind === 'lock') {
      const seen = locks.get(ref.lock);
      const released = tookHolderOff(before, after) ? before : seen?.released;
      // The batch's first image, unless the queue emptied since: a waiter who joined after that
      // had nobody serving it yet (onLockChange's alreadyWaiting), so judge from the empty queue.
      const from = seen === undefined ? before : queuedCount(seen.after) === 0 ? seen.after : seen.before;
      locks.set(ref.lock, { before: from, released, after });
    } else if (ref?.kind === 'waiter' && after && !before) {
      const deadline = after[WaitAttr.deadline];
      if (typeof deadline === 'number' && typeof after[WaitAttr.connection] === 'string')
        joined.push({ lock: ref.lock, deadline });
    }
  }
  return { locks: [...locks].map(([lock, c]) => ({ lock, ...c })), joined, opened };
}
