#!/usr/bin/env node
/** `latchkey`: the command line (see sdk/cli/main.ts, or `latchkey --help`). */
import { main } from '../sdk/cli/main';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
void main();
