/**
 * What an HTTP or WebSocket handler gets from `getDeps()` (lambdas/shared/deps.ts), built on given
 * services, for tests that run the real handlers in-process on the in-memory storage (mock
 * `../../lambdas/shared/deps` to answer it).
 */
import { acquireBody, DEFAULT_LIMITS, renewBody, sessionBody } from '../../lambdas/core/wire';
import { wsMessage } from '../../lambdas/core/ws-wire';
import type { Clock } from '../../lambdas/service/clock';
import type { Services } from '../../lambdas/service/services';
import type { Config } from '../../lambdas/shared/config';
import type { Deps } from '../../lambdas/shared/deps';

export const handlerDeps = (services: Services): Deps => ({
  ...services,
  config: {} as Config,
  schemas: {
    acquire: acquireBody(DEFAULT_LIMITS),
    renew: renewBody(DEFAULT_LIMITS),
    wsMessage,
    session: sessionBody(DEFAULT_LIMITS),
  },
});

/** A virtual clock at `t.now` whose sleeps move it on at once. */
export const steppedClock = (t: { now: number }): Clock => ({
  now: () => t.now,
  sleep: async (ms) => {
    t.now += Math.max(0, ms);
  },
});
