/**
 * The latchkey client SDK: `import { LockClient } from 'latchkey/sdk'`.
 * No CDK, no handler code: only the AWS SDK's SigV4 signer and credential
 * chain, and `ws` for waiting.
 */
export { type AcquireOptions, LockClient, type LockClientOptions, type TryAcquireOptions } from './client';
export { formatDuration, parseDuration } from './duration';
export {
  ForbiddenError,
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
export { Session, type SessionOptions } from './session';
