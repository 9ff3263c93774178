/**
 * What handlers depend on, built once per process (per Lambda cold start)
 * from the validated configuration.
 */
import { randomUUID } from 'node:crypto';
import { LatchkeyError } from '../core/errors';
import { acquireBody, renewBody, sessionBody } from '../core/wire';
import { wsMessage } from '../core/ws-wire';
import { Handoff } from '../service/handoff';
import { LockService } from '../service/lock-service';
import { ApiGatewayPusher, type Pusher } from '../service/push';
import { Sessions } from '../service/sessions';
import { Sweeper } from '../service/sweeper';
import { SqsTimers, type Timers } from '../service/timers';
import { createDocumentClient } from '../store/document-client';
import { LockStore } from '../store/lock-store';
import { QueueStore } from '../store/queue-store';
import { SessionStore } from '../store/session-store';
import { type Config, loadConfig } from './config';

export interface Deps {
  readonly config: Config;
  readonly locks: LockStore;
  readonly queue: QueueStore;
  readonly service: LockService;
  readonly handoff: Handoff;
  readonly pusher: Pusher;
  readonly timers: Timers;
  readonly sessions: Sessions;
  readonly sweeper: Sweeper;
  /** Body schemas that depend on the configured lease bounds, built once. */
  readonly schemas: {
    readonly acquire: ReturnType<typeof acquireBody>;
    readonly renew: ReturnType<typeof renewBody>;
    readonly wsMessage: ReturnType<typeof wsMessage>;
    readonly session: ReturnType<typeof sessionBody>;
  };
}

const missing = (what: string, variable: string) => {
  throw new LatchkeyError('INTERNAL', `${what} is not configured (${variable})`);
};

let deps: Deps | undefined;

export function getDeps(): Deps {
  if (!deps) {
    const config = loadConfig();
    const db = createDocumentClient(config.dynamoEndpoint ? { endpoint: config.dynamoEndpoint } : {});
    const locks = new LockStore(db, config.store);
    const queue = new QueueStore(db, config.store);
    const pusher: Pusher = config.wsManagementEndpoint
      ? new ApiGatewayPusher(config.wsManagementEndpoint)
      : { push: async () => missing('the WebSocket API', 'WS_MANAGEMENT_ENDPOINT') };
    const timers: Timers = config.timerQueueUrl
      ? new SqsTimers(config.timerQueueUrl)
      : {
          schedule: async () => missing('the timer queue', 'TIMER_QUEUE_URL'),
          scheduleSession: async () => missing('the timer queue', 'TIMER_QUEUE_URL'),
        };
    const handoff = new Handoff(locks, queue, pusher);
    const sessionStore = new SessionStore(db, config.store);
    const sessions = new Sessions(sessionStore, locks, handoff, randomUUID);
    const schemas = {
      acquire: acquireBody(config.limits),
      renew: renewBody(config.limits),
      wsMessage: wsMessage(config.limits),
      session: sessionBody(config.limits),
    };

    deps = {
      config,
      locks,
      queue,
      service: new LockService(locks, queue, handoff, sessions),
      handoff,
      pusher,
      timers,
      sessions,
      sweeper: new Sweeper(sessionStore, sessions, handoff),
      schemas,
    };
  }
  return deps;
}
