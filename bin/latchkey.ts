#!/usr/bin/env node
/** `latchkey`: the command line (see sdk/cli/main.ts, or `latchkey --help`); the package's bin is sdk/cli/bin.ts. */
import '../sdk/cli/bin';
