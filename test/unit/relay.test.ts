/**
 * The relay (lambdas/service/relay.ts): one WebSocket connection per function instance, named as
 * HTTP waiters' doorbell, and the rings it passes to the waits listening. Sockets and time are
 * the test's; what the relay sends and when it offers its connection is observed.
 */
import { describe, expect, it, vi } from 'vitest';
import { FRESH_FOR_MS, MAX_AGE_MS, PING_AFTER_MS, RELAY_CLIENT_ID, Relay } from '../../lambdas/service/relay';
import { FakeSocket } from '../support/fake-socket';

const URL_ = 'wss://api.example/v1';

function relay() {
  let now = 1_000_000;
  const sockets: FakeSocket[] = [];
  const r = new Relay(
    URL_,
    (url, headers) => {
      const socket = new FakeSocket(url, headers);
      sockets.push(socket);
      return socket;
    },
    (url, at) => ({ authorization: `signed ${url.toString()} at ${at.getTime()}` }),
    () => now,
  );
  /** Opens the current socket and welcomes it as `id`. */
  const welcome = (id: string) => {
    const socket = sockets.at(-1) as FakeSocket;
    socket.opens();
    socket.receives({ type: 'welcome', connection_id: id, client_id: RELAY_CLIENT_ID });
    return socket;
  };
  return {
    r,
    sockets,
    welcome,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

/** A sleep the test ends by hand, to see whether a ring came first. */
function manualSleep() {
  let end: () => void = () => {};
  const sleep = new Promise<void>((resolve) => (end = resolve));
  return { sleep, end };
}

describe('the relay connection', () => {
  it('opens on the first bell, signed, as its own client; says hello; then offers its id', () => {
    const { r, sockets, welcome, advance } = relay();
    expect(r.bell()).toBeUndefined();
    expect(sockets).toHaveLength(1);
    const socket = sockets[0] as FakeSocket;
    expect(socket.url).toBe(`${URL_}?client_id=${RELAY_CLIENT_ID}`);
    expect(socket.headers.authorization).toBe(`signed ${URL_}?client_id=${RELAY_CLIENT_ID} at 1000000`);
    // Opening, not yet welcomed: no doorbell, and no second connection.
    advance(100);
    expect(r.bell()).toBeUndefined();
    expect(sockets).toHaveLength(1);
    welcome('conn-1');
    expect(socket.sent).toEqual([{ action: 'hello' }]);
    expect(r.bell()).toBe('conn-1');
    expect(r.bell()).toBe('conn-1');
    expect(sockets).toHaveLength(1);
  });

  it('pings when it has sent nothing for a while, and is replaced once it may have been closed as idle', () => {
    const { r, sockets, welcome, advance } = relay();
    r.bell();
    const first = welcome('conn-1');
    advance(PING_AFTER_MS);
    expect(r.bell()).toBe('conn-1');
    expect(first.sent).toEqual([{ action: 'hello' }, { action: 'ping' }]);
    advance(FRESH_FOR_MS - 1);
    expect(r.bell()).toBe('conn-1'); // the ping counts as sent
    expect(first.sent).toHaveLength(3); // and so does this one (sent 5 minutes after the first)
    advance(FRESH_FOR_MS);
    // A Lambda instance that slept through API Gateway's idle timeout: this wait polls.
    expect(r.bell()).toBeUndefined();
    expect(first.readyState).toBe(3);
    expect(sockets).toHaveLength(2);
    welcome('conn-2');
    expect(r.bell()).toBe('conn-2');
  });

  it('is replaced before API Gateway’s two-hour limit, even while in use', () => {
    const { r, sockets, welcome, advance } = relay();
    r.bell();
    welcome('conn-1');
    for (let t = 0; t + PING_AFTER_MS < MAX_AGE_MS; t += PING_AFTER_MS) {
      advance(PING_AFTER_MS);
      expect(r.bell()).toBe('conn-1');
    }
    advance(PING_AFTER_MS);
    expect(r.bell()).toBeUndefined();
    expect(sockets).toHaveLength(2);
  });

  it('opens another after its connection closed', () => {
    const { r, sockets, welcome } = relay();
    r.bell();
    welcome('conn-1').close();
    expect(r.bell()).toBeUndefined();
    expect(sockets).toHaveLength(2);
  });

  it('waits 30 s before trying again after a connection failed to open (waits poll meanwhile)', () => {
    const { r, sockets, advance } = relay();
    r.bell();
    (sockets[0] as FakeSocket).emit('error');
    (sockets[0] as FakeSocket).close();
    advance(29_000);
    expect(r.bell()).toBeUndefined();
    expect(sockets).toHaveLength(1);
    advance(1_000);
    expect(r.bell()).toBeUndefined();
    expect(sockets).toHaveLength(2);
  });

  it('counts a connection closed before its welcome as failed, and waits 30 s too', () => {
    const { r, sockets, advance } = relay();
    r.bell();
    (sockets[0] as FakeSocket).opens();
    (sockets[0] as FakeSocket).close();
    advance(1_000);
    expect(r.bell()).toBeUndefined();
    expect(sockets).toHaveLength(1);
  });

  it('keeps a connection still being welcomed, however long a frozen instance took (no churn)', () => {
    const { r, sockets, welcome, advance } = relay();
    r.bell();
    advance(60_000); // the instance slept; its timers had no chance to run
    expect(r.bell()).toBeUndefined();
    expect(sockets).toHaveLength(1);
    welcome('conn-1'); // the welcome that waited in the socket
    expect(r.bell()).toBe('conn-1');
  });

  it('gives up on a connection that is not welcomed within 5 s of running time', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate'] });
    try {
      const { r, sockets } = relay();
      r.bell();
      (sockets[0] as FakeSocket).opens();
      await vi.advanceTimersByTimeAsync(4_999);
      expect((sockets[0] as FakeSocket).readyState).toBe(1);
      await vi.advanceTimersByTimeAsync(1);
      await vi.runOnlyPendingTimersAsync(); // the check, after the turn's I/O
      expect((sockets[0] as FakeSocket).readyState).toBe(3);
      expect(r.bell()).toBeUndefined(); // and waits before the next try
      expect(sockets).toHaveLength(1);
    } finally {
      vi.useRealTimers();
    }
  });

  it('is not undone by a late event of a connection given up on', () => {
    const { r, sockets, welcome, advance } = relay();
    r.bell();
    const first = sockets[0] as FakeSocket;
    first.emit('close'); // refused, and given up on
    advance(30_000);
    expect(r.bell()).toBeUndefined(); // opens the next
    first.emit('error'); // late, from the first socket
    welcome('conn-2');
    expect(r.bell()).toBe('conn-2');
    expect(sockets).toHaveLength(2);
  });
});

describe('rings', () => {
  it('wake the wait listening for that waiter, and only that one', async () => {
    const { r, welcome } = relay();
    r.bell();
    const socket = welcome('conn-1');
    const a = r.listen('L', 'order-a');
    const b = r.listen('L', 'order-b');
    const aSleep = manualSleep();
    const bSleep = manualSleep();
    const aWoken = a.wait(aSleep.sleep);
    const bWoken = b.wait(bSleep.sleep);
    socket.receives({ type: 'ring', lock: 'L', order: 'order-a' });
    expect(await aWoken).toBe(true);
    bSleep.end();
    expect(await bWoken).toBe(false);
    // The ring was used up: the next wait sleeps its whole sleep.
    const again = manualSleep();
    const next = a.wait(again.sleep);
    again.end();
    expect(await next).toBe(false);
  });

  it('that come before the wait listens are kept for it (a grant right after the join)', async () => {
    const { r, welcome } = relay();
    r.bell();
    welcome('conn-1').receives({ type: 'ring', lock: 'L', order: 'early' });
    const listener = r.listen('L', 'early');
    expect(await listener.wait(manualSleep().sleep)).toBe(true);
  });

  it('hand on the grant a ring carries, well-formed and of its own lock only; kept too when early', async () => {
    const { r, welcome } = relay();
    r.bell();
    const socket = welcome('conn-1');
    const grant = {
      lock: 'L',
      owner: 'arn:aws:iam::000000000000:user/local',
      clientId: 'c',
      fencingToken: 42,
      held: { kind: 'lease', ttlMs: 10_000, expiresAt: 2_000_000 },
      mode: 'exclusive',
      acquiredAt: 1_990_000,
      reentry: 1,
    };
    socket.receives({ type: 'ring', lock: 'L', order: 'early', request_id: 'r1', grant, frees_slot: true });
    const early = r.listen('L', 'early');
    expect(await early.wait(manualSleep().sleep)).toBe(true);
    expect(early.takeGranted()).toEqual({ requestId: 'r1', grant, slotFreed: true });
    expect(early.takeGranted()).toBeUndefined(); // taken once
    const listener = r.listen('L', 'o');
    for (const bad of [
      { request_id: 'r2', grant: { ...grant, lock: 'M' } },
      { request_id: 'r2', grant: { ...grant, fencingToken: -1 } },
      { request_id: 'r2', grant: { ...grant, held: { kind: 'lease' } } },
      { request_id: 7, grant },
      { grant },
    ]) {
      socket.receives({ type: 'ring', lock: 'L', order: 'o', ...bad });
      expect(await listener.wait(manualSleep().sleep)).toBe(true); // a ring all the same
      expect(listener.takeGranted()).toBeUndefined();
    }
    socket.receives({ type: 'ring', lock: 'L', order: 'o', request_id: 'r2', grant });
    expect(await listener.wait(manualSleep().sleep)).toBe(true);
    expect(listener.takeGranted()).toEqual({ requestId: 'r2', grant, slotFreed: false });
  });

  it('stop reaching a wait that stopped listening; malformed frames are ignored', async () => {
    const { r, welcome } = relay();
    r.bell();
    const socket = welcome('conn-1');
    const listener = r.listen('L', 'o');
    listener.stop();
    socket.emit('message', 'not json');
    socket.receives({ type: 'ring', lock: 'L' });
    socket.receives({ type: 'ring', lock: 'L', order: 'o' });
    // Not delivered to the stopped listener; kept as unheard for a later listen of the same waiter.
    const sleep = manualSleep();
    const woken = listener.wait(sleep.sleep);
    sleep.end();
    expect(await woken).toBe(false);
  });
});
