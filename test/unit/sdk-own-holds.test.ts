import { describe, expect, it } from 'vitest';
import { heldByClient, OwnReleases } from '../../sdk/own-holds';

describe('a wait paused on its own client’s hold', () => {
  it('resumes at a release through the client (of any lock: in a hierarchy the hold may be above or below)', async () => {
    const releases = new OwnReleases();
    let resumed = false;
    const paused = releases.pause(60_000, releases.mark()).then(() => {
      resumed = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(resumed).toBe(false);
    releases.released();
    await paused;
    expect(resumed).toBe(true);
  });

  it('resumes after its time without a release, and leaves nothing behind', async () => {
    const releases = new OwnReleases();
    await releases.pause(10, releases.mark());
    expect((releases as unknown as { paused: Set<unknown> }).paused.size).toBe(0);
  });

  it('rejects with the reason of an abort, before or during the pause', async () => {
    const releases = new OwnReleases();
    const during = new AbortController();
    const paused = releases.pause(60_000, releases.mark(), during.signal);
    during.abort(new Error('stopped'));
    await expect(paused).rejects.toThrow('stopped');
    await expect(releases.pause(60_000, releases.mark(), during.signal)).rejects.toThrow('stopped');
  });

  it('does not pause when the client released anything since it asked: the hold named may be gone', async () => {
    const releases = new OwnReleases();
    const asked = releases.mark();
    releases.released(); // before the answer came, so before the pause began
    const started = performance.now();
    await releases.pause(60_000, asked);
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it('knows a refusal that names this client as the holder', () => {
    expect(heldByClient({ holder: { client_id: 'me' } }, 'me')).toBe(true);
    expect(heldByClient({ holder: { client_id: 'you' } }, 'me')).toBe(false);
    expect(heldByClient({ holder: null }, 'me')).toBe(false);
    expect(heldByClient({}, 'me')).toBe(false);
  });
});
