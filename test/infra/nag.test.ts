/** cdk-nag's AwsSolutions rules: zero unacknowledged findings, and proof the check is live. */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App, Stack, Validations } from 'aws-cdk-lib';
import { AttributeType, Table } from 'aws-cdk-lib/aws-dynamodb';
import { AwsSolutionsChecks } from 'cdk-nag';
import { expect, it } from 'vitest';
import { buildApp } from '../../lib/app';

function synthReport(app: App): { threw: unknown; report: unknown } {
  let threw: unknown;
  try {
    app.synth();
  } catch (error) {
    threw = error;
  }
  const report = JSON.parse(readFileSync(join(app.outdir, 'validation-report.json'), 'utf8'));
  return { threw, report };
}

const freshApp = () =>
  new App({
    outdir: mkdtempSync(join(tmpdir(), 'latchkey-nag-')),
    context: { 'aws:cdk:bundling-stacks': [] },
  });

it('the latchkey stack synthesizes with no unacknowledged AwsSolutions finding', () => {
  const { app } = buildApp(freshApp());
  const { threw, report } = synthReport(app);
  expect(threw, JSON.stringify(report, null, 2)).toBeUndefined();
});

it('passes with tracing on and an alarm topic too (the X-Ray grants are acknowledged)', () => {
  const app = freshApp();
  app.node.setContext('tracing', 'true');
  app.node.setContext('alarmTopicArn', 'arn:aws:sns:eu-west-1:123456789012:ops-pager');
  const { app: built } = buildApp(app, {}, { cdkJsonContext: {} });
  const { threw, report } = synthReport(built);
  expect(threw, JSON.stringify(report, null, 2)).toBeUndefined();
});

it('the check is live: an unprotected table fails synth', () => {
  const app = freshApp();
  const stack = new Stack(app, 'Bad');
  new Table(stack, 'Bare', { partitionKey: { name: 'pk', type: AttributeType.STRING } });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  const { threw, report } = synthReport(app);
  expect(threw).toBeDefined();
  expect(JSON.stringify(report)).toContain('AwsSolutions-DDB3');
});
