import { describe, expect, it } from 'vitest';
import { isOwnHold, OwnReleases } from '../../sdk/own-holds';

const soon = () => new Promise((resolve) => setTimeout(resolve, 20));

describe('a wait paused on its own client’s hold', () => {
  it('resumes at a release of its lock through the client, not of another lock', async () => {
    const releases = new OwnReleases();
    const watch = releases.watch('jobs/a');
    let resumed = false;
    const paused = watch.pause(60_000).then(() => {
      resumed = true;
    });
    // A client releasing other locks all the time (a worker pool) does not wake it.
    for (let i = 0; i < 50; i++) releases.released('jobs/b');
    await soon();
    expect(resumed).toBe(false);
    releases.released('jobs/a');
    await paused;
    expect(resumed).toBe(true);
    watch.end();
  });

  it('does not pause when its lock was released since the watch began: the hold named may be gone', async () => {
    const releases = new OwnReleases();
    const watch = releases.watch('jobs/a');
    releases.released('jobs/a'); // before the answer came, so before the pause began
    const started = performance.now();
    await watch.pause(60_000);
    expect(performance.now() - started).toBeLessThan(1_000);
    watch.end();
  });

  it('resumes after its time without a release, and keeps nothing once ended', async () => {
    const releases = new OwnReleases();
    const watch = releases.watch('jobs/a');
    await watch.pause(10);
    watch.end();
    expect((releases as unknown as { watching: Map<string, unknown> }).watching.size).toBe(0);
  });

  it('ends with the reason of an abort, before or during the pause', async () => {
    const releases = new OwnReleases();
    const watch = releases.watch('jobs/a');
    const during = new AbortController();
    const paused = watch.pause(60_000, during.signal);
    during.abort(new Error('stopped'));
    await expect(paused).rejects.toThrow('stopped');
    await expect(watch.pause(60_000, during.signal)).rejects.toThrow('stopped');
  });

  it('ends when the client closes, during the pause or after', async () => {
    const releases = new OwnReleases();
    const watch = releases.watch('jobs/a');
    const paused = watch.pause(60_000);
    await soon();
    releases.close(new Error('the client was closed'));
    await expect(paused).rejects.toThrow('the client was closed');
    await expect(releases.watch('jobs/b').pause(60_000)).rejects.toThrow('the client was closed');
  });

  it('knows a refusal of the caller’s own hold by the service’s mark, not by a client id', () => {
    expect(isOwnHold({ holder: { client_id: 'me', mine: true } })).toBe(true);
    // Another principal may use the same client id: its hold is not the caller's.
    expect(isOwnHold({ holder: { client_id: 'me' } })).toBe(false);
    expect(isOwnHold({ holder: null })).toBe(false);
    expect(isOwnHold({})).toBe(false);
  });
});
