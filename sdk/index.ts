/**
 * The latchkey client SDK: `import { LockClient } from 'latchkey'`.
 * No CDK, no handler code: only the AWS SDK's SigV4 signer and credential
 * chain, `ws` for waiting, and (for the CLI) commander and log-update.
 */
export { DEFAULT_TTL_MS } from './arguments';
export {
  type AcquireOptions,
  type ListSessionsOptions,
  LockClient,
  type LockClientOptions,
  type TryAcquireOptions,
  type WithLockOptions,
} from './client';
export { formatDuration, parseDuration } from './duration';
export {
  EndpointError,
  ForbiddenError,
  InvalidArgumentError,
  InvalidRequestError,
  LatchkeyClientError,
  LeaseLostError,
  LimitExceededError,
  LockHeldError,
  SessionExpiredError,
  UnauthorizedError,
  UnavailableError,
  WaitTimeoutError,
} from './errors';
export { FenceGuard, StaleTokenError } from './fence';
export { Lease } from './lease';
export {
  compareLockNames,
  type LockMode,
  type LockRequest,
  type LockSpec,
  lockOrder,
  type WithLocksCallback,
} from './multi-lock';
export { Session, type SessionAcquireOptions, type SessionOptions } from './session';
