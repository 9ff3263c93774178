/**
 * POST /api/v1/admin/locks/{name}/force-release {reason}: an administrator ends whatever grant the
 * lock has, whoever holds it, and moves its fencing counter past it. A route of its own, so that
 * IAM grants it separately (README: "Security model"). Every use is audited (`audit: "force-release"`,
 * by the service) with who, whom and why.
 */
import { LatchkeyError } from '../core/errors';
import { forceReleaseBody, isoTime } from '../core/wire';
import { httpRoute, json, parseBody, principalFrom } from '../shared/http';
import { lockCommandFrom } from './lock-path';

/** The actions of this route: each is a reserved last level of lock names (sdk/names.ts). */
export const ADMIN_ACTIONS: readonly string[] = ['force-release'];

export const handler = httpRoute(async (event, { locks, clock }) => {
  const { name, action } = lockCommandFrom(event);
  if (!ADMIN_ACTIONS.includes(action))
    throw new LatchkeyError('NOT_FOUND', `unknown admin action '${action}': use force-release`);
  const { reason, fencing_token } = parseBody(event, forceReleaseBody);
  const by = principalFrom(event);
  const out = await locks.forceRelease(name, by, reason, fencing_token);
  if (out.kind !== 'released') {
    const why =
      out.kind === 'not-held'
        ? 'not held'
        : fencing_token === undefined
          ? 'the lock moved on meanwhile (released or granted again): look again'
          : `no grant with fencing token ${fencing_token} holds it, or the lock changed while this ran (another grant's token, or released or granted since): look again`;
    return json(200, { released: false, lock: name, reason: why });
  }
  const { released, fencedTo } = out;
  const holder = {
    owner: released.owner,
    client_id: released.clientId,
    fencing_token: released.fencingToken,
  };
  return json(200, { released: true, lock: name, holder, fenced_to: fencedTo, by, at: isoTime(clock.now()) });
});
