/**
 * Several deployments in one account: stages side by side (`Latchkey-<stage>`, nothing with a
 * fixed physical name), and the `Latchkey` construct inside a stack of one's own.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App, CfnOutput, Stack, type StackProps, Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { Construct } from 'constructs';
import { describe, expect, it } from 'vitest';
import { ROUTES } from '../../lambdas/http/routes';
import { WS_ROUTES } from '../../lambdas/ws/routes';
import { Latchkey, LatchkeyStack, stackNameFor } from '../../lib/index';

const NO_BUNDLING = { 'aws:cdk:bundling-stacks': [] };

/**
 * Properties that name a resource account- (or region-) wide: two stacks setting the same one
 * would collide. (API names may repeat, but are checked too so the console tells stages apart.)
 */
const PHYSICAL_NAMES: Record<string, string[]> = {
  'AWS::DynamoDB::Table': ['TableName'],
  'AWS::Lambda::Function': ['FunctionName'],
  'AWS::Logs::LogGroup': ['LogGroupName'],
  'AWS::SQS::Queue': ['QueueName'],
  'AWS::IAM::Role': ['RoleName'],
  'AWS::IAM::ManagedPolicy': ['ManagedPolicyName'],
  'AWS::Events::Rule': ['Name'],
  'AWS::ApiGatewayV2::Api': ['Name'],
  'AWS::SSM::Parameter': ['Name'],
  'AWS::SNS::Topic': ['TopicName'],
  'AWS::S3::Bucket': ['BucketName'],
  'AWS::KMS::Alias': ['AliasName'],
  'AWS::CloudWatch::Alarm': ['AlarmName'],
  'AWS::CloudWatch::Dashboard': ['DashboardName'],
  'AWS::CloudWatch::InsightRule': ['RuleName'],
};

/**
 * Names latchkey gives itself, unique per deployment (stack name, construct path and a hash): API
 * names (so the console tells stages apart), and the dashboard, alarms and Contributor Insights
 * rules (so an operator finds them; a rule must have a name).
 */
const DERIVED_NAMES = new Set([
  'AWS::ApiGatewayV2::Api',
  'AWS::CloudWatch::Alarm',
  'AWS::CloudWatch::Dashboard',
  'AWS::CloudWatch::InsightRule',
]);

const namesIn = (t: Template) =>
  Object.values(
    t.toJSON().Resources as Record<string, { Type: string; Properties?: Record<string, unknown> }>,
  )
    .flatMap((r) =>
      (PHYSICAL_NAMES[r.Type] ?? []).map((prop) => [r.Type, prop, r.Properties?.[prop]] as const),
    )
    .filter(([, , value]) => value !== undefined);

/** Route keys (and authorization) of one API in a template. */
const routesOf = (t: Template, apiId: unknown) =>
  Object.fromEntries(
    Object.values(t.findResources('AWS::ApiGatewayV2::Route'))
      .filter((r) => JSON.stringify(r.Properties.ApiId) === JSON.stringify(apiId))
      .map((r) => [r.Properties.RouteKey as string, r.Properties.AuthorizationType as string]),
  );

describe('stages side by side', () => {
  it('are two stacks with distinct names and no physical name in common', () => {
    const app = new App({ context: NO_BUNDLING });
    const staging = new LatchkeyStack(app, stackNameFor('staging'));
    const prod = new LatchkeyStack(app, stackNameFor('prod'), { maxTtlMs: 600_000 });
    expect([staging.stackName, prod.stackName]).toEqual(['Latchkey-staging', 'Latchkey-prod']);
    const [a, b] = [Template.fromStack(staging), Template.fromStack(prod)];
    // Nothing that must be unique is named by hand: CloudFormation names it from the stack.
    for (const [type, prop, value] of namesIn(a))
      expect(DERIVED_NAMES.has(type), `${type}.${prop} = ${JSON.stringify(value)}`).toBe(true);
    const literal = (t: Template) =>
      namesIn(t).map(([type, prop, value]) => `${type}.${prop}=${JSON.stringify(value)}`);
    const shared = literal(a).filter((name) => literal(b).includes(name));
    expect(shared).toEqual([]);
    const derived = [
      'AWS::ApiGatewayV2::Api',
      'AWS::CloudWatch::Alarm',
      'AWS::CloudWatch::Dashboard',
      'AWS::CloudWatch::InsightRule',
    ];
    const count = (type: string) => Object.keys(a.findResources(type)).length;
    // Every one of them stage-derived.
    expect(literal(a)).toHaveLength(derived.reduce((sum, type) => sum + count(type), 0));
    for (const name of literal(a)) expect(name).toContain('Latchkey-staging');
    // Outputs keep their names in every stage (the CLI reads ApiUrl, WebSocketUrl, MetricNamespace).
    for (const t of [a, b])
      expect(Object.keys(t.toJSON().Outputs).sort()).toEqual([
        'ApiUrl',
        'MetricNamespace',
        'TableName',
        'WebSocketUrl',
      ]);
    // Nor do their metrics mix: each stage's functions write, and its alarms read, its own namespace.
    expect([a, b].map((t) => t.toJSON().Outputs.MetricNamespace.Value)).toEqual([
      'Latchkey/Latchkey-staging',
      'Latchkey/Latchkey-prod',
    ]);
    for (const [t, namespace] of [
      [a, 'Latchkey/Latchkey-staging'],
      [b, 'Latchkey/Latchkey-prod'],
    ] as const)
      t.hasResourceProperties('AWS::CloudWatch::Alarm', { Namespace: namespace, MetricName: 'SweeperLag' });
  });
});

/** A stack of a user's own, with the locks inside it and policies written from its properties. */
class MyServiceStack extends Stack {
  readonly locks: Latchkey;
  constructor(scope: Construct, id: string, props?: StackProps) {
    super(scope, id, props);
    this.locks = new Latchkey(this, 'Locks', { maxTtlMs: 600_000 });
    new CfnOutput(this, 'LocksUrl', { value: this.locks.httpUrl });
    new CfnOutput(this, 'LocksWsUrl', { value: this.locks.wsUrl });
    new CfnOutput(this, 'JobsLocks', { value: this.locks.httpInvokeArn('POST', '/api/v1/locks/jobs/*') });
    new CfnOutput(this, 'Connect', { value: this.locks.webSocketConnectArn });
  }
}

describe('the Latchkey construct in a stack of ones own', () => {
  const app = new App({ outdir: mkdtempSync(join(tmpdir(), 'latchkey-embed-')), context: NO_BUNDLING });
  const stack = new MyServiceStack(app, 'MyService');
  const { locks } = stack;
  const t = Template.fromStack(stack);
  const resolve = (v: unknown) => stack.resolve(v);

  it('has the one table and every route, IAM-authorized', () => {
    t.resourceCountIs('AWS::DynamoDB::Table', 1);
    const http = routesOf(t, resolve(locks.httpApiId));
    expect(Object.keys(http).sort()).toEqual(ROUTES.map((r) => r.key).sort());
    for (const auth of Object.values(http)) expect(auth).toBe('AWS_IAM');
    const ws = routesOf(t, resolve(locks.webSocketApiId));
    expect(Object.keys(ws).sort()).toEqual(WS_ROUTES.map((r) => r.key).sort());
    expect(ws.$connect).toBe('AWS_IAM');
  });

  it('takes its props, and gives what policies and clients need as properties', () => {
    for (const fn of Object.values(t.findResources('AWS::Lambda::Function')))
      expect(fn.Properties.Environment.Variables).toMatchObject({
        TABLE_NAME: resolve(locks.table.tableName),
        LOCK_MAX_TTL_MS: '600000',
      });
    expect(Object.keys(locks.functions).sort()).toEqual(
      [
        ...new Set([...ROUTES, ...WS_ROUTES].map((r) => r.module)),
        'stream/notifier',
        'schedule/timer',
        'schedule/sweeper',
      ].sort(),
    );
    const outputs = t.toJSON().Outputs as Record<string, { Value: unknown }>;
    const arn = JSON.stringify(outputs.JobsLocks?.Value);
    expect(arn).toContain(':execute-api:');
    expect(arn).toContain(JSON.stringify(resolve(locks.httpApiId)).slice(1, -1));
    expect(arn).toContain('/*/POST/api/v1/locks/jobs/*');
    expect(JSON.stringify(outputs.Connect?.Value)).toContain('/v1/$connect');
    expect(outputs.LocksUrl?.Value).toEqual(resolve(locks.httpUrl));
    // The stack's own outputs are the wrapper's business, not the construct's.
    expect(Object.keys(outputs).sort()).toEqual(['Connect', 'JobsLocks', 'LocksUrl', 'LocksWsUrl']);
  });

  it('passes cdk-nag in that stack too (its acknowledgements travel with it)', () => {
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    let threw: unknown;
    try {
      app.synth({ force: true }); // Template.fromStack synthesized it once already, before the checks
    } catch (error) {
      threw = error;
    }
    const report = readFileSync(join(app.outdir, 'validation-report.json'), 'utf8');
    expect(threw, report).toBeUndefined();
  });
});
