/** A local stack on free ports over the run's shared DynamoDB Local, with a table of its own. */
import { randomUUID } from 'node:crypto';
import { type LocalStackOptions, startLocalStack } from '../../local/stack';
import { dynamoEndpoint } from './dynamo';

export const startTestStack = (prefix: string, options: Partial<LocalStackOptions> = {}) =>
  startLocalStack({
    port: 0,
    wsPort: 0,
    dynamoEndpoint: dynamoEndpoint(),
    tableName: `${prefix}-${randomUUID()}`,
    ...options,
  });
