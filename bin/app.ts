#!/usr/bin/env node
/** The CDK app (`npm run synth`, `npx cdk deploy`). */
import { buildApp } from '../lib/app';

buildApp();
