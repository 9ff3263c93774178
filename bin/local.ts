#!/usr/bin/env node
/**
 * `npm start`: the whole latchkey service on localhost.
 *
 *   npm start                       in-memory DynamoDB Local, SigV4 required
 *   npm start -- --db-path ./data   keep the data between runs
 *   npm start -- --no-auth          accept unsigned requests
 *   npm start -- --credentials alice:alice-secret,bob:bob-secret   more principals
 */
import { parseArgs } from 'node:util';
import { localPrincipal } from '../lambdas/core/principal';
import { LOCAL_REGION, localKeys } from '../local/sigv4';
import { startLocalStack } from '../local/stack';

const USAGE = `usage: npm start -- [--port N] [--db-path DIR] [--table NAME] [--no-auth]

  --port N        HTTP port (default: $PORT or 3000)
  --ws-port N     WebSocket port (default: $WS_PORT or 3001)
  --db-path DIR   persist DynamoDB Local data in DIR (default: in memory)
  --table NAME    table name (default: latchkey-local)
  --no-auth       do not require SigV4 signatures (never expose this beyond localhost)
  --credentials KEY:SECRET,...   more SigV4 key pairs, each its own principal
                  (default: $LATCHKEY_LOCAL_CREDENTIALS; local:local is always accepted)
  --allowed-hosts NAME,...       Host names to serve besides localhost, 127.0.0.1 and ::1
  --sweep-every MS  run the session sweeper every MS ms (default: $SWEEP_INTERVAL_MS or 5000; 0: never)

Set AWS_ENDPOINT_URL_DYNAMODB to use a DynamoDB you already run instead of starting DynamoDB Local.`;

// The AWS SDK's notice that its 2027 releases need Node 22 says nothing about this local server.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      'ws-port': { type: 'string' },
      'db-path': { type: 'string' },
      table: { type: 'string' },
      'no-auth': { type: 'boolean', default: false },
      credentials: { type: 'string' },
      'allowed-hosts': { type: 'string' },
      'sweep-every': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const portOf = (value: string | undefined, fallback: number) => {
    const port = Number(value ?? fallback);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid port: ${value}`);
    return port;
  };
  const msOf = (value: string | undefined, fallback: number) => {
    const ms = Number(value ?? fallback);
    if (!Number.isInteger(ms) || ms < 0) throw new Error(`invalid interval: ${value}`);
    return ms;
  };
  const port = portOf(values.port ?? process.env.PORT, 3000);
  const wsPort = portOf(values['ws-port'] ?? process.env.WS_PORT, 3001);
  process.env.LOG_LEVEL ??= 'warn';

  const credentials = values.credentials ?? process.env.LATCHKEY_LOCAL_CREDENTIALS ?? '';
  const keys = localKeys(credentials); // refuses a malformed pair before anything starts
  const allowedHosts = (values['allowed-hosts'] ?? '').split(',').filter(Boolean);
  const stack = await startLocalStack({
    credentials,
    allowedHosts,
    port,
    wsPort,
    ...(values['db-path'] ? { dbPath: values['db-path'] } : {}),
    ...(values.table ? { tableName: values.table } : {}),
    auth: values['no-auth'] ? 'none' : 'sigv4',
    sweepIntervalMs: msOf(values['sweep-every'] ?? process.env.SWEEP_INTERVAL_MS, 5_000),
  });
  const auth = values['no-auth']
    ? 'auth OFF: unsigned requests are accepted'
    : `SigV4 required: region ${LOCAL_REGION}, service execute-api`;
  const principals = values['no-auth']
    ? []
    : [...keys.keys()].map((key) => `  principal      ${localPrincipal(key)}   (access key ${key})`);
  console.log(`latchkey is ready
  HTTP API       ${stack.url}/api/v1   (${auth})
${principals.join('\n')}${principals.length ? '\n' : ''}  WebSocket API  ${stack.wsUrl}?client_id=NAME   (waits; SigV4 on connect)
  DynamoDB       ${stack.dynamoEndpoint}   table ${stack.tableName}${values['db-path'] ? `, data in ${values['db-path']}` : ', in memory'}
  try:           curl -s --aws-sigv4 "aws:amz:${LOCAL_REGION}:execute-api" --user local:local ${stack.url}/api/v1/health
Press Ctrl-C to stop.`);

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${signal}: stopping latchkey`);
    stack.stop().then(
      () => process.exit(0),
      (error) => {
        console.error(error);
        process.exit(1);
      },
    );
  };
  // A local developer server logs what it did not expect and serves on (Lambda would fail the one call).
  process.on('unhandledRejection', (error) =>
    console.error('latchkey: unexpected failure (serving on):', error),
  );
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
}

main().catch((error: unknown) => {
  console.error(`latchkey: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
