/**
 * `npm run invoke -- events/http/acquire.json`: runs one sample API Gateway
 * event through its handler, like `sam local invoke`, and prints the result.
 * Uses AWS_ENDPOINT_URL_DYNAMODB (e.g. the one `npm start` prints) or starts
 * a scratch DynamoDB Local for the call.
 */
import { readFileSync } from 'node:fs';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { ROUTES } from '../lambdas/http/routes';
import { startDynamoDbLocal } from './dynamodb-local';
import { lambdaContext, loadHandler } from './handlers';
import { ensureTable } from './table-setup';

export async function invokeEvent(event: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2> {
  const route = ROUTES.find((r) => r.key === event.routeKey);
  if (!route) throw new Error(`no route ${event.routeKey}; routes: ${ROUTES.map((r) => r.key).join(', ')}`);
  const handler = await loadHandler(route.module);
  return handler(event, lambdaContext(event.requestContext?.requestId ?? 'local-invoke'));
}

async function main(files: string[]): Promise<void> {
  if (!files.length) throw new Error('usage: npm run invoke -- events/http/<event>.json [...]');
  process.env.AWS_REGION ??= 'us-east-1';
  process.env.AWS_ACCESS_KEY_ID ??= 'local';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'local';
  process.env.TABLE_NAME ??= 'latchkey-local';
  const dynamo = process.env.AWS_ENDPOINT_URL_DYNAMODB ? undefined : await startDynamoDbLocal();
  process.env.AWS_ENDPOINT_URL_DYNAMODB ??= dynamo?.endpoint;
  try {
    await ensureTable(
      new DynamoDBClient({ endpoint: process.env.AWS_ENDPOINT_URL_DYNAMODB }),
      process.env.TABLE_NAME,
    );
    for (const file of files) {
      const result = await invokeEvent(JSON.parse(readFileSync(file, 'utf8')));
      console.log(
        `${file}: ${result.statusCode}\n${JSON.stringify(JSON.parse(result.body ?? 'null'), null, 2)}`,
      );
    }
  } finally {
    await dynamo?.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
