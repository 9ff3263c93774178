/**
 * "Where the time goes" in `npm run bench`: one uncontended acquire+release pair at a time, taken
 * apart. Each row is one kind of pair, run one at a time, in the same process and against the same
 * DynamoDB Local as the local stack, the rows interleaved pair by pair (sideBySide):
 *   - the lock store called directly (the two DynamoDB calls and the service's rules);
 *   - the lock-commands handler invoked in-process with the events API Gateway would send (adds
 *     middy, body parsing and validation, metrics, the request log line and audit events);
 *   - SigV4: the client signing both requests (as the SDK signs), and the local gateway verifying
 *     them (API Gateway's IAM authorizer does that on AWS);
 *   - the whole pair through the SDK (LockClient.tryAcquire and release), over loopback HTTP;
 *   - and beside them, the SDK's waiting acquire() and release of a free lock (an HTTP wait here).
 * What is left of the SDK's time after the first three is the HTTP round trips and the local
 * gateway's own work (routing, the Lambda event, the JSON answer).
 */
import { randomUUID } from 'node:crypto';
import { HttpRequest } from '@smithy/protocol-http';
import { lease } from '../../lambdas/core/lock';
import { localPrincipal } from '../../lambdas/core/principal';
import { invocation, lambdaContext, loadHandler } from '../../local/handlers';
import { verifySigV4 } from '../../local/sigv4';
import { LockClient } from '../../sdk/index';
import { httpEvent } from '../support/http-event';
import { localSigner } from '../support/signed-fetch';
import { percentile } from './common';

const PAIRS = Number(process.env.BENCH_PROFILE_PAIRS ?? 300);
const PRINCIPAL = localPrincipal('local');

interface Store {
  acquire(cmd: {
    name: string;
    owner: string;
    clientId: string;
    tenure: ReturnType<typeof lease>;
  }): Promise<{ acquired: boolean; grant?: { fencingToken: number } }>;
  release(cmd: { name: string; owner: string; clientId: string; fencingToken: number }): Promise<unknown>;
}

type Timing = { p50: number; p99: number };

/**
 * p50 and p99 of each pair, run PAIRS times one at a time, interleaved (round i runs every pair once,
 * in an order that rotates), so that a slow spell of a shared machine, or a JIT still warming up,
 * weighs on every row alike rather than on whichever ran then. Each is warmed up first.
 */
async function sideBySide<K extends string>(
  pairs: Record<K, (i: number) => Promise<void>>,
): Promise<Record<K, Timing>> {
  const kinds = Object.keys(pairs) as K[];
  for (let i = 0; i < 30; i++) for (const kind of kinds) await pairs[kind](-i - 1);
  const took = new Map<K, number[]>(kinds.map((k) => [k, []]));
  for (let i = 0; i < PAIRS; i++)
    for (let j = 0; j < kinds.length; j++) {
      const kind = kinds[(i + j) % kinds.length] as K;
      const t = performance.now();
      await pairs[kind](i);
      took.get(kind)?.push(performance.now() - t);
    }
  const timing = (list: number[]) => {
    list.sort((a, b) => a - b);
    return { p50: percentile(list, 0.5), p99: percentile(list, 0.99) };
  };
  return Object.fromEntries(kinds.map((k) => [k, timing(took.get(k) ?? [])])) as Record<K, Timing>;
}

/** The two signed requests of a pair, as the SDK's transport builds them. */
function pairRequests(url: URL, name: string) {
  const request = (action: string, body: unknown) => {
    const payload = JSON.stringify(body);
    return new HttpRequest({
      method: 'POST',
      protocol: url.protocol,
      hostname: url.hostname,
      port: Number(url.port),
      path: `/api/v1/locks/${name}/${action}`,
      headers: { host: url.host, 'content-type': 'application/json' },
      body: payload,
    });
  };
  return [
    request('acquire', { client_id: 'p', ttl_ms: 10_000 }),
    request('release', { client_id: 'p', fencing_token: 1 }),
  ];
}

export async function whereTheTimeGoes(
  stack: { url: string; wsUrl: string },
  store: Store,
): Promise<string[]> {
  const url = new URL(stack.url);
  const directPair = async (i: number) => {
    const name = `bench/profile/direct/${i}`;
    const got = await store.acquire({ name, owner: PRINCIPAL, clientId: 'p', tenure: lease(10_000) });
    if (!got.acquired || !got.grant) throw new Error('profile: direct acquire refused');
    await store.release({ name, owner: PRINCIPAL, clientId: 'p', fencingToken: got.grant.fencingToken });
  };

  const handler = await loadHandler('http/lock-commands');
  const invoke = async (name: string, action: string, body: unknown) => {
    const requestId = randomUUID();
    const event = httpEvent(`POST /api/v1/locks/{proxy+}`, `/api/v1/locks/${name}/${action}`, {
      body,
      pathParameters: { proxy: `${name}/${action}` },
      userArn: PRINCIPAL,
      requestId,
    });
    const answer = await invocation.run({ module: 'http/lock-commands', requestId }, () =>
      handler(event, lambdaContext(requestId, 29_000)),
    );
    return JSON.parse(String(answer.body)) as { fencing_token?: number };
  };
  const inProcessPair = async (i: number) => {
    const name = `bench/profile/handler/${i}`;
    const got = await invoke(name, 'acquire', { client_id: 'p', ttl_ms: 10_000 });
    if (got.fencing_token === undefined)
      throw new Error(`profile: handler acquire refused: ${JSON.stringify(got)}`);
    await invoke(name, 'release', { client_id: 'p', fencing_token: got.fencing_token });
  };

  const signer = localSigner();
  const signPair = async (i: number) => {
    for (const request of pairRequests(url, `bench/profile/sign/${i}`)) await signer.sign(request);
  };
  const signed = await Promise.all(
    pairRequests(url, 'bench/profile/verify').map((request) => signer.sign(request)),
  );
  const verifyPair = async () => {
    for (const request of signed) {
      const verdict = await verifySigV4({
        method: request.method,
        rawPath: request.path,
        rawQuery: '',
        headers: request.headers,
        body: new TextEncoder().encode(String(request.body)),
      });
      if (!verdict.ok)
        throw new Error(`profile: the local verifier refused a signed request: ${verdict.reason}`);
    }
  };

  const client = new LockClient({ endpoint: stack.url, clientId: 'p' });
  const sdkPair = async (i: number) => {
    const lease = await client.tryAcquire(`bench/profile/sdk/${i}`, { ttlMs: 10_000 });
    if (!lease) throw new Error('profile: SDK acquire refused');
    await client.release(lease);
  };
  // acquire() waits if the lock is held: over HTTP here (no WebSocket endpoint given), a free lock's
  // grant is one transaction, as a tryAcquire's is one UpdateItem.
  const waitingPair = async (i: number) => {
    const lease = await client.acquire(`bench/profile/sdk-wait/${i}`, { ttlMs: 10_000 });
    await client.release(lease);
  };
  const { direct, inProcess, sign, verify, sdk, sdkWaiting } = await sideBySide({
    direct: directPair,
    inProcess: inProcessPair,
    sign: signPair,
    verify: verifyPair,
    sdk: sdkPair,
    sdkWaiting: waitingPair,
  });
  client.close();

  const rest = sdk.p50 - inProcess.p50 - sign.p50 - verify.p50;
  const row = (what: string, r: { p50: number; p99: number }, share?: number) =>
    `| ${what} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${share === undefined ? '' : `${((100 * share) / sdk.p50).toFixed(0)} %`} |`;
  return [
    `\n### Uncontended: where the time of one acquire+release pair goes (${PAIRS} pairs of each, one at a time, the rows interleaved, ms)\n`,
    '| what | p50 | p99 | share of the SDK pair (p50) |',
    '| --- | --- | --- | --- |',
    row('the lock store, called directly (2 DynamoDB calls)', direct, direct.p50),
    row('the handler in-process, with API Gateway events (+ middy, validation, metrics, logs)', inProcess),
    `| … of which the handler's own work (in-process − direct) | ${(inProcess.p50 - direct.p50).toFixed(2)} | | ${((100 * (inProcess.p50 - direct.p50)) / sdk.p50).toFixed(0)} % |`,
    row('SigV4: the client signs both requests', sign, sign.p50),
    row('SigV4: the gateway verifies both (IAM on AWS)', verify, verify.p50),
    row('the whole pair through the SDK (LockClient.tryAcquire + release)', sdk, sdk.p50),
    `| … left: 2 loopback HTTP round trips and the local gateway (SDK − in-process − signing − verifying) | ${rest.toFixed(2)} | | ${((100 * rest) / sdk.p50).toFixed(0)} % |`,
    row(
      "the SDK's waiting acquire() + release of a free lock (a transaction instead of an UpdateItem)",
      sdkWaiting,
    ),
    '',
    `through the SDK = ${(sdk.p50 / direct.p50).toFixed(2)} x the direct store call (p50, same run); goal: at most 1.5 x`,
    `the SDK's waiting acquire() = ${(sdkWaiting.p50 / sdk.p50).toFixed(2)} x its tryAcquire(), of a free lock (p50, same run)`,
  ];
}
