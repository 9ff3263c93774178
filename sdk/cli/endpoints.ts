/**
 * Where latchkey is, for the CLI: --endpoint, else LATCHKEY_ENDPOINT, else
 * the outputs file `cdk deploy --outputs-file` wrote (--outputs-file,
 * LATCHKEY_OUTPUTS_FILE, or ./cdk-outputs.json), else the local stack.
 */
import { existsSync, readFileSync } from 'node:fs';

export const LOCAL_HTTP = 'http://127.0.0.1:3000';
export const LOCAL_WS = 'ws://127.0.0.1:3001/v1';

export interface Endpoints {
  readonly http: string;
  readonly ws: string | undefined;
  /** Where they came from, for messages. */
  readonly source: string;
}

export interface EndpointFlags {
  readonly endpoint?: string;
  readonly wsEndpoint?: string;
  readonly outputsFile?: string;
}

export function resolveEndpoints(flags: EndpointFlags, env: NodeJS.ProcessEnv = process.env): Endpoints {
  if (flags.endpoint)
    return { http: flags.endpoint, ws: flags.wsEndpoint ?? wsFor(flags.endpoint), source: '--endpoint' };
  if (env.LATCHKEY_ENDPOINT)
    return {
      http: env.LATCHKEY_ENDPOINT,
      ws: flags.wsEndpoint ?? env.LATCHKEY_WS_ENDPOINT ?? wsFor(env.LATCHKEY_ENDPOINT),
      source: 'LATCHKEY_ENDPOINT',
    };
  const file =
    flags.outputsFile ??
    env.LATCHKEY_OUTPUTS_FILE ??
    (existsSync('cdk-outputs.json') ? 'cdk-outputs.json' : undefined);
  if (file) {
    const found = fromOutputsFile(file);
    return { ...found, ws: flags.wsEndpoint ?? found.ws };
  }
  return { http: LOCAL_HTTP, ws: flags.wsEndpoint ?? LOCAL_WS, source: 'the local stack (npm start)' };
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
    throw new Error(`cannot read the CDK outputs file ${file}: ${(error as Error).message}`);
  }
  for (const [stack, values] of Object.entries(outputs)) {
    if (values?.ApiUrl)
      return { http: values.ApiUrl, ws: values.WebSocketUrl, source: `${file} (stack ${stack})` };
  }
  throw new Error(
    `${file} has no stack with an ApiUrl output: was it written by 'cdk deploy --outputs-file'?`,
  );
}
