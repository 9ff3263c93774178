/**
 * The composition root of the functions: the services wired to the AWS
 * adapters (DynamoDB, API Gateway's management API, SQS timers), built once
 * per process (per Lambda cold start) from the validated configuration.
 * Handlers receive it (see httpRoute); tests and the simulation wire the
 * same services to other adapters with service/services.ts.
 */
import { randomUUID } from 'node:crypto';
import { LatchkeyError } from '../core/errors';
import { acquireBody, renewBody, sessionBody } from '../core/wire';
import { wsMessage } from '../core/ws-wire';
import { systemClock } from '../service/clock';
import { countedPusher } from '../service/counted-pusher';
import { ApiGatewayPusher, type Pusher } from '../service/push';
import { Relay } from '../service/relay';
import { type CoreServices, wireCore } from '../service/services';
import { SqsTimers, type Timers } from '../service/timers';
import { createDocumentClient } from '../store/document-client';
import { DynamoStorage } from '../store/dynamo-storage';
import { onDynamoAttempt, onDynamoCall, onDynamoSuccess } from './calls';
import { type Config, loadConfig } from './config';
import { relaySocketOpener } from './relay-socket';
import { signHandshake } from './sign-handshake';

export interface Deps extends CoreServices {
  readonly config: Config;
  /** Body schemas that depend on the configured lease bounds, built once. */
  readonly schemas: {
    readonly acquire: ReturnType<typeof acquireBody>;
    readonly renew: ReturnType<typeof renewBody>;
    readonly wsMessage: typeof wsMessage;
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
    const db = createDocumentClient({
      ...(config.dynamoEndpoint ? { endpoint: config.dynamoEndpoint } : {}),
      onCall: onDynamoCall,
      onSuccess: onDynamoSuccess,
      onAttempt: onDynamoAttempt,
    });
    const pusher: Pusher = config.wsManagementEndpoint
      ? countedPusher(new ApiGatewayPusher(config.wsManagementEndpoint))
      : { push: async () => missing('the WebSocket API', 'WS_MANAGEMENT_ENDPOINT') };
    const timers: Timers = config.timerQueueUrl
      ? new SqsTimers(config.timerQueueUrl)
      : {
          schedule: async () => missing('the timer queue', 'TIMER_QUEUE_URL'),
          scheduleSession: async () => missing('the timer queue', 'TIMER_QUEUE_URL'),
        };
    const openSocket = relaySocketOpener();
    const doorbell =
      config.wsRelayUrl && openSocket
        ? new Relay(config.wsRelayUrl, openSocket, (url, now) =>
            signHandshake(url, now, process.env.AWS_REGION ?? 'us-east-1', {
              accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? '',
              secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? '',
              sessionToken: process.env.AWS_SESSION_TOKEN,
            }),
          )
        : undefined;
    const services = wireCore({
      storage: new DynamoStorage(db, config.store),
      pusher,
      timers,
      clock: systemClock,
      ids: randomUUID,
      limits: config.limits,
      hierarchicalPrefixes: config.hierarchicalPrefixes,
      ...(doorbell ? { doorbell } : {}),
    });
    deps = {
      ...services,
      config,
      schemas: {
        acquire: acquireBody(config.limits),
        renew: renewBody(config.limits),
        wsMessage,
        session: sessionBody(config.limits),
      },
    };
  }
  return deps;
}
