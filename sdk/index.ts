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
  type LockModeOptions,
  type TryAcquireOptions,
  type WaitGraph,
  type WithLockOptions,
  type WithLocksOptions,
} from './client';
export { formatDuration, formatExactDuration, parseDuration } from './duration';
export {
  DeadlockError,
  EndpointError,
  ForbiddenError,
  type HeldWhenRefused,
  type HolderSummary,
  InvalidArgumentError,
  InvalidRequestError,
  LatchkeyClientError,
  LeaseLostError,
  LimitExceededError,
  LockHeldError,
  MaxHoldersMismatchError,
  RetryWarning,
  SessionExpiredError,
  UnauthorizedError,
  UnavailableError,
  type WaitEdge,
  type WaitParty,
  WaitTimeoutError,
} from './errors';
export { FenceGuard, StaleTokenError } from './fence';
export type { EnclosingHolds } from './held-locks';
export { Lease, type ReleaseResult } from './lease';
export {
  compareLockNames,
  type LockMode,
  type LockRequest,
  type LockSpec,
  type LockWant,
  lockOrder,
  type WithLocksCallback,
} from './multi-lock';
export {
  Session,
  type SessionAcquireOptions,
  type SessionLockOptions,
  type SessionOptions,
} from './session';
