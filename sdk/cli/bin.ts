#!/usr/bin/env node
/**
 * The `latchkey` command: the installed package's bin (built to dist/cli.js), and what
 * bin/latchkey.ts runs in this repository (`npm run latchkey -- …`).
 */
import { main } from './main';

// The AWS SDK's notice that its 2027 releases need Node 22 is no concern of a command-line user.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
void main();
