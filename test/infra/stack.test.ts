/** The CloudFormation template: specific properties and least-privilege policies, not resource counts. */
import { App, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROUTES } from '../../lambdas/http/routes';
import { type FunctionSpec, NOTIFIER, SWEEPER, TIMER } from '../../lambdas/shared/function-spec';
import { PARTITIONS } from '../../lambdas/store/table';
import { WS_ROUTES } from '../../lambdas/ws/routes';
import type { LockFunction } from '../../lib/constructs/lock-function';
import type { Latchkey } from '../../lib/latchkey';
import { LatchkeyStack } from '../../lib/latchkey-stack';

let template: Template;
let stack: LatchkeyStack;
let locks: Latchkey;

beforeAll(() => {
  // Skip esbuild bundling here; `npm run synth` (in CI) bundles for real.
  const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
  stack = new LatchkeyStack(app, 'Latchkey-test');
  locks = stack.latchkey;
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
          {
            IndexName: 'by_owner',
            KeySchema: [
              { AttributeName: 'owner', KeyType: 'HASH' },
              { AttributeName: 'owner_sk', KeyType: 'RANGE' },
            ],
            Projection: { ProjectionType: 'KEYS_ONLY' },
          },
          {
            IndexName: 'by_due',
            KeySchema: [
              { AttributeName: 'due_bucket', KeyType: 'HASH' },
              { AttributeName: 'due_at', KeyType: 'RANGE' },
            ],
            Projection: { ProjectionType: 'KEYS_ONLY' },
          },
        ],
      },
    });
  });
});

describe('sweeper', () => {
  it('runs every minute from an EventBridge rule, with retries', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 minute)',
      State: 'ENABLED',
      Targets: [
        Match.objectLike({
          Arn: resolve(locks.sweeper.function.fn.functionArn),
          RetryPolicy: { MaximumRetryAttempts: 2 },
        }),
      ],
    });
    template.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunction',
      Principal: 'events.amazonaws.com',
      FunctionName: resolve(locks.sweeper.function.fn.functionArn),
    });
  });
});

describe('HTTP API', () => {
  it('routes every path of lambdas/http/routes.ts, each with IAM authorization', () => {
    const httpApiId = resolve(locks.httpApi.api.apiId);
    const routes = Object.values(template.findResources('AWS::ApiGatewayV2::Route')).filter(
      (r) => JSON.stringify(r.Properties.ApiId) === JSON.stringify(httpApiId),
    );
    const keys = routes.map((r) => r.Properties.RouteKey).sort();
    expect(keys).toEqual(ROUTES.map((r) => r.key).sort());
    for (const route of routes) expect(route.Properties.AuthorizationType).toBe('AWS_IAM');
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

describe('WebSocket API', () => {
  const wsRoutes = () => {
    const apiId = JSON.stringify(resolve(locks.webSocketApi.api.apiId));
    return Object.values(template.findResources('AWS::ApiGatewayV2::Route')).filter(
      (r) => JSON.stringify(r.Properties.ApiId) === apiId,
    );
  };

  it('has $connect (IAM-authorized), $disconnect and $default, selecting on the body action', () => {
    template.hasResourceProperties('AWS::ApiGatewayV2::Api', {
      ProtocolType: 'WEBSOCKET',
      RouteSelectionExpression: '$request.body.action',
    });
    const byKey = Object.fromEntries(wsRoutes().map((r) => [r.Properties.RouteKey, r.Properties]));
    expect(Object.keys(byKey).sort()).toEqual(WS_ROUTES.map((r) => r.key).sort());
    expect(byKey.$connect?.AuthorizationType).toBe('AWS_IAM');
  });

  it('logs access and throttles on its stage, and outputs its URL', () => {
    template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: 'v1',
      AutoDeploy: true,
      AccessLogSettings: { DestinationArn: Match.anyValue(), Format: Match.stringLikeRegexp('connectionId') },
      DefaultRouteSettings: { ThrottlingRateLimit: 500, ThrottlingBurstLimit: 1000 },
    });
    template.hasOutput('WebSocketUrl', {});
  });

  it("lets the acquire function's relay connect to it, and only that function", () => {
    const relaying = allFunctions().filter(([spec]) => spec.relays);
    expect(relaying.map(([spec]) => spec.module)).toEqual(['http/lock-commands']);
    const fn = relaying[0]?.[1] as LockFunction;
    const wsApiId = stack.getLogicalId(locks.webSocketApi.api.node.defaultChild as never);
    const props =
      template.toJSON().Resources[stack.getLogicalId(fn.fn.node.defaultChild as never)].Properties;
    expect(JSON.stringify(props.Environment.Variables.WS_RELAY_URL)).toMatch(
      new RegExp(`^\\{"Fn::Join":\\["",\\["wss://",\\{"Ref":"${wsApiId}"\\}.*"/v1"\\]\\]\\}$`),
    );
  });
});

describe('handoff', () => {
  it('feeds the notifier from the table stream with bisection, bounded retries and an on-failure queue', () => {
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: resolve(locks.table.tableStreamArn),
      FunctionName: resolve(locks.handoff.notifier.fn.functionName),
      StartingPosition: 'TRIM_HORIZON',
      BisectBatchOnFunctionError: true,
      MaximumRetryAttempts: 5,
      DestinationConfig: {
        OnFailure: { Destination: resolve(locks.handoff.streamFailures.queueArn) },
      },
    });
  });

  it('delivers timers from an encrypted SQS queue with a dead-letter queue, reporting failures per message', () => {
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: resolve(locks.handoff.timerQueue.queueArn),
      FunctionName: resolve(locks.handoff.timer.fn.functionName),
      FunctionResponseTypes: ['ReportBatchItemFailures'],
    });
    template.hasResourceProperties('AWS::SQS::Queue', {
      SqsManagedSseEnabled: true,
      RedrivePolicy: {
        deadLetterTargetArn: resolve(locks.handoff.timerDeadLetters.queueArn),
        maxReceiveCount: 5,
      },
    });
  });
});

/** Every function with its spec (routes that share a handler module share its function). */
const allFunctions = (): [FunctionSpec, LockFunction | undefined][] => [
  ...ROUTES.filter((r, i) => ROUTES.findIndex((o) => o.module === r.module) === i).map(
    (r): [FunctionSpec, LockFunction | undefined] => [r, locks.httpApi.functions[r.module]],
  ),
  ...WS_ROUTES.map((r): [FunctionSpec, LockFunction | undefined] => [
    r,
    locks.webSocketApi.functions[r.module],
  ]),
  [NOTIFIER, locks.handoff.notifier],
  [TIMER, locks.handoff.timer],
  [SWEEPER, locks.sweeper.function],
];

describe('functions', () => {
  it('run Node.js 24 on arm64 with the table name and lease bounds, and keep logs a month', () => {
    const functions = template.findResources('AWS::Lambda::Function');
    expect(Object.keys(functions)).toHaveLength(allFunctions().length);
    for (const fn of Object.values(functions)) {
      expect(fn.Properties).toMatchObject({
        Runtime: 'nodejs24.x',
        Architectures: ['arm64'],
        Handler: 'index.handler',
        Environment: {
          Variables: {
            TABLE_NAME: resolve(locks.table.tableName),
            LOCK_MIN_TTL_MS: '1000',
            LOCK_MAX_TTL_MS: '3600000',
          },
        },
      });
    }
    template.allResourcesProperties('AWS::Logs::LogGroup', { RetentionInDays: 30 });
  });

  it.each([...new Set([...ROUTES, ...WS_ROUTES, NOTIFIER, TIMER, SWEEPER].map((spec) => spec.module))])(
    '%s may do exactly what its spec names',
    (module) => {
      const [route, fn] = allFunctions().find(([spec]) => spec.module === module) as [
        FunctionSpec,
        LockFunction,
      ];
      expect(fn).toBeDefined();
      const roleId = stack.getLogicalId(fn?.fn.role?.node.defaultChild as never);
      const policies = Object.values(template.findResources('AWS::IAM::Policy')).filter((p) =>
        JSON.stringify(p.Properties.Roles).includes(roleId),
      );
      const statements = policies.flatMap((p) => p.Properties.PolicyDocument.Statement) as {
        Action: string | string[];
        Resource: unknown;
        Condition?: Record<string, Record<string, unknown>>;
      }[];
      const actions = statements.flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]));
      // The event sources add their own reads (stream, queue); everything else comes from the spec.
      const STREAM_READS = [
        'dynamodb:DescribeStream',
        'dynamodb:GetRecords',
        'dynamodb:GetShardIterator',
        'dynamodb:ListStreams',
      ];
      const dynamo = actions.filter((a) => a.startsWith('dynamodb:') && !STREAM_READS.includes(a)).sort();
      expect(dynamo).toEqual([...route.table, ...Object.values(route.indexes ?? {}).flat()].sort());
      const others = actions.filter(
        (a) =>
          !a.startsWith('dynamodb:') &&
          !a.startsWith('sqs:Receive') &&
          !a.startsWith('sqs:ChangeMessage') &&
          !a.startsWith('sqs:DeleteMessage') &&
          !a.startsWith('sqs:GetQueue'),
      );
      expect(new Set(others)).toEqual(
        new Set([
          'logs:CreateLogStream',
          'logs:PutLogEvents',
          ...(route.pushes ? ['execute-api:ManageConnections'] : []),
          ...(route.relays ? ['execute-api:Invoke'] : []),
          ...(route.schedules ? ['sqs:SendMessage'] : []),
          ...(route === NOTIFIER ? ['sqs:SendMessage'] : []), // the stream's on-failure queue
        ]),
      );
      if (route.pushes) {
        const push = statements.find((s) => s.Action === 'execute-api:ManageConnections');
        expect(JSON.stringify(push?.Resource)).toContain('/v1/POST/@connections/*');
      }
      // A relay opens a connection to the WebSocket API: $connect of its stage, nothing else.
      const wsApiId = stack.getLogicalId(locks.webSocketApi.api.node.defaultChild as never);
      const variables = (template.toJSON().Resources[stack.getLogicalId(fn.fn.node.defaultChild as never)]
        .Properties.Environment.Variables ?? {}) as Record<string, unknown>;
      if (route.relays) {
        const invoke = statements.find((s) => s.Action === 'execute-api:Invoke');
        const resource = JSON.stringify(invoke?.Resource);
        expect(resource).toContain('/v1/$connect');
        expect(resource).toContain(`"${wsApiId}"`);
        expect(JSON.stringify(variables.WS_RELAY_URL)).toContain(`"${wsApiId}"`);
        expect(JSON.stringify(variables.WS_RELAY_URL)).toMatch(/wss:\/\/.*\/v1/);
      } else expect(variables.WS_RELAY_URL).toBeUndefined();
      // Whoever serves a queue arms its lock's timer: the queue's URL and the right to send to it.
      const timerQueueId = stack.getLogicalId(locks.handoff.timerQueue.node.defaultChild as never);
      if (route.schedules) {
        expect(JSON.stringify(variables.TIMER_QUEUE_URL)).toContain(`"${timerQueueId}"`);
        const send = statements.find((s) => JSON.stringify(s.Action).includes('sqs:SendMessage'));
        expect(JSON.stringify(send?.Resource)).toContain(`"${timerQueueId}"`);
      } else expect(variables.TIMER_QUEUE_URL).toBeUndefined();
      const tableId = stack.getLogicalId(locks.table.node.defaultChild as never);
      for (const s of statements.filter(
        (s) => String(s.Action).startsWith('dynamodb:') && s.Action !== 'dynamodb:ListStreams',
      )) {
        const resource = JSON.stringify(s.Resource);
        // The table (or, for the notifier's stream reads, its stream), never anything else.
        expect(resource).toContain(`"${tableId}"`);
        expect(resource).not.toContain('"*"');
      }
      // Table actions only on the partitions the spec names (dynamodb:LeadingKeys).
      const onTable = statements.filter(
        (s) =>
          String(s.Action).startsWith('dynamodb:') &&
          !JSON.stringify(s.Resource).includes('/index/') &&
          !JSON.stringify(s.Resource).includes('StreamArn') &&
          s.Action !== 'dynamodb:ListStreams',
      );
      for (const s of onTable)
        expect(s.Condition, `${module}: ${JSON.stringify(s.Action)}`).toEqual({
          'ForAllValues:StringLike': {
            'dynamodb:LeadingKeys': route.partitions.map((p) => `${PARTITIONS[p]}*`),
          },
        });
      // A function that may grant a waiter (it writes locks and pushes) frees a granted HTTP waiter's
      // slot beside the ring that carries the grant: a role without the slots' partition would be
      // refused that write on AWS (the local stack enforces no IAM), leaving the slot taken.
      if (route.pushes && route.partitions.includes('lock')) expect(route.partitions).toContain('httpWait');
      // No managed policies (AWSLambdaBasicExecutionRole would grant logs on every group).
      const role = template.findResources('AWS::IAM::Role')[roleId];
      expect(role?.Properties.ManagedPolicyArns).toBeUndefined();
    },
  );
});

describe('retention', () => {
  it('refuses at synth time a retention too short for the longest lease or wait', () => {
    const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
    expect(() => new LatchkeyStack(app, 'Short', { lockRetentionSeconds: 3_600 })).toThrow(
      /lockRetentionSeconds: the retention period \(3600 s\) must be at least 86400 s/,
    );
    expect(() => new LatchkeyStack(app, 'LongLeases', { maxTtlMs: 7 * 86_400_000 })).toThrow(
      /must be at least 608400 s/,
    );
    expect(
      () => new LatchkeyStack(app, 'Fine', { maxTtlMs: 7 * 86_400_000, lockRetentionSeconds: 8 * 86_400 }),
    ).not.toThrow();
  });
});

describe('limits', () => {
  const reservedOf = (t: Template) =>
    Object.fromEntries(
      Object.values(t.findResources('AWS::Lambda::Function')).map((fn) => [
        String(fn.Properties.Description).replace(/^latchkey: /, ''),
        fn.Properties.ReservedConcurrentExecutions,
      ]),
    );

  it('caps lock-commands and keeps room for the notifier, the timer and the sweeper', () => {
    const lockCommands = ROUTES.find((r) => r.module === 'http/lock-commands')?.description as string;
    const reserved = reservedOf(template);
    expect(reserved[lockCommands]).toBe(200);
    expect(reserved[NOTIFIER.description]).toBe(50);
    expect(reserved[TIMER.description]).toBe(20);
    expect(reserved[SWEEPER.description]).toBe(2);
    const others = Object.entries(reserved).filter(
      ([d]) => ![lockCommands, NOTIFIER.description, TIMER.description, SWEEPER.description].includes(d),
    );
    for (const [description, value] of others) expect(value, description).toBeUndefined();
    // The timer's queue is never polled faster than its room (a throttled batch would count toward its DLQ).
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      ScalingConfig: { MaximumConcurrency: 20 },
    });
  });

  it('passes every limit to the functions, and takes them and the throttles from the stack props', () => {
    const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
    const custom = new LatchkeyStack(app, 'Custom', {
      priorityRange: [-5, 10],
      maxQueueLength: 50,
      maxWaitersPerConnection: 5,
      maxWaitersPerPrincipal: 500,
      maxHttpWaits: 10,
      reservedConcurrency: { lockCommands: 40, notifier: 5 },
      httpThrottle: { rateLimit: 100, burstLimit: 150 },
      webSocketThrottle: { rateLimit: 30, burstLimit: 60 },
    });
    const t = Template.fromStack(custom);
    for (const fn of Object.values(t.findResources('AWS::Lambda::Function')))
      expect(fn.Properties.Environment.Variables).toMatchObject({
        LOCK_MIN_PRIORITY: '-5',
        LOCK_MAX_PRIORITY: '10',
        MAX_QUEUE_LENGTH: '50',
        MAX_WAITERS_PER_CONNECTION: '5',
        MAX_WAITERS_PER_PRINCIPAL: '500',
        MAX_HTTP_WAITS: '10',
      });
    const reserved = reservedOf(t);
    expect(reserved[ROUTES.find((r) => r.module === 'http/lock-commands')?.description as string]).toBe(40);
    expect(reserved[NOTIFIER.description]).toBe(5);
    expect(reserved[TIMER.description]).toBe(20); // not given: the default
    t.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      DefaultRouteSettings: { ThrottlingRateLimit: 100, ThrottlingBurstLimit: 150 },
    });
    t.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: 'v1',
      DefaultRouteSettings: { ThrottlingRateLimit: 30, ThrottlingBurstLimit: 60 },
    });
  });

  it('reserves nothing when told not to, and refuses limits that make no sense', () => {
    const app = new App({ context: { 'aws:cdk:bundling-stacks': [] } });
    const none = Template.fromStack(new LatchkeyStack(app, 'NoReserve', { reservedConcurrency: false }));
    for (const value of Object.values(reservedOf(none))) expect(value).toBeUndefined();
    expect(() => new LatchkeyStack(app, 'Waits', { maxHttpWaits: 200 })).toThrow(
      /maxHttpWaits \(200\) must be below/,
    );
    expect(() => new LatchkeyStack(app, 'Prio', { priorityRange: [5, -5] })).toThrow(/priorityRange/);
    expect(() => new LatchkeyStack(app, 'Prio2', { priorityRange: [-101, 0] })).toThrow(/priorityRange/);
    // 0, the priority of a request that names none, must stay in the range.
    expect(() => new LatchkeyStack(app, 'Prio3', { priorityRange: [-20, -10] })).toThrow(/<= 0 <=/);
    expect(() => new LatchkeyStack(app, 'Principal', { maxWaitersPerPrincipal: 8 })).toThrow(/at least 16/);
    expect(() => new LatchkeyStack(app, 'Hier1', { hierarchicalPrefixes: ['tenants'] })).toThrow(
      /hierarchicalPrefixes|must end with '\/'/,
    );
    expect(() => new LatchkeyStack(app, 'Hier2', { hierarchicalPrefixes: ['jobs/', 'jobs/a/'] })).toThrow(
      /lies inside/,
    );
    expect(() => new LatchkeyStack(app, 'Queue', { maxQueueLength: 0 })).toThrow(/maxQueueLength/);
  });
});

describe('admin routes', () => {
  it('are routes of their own, IAM-authorized, with functions of their own that no client route reaches', () => {
    const routes = Object.values(template.findResources('AWS::ApiGatewayV2::Route'));
    const integrations = template.findResources('AWS::ApiGatewayV2::Integration');
    const targetOf = (route: (typeof routes)[number]) => {
      const id = String(route.Properties.Target['Fn::Join'][1][1].Ref);
      return JSON.stringify(integrations[id]?.Properties.IntegrationUri);
    };
    // Their IAM resource paths (…/api/v1/admin/…) are outside every client route's (…/api/v1/locks/…).
    const adminRoutes = ROUTES.filter((r) => r.key.includes('/admin/'));
    expect(adminRoutes.map((r) => r.key)).toContain('POST /api/v1/admin/locks/{proxy+}');
    for (const { module } of adminRoutes) expect(module).toMatch(/^http\/admin-/);
    const adminKeys = new Set(adminRoutes.map((r) => r.key));
    for (const { key, module } of adminRoutes) {
      const route = routes.find((r) => r.Properties.RouteKey === key);
      expect(route?.Properties.AuthorizationType, key).toBe('AWS_IAM');
      const fn = stack.getLogicalId(locks.httpApi.functions[module]?.fn.node.defaultChild as never);
      expect(targetOf(route as never)).toContain(fn);
      for (const other of routes.filter((r) => !adminKeys.has(r.Properties.RouteKey)))
        expect(targetOf(other), `${other.Properties.RouteKey} reaches ${module}`).not.toContain(fn);
    }
  });
});
