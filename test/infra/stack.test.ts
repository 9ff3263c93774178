/** The CloudFormation template: specific properties and least-privilege policies, not resource counts. */
import { App, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROUTES } from '../../lambdas/http/routes';
import { LatchkeyStack } from '../../lib/latchkey-stack';

let template: Template;
let stack: LatchkeyStack;

beforeAll(() => {
  // Skip esbuild bundling here; `npm run synth` (in CI) bundles for real.
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
  stack = new LatchkeyStack(app, 'Latchkey');
  template = Template.fromStack(stack);
});

const resolve = (value: unknown) => Stack.of(stack).resolve(value);

describe('lock table', () => {
  it('has the keys, index, TTL and stream the store expects, with secure defaults', () => {
    template.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
      Properties: {
        KeySchema: [
          { AttributeName: 'pk', KeyType: 'HASH' },
          { AttributeName: 'sk', KeyType: 'RANGE' },
        ],
        BillingMode: 'PAY_PER_REQUEST',
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        SSESpecification: { SSEEnabled: true },
        DeletionProtectionEnabled: true,
        TimeToLiveSpecification: { AttributeName: 'gc_at', Enabled: true },
        StreamSpecification: { StreamViewType: 'NEW_AND_OLD_IMAGES' },
        GlobalSecondaryIndexes: [
          {
            IndexName: 'by_name',
            KeySchema: [
              { AttributeName: 'list_pk', KeyType: 'HASH' },
              { AttributeName: 'list_sk', KeyType: 'RANGE' },
            ],
            Projection: { ProjectionType: 'KEYS_ONLY' },
          },
        ],
      },
    });
  });
});

describe('HTTP API', () => {
  it('routes every path of lambdas/http/routes.ts, each with IAM authorization', () => {
    const routes = template.findResources('AWS::ApiGatewayV2::Route');
    const keys = Object.values(routes)
      .map((r) => r.Properties.RouteKey)
      .sort();
    expect(keys).toEqual(ROUTES.map((r) => r.key).sort());
    for (const route of Object.values(routes)) expect(route.Properties.AuthorizationType).toBe('AWS_IAM');
  });

  it('logs access on the $default stage and throttles', () => {
    template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      AutoDeploy: true,
      AccessLogSettings: { DestinationArn: Match.anyValue(), Format: Match.stringLikeRegexp('requestId') },
      DefaultRouteSettings: { ThrottlingRateLimit: 1000, ThrottlingBurstLimit: 2000 },
    });
  });

  it('outputs the API URL and the table name', () => {
    template.hasOutput('ApiUrl', {});
    template.hasOutput('TableName', {});
  });
});

describe('functions', () => {
  it('run Node.js 24 on arm64 with the table name and lease bounds, and keep logs a month', () => {
    const functions = template.findResources('AWS::Lambda::Function');
    expect(Object.keys(functions)).toHaveLength(ROUTES.length);
    for (const fn of Object.values(functions)) {
      expect(fn.Properties).toMatchObject({
        Runtime: 'nodejs24.x',
        Architectures: ['arm64'],
        Handler: 'index.handler',
        Environment: {
          Variables: {
            TABLE_NAME: resolve(stack.table.table.tableName),
            LOCK_MIN_TTL_MS: '1000',
            LOCK_MAX_TTL_MS: '3600000',
          },
        },
      });
    }
    template.allResourcesProperties('AWS::Logs::LogGroup', { RetentionInDays: 30 });
  });

  it.each(ROUTES)('$module may do exactly its table actions, on this table only', (route) => {
    const fn = stack.httpApi.functions[route.module];
    expect(fn).toBeDefined();
    const roleId = stack.getLogicalId(fn?.fn.role?.node.defaultChild as never);
    const policies = Object.values(template.findResources('AWS::IAM::Policy')).filter((p) =>
      JSON.stringify(p.Properties.Roles).includes(roleId),
    );
    const statements = policies.flatMap((p) => p.Properties.PolicyDocument.Statement) as {
      Action: string | string[];
      Resource: unknown;
    }[];
    const actions = statements.flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]));
    const dynamo = actions.filter((a) => a.startsWith('dynamodb:')).sort();
    expect(dynamo).toEqual([...route.table, ...route.index].sort());
    expect(actions.filter((a) => !a.startsWith('dynamodb:')).sort()).toEqual([
      'logs:CreateLogStream',
      'logs:PutLogEvents',
    ]);
    const tableArn = resolve(stack.table.table.tableArn);
    for (const s of statements.filter((s) => String(s.Action).startsWith('dynamodb:'))) {
      const resource = JSON.stringify(s.Resource);
      expect(resource).toContain(JSON.stringify(tableArn).slice(1, -1));
      expect(resource).not.toContain('"*"');
    }
    // No managed policies (AWSLambdaBasicExecutionRole would grant logs on every group).
    const role = template.findResources('AWS::IAM::Role')[roleId];
    expect(role?.Properties.ManagedPolicyArns).toBeUndefined();
  });
});
