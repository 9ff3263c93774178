/**
 * The DynamoDB stream notifier: serves the queue of every lock a batch left
 * free with waiters (a release normally did that already, inline; this is
 * the path for everything else), and arms timers for what will change
 * without a write: the lease of a grant with waiters behind it, and the
 * deadline of each WebSocket waiter, and the due time of each new session. A failure throws, so Lambda retries the
 * batch (bisecting it) and finally sends it to the on-failure queue.
 */
import { onLockChange } from '../core/queue';
import { readChanges, type StreamRecord } from '../service/stream-changes';
import { getDeps } from '../shared/deps';

export async function handler(event: { Records: readonly StreamRecord[] }): Promise<void> {
  const { handoff, timers } = getDeps();
  const { locks, joined, opened } = readChanges(event.Records);
  await Promise.all(
    locks.map(async ({ lock, ...images }) => {
      const decision = onLockChange(images, Date.now());
      if (decision.timer) await timers.schedule(lock, decision.timer.at, decision.timer.fence);
      if (!decision.serve) return;
      const served = await handoff.serve(lock);
      if (served.kind === 'held' && served.waiting)
        await timers.schedule(lock, served.expiresAt, served.fence);
    }),
  );
  await Promise.all(joined.map((w) => timers.schedule(w.lock, w.deadline)));
  // A session ends at its due time unless heartbeats move it: its timer checks then (and re-arms).
  await Promise.all(opened.map((s) => timers.scheduleSession(s.id, s.dueAt)));
}
