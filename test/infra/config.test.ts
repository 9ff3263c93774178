/**
 * The deployment's configuration from CDK context and config files (lib/config.ts): every prop is
 * a key, good values reach the template, bad ones stop synth with a message naming the key, the
 * value and what is allowed.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { describe, expect, it } from 'vitest';
import { buildApp } from '../../lib/app';
import {
  CONFIG_KEYS,
  type ConfigSources,
  configKeysMarkdown,
  EXCLUDED_PROPS,
  LatchkeyConfigError,
  PROP_KEYS,
  parseLatchkeyConfig,
} from '../../lib/config';

const NO_BUNDLING = { 'aws:cdk:bundling-stacks': [] };

/** The app as `cdk synth -c …` builds it (cdk.json's own context given, so sources are told apart). */
const synth = (context: Record<string, unknown>, sources: Omit<ConfigSources, 'context'> = {}) =>
  buildApp(new App({ context: { ...NO_BUNDLING, ...context } }), {}, { cdkJsonContext: {}, ...sources });

/** The error a configuration throws (fails the test if it throws none). */
const problemOf = (context: Record<string, unknown>, sources: Omit<ConfigSources, 'context'> = {}) => {
  try {
    parseLatchkeyConfig({ context, cdkJsonContext: {}, ...sources });
  } catch (error) {
    expect(error).toBeInstanceOf(LatchkeyConfigError);
    return (error as LatchkeyConfigError).message;
  }
  throw new Error(`no error for ${JSON.stringify(context)}`);
};

const envOf = (t: Template) =>
  Object.values(t.findResources('AWS::Lambda::Function')).map((fn) => fn.Properties.Environment.Variables);

describe('the keys', () => {
  it('are every LatchkeyProps prop, bar those excluded on purpose', () => {
    // The type of PROP_KEYS already demands this; the source is read too, so a test names a new prop.
    const source = readFileSync(new URL('../../lib/latchkey.ts', import.meta.url), 'utf8');
    const body = source.match(/export interface LatchkeyProps \{([\s\S]*?)\n\}/)?.[1] ?? '';
    const props = [...body.matchAll(/^ {2}readonly (\w+)\??:/gm)].map((m) => m[1]);
    expect(props.length).toBeGreaterThan(10);
    expect(
      [...Object.keys(PROP_KEYS), ...Object.keys(EXCLUDED_PROPS)].sort(),
      'a LatchkeyProps prop is neither in PROP_KEYS nor in EXCLUDED_PROPS (lib/config.ts)',
    ).toEqual(props.sort());
    expect(Object.keys(CONFIG_KEYS)).toEqual(['stage', 'config', ...Object.keys(PROP_KEYS)]);
  });

  it('have the README table generated from them (README: "Deploy to AWS")', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const block = readme.match(/<!-- config-keys -->\n([\s\S]*?)\n<!-- \/config-keys -->/)?.[1];
    expect(block, `README needs, between <!-- config-keys --> markers:\n${configKeysMarkdown()}`).toBe(
      configKeysMarkdown(),
    );
  });
});

describe('good configuration', () => {
  it('reaches the template: -c strings are parsed, the stage names the stack', () => {
    const { stack, config } = synth({
      stage: 'staging',
      maxTtlMs: '600000',
      minTtlMs: '2_000',
      priorityRange: '-10,10',
      maxQueueLength: '50',
      maxHttpWaits: '0',
      hierarchicalPrefixes: 'tenants/, jobs/',
      logRetention: '90',
      tableRemovalPolicy: 'destroy',
      reservedConcurrency: 'lockCommands=300,notifier=20',
      httpThrottle: '100,150',
      webSocketThrottle: '{"rateLimit": 30, "burstLimit": 60}',
      logLevel: 'warn',
    });
    expect(stack.stackName).toBe('Latchkey-staging');
    expect(config.stage).toBe('staging');
    const t = Template.fromStack(stack);
    for (const env of envOf(t))
      expect(env).toMatchObject({
        LOCK_MAX_TTL_MS: '600000',
        LOCK_MIN_TTL_MS: '2000',
        LOCK_MIN_PRIORITY: '-10',
        LOCK_MAX_PRIORITY: '10',
        MAX_QUEUE_LENGTH: '50',
        MAX_HTTP_WAITS: '0',
        HIERARCHICAL_PREFIXES: 'tenants/,jobs/',
        LOG_LEVEL: 'warn',
      });
    t.allResourcesProperties('AWS::Logs::LogGroup', { RetentionInDays: 90 });
    t.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Delete',
      Properties: { DeletionProtectionEnabled: false },
    });
    const reserved = Object.values(t.findResources('AWS::Lambda::Function')).map(
      (fn) => fn.Properties.ReservedConcurrentExecutions,
    );
    expect(reserved).toContain(300);
    expect(reserved).toContain(20);
    t.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      DefaultRouteSettings: { ThrottlingRateLimit: 100, ThrottlingBurstLimit: 150 },
    });
    t.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: 'v1',
      DefaultRouteSettings: { ThrottlingRateLimit: 30, ThrottlingBurstLimit: 60 },
    });
  });

  it('takes the JSON types of cdk.json and config files as they are', () => {
    expect(
      parseLatchkeyConfig({
        context: {
          maxTtlMs: 600_000,
          priorityRange: [-10, 10],
          reservedConcurrency: false,
          logRetention: 'infinite',
          httpThrottle: { rateLimit: 10, burstLimit: 20 },
        },
      }),
    ).toEqual({
      stage: 'dev',
      stackName: 'Latchkey-dev',
      props: {
        maxTtlMs: 600_000,
        priorityRange: [-10, 10],
        reservedConcurrency: false,
        logRetention: 9999,
        httpThrottle: { rateLimit: 10, burstLimit: 20 },
      },
    });
    expect(
      parseLatchkeyConfig({ context: { priorityRange: '[0, 0]', reservedConcurrency: 'false' } }),
    ).toEqual({
      stage: 'dev',
      stackName: 'Latchkey-dev',
      props: { priorityRange: [0, 0], reservedConcurrency: false },
    });
  });

  it('defaults to the stage dev, and leaves CDK context keys alone', () => {
    const { stack } = synth({
      '@aws-cdk/core:checkSecretUsage': true,
      'acknowledged-issue-numbers': [12345],
      'availability-zones:account=123456789012:region=us-east-1': ['us-east-1a'],
    });
    expect(stack.stackName).toBe('Latchkey-dev');
    for (const env of envOf(Template.fromStack(stack))) expect(env.LOCK_MAX_TTL_MS).toBe('3600000');
  });

  it('reads a config file; -c overrides it, and it overrides cdk.json', () => {
    const files: Record<string, string> = {
      '/repo/latchkey.prod.json': JSON.stringify({ stage: 'prod', maxTtlMs: 600_000, maxQueueLength: 10 }),
    };
    const readFile = (path: string) => {
      const content = files[path];
      if (content === undefined) throw new Error(`ENOENT: ${path}`);
      return content;
    };
    const sources = { readFile, cwd: '/repo' };
    // The file alone.
    expect(parseLatchkeyConfig({ ...sources, context: { config: 'latchkey.prod.json' } })).toMatchObject({
      stage: 'prod',
      stackName: 'Latchkey-prod',
      props: { maxTtlMs: 600_000, maxQueueLength: 10 },
      configFile: 'latchkey.prod.json',
    });
    // -c wins over the file (and values from both meet).
    const cdkJsonContext = { maxQueueLength: 99, maxWaitersPerConnection: 7 };
    expect(
      parseLatchkeyConfig({
        ...sources,
        cdkJsonContext,
        context: {
          config: 'latchkey.prod.json',
          maxTtlMs: '900000', // -c
          maxQueueLength: 99, // cdk.json: yields to the file
          maxWaitersPerConnection: 7, // cdk.json: the file does not say
        },
      }).props,
    ).toEqual({ maxTtlMs: 900_000, maxQueueLength: 10, maxWaitersPerConnection: 7 });
    // -c stage too; and the whole app, end to end.
    const { stack } = synth({ config: 'latchkey.prod.json', stage: 'prod2', maxTtlMs: '900000' }, sources);
    expect(stack.stackName).toBe('Latchkey-prod2');
    for (const env of envOf(Template.fromStack(stack)))
      expect(env).toMatchObject({ LOCK_MAX_TTL_MS: '900000', MAX_QUEUE_LENGTH: '10' });
  });
});

describe('bad configuration', () => {
  it('names the key, the value given, where it came from and what is allowed', () => {
    const message = problemOf({ maxTtlMs: 'abc' });
    expect(message).toContain('maxTtlMs = "abc" (-c): not an integer; allowed: integer ≥ 1 (ms)');
    expect(message).toMatch(/^latchkey: invalid configuration \(1 problem\):/);
  });

  it('refuses values out of range with the construct’s own rules', () => {
    expect(problemOf({ maxTtlMs: '-1' })).toContain(
      'maxTtlMs = "-1" (-c): maxTtlMs must be a positive integer',
    );
    expect(problemOf({ minTtlMs: '5000', maxTtlMs: '4000' })).toContain(
      'minTtlMs = "5000" (-c): minTtlMs (5000) must not exceed maxTtlMs (4000)',
    );
    // A default can be what breaks: named as such.
    expect(problemOf({ maxTtlMs: String(7 * 86_400_000) })).toContain(
      'lockRetentionSeconds (default 86400): the retention period (86400 s) must be at least 608400 s',
    );
    expect(problemOf({ reservedConcurrency: 'lockCommands=50' })).toContain(
      'maxHttpWaits (default 100): maxHttpWaits (100) must be below the lock-commands reserved concurrency (50)',
    );
    expect(problemOf({ priorityRange: '5,10' })).toContain('-100 <= min <= 0 <= max <= 100');
    expect(problemOf({ priorityRange: '1' })).toContain('priorityRange = "1" (-c): not two integers');
    expect(problemOf({ maxWaitersPerPrincipal: '8' })).toContain('at least 16');
    expect(problemOf({ httpThrottle: '0,10' })).toContain('httpThrottle must have a rateLimit > 0');
    expect(problemOf({ reservedConcurrency: 'notifier=0' })).toContain('reservedConcurrency.notifier');
  });

  it('maps enum-ish values explicitly, and lists what is allowed', () => {
    expect(problemOf({ logRetention: '31' })).toMatch(
      /logRetention = "31" \(-c\): not a retention CloudWatch Logs offers; allowed: days: one of 1, 3, 5, 7, 14, 30, .*, or infinite/,
    );
    expect(problemOf({ tableRemovalPolicy: 'keep' })).toContain(
      'tableRemovalPolicy = "keep" (-c): not a removal policy; allowed: retain | destroy | snapshot',
    );
    expect(problemOf({ reservedConcurrency: 'lockCommand=300' })).toContain(
      'no function "lockCommand"; did you mean lockCommands?',
    );
    expect(problemOf({ logLevel: 'verbose' })).toContain(
      'logLevel = "verbose" (-c): not one of debug, info, warn, error, silent',
    );
  });

  it('refuses unknown keys, suggesting the nearest', () => {
    expect(problemOf({ maxTTLms: '600000' })).toContain(
      'maxTTLms = "600000" (-c): unknown key; did you mean maxTtlMs?',
    );
    expect(problemOf({ 'max-queue-length': '5' })).toContain('did you mean maxQueueLength?');
    expect(problemOf({ retention: '5' })).toContain('did you mean logRetention?');
    expect(problemOf({ colour: 'blue' })).toContain('colour = "blue" (-c): unknown key; see the keys below');
    expect(problemOf({ maxTtlMs: 'abc' }, { cdkJsonContext: { maxTtlMs: 'abc' } })).toContain('(cdk.json)');
  });

  it('refuses a stage that is not a short lower-case name', () => {
    for (const stage of ['Prod!', 'prod_1', '', '-prod', 'prod-', 'a'.repeat(21)])
      expect(problemOf({ stage })).toContain(`stage = ${JSON.stringify(stage)} (-c): not a stage name`);
  });

  it('refuses a config file that is missing, not JSON, or holds unknown keys', () => {
    const readFile = (path: string) => {
      if (path.endsWith('bad.json')) return '{ maxTtlMs: 1 }';
      if (path.endsWith('typo.json')) return '{"maxTtlMS": 1, "config": "x.json"}';
      throw new Error(`ENOENT: no such file ${path}`);
    };
    expect(problemOf({ config: 'nope.json' }, { readFile, cwd: '/repo' })).toContain(
      'config = "nope.json" (-c): cannot read /repo/nope.json as JSON: ENOENT',
    );
    expect(problemOf({ config: 'bad.json' }, { readFile })).toContain('cannot read');
    const typo = problemOf({ config: 'typo.json' }, { readFile });
    expect(typo).toContain('maxTtlMS = 1 (config file typo.json): unknown key; did you mean maxTtlMs?');
    expect(typo).toContain('config = "x.json" (config file typo.json): a config file cannot name another');
  });

  it('lists every problem at once', () => {
    const message = problemOf({ maxTtlMs: 'abc', stage: 'Prod!', maxTTLms: 1 });
    expect(message).toContain('(3 problems)');
  });

  it('stops the real `cdk synth` with the message and no stack trace', () => {
    const run = spawnSync(
      'npx',
      ['cdk', 'synth', '-q', '--no-notices', '-c', 'maxTtlMs=abc', '-c', 'maxTTLms=5', '-c', 'stage=Prod!'],
      {
        cwd: new URL('../..', import.meta.url).pathname,
        env: {
          ...process.env,
          CDK_HOME: '.cdk',
          CDK_DISABLE_VERSION_CHECK: '1',
          CDK_DISABLE_CLI_TELEMETRY: '1',
        },
        encoding: 'utf8',
        timeout: 60_000,
      },
    );
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain('maxTtlMs = "abc" (-c): not an integer; allowed: integer ≥ 1 (ms)');
    expect(run.stderr).toContain('maxTTLms = "5" (-c): unknown key; did you mean maxTtlMs?');
    expect(run.stderr).toContain('stage = "Prod!" (-c): not a stage name');
    expect(run.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });
});
