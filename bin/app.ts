#!/usr/bin/env node
/** The CDK app (`npm run synth`, `npx cdk deploy -c stage=prod`). */
import { buildApp } from '../lib/app';
import { LatchkeyConfigError } from '../lib/config';

try {
  buildApp();
} catch (error) {
  // A bad key or value: the message names it; a stack trace would only bury it.
  if (!(error instanceof LatchkeyConfigError)) throw error;
  console.error(error.message);
  process.exit(1);
}
