import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import { type IAccessLogSettings, LogGroupLogDestination } from 'aws-cdk-lib/aws-apigatewayv2';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';

/** Fields every API Gateway access log line carries, whatever the API. */
const COMMON_FIELDS = {
  requestId: '$context.requestId',
  time: '$context.requestTime',
  ip: '$context.identity.sourceIp',
  caller: '$context.identity.userArn',
  route: '$context.routeKey',
  status: '$context.status',
  error: '$context.error.message',
};

/** A stage's access log: one JSON line per request, in a log group of its own. */
export function jsonAccessLog(
  scope: Construct,
  retention: RetentionDays,
  extraFields: Record<string, string>,
): IAccessLogSettings {
  const group = new LogGroup(scope, 'AccessLogs', { retention });
  return {
    destination: new LogGroupLogDestination(group),
    format: AccessLogFormat.custom(JSON.stringify({ ...COMMON_FIELDS, ...extraFields })),
  };
}
