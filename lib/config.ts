/**
 * The deployment's configuration from CDK context (`cdk deploy -c stage=prod -c maxTtlMs=600000`,
 * or the `context` block of cdk.json) or a JSON config file (`-c config=latchkey.prod.json`).
 *
 * One table, {@link CONFIG_KEYS}, says for every key how it is written, parsed and documented; the
 * README's table is generated from it ({@link configKeysMarkdown}) and a test keeps the two equal.
 * Ranges and cross-checks are the construct's own ({@link latchkeyPropProblems}), so a bad value is
 * refused with the same words whether it came from code or from the command line.
 */
import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { RemovalPolicy } from 'aws-cdk-lib';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IConstruct } from 'constructs';
import { z } from 'zod';
import { LOG_LEVELS } from '../lambdas/shared/log';
import {
  DEFAULT_RESERVED_CONCURRENCY,
  LATCHKEY_DEFAULTS,
  type LatchkeyProps,
  latchkeyPropProblems,
  type ReservedConcurrency,
  type Throttle,
} from './latchkey';

/** The stage when none is given. */
export const DEFAULT_STAGE = 'dev';
/** The stack a stage deploys to: several stages live side by side in one account and region. */
export const stackNameFor = (stage: string) => `Latchkey-${stage}`;
/** A stage: 1 to 20 of a-z, 0-9 and '-', starting with a letter and not ending with '-'. */
export const STAGE_PATTERN = /^[a-z](?:[a-z0-9-]{0,18}[a-z0-9])?$/;

/** One configuration key: how it is written, parsed and documented. */
export interface ConfigKey<T> {
  /** What may be given, as after `-c key=` (errors and the docs show it). */
  readonly format: string;
  /** The default, as written after `-c key=`. */
  readonly default: string;
  readonly description: string;
  /** Parses a value: a string from `-c`, or any JSON value from cdk.json or a config file. */
  readonly schema: z.ZodType<T, unknown>;
}

/**
 * LatchkeyProps that are deliberately not configuration keys, with the reason. A new prop must be
 * added either to {@link PROP_KEYS} or here (the type of PROP_KEYS refuses to compile otherwise).
 */
export const EXCLUDED_PROPS = {
  alarmTopic: 'a construct (an SNS topic object), not a value: the alarmTopicArn key names one by ARN',
} as const satisfies Partial<Record<keyof LatchkeyProps, string>>;

type ConfigurableProp = Exclude<keyof LatchkeyProps, keyof typeof EXCLUDED_PROPS>;

// ---- parsers: a string from `-c`, or the JSON value itself ----

const INTEGER = /^[+-]?\d+(?:_\d{3})*$/;
const DECIMAL = /^[+-]?\d+(?:\.\d+)?$/;

/** Applies `parse` to strings (trimmed) and leaves other values for the schema to judge. */
const fromText = (parse: (text: string) => unknown) => (value: unknown) =>
  typeof value === 'string' ? parse(value.trim()) : value;

const json = (text: string): unknown => {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
};

const integer = z.preprocess(
  fromText((t) => (INTEGER.test(t) ? Number(t.replaceAll('_', '')) : t)),
  z.int({ error: 'not an integer' }),
);
const decimal = z.preprocess(
  fromText((t) => (DECIMAL.test(t) ? Number(t) : t)),
  z.number({ error: 'not a number' }).finite(),
);
const boolean = (value: unknown) =>
  typeof value === 'string' && /^(true|false)$/i.test(value.trim())
    ? value.trim().toLowerCase() === 'true'
    : value;

/** "a,b" or "[a, b]" (JSON) or an array. */
const listOf = (text: string): unknown =>
  text.startsWith('[') ? json(text) : text.split(',').map((s) => s.trim());

/** "k=v,k=v" or '{"k": v}' (JSON) or an object. */
const pairsOf = (text: string): unknown => {
  if (text.startsWith('{')) return json(text);
  const pairs = text.split(',').map((pair) => pair.split('=').map((s) => s.trim()));
  return pairs.every((p) => p.length === 2 && p[0]) ? Object.fromEntries(pairs) : text;
};

const priorityRange = z.preprocess(
  fromText(listOf),
  z
    .array(integer, { error: 'not a list' })
    .refine((range) => range.length === 2, 'not two integers')
    .transform((range) => range as unknown as readonly [number, number]),
);

/** "rate,burst", "rateLimit=…,burstLimit=…", JSON, or the object. */
const throttle: z.ZodType<Throttle, unknown> = z.preprocess(
  fromText((t) => (/^[[{]/.test(t) ? json(t) : t.includes('=') ? pairsOf(t) : listOf(t))),
  z.union(
    [
      z.tuple([decimal, integer]).transform(([rateLimit, burstLimit]) => ({ rateLimit, burstLimit })),
      z.strictObject({ rateLimit: decimal, burstLimit: integer }),
    ],
    { error: 'not a rate and a burst' },
  ),
);

const FUNCTIONS = Object.keys(DEFAULT_RESERVED_CONCURRENCY) as (keyof ReservedConcurrency)[];
const reservedObject = z.strictObject(
  Object.fromEntries(FUNCTIONS.map((f) => [f, integer.optional()])) as Record<
    keyof ReservedConcurrency,
    z.ZodOptional<typeof integer>
  >,
  {
    error: (issue) =>
      issue.code === 'unrecognized_keys'
        ? issue.keys.map((key) => `no function "${key}"${didYouMean(key, FUNCTIONS)}`).join('; ')
        : issue.code === 'invalid_type' && issue.path?.length === 0
          ? 'not false, nor names and numbers'
          : undefined,
  },
);
/** false, "false", "name=n,…", JSON, or the object. */
const reservedConcurrency: z.ZodType<false | ReservedConcurrency, unknown> = z
  .unknown()
  .transform((value, ctx) => {
    const given = boolean(typeof value === 'string' ? fromText(pairsOf)(value) : value);
    if (given === false) return false as const;
    const parsed = reservedObject.safeParse(given);
    if (parsed.success) return parsed.data as ReservedConcurrency;
    for (const issue of parsed.error.issues)
      ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path, input: value });
    return z.NEVER;
  });

const RETENTION_DAYS = Object.values(RetentionDays).filter((v): v is number => typeof v === 'number');
const logRetention: z.ZodType<RetentionDays, unknown> = z.preprocess(
  fromText((t) => {
    if (INTEGER.test(t)) return Number(t);
    if (/^(infinite|never)$/i.test(t)) return RetentionDays.INFINITE;
    const named = RetentionDays[t.toUpperCase().replace(/-/g, '_') as keyof typeof RetentionDays];
    return named ?? t;
  }),
  z
    .int({ error: 'not a number of days' })
    .refine((days) => RETENTION_DAYS.includes(days), 'not a retention CloudWatch Logs offers'),
) as never;

const REMOVAL_POLICIES = {
  retain: RemovalPolicy.RETAIN,
  destroy: RemovalPolicy.DESTROY,
  snapshot: RemovalPolicy.SNAPSHOT,
} as const;
const tableRemovalPolicy: z.ZodType<RemovalPolicy, unknown> = z.preprocess(
  (value) => (typeof value === 'string' ? value.trim().toLowerCase() : value),
  z
    .enum(Object.keys(REMOVAL_POLICIES) as [keyof typeof REMOVAL_POLICIES], { error: 'not a removal policy' })
    .transform((name) => REMOVAL_POLICIES[name]),
);

// ---- the table ----

const d = LATCHKEY_DEFAULTS;
const pairs = (o: object) =>
  Object.entries(o)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');

/** Every LatchkeyProps key (bar {@link EXCLUDED_PROPS}): the context key is the prop's own name. */
export const PROP_KEYS: { readonly [K in ConfigurableProp]-?: ConfigKey<NonNullable<LatchkeyProps[K]>> } = {
  minTtlMs: {
    format: 'integer ≥ 1 (ms), at most maxTtlMs',
    default: String(d.minTtlMs),
    description: 'shortest lease a client may ask for',
    schema: integer,
  },
  maxTtlMs: {
    format: 'integer ≥ 1 (ms)',
    default: String(d.maxTtlMs),
    description:
      'longest lease a client may ask for (past 23 h, raise lockRetentionSeconds with it: it must exceed the longest lease by an hour)',
    schema: integer,
  },
  lockRetentionSeconds: {
    format: 'integer (s) ≥ 86400 and ≥ 1 h more than maxTtlMs and the longest wait (2 h)',
    default: String(d.lockRetentionSeconds),
    description:
      'how long an item is kept once what it records has ended (also how long a request_id is remembered)',
    schema: integer,
  },
  logRetention: {
    format: `days: one of ${RETENTION_DAYS.filter((v) => v !== RetentionDays.INFINITE).join(', ')}, or infinite`,
    default: String(d.logRetention),
    description: 'retention of function and access logs',
    schema: logRetention,
  },
  tableRemovalPolicy: {
    format: Object.keys(REMOVAL_POLICIES).join(' | '),
    default: d.tableRemovalPolicy,
    description: 'what happens to the table when the stack is deleted (retain keeps deletion protection on)',
    schema: tableRemovalPolicy,
  },
  priorityRange: {
    format: 'min,max or [min,max]: integers, -100 ≤ min ≤ 0 ≤ max ≤ 100',
    default: d.priorityRange.join(','),
    description: 'the priorities callers may ask for (0,0: nobody jumps a queue)',
    schema: priorityRange,
  },
  maxQueueLength: {
    format: 'integer ≥ 1',
    default: String(d.maxQueueLength),
    description: "waiters in one lock's queue (429 QUEUE_FULL)",
    schema: integer,
  },
  maxWaitersPerConnection: {
    format: 'integer ≥ 1',
    default: String(d.maxWaitersPerConnection),
    description: 'waiters whose grant goes to one WebSocket connection (429 TOO_MANY_WAITERS)',
    schema: integer,
  },
  maxWaitersPerPrincipal: {
    format: 'integer ≥ 16',
    default: String(d.maxWaitersPerPrincipal),
    description: 'waiters of one IAM principal over all locks (429 TOO_MANY_WAITERS)',
    schema: integer,
  },
  maxHttpWaits: {
    format: 'integer ≥ 0, below reservedConcurrency lockCommands',
    default: String(d.maxHttpWaits),
    description: 'HTTP waits polling at once, service-wide (429 TOO_MANY_WAITS); 0: none',
    schema: integer,
  },
  hierarchicalPrefixes: {
    format: "prefix,… or a JSON list: each ends with '/', none inside another",
    default: '(none)',
    description: 'namespaces where a lock on a name covers the names below it (README: "Hierarchies")',
    schema: z.preprocess(
      fromText((t) => (t === '' ? [] : listOf(t))),
      z.array(z.string({ error: 'not a string' }), { error: 'not a list' }),
    ),
  },
  reservedConcurrency: {
    format: `false, or name=n,… (names: ${FUNCTIONS.join(', ')}; n ≥ 1) or a JSON object`,
    default: pairs(d.reservedConcurrency),
    description: 'reserved concurrency per function; names not given keep their default',
    schema: reservedConcurrency,
  },
  httpThrottle: {
    format: 'rate,burst (rate > 0 per second, burst integer ≥ 0) or {"rateLimit":…,"burstLimit":…}',
    default: `${d.httpThrottle.rateLimit},${d.httpThrottle.burstLimit}`,
    description: "the HTTP API stage's throttle over all callers",
    schema: throttle,
  },
  webSocketThrottle: {
    format: 'rate,burst (rate > 0 per second, burst integer ≥ 0) or {"rateLimit":…,"burstLimit":…}',
    default: `${d.webSocketThrottle.rateLimit},${d.webSocketThrottle.burstLimit}`,
    description: "the WebSocket API stage's throttle (messages and connects)",
    schema: throttle,
  },
  alarmTopicArn: {
    format: 'ARN of a standard SNS topic: arn:aws:sns:REGION:ACCOUNT:NAME',
    default: '(none)',
    description: 'where the alarms send their notifications and recoveries; none: alarms only change state',
    schema: z.string({ error: 'not an ARN' }).trim().min(1, 'empty'),
  },
  tracing: {
    format: 'true | false',
    default: String(d.tracing),
    description: "X-Ray active tracing of every function and its AWS SDK calls (HTTP APIs can't be traced)",
    schema: z.preprocess(boolean, z.boolean({ error: 'not true or false' })),
  },
  logLevel: {
    format: LOG_LEVELS.join(' | '),
    default: d.logLevel,
    description:
      "the functions' log level: warn drops the per-request summary lines, most of the log volume at scale",
    schema: z.enum(LOG_LEVELS, { error: `not one of ${LOG_LEVELS.join(', ')}` }),
  },
};

/** Keys of the app itself, not of the construct. */
export const APP_KEYS = {
  stage: {
    format: '1-20 of a-z 0-9 -, starting with a letter, not ending with -',
    default: DEFAULT_STAGE,
    description: 'the stage: the stack is named Latchkey-<stage>',
    schema: z.string({ error: 'not a string' }).trim().regex(STAGE_PATTERN, 'not a stage name'),
  },
  config: {
    format: 'path of a JSON file of these keys (relative to the directory cdk runs in)',
    default: '(none)',
    description: 'a config file; -c values override it, it overrides cdk.json',
    schema: z.string({ error: 'not a path' }).trim().min(1, 'empty'),
  },
} as const satisfies Record<string, ConfigKey<string>>;

/** Every key, app keys first: what `-c`, cdk.json's context and a config file may set. */
export const CONFIG_KEYS: Readonly<Record<string, ConfigKey<unknown>>> = { ...APP_KEYS, ...PROP_KEYS };

// ---- resolution ----

export interface LatchkeyConfig {
  readonly stage: string;
  /** `Latchkey-<stage>`. */
  readonly stackName: string;
  /** The props given (defaults left to the construct). */
  readonly props: LatchkeyProps;
  /** The config file read, if any. */
  readonly configFile?: string;
}

/** One thing wrong with the configuration. */
export interface ConfigProblem {
  readonly key: string;
  /** The value as given (undefined for a default or a key that is missing). */
  readonly value?: unknown;
  /** Where it came from: "-c", "cdk.json", "context", "config file …", or "default". */
  readonly source: string;
  readonly message: string;
}

/** The configuration is invalid: the message lists every problem, each naming its key. */
export class LatchkeyConfigError extends Error {
  override readonly name = 'LatchkeyConfigError';
  constructor(readonly problems: readonly ConfigProblem[]) {
    super(
      [
        `latchkey: invalid configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):`,
        ...problems.map((p) => `  ${describe(p)}`),
        `Keys: ${Object.keys(CONFIG_KEYS).join(', ')} (README: "Deploy to AWS").`,
      ].join('\n'),
    );
  }
}

const describe = (p: ConfigProblem) => {
  const given = p.value === undefined ? '' : ` = ${JSON.stringify(p.value)}`;
  return `${p.key}${given} (${p.source}): ${p.message}`;
};

export interface ConfigSources {
  /**
   * The CDK context: cdk.json's `context` block, cdk.context.json, ~/.cdk.json and `-c`, merged
   * (`app.node.getAllContext()`). Keys with a ':' or starting with '@' are CDK's and ignored.
   */
  readonly context: Readonly<Record<string, unknown>>;
  /**
   * cdk.json's own `context` block, when known: a context value equal to it came from cdk.json
   * and yields to a config file, while a `-c` value overrides the file. Without it, every
   * context value overrides the file.
   */
  readonly cdkJsonContext?: Readonly<Record<string, unknown>>;
  /** Reads the config file (default: from disk). */
  readonly readFile?: (path: string) => string;
  /** Where relative config file paths start (default: the working directory, where cdk runs the app). */
  readonly cwd?: string;
  /**
   * What to do with a context key that is not a latchkey key (and not CDK's): 'error' (the
   * default: a typo must not go unnoticed) or 'ignore' (an app of yours with keys of its own).
   */
  readonly unknownKeys?: 'error' | 'ignore';
}

/**
 * The stage and props the sources ask for, validated: unknown keys (with the nearest known one),
 * values that do not parse, and values out of range all throw one {@link LatchkeyConfigError}.
 */
export function parseLatchkeyConfig(sources: ConfigSources): LatchkeyConfig {
  const problems: ConfigProblem[] = [];
  const { context, cdkJsonContext } = sources;
  const fromCdkJson = (key: string) =>
    cdkJsonContext !== undefined &&
    Object.hasOwn(cdkJsonContext, key) &&
    JSON.stringify(cdkJsonContext[key]) === JSON.stringify(context[key]);
  const contextSource = (key: string) =>
    cdkJsonContext === undefined ? 'context' : fromCdkJson(key) ? 'cdk.json' : '-c';

  // Which keys the context sets; the rest of it is CDK's, or an unknown key.
  const fromContext: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(context)) {
    if (Object.hasOwn(CONFIG_KEYS, key)) fromContext[key] = value;
    else if (key.includes(':') || key.startsWith('@') || sources.unknownKeys === 'ignore') continue;
    else {
      const suggestion = didYouMean(key, Object.keys(CONFIG_KEYS));
      // CDK and its tools also keep keys like acknowledged-issue-numbers: only ours, or near ours, are errors.
      if (/^[a-z][A-Za-z0-9]*$/.test(key) || suggestion)
        problems.push({
          key,
          value,
          source: contextSource(key),
          message: `unknown key${suggestion || '; see the keys below'}`,
        });
    }
  }

  // The config file, if one is named.
  let configFile: string | undefined;
  const fromFile: Record<string, unknown> = {};
  if (fromContext.config !== undefined) {
    const parsed = APP_KEYS.config.schema.safeParse(fromContext.config);
    if (!parsed.success)
      problems.push({
        key: 'config',
        value: fromContext.config,
        source: contextSource('config'),
        message: `${parsed.error.issues[0]?.message}; allowed: ${APP_KEYS.config.format}`,
      });
    else {
      configFile = parsed.data;
      const source = `config file ${configFile}`;
      const path = isAbsolute(configFile) ? configFile : join(sources.cwd ?? process.cwd(), configFile);
      let content: unknown;
      try {
        content = JSON.parse((sources.readFile ?? ((p: string) => readFileSync(p, 'utf8')))(path));
      } catch (error) {
        problems.push({
          key: 'config',
          value: configFile,
          source: contextSource('config'),
          message: `cannot read ${path} as JSON: ${(error as Error).message}`,
        });
      }
      if (
        content !== undefined &&
        (typeof content !== 'object' || content === null || Array.isArray(content))
      )
        problems.push({ key: 'config', value: configFile, source, message: 'not a JSON object of keys' });
      else
        for (const [key, value] of Object.entries((content ?? {}) as Record<string, unknown>)) {
          if (key === 'config')
            problems.push({ key, value, source, message: 'a config file cannot name another' });
          else if (Object.hasOwn(CONFIG_KEYS, key)) fromFile[key] = value;
          else
            problems.push({
              key,
              value,
              source,
              message: `unknown key${didYouMean(key, Object.keys(CONFIG_KEYS)) || '; see the keys below'}`,
            });
        }
    }
  }

  // Each key from where it wins: -c over the file over cdk.json.
  const given: Record<string, { value: unknown; source: string }> = {};
  for (const key of Object.keys(CONFIG_KEYS)) {
    if (key === 'config') continue;
    const inContext = Object.hasOwn(fromContext, key);
    const inFile = Object.hasOwn(fromFile, key);
    if (inContext && !(inFile && fromCdkJson(key)))
      given[key] = { value: fromContext[key], source: contextSource(key) };
    else if (inFile) given[key] = { value: fromFile[key], source: `config file ${configFile}` };
  }

  const parsed: Record<string, unknown> = {};
  for (const [key, { value, source }] of Object.entries(given)) {
    const spec = CONFIG_KEYS[key] as ConfigKey<unknown>;
    const result = spec.schema.safeParse(value);
    if (result.success) parsed[key] = result.data;
    else {
      const issue = result.error.issues[0];
      const where = issue?.path.length ? `${issue.path.join('.')}: ` : '';
      problems.push({ key, value, source, message: `${where}${issue?.message}; allowed: ${spec.format}` });
    }
  }

  const { stage = DEFAULT_STAGE, ...props } = parsed as { stage?: string } & LatchkeyProps;
  // Ranges and cross-checks: the construct's own rules, once every value parsed.
  if (!problems.length)
    for (const { prop, message } of latchkeyPropProblems(props)) {
      const at = given[prop];
      // Problems name configurable props only (an excluded prop cannot come from the context).
      const spec = PROP_KEYS[prop as ConfigurableProp];
      problems.push({
        key: prop,
        value: at?.value,
        source: at?.source ?? `default ${spec.default}`,
        message: `${message.replace(`${prop}: `, '')}; allowed: ${spec.format}`,
      });
    }
  if (problems.length) throw new LatchkeyConfigError(problems);
  return { stage, stackName: stackNameFor(stage), props, ...(configFile ? { configFile } : {}) };
}

/**
 * The configuration a construct's app asks for: its CDK context (which the CLI fills from
 * cdk.json and `-c`), cdk.json in the working directory (to tell its values from `-c` ones), and
 * the config file named by `config`.
 */
export function latchkeyConfig(
  scope: IConstruct,
  options: Omit<ConfigSources, 'context'> = {},
): LatchkeyConfig {
  const cwd = options.cwd ?? process.cwd();
  return parseLatchkeyConfig({
    cdkJsonContext: readCdkJsonContext(cwd),
    ...options,
    cwd,
    context: scope.node.getAllContext(),
  });
}

/** The `context` block of `dir`/cdk.json, or undefined. */
export function readCdkJsonContext(dir: string): Record<string, unknown> | undefined {
  const file = join(dir, 'cdk.json');
  if (!existsSync(file)) return undefined;
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as { context?: Record<string, unknown> }).context ?? {};
  } catch {
    return undefined;
  }
}

/** "; did you mean X?" for the known name nearest `key` (ignoring case and punctuation), or "". */
export function didYouMean(key: string, known: readonly string[]): string {
  const norm = (s: string) => s.toLowerCase().replace(/[^a-z0-9]/g, '');
  let best: { name: string; distance: number } | undefined;
  for (const name of known) {
    const distance = editDistance(norm(key), norm(name));
    if (!best || distance < best.distance) best = { name, distance };
  }
  return best && best.distance <= Math.max(1, Math.floor(norm(best.name).length / 4))
    ? `; did you mean ${best.name}?`
    : '';
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++)
      row[j] = Math.min(
        (previous[j] as number) + 1,
        (row[j - 1] as number) + 1,
        (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    previous = row;
  }
  return previous[b.length] as number;
}

/** The keys as the README's Markdown table (test/infra/config.test.ts keeps the README equal to it). */
export function configKeysMarkdown(): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|');
  return [
    '| key | value | default | what it sets |',
    '| --- | --- | --- | --- |',
    ...Object.entries(CONFIG_KEYS).map(
      ([key, spec]) =>
        `| \`${key}\` | ${cell(spec.format)} | \`${cell(spec.default)}\` | ${cell(spec.description)} |`,
    ),
  ].join('\n');
}
