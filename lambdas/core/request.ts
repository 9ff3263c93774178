/**
 * The record of one waiting request: a request (client + request_id) that
 * joined a lock's queue, or was granted at once while asking to wait, has
 * exactly one record, and every attempt of that request follows it. That is
 * what makes a request's outcome single:
 *
 *   QUEUED (at its place in the queue) ──handoff──▶ GRANTED (fencing token)
 *      │                                              │ (taken back only if its push found the
 *      └──deadline / cancel / session ended──▶ ENDED ◀┘  connection gone and nobody claimed it)
 *
 * The record changes only in the same transaction as the queue (joining,
 * leaving, the handoff), so a request can be served only from QUEUED, and
 * once ENDED (what a caller is told as "not acquired") it is never granted.
 * A retry (the same request_id) that finds the record QUEUED waits on the
 * original place; GRANTED answers with that grant; ENDED answers "not
 * acquired" again. The record is kept for the retention period after the
 * request concludes: that is how long a request_id is remembered.
 */
import { and, eq, type Item, missing, or, remove, set, type UpdateAction } from './expr';
import type { ItemWrite, Step } from './items';
import { requestRef } from './items';

export const RequestAttr = {
  lock: 'lock_name',
  key: 'request_key',
  client: 'client_id',
  state: 'state',
  /** The waiter's place in the queue (its sort key), while QUEUED. */
  order: 'order',
  deadline: 'deadline',
  /** Where a grant is pushed: the WebSocket connection the request waits on (absent: HTTP). */
  connection: 'connection_id',
  fence: 'fence',
  /** Why the request ended without (or after losing) a grant. */
  endedAs: 'ended_as',
  /** Set when a retry took a grant: it can no longer be taken back. */
  claimed: 'claimed_at',
  /** Set on a grant the request's own write made (not a handoff): its retries are audited again. */
  atOnce: 'granted_at_once',
} as const;
const R = RequestAttr;

/** `deadlock`: the wait closed a cycle of waits (core/deadlock.ts) and was refused as its victim. */
export type EndReason = 'timeout' | 'cancelled' | 'gone' | 'session-ended' | 'deadlock';

export type RequestRecord =
  | {
      readonly state: 'queued';
      readonly order: string;
      readonly deadline: number;
      readonly connectionId: string | undefined;
    }
  | {
      readonly state: 'granted';
      readonly fence: number;
      readonly claimed: boolean;
      readonly connectionId: string | undefined;
      /** Granted by the request's own write, at once (not handed to it from the queue). */
      readonly atOnce: boolean;
    }
  | { readonly state: 'ended'; readonly reason: EndReason };

export function requestOf(item: Item | undefined): RequestRecord | undefined {
  if (!item) return undefined;
  const connection = item[R.connection];
  const connectionId = typeof connection === 'string' ? connection : undefined;
  switch (item[R.state]) {
    case 'queued':
      return {
        state: 'queued',
        order: String(item[R.order] ?? ''),
        deadline: Number(item[R.deadline] ?? 0),
        connectionId,
      };
    case 'granted':
      return {
        state: 'granted',
        fence: Number(item[R.fence] ?? 0),
        claimed: item[R.claimed] !== undefined,
        connectionId,
        atOnce: item[R.atOnce] !== undefined,
      };
    case 'ended': {
      const reason = item[R.endedAs];
      return {
        state: 'ended',
        reason:
          reason === 'cancelled' || reason === 'gone' || reason === 'session-ended' || reason === 'deadlock'
            ? reason
            : 'timeout',
      };
    }
    default:
      return undefined;
  }
}

export interface RequestIdentity {
  readonly lock: string;
  /** requestKey(owner, client, request_id): names the record, and scopes it to its principal. */
  readonly requestKey: string;
  readonly clientId: string;
}

const isNew = missing(R.state);
/** Still waiting at `order`; a record that is missing altogether (collected, or written by hand) counts too. */
const queuedAt = (order: string) => or(isNew, and(eq(R.state, 'queued'), eq(R.order, order)));

const step = (who: Pick<RequestIdentity, 'lock' | 'requestKey'>, write: ItemWrite): Step => ({
  kind: 'update',
  ref: requestRef(who.lock, who.requestKey),
  ...write,
});

const identity = (who: RequestIdentity): UpdateAction[] => [
  set(R.lock, who.lock),
  set(R.key, who.requestKey),
  set(R.client, who.clientId),
];

/** Opens the record of a request joining the queue at `order`: only if the request has none yet. */
export const openStep = (
  who: RequestIdentity,
  order: string,
  deadline: number,
  connectionId: string | undefined,
): Step =>
  step(who, {
    condition: isNew,
    update: [
      ...identity(who),
      set(R.state, 'queued'),
      set(R.order, order),
      set(R.deadline, deadline),
      ...(connectionId === undefined ? [] : [set(R.connection, connectionId)]),
    ],
    gcFrom: deadline,
  });

/** Records a grant made at once to a request that asked to wait: only if the request has no record yet. */
export const grantedAtOnceStep = (who: RequestIdentity, fence: number, now: number, gcFrom: number): Step =>
  step(who, {
    condition: isNew,
    // Answered with the grant directly: there is no push to fail, so nothing may take it back.
    update: [
      ...identity(who),
      set(R.state, 'granted'),
      set(R.fence, fence),
      set(R.claimed, now),
      set(R.atOnce, 1),
    ],
    gcFrom,
  });

const concluded: UpdateAction[] = [remove(R.order), remove(R.deadline)];

/** The handoff: QUEUED at `order` becomes GRANTED with `fence`. */
export const handedStep = (who: RequestIdentity, order: string, fence: number, gcFrom: number): Step =>
  step(who, {
    condition: queuedAt(order),
    update: [...identity(who), set(R.state, 'granted'), set(R.fence, fence), ...concluded],
    gcFrom,
  });

/** Leaving the queue without a grant: QUEUED at `order` becomes ENDED. */
export const endedStep = (who: RequestIdentity, order: string, reason: EndReason, now: number): Step =>
  step(who, {
    condition: queuedAt(order),
    update: [...identity(who), set(R.state, 'ended'), set(R.endedAs, reason), ...concluded],
    gcFrom: now,
  });

/** A retry took the grant (it was answered with it): from now on nobody may take it back. */
export const claimStep = (who: Pick<RequestIdentity, 'lock' | 'requestKey'>, fence: number, now: number) =>
  step(who, {
    condition: and(eq(R.state, 'granted'), eq(R.fence, fence)),
    update: [set(R.claimed, now)],
  });

/**
 * Taking back a grant whose push found the connection gone: only while the
 * request still says it was granted with this token to that connection and
 * no retry claimed it (a retry from a new connection claims it when it is
 * answered with the grant).
 */
export const takenBackStep = (
  who: Pick<RequestIdentity, 'lock' | 'requestKey'>,
  fence: number,
  connectionId: string,
  now: number,
): Step =>
  step(who, {
    condition: and(
      eq(R.state, 'granted'),
      eq(R.fence, fence),
      eq(R.connection, connectionId),
      missing(R.claimed),
    ),
    update: [set(R.state, 'ended'), set(R.endedAs, 'gone')],
    gcFrom: now,
  });

/** A retry arrived on another WebSocket connection: push the grant there from now on. */
export const movedStep = (
  who: Pick<RequestIdentity, 'lock' | 'requestKey'>,
  order: string,
  connectionId: string,
): Step =>
  step(who, {
    condition: and(eq(R.state, 'queued'), eq(R.order, order)),
    update: [set(R.connection, connectionId)],
  });
