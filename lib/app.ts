import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { LatchkeyStack, type LatchkeyStackProps } from './latchkey-stack';
import { acknowledgeNagFindings } from './nag-acknowledgements';

/** The CDK app: the stack, checked by cdk-nag's AwsSolutions rules (findings fail synth). */
export function buildApp(app: App = new App(), props: LatchkeyStackProps = {}) {
  const stack = new LatchkeyStack(app, 'Latchkey', props);
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  acknowledgeNagFindings(stack);
  return { app, stack };
}
