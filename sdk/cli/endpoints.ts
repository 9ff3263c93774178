/**
 * Where latchkey is, for the CLI: --endpoint, else LATCHKEY_ENDPOINT, else
 * the outputs file `cdk deploy --outputs-file` wrote (--outputs-file,
 * LATCHKEY_OUTPUTS_FILE, or ./cdk-outputs.json), else the local stack.
 * Each endpoint remembers where it came from, so that a message about it
 * can say where to fix it.
 */
import { existsSync, readFileSync } from 'node:fs';

export const LOCAL_HTTP = 'http://127.0.0.1:3000';
export const LOCAL_WS = 'ws://127.0.0.1:3001/v1';

/** Where an endpoint came from. */
export type EndpointSource =
  | { readonly kind: 'flag' }
  | { readonly kind: 'env'; readonly variable: string }
  | { readonly kind: 'outputs'; readonly file: string; readonly stack: string }
  | { readonly kind: 'local' };

export interface Endpoints {
  readonly http: string;
  readonly ws: string | undefined;
  /** Where they came from, for messages. */
  readonly source: string;
  readonly httpFrom: EndpointSource;
  readonly wsFrom: EndpointSource | undefined;
  /** The stack's CloudWatch namespace, when an outputs file named the stack: its MetricNamespace output. */
  readonly metricNamespace?: string;
}

export interface EndpointFlags {
  readonly endpoint?: string;
  readonly wsEndpoint?: string;
  readonly outputsFile?: string;
}

const FLAG: EndpointSource = { kind: 'flag' };
const LOCAL: EndpointSource = { kind: 'local' };

export function resolveEndpoints(flags: EndpointFlags, env: NodeJS.ProcessEnv = process.env): Endpoints {
  // The WebSocket API's own flag or variable wins wherever the HTTP API's endpoint came from.
  const wsFlag = flags.wsEndpoint
    ? { ws: flags.wsEndpoint, wsFrom: FLAG }
    : env.LATCHKEY_WS_ENDPOINT
      ? { ws: env.LATCHKEY_WS_ENDPOINT, wsFrom: { kind: 'env', variable: 'LATCHKEY_WS_ENDPOINT' } as const }
      : undefined;
  if (flags.endpoint) {
    const local = wsFor(flags.endpoint);
    return {
      http: flags.endpoint,
      httpFrom: FLAG,
      ...(wsFlag ?? { ws: local, wsFrom: local ? LOCAL : undefined }),
      source: '--endpoint',
    };
  }
  if (env.LATCHKEY_ENDPOINT) {
    const local = wsFor(env.LATCHKEY_ENDPOINT);
    return {
      http: env.LATCHKEY_ENDPOINT,
      httpFrom: { kind: 'env', variable: 'LATCHKEY_ENDPOINT' },
      ...(wsFlag ?? { ws: local, wsFrom: local ? LOCAL : undefined }),
      source: 'LATCHKEY_ENDPOINT',
    };
  }
  const file =
    flags.outputsFile ??
    env.LATCHKEY_OUTPUTS_FILE ??
    (existsSync('cdk-outputs.json') ? 'cdk-outputs.json' : undefined);
  if (file) {
    const found = fromOutputsFile(file);
    return { ...found, ...(wsFlag ?? {}) };
  }
  return {
    http: LOCAL_HTTP,
    httpFrom: LOCAL,
    ...(wsFlag ?? { ws: LOCAL_WS, wsFrom: LOCAL }),
    source: 'the local stack (npm start)',
  };
}

/** The local stack's WebSocket API sits beside its HTTP API; elsewhere it must be given. */
function wsFor(http: string): string | undefined {
  return http.replace(/\/$/, '') === LOCAL_HTTP ? LOCAL_WS : undefined;
}

function fromOutputsFile(file: string): Endpoints {
  let outputs: Record<string, Record<string, string>>;
  try {
    outputs = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new Error(
      `cannot read the CDK outputs file ${file}: ${(error as Error).message} (give --endpoint URL or set LATCHKEY_ENDPOINT=URL instead)`,
    );
  }
  const stacks = Object.entries(outputs).filter(([, values]) => values?.ApiUrl);
  if (stacks.length > 1)
    throw new Error(
      `${file} has several latchkey stacks (${stacks.map(([stack]) => stack).join(', ')}): write one outputs file per stage (cdk deploy -c stage=NAME --outputs-file cdk-outputs.NAME.json) and give --outputs-file FILE or LATCHKEY_OUTPUTS_FILE=FILE, or give --endpoint URL`,
    );
  const [found] = stacks;
  if (found) {
    const [stack, values] = found;
    const from: EndpointSource = { kind: 'outputs', file, stack };
    return {
      http: values.ApiUrl as string,
      httpFrom: from,
      ws: values.WebSocketUrl,
      wsFrom: values.WebSocketUrl ? from : undefined,
      source: `${file} (stack ${stack})`,
      ...(values.MetricNamespace ? { metricNamespace: values.MetricNamespace } : {}),
    };
  }
  throw new Error(
    `${file} has no stack with an ApiUrl output: was it written by 'cdk deploy --outputs-file'? (give --endpoint URL or set LATCHKEY_ENDPOINT=URL instead)`,
  );
}

/**
 * Where an endpoint came from and how to give another, for a message about it: e.g. "it is the
 * default, the local stack (start it with npm start); to use another, give --endpoint URL or set
 * LATCHKEY_ENDPOINT=URL".
 */
export function endpointHint(
  api: 'http' | 'websocket',
  endpoints: Endpoints,
  /** `wrong`: it answered as something else than latchkey; `unreachable`: nothing answered (maybe it is down). */
  how: 'wrong' | 'unreachable' = 'wrong',
): string {
  const [flag, variable, what] =
    api === 'http'
      ? ['--endpoint', 'LATCHKEY_ENDPOINT', 'the HTTP API endpoint']
      : ['--ws-endpoint', 'LATCHKEY_WS_ENDPOINT', 'the WebSocket endpoint'];
  const set = `give ${flag} URL or set ${variable}=URL`;
  const from = api === 'http' ? endpoints.httpFrom : endpoints.wsFrom;
  switch (from?.kind) {
    case 'flag':
      return `${what} was given with ${flag}: check that URL`;
    case 'env':
      return how === 'unreachable'
        ? `${what} came from ${from.variable}: check that it is where latchkey runs, or give ${flag} URL`
        : `${what} came from ${from.variable}: fix ${from.variable}=URL, or give ${flag} URL`;
    case 'outputs':
      return `${what} came from ${from.file} (stack ${from.stack}); to use another, ${set}`;
    case 'local':
      return `${what} is the default, the local stack (start it with npm start); to use another, ${set}`;
    default:
      return `to set ${what}, ${set}`;
  }
}
