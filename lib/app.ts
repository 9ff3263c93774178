import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { LatchkeyStack, type LatchkeyStackProps } from './latchkey-stack';

/**
 * The CDK app: the stack, checked by cdk-nag's AwsSolutions rules (findings fail synth).
 * It has no acknowledged findings; any future one goes here with `Validations.of(x).acknowledge({ id, reason })`.
 */
export function buildApp(app: App = new App(), props: LatchkeyStackProps = {}) {
  const stack = new LatchkeyStack(app, 'Latchkey', props);
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { app, stack };
}
