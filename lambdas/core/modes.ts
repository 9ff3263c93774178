/**
 * One entry point per command for both modes: the service calls these and
 * never chooses between lock.ts (exclusive) and shared-lock.ts itself.
 *
 * A release or renew names the mode it holds the lock in as a hint (the SDK
 * knows it): the first write goes where that mode records its grant. When
 * the item shows the grant in the other mode, that mode's protocol carries
 * on from the item the refusal returned, so a wrong hint costs one write.
 */
import type { Item } from './expr';
import {
  type AcquireCommand,
  type AcquireDecision,
  type AcquireOutcome,
  acquireProtocol,
  decideAcquire,
  type Grant,
  type Protocol,
  type ReleaseCommand,
  type ReleaseOutcome,
  type RenewCommand,
  type RenewOutcome,
  reenterProtocol,
  releaseProtocol,
  renewProtocol,
} from './lock';
import {
  decideSharedAcquire,
  recordsSharedGrant,
  sharedAcquireProtocol,
  sharedReenterProtocol,
  sharedReleaseProtocol,
  sharedRenewProtocol,
} from './shared-lock';

export function decideAcquireIn(cmd: AcquireCommand, item: Item | undefined, now: number): AcquireDecision {
  return cmd.mode === 'shared' ? decideSharedAcquire(cmd, item, now) : decideAcquire(cmd, item, now);
}

export function acquireProtocolIn(cmd: AcquireCommand, now: number): Protocol<AcquireOutcome> {
  return cmd.mode === 'shared' ? sharedAcquireProtocol(cmd, now) : acquireProtocol(cmd, now);
}

/** Runs the protocol of the hinted mode, switching to the other when the item records the grant there. */
function eitherMode<C extends ReleaseCommand, O>(
  cmd: C,
  exclusive: Protocol<O>,
  shared: Protocol<O>,
): Protocol<O> {
  let current = cmd.mode === 'shared' ? shared : exclusive;
  return {
    first: current.first,
    onRefused(old) {
      current = recordsSharedGrant(old, cmd) ? shared : exclusive;
      return current.onRefused(old);
    },
    onWritten: (item) => current.onWritten(item),
  };
}

export const releaseProtocolIn = (cmd: ReleaseCommand, now: number): Protocol<ReleaseOutcome> =>
  eitherMode(cmd, releaseProtocol(cmd, now), sharedReleaseProtocol(cmd, now));

export const renewProtocolIn = (cmd: RenewCommand, now: number): Protocol<RenewOutcome> =>
  eitherMode(cmd, renewProtocol(cmd, now), sharedRenewProtocol(cmd, now));

export const reenterProtocolIn = (
  cmd: AcquireCommand,
  current: Grant,
  now: number,
): Protocol<AcquireOutcome> =>
  current.mode === 'shared' ? sharedReenterProtocol(cmd, current, now) : reenterProtocol(cmd, current, now);
