/** Starts one DynamoDB Local for the whole test run and hands its endpoint to every test file. */
import type { TestProject } from 'vitest/node';
import { startDynamoDbLocal } from '../../local/dynamodb-local';
import { makeTablePool, type TablePool } from './table-pool';

declare module 'vitest' {
  export interface ProvidedContext {
    dynamoEndpoint: string;
    tablePool: TablePool;
  }
}

export default async function setup(project: TestProject) {
  const external = process.env.AWS_ENDPOINT_URL_DYNAMODB;
  const dynamo = external ? undefined : await startDynamoDbLocal({ maxHeap: '768m' });
  const endpoint = external ?? (dynamo?.endpoint as string);
  project.provide('dynamoEndpoint', endpoint);
  project.provide('tablePool', await makeTablePool(endpoint));
  return async () => {
    await dynamo?.stop();
  };
}
