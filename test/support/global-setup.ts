/** Starts one DynamoDB Local for the whole test run and hands its endpoint to every test file. */
import type { TestProject } from 'vitest/node';
import { startDynamoDbLocal } from '../../local/dynamodb-local';

declare module 'vitest' {
  export interface ProvidedContext {
    dynamoEndpoint: string;
  }
}

export default async function setup(project: TestProject) {
  const external = process.env.AWS_ENDPOINT_URL_DYNAMODB;
  const dynamo = external ? undefined : await startDynamoDbLocal({ maxHeap: '768m' });
  project.provide('dynamoEndpoint', external ?? (dynamo?.endpoint as string));
  return async () => {
    await dynamo?.stop();
  };
}
