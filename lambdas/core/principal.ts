/**
 * Who a caller is: the IAM principal that signed the request, as API
 * Gateway reports it (the ARN in the request context). A lock, a session, a
 * waiting request and a WebSocket connection belong to the principal that
 * made them; only it may release, renew, heartbeat, close or cancel them,
 * and only it is shown their capabilities (fencing token, session id).
 *
 * A principal is an IAM user or role: every session of one role is the same
 * principal (`arn:aws:sts::123456789012:assumed-role/Worker/i-0abc` and
 * `.../Worker/i-0def` are both `arn:aws:sts::123456789012:assumed-role/Worker`),
 * because policies are attached to the role and session names are chosen by
 * the caller. Within one principal, `client_id` tells holders apart.
 */

/** The account the local stack plays (its principals are `arn:aws:iam::000000000000:user/<access key>`). */
export const LOCAL_ACCOUNT = '000000000000';

/** The principal of requests when the local stack runs without authentication (`--no-auth`). */
export const ANONYMOUS = `arn:aws:iam::${LOCAL_ACCOUNT}:user/anonymous`;

export const localPrincipal = (accessKeyId: string) => `arn:aws:iam::${LOCAL_ACCOUNT}:user/${accessKeyId}`;

const ASSUMED_ROLE = /^(arn:aws[a-z-]*:sts::\d{12}:assumed-role\/[^/]+)\/.+$/;

/** A principal ARN as ownership compares it: an assumed-role session becomes its role. */
export function principalOf(arn: string): string {
  return ASSUMED_ROLE.exec(arn)?.[1] ?? arn;
}
