#!/usr/bin/env node
/**
 * `npm start`: the whole latchkey service on localhost.
 *
 *   npm start                       DynamoDB Local on scratch data (gone on stop), SigV4 required
 *   npm start -- --db-path ./data   keep the data between runs
 *   npm start -- --no-auth          accept unsigned requests
 *   npm start -- --credentials alice:alice-secret,bob:bob-secret   more principals
 */
import { parseArgs } from 'node:util';
import { parsePrefixes, prefixesProblem } from '../lambdas/core/hierarchy';
import { localPrincipal } from '../lambdas/core/principal';
import { checkPorts, portMessage } from '../local/ports';
import { LOCAL_REGION, localKeys } from '../local/sigv4';
import { startLocalStack } from '../local/stack';
import { lockPrefixProblem } from '../sdk/names';

const USAGE = `usage: npm start -- [--port N] [--db-path DIR] [--table NAME] [--no-auth]

  --port N        HTTP port (default: $PORT or 3000)
  --ws-port N     WebSocket port (default: $WS_PORT or 3001)
  --db-path DIR   persist DynamoDB Local data in DIR (default: scratch data, gone on stop)
  --table NAME    table name (default: latchkey-local)
  --no-auth       do not require SigV4 signatures (never expose this beyond localhost)
  --credentials KEY:SECRET,...   more SigV4 key pairs, each its own principal
                  (default: $LATCHKEY_LOCAL_CREDENTIALS; local:local is always accepted)
  --allowed-hosts NAME,...       Host names to serve besides localhost, 127.0.0.1 and ::1
  --sweep-every MS  run the session sweeper every MS ms (default: $SWEEP_INTERVAL_MS or 5000; 0: never)
  --hierarchical-prefixes P,...  namespaces where a lock covers the names below it, each ending
                  with '/' (default: $LATCHKEY_HIERARCHICAL_PREFIXES; none). README: "Hierarchies"

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
      'hierarchical-prefixes': { type: 'string' },
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
  await checkPorts({ port, wsPort });
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
    hierarchicalPrefixes: hierarchicalPrefixes(
      values['hierarchical-prefixes'] ?? process.env.LATCHKEY_HIERARCHICAL_PREFIXES,
    ),
  }).catch((error: NodeJS.ErrnoException & { port?: number }) => {
    // Taken between the check and the start: said the same way.
    throw error.syscall === 'listen' && error.port !== undefined
      ? new Error(portMessage({ port, wsPort }, error.port, error))
      : error;
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
  metrics        ${stack.url}/metrics   (Prometheus text, unsigned)
  DynamoDB       ${stack.dynamoEndpoint}   table ${stack.tableName}${values['db-path'] ? `, data in ${values['db-path']}` : ', scratch data (gone on stop)'}${stack.dynamoPid === undefined ? '' : `, pid ${stack.dynamoPid}`}
${stack.hierarchicalPrefixes.length ? `  hierarchies    ${stack.hierarchicalPrefixes.join(', ')}   (a lock covers the names below it)\n` : ''}  try:           curl -s --aws-sigv4 "aws:amz:${LOCAL_REGION}:execute-api" --user local:local ${stack.url}/api/v1/health
Press Ctrl-C to stop (or kill -INT ${process.pid}: this stack, DynamoDB Local with it).`);

  stopOnSignals(stack);
  // A local developer server logs what it did not expect and serves on (Lambda would fail the one call).
  process.on('unhandledRejection', (error) =>
    console.error('latchkey: unexpected failure (serving on):', error),
  );
}

/** The hierarchical namespaces asked for, refused before anything starts if unusable. */
function hierarchicalPrefixes(text: string | undefined): string[] {
  const prefixes = parsePrefixes(text);
  const problem = prefixesProblem(prefixes, lockPrefixProblem);
  if (problem) throw new Error(`--hierarchical-prefixes: ${problem}`);
  return prefixes;
}

/** How long stopping may take before the process exits anyway (DynamoDB Local is then killed). */
const STOP_TIMEOUT_MS = 10_000;

/**
 * Stops the stack, DynamoDB Local included, on SIGINT (Ctrl-C), SIGTERM or SIGHUP (the terminal
 * closed), and when the process that started this one exits (npm SIGKILLed, or the shell that a
 * start script without `exec` leaves between npm and node, ended by the SIGTERM npm forwards to
 * it). A second signal a second or more later, or a stop that takes over STOP_TIMEOUT_MS, exits
 * at once. DynamoDB Local is killed on exit, and by the kernel (or its watchdog) if this process
 * is killed.
 */
function stopOnSignals(stack: { stop(): Promise<void> }): void {
  let stoppingSince: number | undefined;
  let watch: NodeJS.Timeout | undefined;
  // With the terminal or npm gone, a message to them must not be what ends this process.
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => {});
  // process.exit runs the exit handlers: local/dynamodb-local.ts has one that kills the JVM.
  const shutdown = (why: string) => {
    if (stoppingSince !== undefined) {
      // Ctrl-C reaches this process twice at once (from the terminal, and forwarded by npm): only a
      // signal a moment later is someone asking again.
      if (Date.now() - stoppingSince < 1_000) return;
      console.error(`${why} again: exiting now`);
      process.exit(1);
    }
    stoppingSince = Date.now();
    clearInterval(watch);
    console.log(`\n${why}: stopping latchkey`);
    setTimeout(() => {
      console.error(`latchkey did not stop within ${STOP_TIMEOUT_MS / 1000} s: exiting`);
      process.exit(1);
    }, STOP_TIMEOUT_MS).unref();
    stack.stop().then(
      () => {
        console.log('latchkey stopped (DynamoDB Local too)');
        process.exit(0);
      },
      (error) => {
        console.error('latchkey: stopping failed:', error);
        process.exit(1);
      },
    );
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => shutdown(signal));
  const parent = process.ppid;
  if (parent > 1)
    watch = setInterval(() => {
      if (process.ppid !== parent) shutdown(`the process that started latchkey (pid ${parent}) exited`);
    }, 250).unref();
}

main().catch((error: unknown) => {
  console.error(`latchkey: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
