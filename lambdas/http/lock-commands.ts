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
import { getDeps } from '../shared/deps';
import { type HttpEvent, type HttpResult, httpRoute, json, parseBody } from '../shared/http';
import { holderConflict } from './holder-conflict';
import { lockCommandFrom } from './lock-path';

type Action = (name: string, event: HttpEvent) => Promise<HttpResult>;

const ACTIONS: Record<string, Action> = {
  async acquire(name, event) {
    const { service, schemas } = getDeps();
    const body = parseBody(event, schemas.acquire);
    const wait = { waitMs: body.wait_timeout_ms ?? 0, priority: body.priority };
    const result = await service.acquire(acquireCommand(name, body), wait);
    const outcome = result.kind === 'done' ? result.outcome : await service.awaitGrant(result.waiter);
    return json(200, acquireResponse(outcome));
  },
  release: (name, event) =>
    holderConflict('released', async () => {
      const body = parseBody(event, releaseBody);
      return releaseResponse(await getDeps().service.release(releaseCommand(name, body)));
    }),
  renew: (name, event) =>
    holderConflict('renewed', async () => {
      const { service, schemas } = getDeps();
      const body = parseBody(event, schemas.renew);
      return renewResponse((await service.renew(renewCommand(name, body))).grant);
    }),
};

export const handler = httpRoute(async (event) => {
  const { name, action } = lockCommandFrom(event);
  const run = Object.hasOwn(ACTIONS, action) ? ACTIONS[action] : undefined;
  if (!run)
    throw new LatchkeyError('NOT_FOUND', `unknown lock action '${action}': use acquire, release or renew`);
  return run(name, event);
});
