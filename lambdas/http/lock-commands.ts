/** POST /api/v1/locks/{name}/acquire | release | renew */
import { LatchkeyError } from '../core/errors';
import { acquireBody, acquireResponse, isoTime, releaseBody, renewBody } from '../core/wire';
import { getDeps } from '../shared/deps';
import { type HttpEvent, type HttpResult, httpRoute, json, parseBody } from '../shared/http';
import { holderConflict } from './holder-conflict';
import { lockCommandFrom } from './lock-path';

type Action = (name: string, event: HttpEvent) => Promise<HttpResult>;

const ACTIONS: Record<string, Action> = {
  async acquire(name, event) {
    const { config, locks } = getDeps();
    const body = parseBody(event, acquireBody(config.limits));
    const outcome = await locks.acquire({
      name,
      clientId: body.client_id,
      ttlMs: body.ttl_ms,
      requestId: body.request_id,
      reentrant: body.reentrant,
    });
    return json(200, acquireResponse(outcome));
  },

  release: (name, event) =>
    holderConflict('released', async () => {
      const body = parseBody(event, releaseBody);
      const { locks } = getDeps();
      const outcome = await locks.release({
        name,
        clientId: body.client_id,
        fencingToken: body.fencing_token,
      });
      return { released: true, lock: name, remaining_reentries: outcome.remaining };
    }),

  renew: (name, event) =>
    holderConflict('renewed', async () => {
      const { config, locks } = getDeps();
      const body = parseBody(event, renewBody(config.limits));
      const { grant } = await locks.renew({
        name,
        clientId: body.client_id,
        fencingToken: body.fencing_token,
        ttlMs: body.ttl_ms,
      });
      return {
        renewed: true,
        lock: name,
        fencing_token: grant.fencingToken,
        expires_at: isoTime(grant.expiresAt),
        remaining_ms: grant.ttlMs,
        ttl_ms: grant.ttlMs,
      };
    }),
};

export const handler = httpRoute(async (event) => {
  const { name, action } = lockCommandFrom(event);
  const run = Object.hasOwn(ACTIONS, action) ? ACTIONS[action] : undefined;
  if (!run)
    throw new LatchkeyError('NOT_FOUND', `unknown lock action '${action}': use acquire, release or renew`);
  return run(name, event);
});
