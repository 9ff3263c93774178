import { App, Tags, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { type ConfigSources, type LatchkeyConfig, latchkeyConfig } from './config';
import { LatchkeyStack, type LatchkeyStackProps } from './latchkey-stack';

/**
 * The CDK app: one stack, `Latchkey-<stage>`, configured from CDK context (`-c key=value`, the
 * `context` block of cdk.json) and the config file `-c config=…` names (lib/config.ts); `props`
 * override both. Checked by cdk-nag's AwsSolutions rules (findings fail synth). It has no
 * acknowledged findings; any future one goes here with `Validations.of(x).acknowledge({ id, reason })`.
 * Account and region are the CLI's (the stack is environment-agnostic).
 *
 * Throws a LatchkeyConfigError (naming every bad key) when the configuration is invalid.
 */
export function buildApp(
  app: App = new App(),
  props: LatchkeyStackProps = {},
  sources: Omit<ConfigSources, 'context'> = {},
): { app: App; stack: LatchkeyStack; config: LatchkeyConfig } {
  const config = latchkeyConfig(app, sources);
  const stack = new LatchkeyStack(app, config.stackName, { ...config.props, ...props });
  Tags.of(stack).add('latchkey:stage', config.stage);
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { app, stack, config };
}
