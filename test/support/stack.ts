/** A local stack on free ports over the run's shared DynamoDB Local, with a table of its own. */
import { randomUUID } from 'node:crypto';
import { type LocalStackOptions, startLocalStack } from '../../local/stack';
import { dynamoEndpoint } from './dynamo';

export interface TestCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

/** The default principal of the local stack (arn:aws:iam::000000000000:user/local). */
export const LOCAL: TestCredentials = { accessKeyId: 'local', secretAccessKey: 'local' };
/** Two more principals every test stack accepts: arn:aws:iam::000000000000:user/alice and …/bob. */
export const ALICE: TestCredentials = { accessKeyId: 'alice', secretAccessKey: 'alice-secret' };
export const BOB: TestCredentials = { accessKeyId: 'bob', secretAccessKey: 'bob-secret' };
export const TEST_CREDENTIALS = [ALICE, BOB].map((c) => `${c.accessKeyId}:${c.secretAccessKey}`).join(',');

/**
 * Starts the stack (one per test process: the handlers keep one configuration per process), with
 * the principals local, alice and bob unless `options.credentials` says otherwise.
 */
export const startTestStack = (prefix: string, options: Partial<LocalStackOptions> = {}) =>
  startLocalStack({
    port: 0,
    wsPort: 0,
    dynamoEndpoint: dynamoEndpoint(),
    tableName: `${prefix}-${randomUUID()}`,
    credentials: TEST_CREDENTIALS,
    ...options,
  });
