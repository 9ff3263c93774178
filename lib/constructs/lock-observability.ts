import { Duration, Names, Stack } from 'aws-cdk-lib';
import type { HttpApi, WebSocketApi, WebSocketStage } from 'aws-cdk-lib/aws-apigatewayv2';
import {
  Alarm,
  AlarmStatusWidget,
  CfnInsightRule,
  ComparisonOperator,
  Dashboard,
  GraphWidget,
  type IMetric,
  MathExpression,
  Metric,
  TextWidget,
  TreatMissingData,
} from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import type { ITable } from 'aws-cdk-lib/aws-dynamodb';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { type ILogGroup, QueryDefinition, QueryString } from 'aws-cdk-lib/aws-logs';
import type { ITopic } from 'aws-cdk-lib/aws-sns';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { ERROR_CODES } from '../../lambdas/core/errors';
import { METRICS, type MetricName } from '../../lambdas/shared/metric-catalog';

export interface LockObservabilityProps {
  /** Every function, by handler module ("http/lock-commands", …). */
  readonly functions: Readonly<Record<string, IFunction>>;
  /** Every function's log group, by handler module: Contributor Insights and the saved queries read them. */
  readonly logGroups: Readonly<Record<string, ILogGroup>>;
  /** The namespace the functions emit latchkey's metrics into (metricNamespaceFor the stack). */
  readonly metricNamespace: string;
  readonly table: ITable;
  readonly httpApi: HttpApi;
  readonly webSocketApi: WebSocketApi;
  readonly webSocketStage: WebSocketStage;
  /** The stream notifier (its IteratorAge). */
  readonly notifier: IFunction;
  /** The sweeper (that it runs). */
  readonly sweeper: IFunction;
  readonly timerQueue: IQueue;
  readonly timerDeadLetters: IQueue;
  readonly streamFailures: IQueue;
  /** Where alarms (and their recoveries) are sent; none: the alarms only change state. */
  readonly alarmTopic?: ITopic;
}

/** The HTTP API's 5xx alarm: this share of requests, in five minutes with at least this many. */
export const HTTP_5XX_PERCENT = 1;
export const HTTP_5XX_MIN_REQUESTS = 50;
/** The sweeper alarm: the oldest due item it found is this late (ms). */
export const SWEEPER_LAG_MS = 120_000;
/** The notifier alarm: stream records wait this long (ms). */
export const ITERATOR_AGE_MS = 60_000;

/** Outcomes of a request the caller was refused for (a 4xx error code, or "refused"). */
export const REFUSED_OUTCOMES = [
  'refused',
  ...Object.entries(ERROR_CODES)
    .filter(([, { status }]) => status >= 400 && status < 500)
    .map(([code]) => code),
];

/** DynamoDB operations the functions make (SuccessfulRequestLatency is per operation). */
const DYNAMO_OPERATIONS = [
  'GetItem',
  'Query',
  'PutItem',
  'UpdateItem',
  'DeleteItem',
  'BatchGetItem',
  'TransactWriteItems',
];

const FIVE_MINUTES = Duration.minutes(5);
const ONE_MINUTE = Duration.minutes(1);

/**
 * How latchkey is operated (README: "Operate it"): one CloudWatch dashboard (latchkey's own metrics
 * beside API Gateway's, Lambda's, DynamoDB's and SQS's), the alarms (each description says what it
 * means and which runbook entry to follow), Contributor Insights rules over the functions' JSON logs
 * (hottest locks, most-refused callers, top waiters) and saved Logs Insights queries (a lock's
 * history, its holder, why callers wait).
 */
export class LockObservability extends Construct {
  readonly dashboard: Dashboard;
  /** Every alarm, by its short name (the runbook entry). */
  readonly alarms: Record<string, Alarm> = {};
  readonly insightRules: Record<string, CfnInsightRule> = {};
  readonly queries: Record<string, QueryDefinition> = {};

  constructor(scope: Construct, id: string, props: LockObservabilityProps) {
    super(scope, id);
    const namespace = props.metricNamespace;
    const latchkeyMetric = (metricName: MetricName, options: Parameters<typeof metricIn>[2]) =>
      metricIn(namespace, metricName, options);
    // Account-wide names (dashboard, alarms, rules) unique per deployment: stages side by side.
    const prefix = Names.uniqueResourceName(this, {
      maxLength: 60,
      separator: '-',
      allowedSpecialCharacters: '-_',
    });
    const functions = Object.entries(props.functions).sort(([a], [b]) => a.localeCompare(b));
    const logGroups = Object.values(props.logGroups);

    // ---- alarms ----
    const alarm = (
      name: string,
      metric: IMetric,
      options: {
        threshold: number;
        comparison?: ComparisonOperator;
        evaluationPeriods?: number;
        datapointsToAlarm?: number;
        treatMissingData: TreatMissingData;
        description: string;
        /** The README runbook entry, if not the alarm's own name (one entry for alarms of a kind). */
        runbook?: string;
      },
    ) => {
      const created = new Alarm(this, `Alarm-${name}`, {
        alarmName: `${prefix}-${name}`,
        alarmDescription: `${options.description} See the README runbook: "latchkey alarm: ${options.runbook ?? name}".`,
        metric,
        threshold: options.threshold,
        comparisonOperator: options.comparison ?? ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: options.evaluationPeriods ?? 1,
        datapointsToAlarm: options.datapointsToAlarm ?? options.evaluationPeriods ?? 1,
        treatMissingData: options.treatMissingData,
      });
      if (props.alarmTopic) {
        created.addAlarmAction(new SnsAction(props.alarmTopic));
        created.addOkAction(new SnsAction(props.alarmTopic));
      }
      this.alarms[name] = created;
      return created;
    };

    // An empty queue may publish nothing: missing data is "nothing in it".
    alarm(
      'timer-dead-letters',
      props.timerDeadLetters.metricApproximateNumberOfMessagesVisible({
        period: FIVE_MINUTES,
        statistic: 'Maximum',
      }),
      {
        threshold: 0,
        treatMissingData: TreatMissingData.NOT_BREACHING,
        description:
          'latchkey: an expiry timer failed 5 times and is in the timer dead-letter queue. The lease or session it watched was not ended on time; the sweeper still ends sessions, but a lapsed lease with waiters may not be handed over until another request touches the lock.',
      },
    );
    alarm(
      'stream-failures',
      props.streamFailures.metricApproximateNumberOfMessagesVisible({
        period: FIVE_MINUTES,
        statistic: 'Maximum',
      }),
      {
        threshold: 0,
        treatMissingData: TreatMissingData.NOT_BREACHING,
        description:
          'latchkey: the stream notifier gave up on a batch of table changes (after retries and bisection) and its record is in the stream on-failure queue. Freed locks in it may not have been handed to their waiters; timers in it may not be armed.',
      },
    );

    const requests = props.httpApi.metricCount({ period: FIVE_MINUTES, statistic: 'Sum' });
    const serverErrors = props.httpApi.metricServerError({ period: FIVE_MINUTES, statistic: 'Sum' });
    alarm(
      'http-5xx',
      new MathExpression({
        // No rate below the minimum count: a single 500 of 3 requests is not an outage.
        expression: `IF(requests >= ${HTTP_5XX_MIN_REQUESTS}, 100 * errors / requests, 0)`,
        usingMetrics: { requests, errors: serverErrors },
        period: FIVE_MINUTES,
        label: 'HTTP 5xx (% of requests)',
      }),
      {
        threshold: HTTP_5XX_PERCENT,
        // No traffic, no data: not an outage.
        treatMissingData: TreatMissingData.NOT_BREACHING,
        description: `latchkey: more than ${HTTP_5XX_PERCENT}% of HTTP API requests answered 5xx in 5 minutes (with at least ${HTTP_5XX_MIN_REQUESTS} requests). Callers get INTERNAL or UNAVAILABLE (DynamoDB unreachable or throttled, a function failing or throttled).`,
      },
    );

    alarm(
      'dynamodb-throttles',
      new MathExpression({
        expression: 'reads + writes',
        usingMetrics: {
          reads: props.table.metric('ReadThrottleEvents', { period: FIVE_MINUTES, statistic: 'Sum' }),
          writes: props.table.metric('WriteThrottleEvents', { period: FIVE_MINUTES, statistic: 'Sum' }),
        },
        period: FIVE_MINUTES,
        label: 'DynamoDB throttle events',
      }),
      {
        threshold: 0,
        // DynamoDB publishes throttle events only when there are some.
        treatMissingData: TreatMissingData.NOT_BREACHING,
        description:
          "latchkey: DynamoDB throttled reads or writes of the lock table in the last 5 minutes. The SDK retries a few times; past that, callers get 503 UNAVAILABLE. On-demand tables throttle on a hot partition (one very busy lock) or past the table's maximum throughput.",
      },
    );

    alarm('sweeper-lag', latchkeyMetric('SweeperLag', { statistic: 'Maximum', period: ONE_MINUTE }), {
      threshold: SWEEPER_LAG_MS,
      evaluationPeriods: 3,
      // Nothing due, nothing reported; a sweeper that stopped is the sweeper-not-running alarm's.
      treatMissingData: TreatMissingData.NOT_BREACHING,
      description: `latchkey: for 3 minutes running, the sweeper found due items more than ${SWEEPER_LAG_MS / 60_000} minutes old. Expired sessions keep their locks longer than they should; waiters wait.`,
    });
    alarm(
      'sweeper-not-running',
      props.sweeper.metricInvocations({ period: FIVE_MINUTES, statistic: 'Sum' }),
      {
        threshold: 3,
        comparison: ComparisonOperator.LESS_THAN_THRESHOLD,
        // It runs every minute: no invocations at all is the failure this alarm is for.
        treatMissingData: TreatMissingData.BREACHING,
        description:
          'latchkey: the sweeper, scheduled every minute, ran fewer than 3 times in 5 minutes. Expired sessions are not ended and their locks not released until it runs again.',
      },
    );
    alarm(
      'notifier-iterator-age',
      props.notifier.metric('IteratorAge', { period: ONE_MINUTE, statistic: 'Maximum' }),
      {
        threshold: ITERATOR_AGE_MS,
        evaluationPeriods: 5,
        datapointsToAlarm: 3,
        // No table changes, no batches, no data.
        treatMissingData: TreatMissingData.NOT_BREACHING,
        description: `latchkey: the stream notifier is behind: the table changes it reads were more than ${ITERATOR_AGE_MS / 1000} s old in 3 of the last 5 minutes. Freed locks reach their waiters late (handoff latency grows).`,
      },
    );

    for (const [module, fn] of functions) {
      const name = module.replace('/', '-');
      alarm(`errors-${name}`, fn.metricErrors({ period: FIVE_MINUTES, statistic: 'Sum' }), {
        threshold: 0,
        treatMissingData: TreatMissingData.NOT_BREACHING,
        description: `latchkey: the ${module} function failed (an unhandled error or a timeout) in the last 5 minutes. Handlers answer errors themselves, so this is a crash, a timeout or a bad deployment.`,
        runbook: 'errors-<function>',
      });
      alarm(`throttles-${name}`, fn.metricThrottles({ period: FIVE_MINUTES, statistic: 'Sum' }), {
        threshold: 0,
        treatMissingData: TreatMissingData.NOT_BREACHING,
        description: `latchkey: Lambda throttled the ${module} function in the last 5 minutes: its reserved concurrency or the account's concurrency is used up, and its callers (or its event source) were refused.`,
        runbook: 'throttles-<function>',
      });
    }

    // ---- Contributor Insights ----
    const rule = (name: string, contribution: Record<string, unknown>) => {
      this.insightRules[name] = new CfnInsightRule(this, `Insight-${name}`, {
        ruleName: `${prefix}-${name}`,
        ruleState: 'ENABLED',
        ruleBody: Stack.of(this).toJsonString({
          Schema: { Name: 'CloudWatchLogRule', Version: 1 },
          LogGroupNames: logGroups.map((g) => g.logGroupName),
          LogFormat: 'JSON',
          Contribution: contribution,
          AggregateOn: 'Count',
        }),
      });
    };
    rule('hottest-locks', {
      Keys: ['$.lock'],
      Filters: [{ Match: '$.operation', In: ['acquire'] }],
    });
    rule('most-refused-callers', {
      Keys: ['$.principal'],
      Filters: [{ Match: '$.outcome', In: REFUSED_OUTCOMES }],
    });
    // The audit line of a request joining a queue (its principal and client_id are the waiter's).
    rule('top-waiters', {
      Keys: ['$.principal', '$.client_id'],
      Filters: [{ Match: '$.audit', In: ['wait'] }],
    });

    // ---- saved Logs Insights queries ----
    const folder = `latchkey/${Stack.of(this).stackName}`;
    const query = (name: string, queryString: QueryString) => {
      this.queries[name] = new QueryDefinition(this, `Query-${name.replace(/[^A-Za-z0-9]+/g, '-')}`, {
        queryDefinitionName: `${folder}/${name}`,
        queryString,
        logGroups,
      });
    };
    query(
      'history of lock X',
      new QueryString({
        fields: [
          '@timestamp',
          'audit',
          'lock',
          'principal',
          'client_id',
          'fencing_token',
          'session_id',
          'reason',
          'request_id',
        ],
        filterStatements: ['ispresent(audit)', 'lock = "jobs/nightly"'],
        sort: '@timestamp asc',
        limit: 10_000,
      }),
    );
    query(
      'who holds lock X',
      new QueryString({
        // A waiter's lines (wait, wait-end) carry its own client id: they say nothing of the holder.
        filterStatements: ['ispresent(audit)', 'lock = "jobs/nightly"', 'audit not in ["wait", "wait-end"]'],
        statsStatements: [
          'latest(audit) as last_event, latest(principal) as principal, latest(client_id) as client_id, latest(fencing_token) as fencing_token, latest(session_id) as session_id, max(@timestamp) as at by lock',
        ],
      }),
    );
    query(
      'why callers wait on lock X',
      new QueryString({
        fields: [
          '@timestamp',
          'operation',
          'outcome',
          'audit',
          'principal',
          'client_id',
          'reason',
          'request_id',
        ],
        filterStatements: [
          'lock = "jobs/nightly"',
          `(ispresent(audit) or outcome in ${JSON.stringify(['queued', 'timeout', 'granted', ...REFUSED_OUTCOMES])})`,
        ],
        sort: '@timestamp asc',
        limit: 10_000,
      }),
    );

    // ---- the dashboard ----
    this.dashboard = new Dashboard(this, 'Dashboard', {
      dashboardName: prefix,
      defaultInterval: Duration.hours(3),
    });
    const graph = (title: string, left: IMetric[], options: { width?: number; right?: IMetric[] } = {}) =>
      new GraphWidget({
        title,
        left,
        ...(options.right ? { right: options.right } : {}),
        width: options.width ?? 8,
        height: 6,
      });
    const search = (metric: MetricName, statistic: string, label?: string) => {
      const dims = ['Operation', 'Outcome'].filter((d) =>
        (METRICS[metric].dimensions as readonly string[]).includes(d),
      );
      return new MathExpression({
        expression: `SEARCH('{"${namespace}",${dims.join(',')}} MetricName="${metric}"', '${statistic}', 300)`,
        usingMetrics: {},
        period: FIVE_MINUTES,
        label: label ?? '',
      });
    };
    const percentiles = (metric: MetricName) => [
      latchkeyMetric(metric, { statistic: 'p50', label: `${metric} p50` }),
      latchkeyMetric(metric, { statistic: 'p99', label: `${metric} p99` }),
    ];
    const perFunction = (title: string, make: (fn: IFunction) => IMetric) =>
      graph(
        title,
        functions.map(([module, fn]) => withLabel(make(fn), module)),
        { width: 12 },
      );
    const wsMetric = (metricName: string, statistic = 'Sum') =>
      new Metric({
        namespace: 'AWS/ApiGateway',
        metricName,
        dimensionsMap: { ApiId: props.webSocketApi.apiId, Stage: props.webSocketStage.stageName },
        statistic,
        period: FIVE_MINUTES,
      });
    const queueDepth = (queue: IQueue, label: string) =>
      queue.metricApproximateNumberOfMessagesVisible({ period: FIVE_MINUTES, statistic: 'Maximum', label });
    const heading = (markdown: string) => new TextWidget({ markdown, width: 24, height: 1 });

    this.dashboard.addWidgets(
      new TextWidget({
        markdown: `# latchkey (${Stack.of(this).stackName})\nLatchkey's own metrics (namespace \`${namespace}\`, this stack's alone) beside API Gateway's, Lambda's, DynamoDB's and SQS's. Alarms link to the README runbook; per-lock and per-caller views are the Contributor Insights rules \`${prefix}-*\` and the saved queries \`${folder}/*\`.`,
        width: 24,
        height: 2,
      }),
    );
    this.dashboard.addWidgets(
      new AlarmStatusWidget({ title: 'Alarms', alarms: Object.values(this.alarms), width: 24, height: 4 }),
    );
    this.dashboard.addWidgets(heading('## Requests'));
    this.dashboard.addWidgets(
      graph('Requests by operation and outcome', [search('Requests', 'Sum')]),
      graph('Latency p50 by operation (ms)', [search('Latency', 'p50')]),
      graph('Latency p99 by operation (ms)', [search('Latency', 'p99')]),
    );
    this.dashboard.addWidgets(heading('## Locks'));
    this.dashboard.addWidgets(
      graph('Wait time, join to grant (ms)', percentiles('WaitTime'), { width: 6 }),
      graph('Hold duration, grant to release (ms)', percentiles('HoldDuration'), { width: 6 }),
      graph('Handoff latency, release to next grant (ms)', percentiles('HandoffLatency'), { width: 6 }),
      graph(
        'Queue depth at handoff (waiters behind)',
        [
          latchkeyMetric('QueueDepth', { statistic: 'Average', label: 'average' }),
          latchkeyMetric('QueueDepth', { statistic: 'Maximum', label: 'maximum' }),
        ],
        { width: 6 },
      ),
    );
    this.dashboard.addWidgets(
      graph('Contention: acquires by outcome', [search('Contention', 'Sum')]),
      graph(
        'Sessions and lapses',
        (['SessionsOpened', 'SessionsClosed', 'SessionsExpired', 'LeasesLapsed', 'LockDelays'] as const).map(
          (m) => latchkeyMetric(m, { statistic: 'Sum', label: m }),
        ),
      ),
      graph('WebSocket pushes by outcome', [search('Pushes', 'Sum')]),
    );
    this.dashboard.addWidgets(heading('## Background work: sweeper, timers, stream notifier'));
    this.dashboard.addWidgets(
      new GraphWidget({
        title: 'Sweeper lag (ms, max)',
        left: [
          latchkeyMetric('SweeperLag', { statistic: 'Maximum', period: ONE_MINUTE, label: 'SweeperLag' }),
        ],
        leftAnnotations: [{ value: SWEEPER_LAG_MS, label: 'alarm' }],
        width: 6,
        height: 6,
      }),
      graph(
        'Timer lateness (ms); timers not armed (right)',
        [
          ...percentiles('TimerLateness'),
          latchkeyMetric('TimerLateness', { statistic: 'Maximum', label: 'TimerLateness max' }),
        ],
        {
          width: 6,
          // A request served a queue on its way and could not arm its lock's timer (its answer stood).
          right: [latchkeyMetric('TimerArmFailures', { statistic: 'Sum', label: 'TimerArmFailures' })],
        },
      ),
      new GraphWidget({
        title: 'Notifier stream IteratorAge (ms, max)',
        left: [props.notifier.metric('IteratorAge', { period: ONE_MINUTE, statistic: 'Maximum' })],
        leftAnnotations: [{ value: ITERATOR_AGE_MS, label: 'alarm' }],
        width: 6,
        height: 6,
      }),
      graph(
        'Queues (messages visible, max)',
        [
          queueDepth(props.timerQueue, 'timer queue'),
          queueDepth(props.timerDeadLetters, 'timer dead letters'),
          queueDepth(props.streamFailures, 'stream on-failure queue'),
        ],
        { width: 6 },
      ),
    );
    this.dashboard.addWidgets(heading('## DynamoDB'));
    this.dashboard.addWidgets(
      graph('Calls by operation (latchkey)', [search('DynamoCalls', 'Sum')], { width: 6 }),
      graph('Call latency p99 by operation (latchkey, ms)', [search('DynamoLatency', 'p99')], { width: 6 }),
      graph('Throttled calls by operation (latchkey)', [search('DynamoThrottles', 'Sum')], { width: 6 }),
      graph('Condition failures by operation (latchkey)', [search('DynamoConditionFailures', 'Sum')], {
        width: 6,
      }),
    );
    this.dashboard.addWidgets(
      graph('Table throttles (AWS/DynamoDB)', [
        props.table.metric('ReadThrottleEvents', { period: FIVE_MINUTES, statistic: 'Sum', label: 'read' }),
        props.table.metric('WriteThrottleEvents', { period: FIVE_MINUTES, statistic: 'Sum', label: 'write' }),
        withLabel(
          props.table.metricThrottledRequestsForOperations({
            operations: DYNAMO_OPERATIONS as never,
            period: FIVE_MINUTES,
          }),
          'throttled requests',
        ),
      ]),
      graph(
        'SuccessfulRequestLatency p99 (ms)',
        DYNAMO_OPERATIONS.map((operation) =>
          props.table.metricSuccessfulRequestLatency({
            dimensionsMap: { TableName: props.table.tableName, Operation: operation },
            statistic: 'p99',
            period: FIVE_MINUTES,
            label: operation,
          }),
        ),
      ),
      graph('Consumed capacity units', [
        props.table.metricConsumedReadCapacityUnits({
          period: FIVE_MINUTES,
          statistic: 'Sum',
          label: 'read',
        }),
        props.table.metricConsumedWriteCapacityUnits({
          period: FIVE_MINUTES,
          statistic: 'Sum',
          label: 'write',
        }),
      ]),
    );
    this.dashboard.addWidgets(heading('## API Gateway'));
    this.dashboard.addWidgets(
      graph(
        'HTTP API requests and errors',
        [
          withLabel(serverErrors, '5xx'),
          props.httpApi.metricClientError({ period: FIVE_MINUTES, statistic: 'Sum', label: '4xx' }),
        ],
        { width: 6, right: [withLabel(requests, 'requests')] },
      ),
      graph(
        'HTTP API latency (ms)',
        [
          props.httpApi.metricLatency({ period: FIVE_MINUTES, statistic: 'p50', label: 'p50' }),
          props.httpApi.metricLatency({ period: FIVE_MINUTES, statistic: 'p99', label: 'p99' }),
          props.httpApi.metricIntegrationLatency({
            period: FIVE_MINUTES,
            statistic: 'p99',
            label: 'integration p99',
          }),
        ],
        { width: 6 },
      ),
      graph(
        'WebSocket connects and messages',
        [withLabel(wsMetric('ConnectCount'), 'connects'), withLabel(wsMetric('MessageCount'), 'messages')],
        {
          width: 6,
        },
      ),
      graph(
        'WebSocket errors',
        [
          withLabel(wsMetric('ClientError'), 'client errors'),
          withLabel(wsMetric('IntegrationError'), 'integration errors'),
          withLabel(wsMetric('ExecutionError'), 'execution errors'),
        ],
        { width: 6 },
      ),
    );
    this.dashboard.addWidgets(heading('## Lambda'));
    this.dashboard.addWidgets(
      perFunction('Errors', (fn) => fn.metricErrors({ period: FIVE_MINUTES, statistic: 'Sum' })),
      perFunction('Throttles', (fn) => fn.metricThrottles({ period: FIVE_MINUTES, statistic: 'Sum' })),
    );
    this.dashboard.addWidgets(
      perFunction('Concurrent executions (max)', (fn) =>
        fn.metric('ConcurrentExecutions', { period: FIVE_MINUTES, statistic: 'Maximum' }),
      ),
      perFunction('Duration p99 (ms)', (fn) => fn.metricDuration({ period: FIVE_MINUTES, statistic: 'p99' })),
    );
  }
}

/** A latchkey metric without dimensions (the catalog's dimensionless ones), in `namespace`. */
function metricIn(
  namespace: string,
  metricName: MetricName,
  options: { statistic: string; period?: Duration; label?: string },
): Metric {
  return new Metric({
    namespace,
    metricName,
    statistic: options.statistic,
    period: options.period ?? FIVE_MINUTES,
    ...(options.label ? { label: options.label } : {}),
  });
}

const withLabel = (metric: IMetric, label: string): IMetric =>
  metric instanceof Metric || metric instanceof MathExpression ? metric.with({ label }) : metric;
