/**
 * The audit trail's vocabulary for the services (shared/log.ts `audit`): one event per change,
 * logged by the service that made it, after the write succeeded. The fields are the same in every
 * event, so one Logs Insights query (`filter lock = "..." and ispresent(audit)`) gives a lock's
 * history and Contributor Insights can count by `lock`, `principal` and `client_id`.
 */
import type { Item } from '../core/expr';
import { type Grant, LockAttr, liveHolder, type ReleaseCommand } from '../core/lock';
import { type AuditEvent, type AuditFields, audit } from '../shared/log';

/** The fields naming a grant: its lock, owner, label, token and (held through one) session. */
export const grantFields = (grant: Grant): AuditFields => ({
  lock: grant.lock,
  principal: grant.owner,
  client_id: grant.clientId,
  fencing_token: grant.fencingToken,
  ...(grant.held.kind === 'session'
    ? { session_id: grant.held.sessionId }
    : { expires_at: new Date(grant.held.expiresAt).toISOString() }),
});

export const auditGrant = (event: AuditEvent, grant: Grant, fields: AuditFields = {}): void =>
  audit(event, { ...grantFields(grant), ...fields });

/** The `release` event: the caller gave up its grant, or one re-entry of it. */
export const auditRelease = (cmd: ReleaseCommand, remaining: number, again = false): void =>
  audit('release', {
    lock: cmd.name,
    principal: cmd.owner,
    client_id: cmd.clientId,
    fencing_token: cmd.fencingToken,
    reason: remaining > 0 ? 'reentry-released' : 'released',
    remaining_reentries: remaining,
    // A release sent again after it applied: the same release, logged as the first was.
    ...(again ? { replayed: true } : {}),
  });

/**
 * The grant a lock item still records although its lease ended (a lapse writes nothing): the
 * writer that replaces it logs `lapse` for it, once, since only one such write can succeed.
 */
export function lapsedGrant(item: Item | undefined, now: number): Grant | undefined {
  if (!item || typeof item[LockAttr.holder] !== 'string') return undefined;
  if (liveHolder(item, now)) return undefined;
  const expiresAt = item[LockAttr.expiresAt];
  if (typeof expiresAt !== 'number') return undefined;
  const owner = item[LockAttr.owner];
  const lock = item[LockAttr.name];
  return {
    lock: typeof lock === 'string' ? lock : '',
    owner: typeof owner === 'string' ? owner : '',
    clientId: item[LockAttr.holder] as string,
    fencingToken: typeof item[LockAttr.fence] === 'number' ? (item[LockAttr.fence] as number) : 0,
    held: { kind: 'lease', ttlMs: Number(item[LockAttr.ttlMs] ?? 0), expiresAt },
    mode: 'exclusive',
    acquiredAt: Number(item[LockAttr.acquiredAt] ?? 0),
    reentry: Number(item[LockAttr.reentry] ?? 1),
  };
}

/** Logs the lapse of `item`'s grant, if it records one, for lock `name` (replaced by a new grant). */
export function auditLapse(name: string, item: Item | undefined, now: number): void {
  const lapsed = lapsedGrant(item, now);
  if (lapsed) auditGrant('lapse', { ...lapsed, lock: name }, { reason: 'lease-ended' });
}

/** The principal a request key names (core/lock.ts requestKey: "<length>:<principal><client>…"). */
export function ownerOfRequestKey(key: string): string | undefined {
  const colon = key.indexOf(':');
  const length = Number(key.slice(0, colon));
  if (colon < 0 || !Number.isInteger(length)) return undefined;
  return key.slice(colon + 1, colon + 1 + length);
}
