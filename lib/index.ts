/**
 * latchkey's CDK side: the `Latchkey` construct (embed it in a stack of yours), the
 * `LatchkeyStack` that wraps it (what `cdk deploy` deploys), and the configuration parser
 * that reads their props from CDK context or a config file.
 */

export {
  APP_KEYS,
  CONFIG_KEYS,
  type ConfigKey,
  type ConfigProblem,
  type ConfigSources,
  configKeysMarkdown,
  DEFAULT_STAGE,
  EXCLUDED_PROPS,
  type LatchkeyConfig,
  LatchkeyConfigError,
  latchkeyConfig,
  PROP_KEYS,
  parseLatchkeyConfig,
  STAGE_PATTERN,
  stackNameFor,
} from './config';
export {
  DEFAULT_RESERVED_CONCURRENCY,
  LATCHKEY_DEFAULTS,
  Latchkey,
  type LatchkeyPropProblem,
  type LatchkeyProps,
  latchkeyPropProblems,
  type ReservedConcurrency,
  type Throttle,
} from './latchkey';
export { LatchkeyStack, type LatchkeyStackProps } from './latchkey-stack';
