/**
 * Operating latchkey (README: "Operate it"): the dashboard, the alarms and where they notify, the
 * Contributor Insights rules, the saved Logs Insights queries, and X-Ray tracing on and off.
 */
import { App, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { Topic } from 'aws-cdk-lib/aws-sns';
import { beforeAll, describe, expect, it } from 'vitest';
import { METRIC_NAMESPACE_VARIABLE, METRICS } from '../../lambdas/shared/metric-catalog';
import { parseLatchkeyConfig } from '../../lib/config';
import {
  HTTP_5XX_MIN_REQUESTS,
  HTTP_5XX_PERCENT,
  ITERATOR_AGE_MS,
  REFUSED_OUTCOMES,
  SWEEPER_LAG_MS,
} from '../../lib/constructs/lock-observability';
import { Latchkey } from '../../lib/latchkey';
import { LatchkeyStack } from '../../lib/latchkey-stack';

const NO_BUNDLING = { 'aws:cdk:bundling-stacks': [] };
const TOPIC_ARN = 'arn:aws:sns:eu-west-1:123456789012:ops-pager';
/** The namespace of the stack Latchkey-test: its own. */
const NAMESPACE = 'Latchkey/Latchkey-test';

let stack: LatchkeyStack;
let locks: Latchkey;
let template: Template;
/** A stack of one's own: a topic object for the alarms, and tracing on. */
let traced: { stack: Stack; locks: Latchkey; topic: Topic; template: Template };

beforeAll(() => {
  const app = new App({ context: NO_BUNDLING });
  stack = new LatchkeyStack(app, 'Latchkey-test');
  locks = stack.latchkey;
  template = Template.fromStack(stack);
  const own = new Stack(new App({ context: NO_BUNDLING }), 'Mine');
  const topic = new Topic(own, 'Ops');
  const withTopic = new Latchkey(own, 'Locks', { alarmTopic: topic, tracing: true });
  traced = { stack: own, locks: withTopic, topic, template: Template.fromStack(own) };
});

const resolve = (value: unknown) => stack.resolve(value);

/**
 * A JSON document CloudFormation joins from strings and references (a dashboard body, a rule body),
 * parsed, with each reference as "@Ref:<id>" or "@GetAtt:<id>.<attribute>".
 */
function joinedJson(value: unknown): unknown {
  const join = (value as { 'Fn::Join'?: [string, unknown[]] })['Fn::Join'];
  if (!join) return JSON.parse(value as string);
  const text = join[1]
    .map((part) => {
      if (typeof part === 'string') return part;
      const p = part as { Ref?: string; 'Fn::GetAtt'?: string[] };
      if (p.Ref) return `@Ref:${p.Ref}`;
      if (p['Fn::GetAtt']) return `@GetAtt:${p['Fn::GetAtt'].join('.')}`;
      throw new Error(`unexpected part ${JSON.stringify(part)}`);
    })
    .join(join[0]);
  return JSON.parse(text);
}

const idOf = (construct: { node: { defaultChild?: unknown } }, s: Stack = stack) =>
  s.getLogicalId(construct.node.defaultChild as never);

describe('the dashboard', () => {
  interface Widget {
    type: string;
    properties: { title?: string; metrics?: unknown[][]; alarms?: string[]; markdown?: string };
  }
  let widgets: Widget[];
  let metrics: unknown[][];
  beforeAll(() => {
    const dashboards = Object.values(template.findResources('AWS::CloudWatch::Dashboard'));
    expect(dashboards).toHaveLength(1);
    widgets = (joinedJson(dashboards[0]?.Properties.DashboardBody) as { widgets: Widget[] }).widgets;
    metrics = widgets.flatMap((w) => w.properties.metrics ?? []);
  });
  /** Metrics of a namespace: [namespace, name, dimension, value, …, options]. */
  const inNamespace = (namespace: string) => metrics.filter((m) => m[0] === namespace);
  const expressions = () =>
    metrics.map((m) => (m[0] as { expression?: string }).expression).filter((e): e is string => !!e);

  it('shows every latchkey metric of the catalog, dimensioned ones by SEARCH over their dimensions', () => {
    const direct = new Set(inNamespace(NAMESPACE).map((m) => m[1]));
    for (const [name, spec] of Object.entries(METRICS)) {
      if (spec.dimensions.length === 0) expect(direct, name).toContain(name);
      else
        expect(
          expressions().some((e) =>
            e.startsWith(`SEARCH('{"${NAMESPACE}",${spec.dimensions.join(',')}} MetricName="${name}"'`),
          ),
          name,
        ).toBe(true);
    }
    // Latency per operation at p50 and p99.
    expect(expressions()).toContain(
      `SEARCH('{"Latchkey/Latchkey-test",Operation} MetricName="Latency"', 'p50', 300)`,
    );
    expect(expressions()).toContain(
      `SEARCH('{"Latchkey/Latchkey-test",Operation} MetricName="Latency"', 'p99', 300)`,
    );
  });

  it('reads the stack’s own namespace, the one its functions emit into, and names it in an output', () => {
    expect(locks.metricNamespace).toBe(NAMESPACE);
    for (const fn of Object.values(template.findResources('AWS::Lambda::Function')))
      expect(fn.Properties.Environment.Variables[METRIC_NAMESPACE_VARIABLE]).toBe(NAMESPACE);
    template.hasOutput('MetricNamespace', { Value: NAMESPACE });
    // Nothing of latchkey's is read from another namespace: another stage's numbers never mix in.
    const ours = (m: unknown[]) => typeof m[0] === 'string' && !(m[0] as string).startsWith('AWS/');
    expect(metrics.filter(ours).every((m) => m[0] === NAMESPACE)).toBe(true);
    expect(
      expressions()
        .filter((e) => e.startsWith('SEARCH('))
        .every((e) => e.includes(`{"${NAMESPACE}",`)),
    ).toBe(true);
    expect(widgets[0]?.properties.markdown).toContain(`namespace \`${NAMESPACE}\``);
  });

  it('two stages in one account read and write two namespaces', () => {
    const app = new App({ context: NO_BUNDLING });
    const [dev, prod] = ['dev', 'prod'].map((stage) => new LatchkeyStack(app, `Latchkey-${stage}`).latchkey);
    expect([dev?.metricNamespace, prod?.metricNamespace]).toEqual([
      'Latchkey/Latchkey-dev',
      'Latchkey/Latchkey-prod',
    ]);
  });

  it("shows the HTTP and WebSocket APIs', the table's, the queues' and the notifier's AWS metrics", () => {
    const names = (namespace: string) => new Set(inNamespace(namespace).map((m) => m[1]));
    const httpApiId = `@Ref:${idOf(locks.httpApi.api)}`;
    const wsApiId = `@Ref:${idOf(locks.webSocketApi.api)}`;
    const apiGateway = inNamespace('AWS/ApiGateway');
    for (const name of ['4xx', '5xx', 'Count', 'Latency'])
      expect(
        apiGateway.some((m) => m[1] === name && m.includes(httpApiId)),
        name,
      ).toBe(true);
    for (const name of ['ConnectCount', 'MessageCount', 'ClientError', 'IntegrationError', 'ExecutionError'])
      expect(
        apiGateway.some((m) => m[1] === name && m.includes(wsApiId) && m.includes('v1')),
        name,
      ).toBe(true);
    expect(names('AWS/DynamoDB')).toEqual(
      new Set([
        'ReadThrottleEvents',
        'WriteThrottleEvents',
        'ThrottledRequests',
        'SuccessfulRequestLatency',
        'ConsumedReadCapacityUnits',
        'ConsumedWriteCapacityUnits',
      ]),
    );
    const queues = inNamespace('AWS/SQS');
    for (const queue of [
      locks.handoff.timerQueue,
      locks.handoff.timerDeadLetters,
      locks.handoff.streamFailures,
    ])
      expect(
        queues.some(
          (m) =>
            m[1] === 'ApproximateNumberOfMessagesVisible' && m.includes(`@GetAtt:${idOf(queue)}.QueueName`),
        ),
      ).toBe(true);
    const notifier = `@Ref:${idOf(locks.handoff.notifier.fn)}`;
    expect(inNamespace('AWS/Lambda').some((m) => m[1] === 'IteratorAge' && m.includes(notifier))).toBe(true);
  });

  it('shows errors, throttles, concurrency and duration of every function', () => {
    const lambda = inNamespace('AWS/Lambda');
    for (const fn of Object.values(locks.functions)) {
      const ref = `@Ref:${idOf(fn as never)}`;
      for (const name of ['Errors', 'Throttles', 'ConcurrentExecutions', 'Duration'])
        expect(
          lambda.some((m) => m[1] === name && m.includes(ref)),
          `${name} of ${ref}`,
        ).toBe(true);
    }
  });

  it('lists every alarm', () => {
    const alarms = widgets.find((w) => w.type === 'alarm')?.properties.alarms ?? [];
    expect(alarms.sort()).toEqual(
      Object.keys(template.findResources('AWS::CloudWatch::Alarm'))
        .map((id) => `@GetAtt:${id}.Arn`)
        .sort(),
    );
  });
});

describe('alarms', () => {
  const alarmOf = (name: string, t = template, s: Stack = stack, l = locks) => {
    const alarm = l.observability.alarms[name];
    expect(alarm, name).toBeDefined();
    return t.toJSON().Resources[s.getLogicalId(alarm?.node.defaultChild as never)].Properties;
  };

  it('on the timer dead-letter queue and the stream on-failure queue: anything in them', () => {
    for (const [name, queue] of [
      ['timer-dead-letters', locks.handoff.timerDeadLetters],
      ['stream-failures', locks.handoff.streamFailures],
    ] as const)
      expect(alarmOf(name)).toMatchObject({
        Namespace: 'AWS/SQS',
        MetricName: 'ApproximateNumberOfMessagesVisible',
        Dimensions: [{ Name: 'QueueName', Value: resolve(queue.queueName) }],
        Statistic: 'Maximum',
        Period: 300,
        Threshold: 0,
        ComparisonOperator: 'GreaterThanThreshold',
        EvaluationPeriods: 1,
        DatapointsToAlarm: 1,
        TreatMissingData: 'notBreaching',
      });
  });

  it('on the HTTP API 5xx rate, with a minimum number of requests (metric math)', () => {
    const alarm = alarmOf('http-5xx');
    expect(alarm).toMatchObject({
      Threshold: HTTP_5XX_PERCENT,
      ComparisonOperator: 'GreaterThanThreshold',
      EvaluationPeriods: 1,
      TreatMissingData: 'notBreaching',
    });
    const queries = alarm.Metrics as {
      Id: string;
      Expression?: string;
      MetricStat?: { Metric: { MetricName: string; Dimensions: unknown[] }; Period: number; Stat: string };
    }[];
    expect(queries.find((q) => q.Expression)?.Expression).toBe(
      `IF(requests >= ${HTTP_5XX_MIN_REQUESTS}, 100 * errors / requests, 0)`,
    );
    const byId = Object.fromEntries(queries.map((q) => [q.Id, q.MetricStat]));
    for (const [id, name] of [
      ['requests', 'Count'],
      ['errors', '5xx'],
    ] as const)
      expect(byId[id]).toMatchObject({
        Metric: {
          Namespace: 'AWS/ApiGateway',
          MetricName: name,
          Dimensions: [{ Name: 'ApiId', Value: resolve(locks.httpApiId) }],
        },
        Period: 300,
        Stat: 'Sum',
      });
  });

  it('on DynamoDB throttling of the table: any read or write throttle event in 5 minutes', () => {
    const alarm = alarmOf('dynamodb-throttles');
    expect(alarm).toMatchObject({
      Threshold: 0,
      ComparisonOperator: 'GreaterThanThreshold',
      EvaluationPeriods: 1,
    });
    expect(alarm.TreatMissingData).toBe('notBreaching');
    const queries = alarm.Metrics as {
      Expression?: string;
      MetricStat?: { Metric: Record<string, unknown> };
    }[];
    expect(queries.find((q) => q.Expression)?.Expression).toBe('reads + writes');
    expect(queries.filter((q) => q.MetricStat).map((q) => q.MetricStat?.Metric)).toEqual([
      {
        Namespace: 'AWS/DynamoDB',
        MetricName: 'ReadThrottleEvents',
        Dimensions: [{ Name: 'TableName', Value: resolve(locks.table.tableName) }],
      },
      {
        Namespace: 'AWS/DynamoDB',
        MetricName: 'WriteThrottleEvents',
        Dimensions: [{ Name: 'TableName', Value: resolve(locks.table.tableName) }],
      },
    ]);
  });

  it('on the sweeper: lagging over 2 minutes, or not running', () => {
    expect(alarmOf('sweeper-lag')).toMatchObject({
      Namespace: NAMESPACE,
      MetricName: 'SweeperLag',
      Statistic: 'Maximum',
      Period: 60,
      Threshold: SWEEPER_LAG_MS,
      ComparisonOperator: 'GreaterThanThreshold',
      EvaluationPeriods: 3,
      DatapointsToAlarm: 3,
      TreatMissingData: 'notBreaching',
    });
    expect(alarmOf('sweeper-lag').Dimensions).toBeUndefined();
    expect(SWEEPER_LAG_MS).toBe(120_000);
    expect(alarmOf('sweeper-not-running')).toMatchObject({
      Namespace: 'AWS/Lambda',
      MetricName: 'Invocations',
      Dimensions: [{ Name: 'FunctionName', Value: resolve(locks.sweeper.function.fn.functionName) }],
      Statistic: 'Sum',
      Period: 300,
      Threshold: 3,
      ComparisonOperator: 'LessThanThreshold',
      TreatMissingData: 'breaching',
    });
  });

  it("on the notifier's stream iterator age over 60 s", () => {
    expect(alarmOf('notifier-iterator-age')).toMatchObject({
      Namespace: 'AWS/Lambda',
      MetricName: 'IteratorAge',
      Dimensions: [{ Name: 'FunctionName', Value: resolve(locks.handoff.notifier.fn.functionName) }],
      Statistic: 'Maximum',
      Period: 60,
      Threshold: ITERATOR_AGE_MS,
      ComparisonOperator: 'GreaterThanThreshold',
      EvaluationPeriods: 5,
      DatapointsToAlarm: 3,
      TreatMissingData: 'notBreaching',
    });
    expect(ITERATOR_AGE_MS).toBe(60_000);
  });

  it('on errors and throttles of every function', () => {
    for (const [module, fn] of Object.entries(locks.functions))
      for (const [kind, metric] of [
        ['errors', 'Errors'],
        ['throttles', 'Throttles'],
      ] as const)
        expect(alarmOf(`${kind}-${module.replace('/', '-')}`), `${kind} of ${module}`).toMatchObject({
          Namespace: 'AWS/Lambda',
          MetricName: metric,
          Dimensions: [{ Name: 'FunctionName', Value: resolve(fn.functionName) }],
          Statistic: 'Sum',
          Period: 300,
          Threshold: 0,
          ComparisonOperator: 'GreaterThanThreshold',
          EvaluationPeriods: 1,
          TreatMissingData: 'notBreaching',
        });
  });

  it('are all of the above, each named after its runbook entry, with a description saying what to do', () => {
    const alarms = template.findResources('AWS::CloudWatch::Alarm');
    expect(Object.keys(alarms)).toHaveLength(7 + 2 * Object.keys(locks.functions).length);
    expect(Object.keys(locks.observability.alarms)).toHaveLength(Object.keys(alarms).length);
    for (const [name, alarm] of Object.entries(locks.observability.alarms)) {
      const p = alarmOf(name);
      expect(p.AlarmName).toMatch(new RegExp(`^Latchkey-test-.*-${name}$`));
      // One runbook entry for each kind of per-function alarm.
      const entry = name.replace(/^(errors|throttles)-.*$/, '$1-<function>');
      expect(p.AlarmDescription).toMatch(/^latchkey: /);
      expect(p.AlarmDescription).toContain(`See the README runbook: "latchkey alarm: ${entry}".`);
      // The description stands on its own: it does not lean on the (generated) name.
      expect(p.AlarmDescription).not.toContain(p.AlarmName);
      expect(alarm).toBeDefined();
    }
  });

  it('notify nobody without a topic', () => {
    for (const alarm of Object.values(template.findResources('AWS::CloudWatch::Alarm'))) {
      expect(alarm.Properties.AlarmActions).toBeUndefined();
      expect(alarm.Properties.OKActions).toBeUndefined();
    }
  });

  it('notify the topic given, of alarms and of recoveries', () => {
    const alarms = Object.values(traced.template.findResources('AWS::CloudWatch::Alarm'));
    expect(alarms.length).toBeGreaterThan(30);
    const topic = traced.stack.resolve(traced.topic.topicArn);
    for (const alarm of alarms) {
      expect(alarm.Properties.AlarmActions).toEqual([topic]);
      expect(alarm.Properties.OKActions).toEqual([topic]);
    }
  });

  it('notify a topic named by ARN (the alarmTopicArn key), and refuse a bad ARN or two topics', () => {
    const app = new App({ context: NO_BUNDLING });
    const t = Template.fromStack(new LatchkeyStack(app, 'ByArn', { alarmTopicArn: TOPIC_ARN }));
    for (const alarm of Object.values(t.findResources('AWS::CloudWatch::Alarm'))) {
      expect(alarm.Properties.AlarmActions).toEqual([TOPIC_ARN]);
      expect(alarm.Properties.OKActions).toEqual([TOPIC_ARN]);
    }
    expect(
      () =>
        new LatchkeyStack(new App({ context: NO_BUNDLING }), 'Fifo', { alarmTopicArn: `${TOPIC_ARN}.fifo` }),
    ).toThrow(/alarmTopicArn must be the ARN of a standard SNS topic/);
    const other = new Stack(new App({ context: NO_BUNDLING }), 'Other');
    expect(
      () => new Latchkey(other, 'Both', { alarmTopic: new Topic(other, 'T'), alarmTopicArn: TOPIC_ARN }),
    ).toThrow(/give one of them/);
    expect(parseLatchkeyConfig({ context: { alarmTopicArn: TOPIC_ARN, tracing: 'true' } }).props).toEqual({
      alarmTopicArn: TOPIC_ARN,
      tracing: true,
    });
    expect(() => parseLatchkeyConfig({ context: { alarmTopicArn: 'ops-pager' } })).toThrow(
      /alarmTopicArn = "ops-pager" \(context\): alarmTopicArn must be the ARN/,
    );
    expect(() => parseLatchkeyConfig({ context: { tracing: 'yes' } })).toThrow(
      /tracing = "yes".*not true or false/,
    );
  });
});

describe('Contributor Insights rules', () => {
  interface RuleBody {
    Schema: unknown;
    LogGroupNames: string[];
    LogFormat: string;
    Contribution: { Keys: string[]; Filters: unknown[] };
    AggregateOn: string;
  }
  const ruleOf = (name: string) => {
    const rule = locks.observability.insightRules[name];
    expect(rule, name).toBeDefined();
    const props = template.toJSON().Resources[stack.getLogicalId(rule as never)].Properties;
    return { props, body: joinedJson(props.RuleBody) as RuleBody };
  };

  it.each([
    ['hottest-locks', ['$.lock'], [{ Match: '$.operation', In: ['acquire'] }]],
    ['most-refused-callers', ['$.principal'], [{ Match: '$.outcome', In: REFUSED_OUTCOMES }]],
    ['top-waiters', ['$.principal', '$.client_id'], [{ Match: '$.audit', In: ['wait'] }]],
  ])('%s: counts by %j over every function log group', (name, keys, filters) => {
    const { props, body } = ruleOf(name);
    expect(props.RuleState).toBe('ENABLED');
    expect(props.RuleName).toMatch(new RegExp(`^Latchkey-test-.*-${name}$`));
    expect(body).toEqual({
      Schema: { Name: 'CloudWatchLogRule', Version: 1 },
      LogGroupNames: expect.any(Array),
      LogFormat: 'JSON',
      Contribution: { Keys: keys, Filters: filters },
      AggregateOn: 'Count',
    });
    const groups = Object.keys(locks.functions).length;
    expect(body.LogGroupNames).toHaveLength(groups);
    for (const group of body.LogGroupNames) expect(group).toMatch(/^@Ref:.*Logs[0-9A-F]{8}$/);
    // Every function's own log group (not the access logs).
    const logGroupIds = Object.keys(template.findResources('AWS::Logs::LogGroup'));
    for (const group of body.LogGroupNames) expect(logGroupIds).toContain(group.slice('@Ref:'.length));
  });

  it('refused outcomes are "refused" and every 4xx error code, never a 5xx', () => {
    expect(REFUSED_OUTCOMES).toContain('refused');
    expect(REFUSED_OUTCOMES).toContain('QUEUE_FULL');
    expect(REFUSED_OUTCOMES).toContain('FORBIDDEN');
    expect(REFUSED_OUTCOMES).not.toContain('INTERNAL');
    expect(REFUSED_OUTCOMES).not.toContain('UNAVAILABLE');
  });
});

describe('saved Logs Insights queries', () => {
  const queries = () => Object.values(template.findResources('AWS::Logs::QueryDefinition'));

  it('"history of lock X": the audit events of one lock, oldest first, over every function log group', () => {
    const history = queries().find((q) => q.Properties.Name === 'latchkey/Latchkey-test/history of lock X');
    expect(history).toBeDefined();
    const text = history?.Properties.QueryString as string;
    expect(text.split('\n')).toEqual([
      'fields @timestamp, audit, lock, principal, client_id, fencing_token, session_id, reason, request_id',
      '| filter ispresent(audit)',
      '| filter lock = "jobs/nightly"',
      '| sort @timestamp asc',
      '| limit 10000',
    ]);
    expect(history?.Properties.LogGroupNames).toHaveLength(Object.keys(locks.functions).length);
  });

  it('"who holds lock X" and "why callers wait on lock X" too, each with the same placeholder', () => {
    const names = queries().map((q) => q.Properties.Name);
    expect(names.sort()).toEqual(
      [
        'latchkey/Latchkey-test/history of lock X',
        'latchkey/Latchkey-test/who holds lock X',
        'latchkey/Latchkey-test/why callers wait on lock X',
      ].sort(),
    );
    for (const q of queries()) expect(q.Properties.QueryString).toContain('filter lock = "jobs/nightly"');
    const holds = queries().find((q) => q.Properties.Name.endsWith('who holds lock X'));
    expect(holds?.Properties.QueryString).toContain('latest(audit) as last_event');
    // Not a waiter's line: the latest client id is the holder's, not whoever queued last.
    expect(holds?.Properties.QueryString).toContain('filter audit not in ["wait", "wait-end"]');
  });
});

describe('tracing', () => {
  const functionsOf = (t: Template) => Object.values(t.findResources('AWS::Lambda::Function'));
  const xrayActions = (t: Template) =>
    Object.values(t.findResources('AWS::IAM::Policy'))
      .flatMap((p) => p.Properties.PolicyDocument.Statement)
      .filter((s) => JSON.stringify(s.Action).includes('xray:'));

  it('is off by default: no active tracing, no X-Ray grants, the tracer told so', () => {
    for (const fn of functionsOf(template)) {
      expect(fn.Properties.TracingConfig).toBeUndefined();
      expect(fn.Properties.Environment.Variables.POWERTOOLS_TRACE_ENABLED).toBe('false');
      // No service name: Powertools Metrics would make it a dimension of every metric.
      expect(fn.Properties.Environment.Variables.POWERTOOLS_SERVICE_NAME).toBeUndefined();
    }
    expect(xrayActions(template)).toEqual([]);
  });

  it('when on: every function actively traced, its role may send segments, the tracer on', () => {
    const functions = functionsOf(traced.template);
    expect(functions).toHaveLength(Object.keys(traced.locks.functions).length);
    for (const fn of functions) {
      expect(fn.Properties.TracingConfig).toEqual({ Mode: 'Active' });
      expect(fn.Properties.Environment.Variables).toMatchObject({
        POWERTOOLS_TRACE_ENABLED: 'true',
        POWERTOOLS_TRACER_CAPTURE_RESPONSE: 'false',
        POWERTOOLS_TRACER_CAPTURE_HTTPS_REQUESTS: 'false',
      });
    }
    for (const fn of Object.values(traced.locks.functions)) {
      const roleId = traced.stack.getLogicalId(fn.role?.node.defaultChild as never);
      traced.template.hasResourceProperties('AWS::IAM::Policy', {
        Roles: [{ Ref: roleId }],
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({
              Action: ['xray:PutTraceSegments', 'xray:PutTelemetryRecords'],
              Resource: '*',
            }),
          ]),
        },
      });
    }
  });
});
