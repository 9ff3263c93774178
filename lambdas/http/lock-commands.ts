/** POST /api/v1/locks/{name}/acquire | release | renew | cancel, as the caller's principal. */
import { LatchkeyError } from '../core/errors';
import {
  acquireCommand,
  acquireResponse,
  cancelBody,
  queuedResponse,
  releaseBody,
  releaseCommand,
  releaseResponse,
  renewCommand,
  renewResponse,
} from '../core/wire';
import type { AcquireResult } from '../service/lock-service';
import type { Deps } from '../shared/deps';
import { type HttpEvent, type HttpResult, httpRoute, json, parseBody, principalFrom } from '../shared/http';
import { holderConflict } from './holder-conflict';
import { lockCommandFrom } from './lock-path';

type Action = (name: string, owner: string, event: HttpEvent, deps: Deps) => Promise<HttpResult>;

const ACTIONS: Record<string, Action> = {
  async acquire(name, owner, event, { locks, httpWaits, schemas, clock }) {
    const body = parseBody(event, schemas.acquire);
    const cmd = acquireCommand(name, owner, body);
    const wait = { waitMs: body.wait_timeout_ms ?? 0, priority: body.priority };
    let result: AcquireResult;
    if (body.connection_id !== undefined) {
      // Answered at once; a grant that comes later is pushed over the caller's WebSocket connection.
      const pushed = { ...wait, connectionId: body.connection_id };
      result = await locks.acquireByPush(cmd, pushed, body.ephemeral === true);
    } else if (wait.waitMs > 0) {
      // A wait in the request holds this function while it polls: only within the HTTP-wait slots.
      // A free lock is granted before that, taking no slot.
      const until = clock.now() + wait.waitMs;
      result =
        (await locks.acquireAtOnce(cmd, wait)) ??
        (await httpWaits.during(event.requestContext.requestId, until, (slot) =>
          locks.acquireOverHttp(cmd, wait, slot, false),
        ));
    } else result = await locks.acquireOverHttp(cmd, wait);
    if (result.kind === 'done') return json(200, acquireResponse(result.outcome, clock.now()));
    const position = body.with_position ? await locks.position(result.wait) : undefined;
    return json(200, queuedResponse(name, result.wait.requestId, result.wait.deadline, position));
  },
  release: (name, owner, event, { locks }) =>
    holderConflict('released', async () => {
      const body = parseBody(event, releaseBody);
      return releaseResponse(await locks.release(releaseCommand(name, owner, body)));
    }),
  renew: (name, owner, event, { locks, schemas, clock }) =>
    holderConflict('renewed', async () => {
      const body = parseBody(event, schemas.renew);
      return renewResponse((await locks.renew(renewCommand(name, owner, body))).grant, clock.now());
    }),
  async cancel(name, owner, event, { locks, clock }) {
    const body = parseBody(event, cancelBody);
    const cancel = { lock: name, owner, clientId: body.client_id, requestId: body.request_id };
    const out = await locks.cancel({ ...cancel, connectionId: body.connection_id });
    // A request granted meanwhile is answered with its grant: the caller owns it now.
    if (out.granted) return json(200, { cancelled: false, ...acquireResponse(out.granted, clock.now()) });
    return json(200, { cancelled: true, lock: name, removed: out.removed });
  },
};

/** The actions of this route: each is a reserved last level of lock names (sdk/names.ts). */
export const LOCK_ACTIONS: readonly string[] = Object.keys(ACTIONS);

export const handler = httpRoute(async (event, deps) => {
  const { name, action } = lockCommandFrom(event);
  const run = Object.hasOwn(ACTIONS, action) ? ACTIONS[action] : undefined;
  if (!run)
    throw new LatchkeyError(
      'NOT_FOUND',
      `unknown lock action '${action}': use acquire, release, renew or cancel`,
    );
  return run(name, principalFrom(event), event, deps);
});
