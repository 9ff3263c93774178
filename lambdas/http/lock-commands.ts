/** POST /api/v1/locks/{name}/acquire | release | renew */
import { LatchkeyError } from '../core/errors';
import {
  acquireCommand,
  acquireResponse,
  releaseBody,
  releaseCommand,
  releaseResponse,
  renewCommand,
  renewResponse,
} from '../core/wire';
import type { Deps } from '../shared/deps';
import { type HttpEvent, type HttpResult, httpRoute, json, parseBody } from '../shared/http';
import { holderConflict } from './holder-conflict';
import { lockCommandFrom } from './lock-path';

type Action = (name: string, event: HttpEvent, deps: Deps) => Promise<HttpResult>;

const ACTIONS: Record<string, Action> = {
  async acquire(name, event, { locks, schemas, clock }) {
    const body = parseBody(event, schemas.acquire);
    const wait = { waitMs: body.wait_timeout_ms ?? 0, priority: body.priority };
    const outcome = await locks.acquireOverHttp(acquireCommand(name, body), wait);
    return json(200, acquireResponse(outcome, clock.now()));
  },
  release: (name, event, { locks }) =>
    holderConflict('released', async () => {
      const body = parseBody(event, releaseBody);
      return releaseResponse(await locks.release(releaseCommand(name, body)));
    }),
  renew: (name, event, { locks, schemas, clock }) =>
    holderConflict('renewed', async () => {
      const body = parseBody(event, schemas.renew);
      return renewResponse((await locks.renew(renewCommand(name, body))).grant, clock.now());
    }),
};

export const handler = httpRoute(async (event, deps) => {
  const { name, action } = lockCommandFrom(event);
  const run = Object.hasOwn(ACTIONS, action) ? ACTIONS[action] : undefined;
  if (!run)
    throw new LatchkeyError('NOT_FOUND', `unknown lock action '${action}': use acquire, release or renew`);
  return run(name, event, deps);
});
