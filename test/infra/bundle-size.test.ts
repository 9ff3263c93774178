/**
 * Every function's bundle, built with the options the stack deploys it with (lib/bundling.ts), is
 * at most 250 KiB minified (issue "Cold start"): sizes only, no timing (`npm run bench` times the
 * imports). On failure the message names each bundle over the budget, its size and its largest parts.
 * Also: what the bundles leave out is there in Lambda (Node built-ins, the runtime's AWS SDK), and
 * the tracer is a file of its own (tracer.mjs), built by the CDK hook as the bench builds it.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { localEsbuild, TRACER_FILE, tracerBuildCommand } from '../../lib/bundling';
import {
  type Bundle,
  bundleFunction,
  bundleTracer,
  bytesByPackage,
  FUNCTION_MODULES,
  MAX_BUNDLE_BYTES,
} from '../bench/cold-start';

const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;

/** The AWS SDK packages the functions import; the Lambda Node.js runtime ships them (SDK v3). */
const RUNTIME_SDK = [
  '@aws-sdk/client-apigatewaymanagementapi',
  '@aws-sdk/client-dynamodb',
  '@aws-sdk/client-sqs',
  '@aws-sdk/lib-dynamodb',
  '@aws-sdk/util-dynamodb',
];

/** What a bundle imports from outside itself: module specifiers, once each. */
const externalImports = (bundle: Bundle): string[] => [
  ...new Set(
    Object.values(bundle.metafile.outputs).flatMap((output) =>
      output.imports.filter((i) => i.external).map((i) => i.path),
    ),
  ),
];

const inputsOf = (bundle: Bundle): string[] => Object.keys(bundle.metafile.inputs);

let bundles: Bundle[];
let tracer: Bundle;
beforeAll(async () => {
  [tracer, ...bundles] = (await Promise.all([
    bundleTracer(),
    ...FUNCTION_MODULES.map((module) => bundleFunction(module)),
  ])) as [Bundle, ...Bundle[]];
});

describe('function bundles', () => {
  it('cover every function module: HTTP, WebSocket, notifier, timer, sweeper', () => {
    expect(FUNCTION_MODULES).toEqual(
      expect.arrayContaining([
        'http/health',
        'ws/messages',
        'stream/notifier',
        'schedule/timer',
        'schedule/sweeper',
      ]),
    );
  });

  it('are each at most 250 KiB minified, as deployed', () => {
    const over = bundles
      .filter((bundle) => bundle.bytes > MAX_BUNDLE_BYTES)
      .map(
        (bundle) =>
          `${bundle.module}: ${kib(bundle.bytes)} (largest: ${bytesByPackage(bundle.metafile)
            .slice(0, 4)
            .map(([name, bytes]) => `${name} ${kib(bytes)}`)
            .join(', ')})`,
      );
    expect(over, `bundles over ${kib(MAX_BUNDLE_BYTES)} minified`).toEqual([]);
  });

  it("leave out only Node built-ins and the runtime's AWS SDK (no @smithy/* import of their own)", () => {
    const builtins = new Set(builtinModules.flatMap((name) => [name, `node:${name}`]));
    for (const bundle of bundles) {
      const missing = externalImports(bundle).filter(
        (path) => !builtins.has(path) && !RUNTIME_SDK.includes(path),
      );
      expect(missing, bundle.module).toEqual([]);
    }
  });

  it('hold neither the AWS SDK nor the X-Ray tracer', () => {
    for (const bundle of bundles)
      expect(
        inputsOf(bundle).filter((path) =>
          /node_modules\/(@aws-sdk|@smithy|aws-xray-sdk-core|@aws-lambda-powertools\/tracer)\//.test(path),
        ),
        bundle.module,
      ).toEqual([]);
  });

  it("hold zod's small build only, with its English messages (the classic API is 60 KiB more in each)", () => {
    for (const bundle of bundles) {
      const zod = inputsOf(bundle).filter((path) => path.includes('node_modules/zod/'));
      expect(
        zod.filter((path) => /\/zod\/v4\/classic\//.test(path)),
        `${bundle.module}: import * as z from 'zod/mini', not 'zod'`,
      ).toEqual([]);
      // In the output, not only among the inputs (zod/mini names every locale; unused ones add 0 bytes).
      const english = Object.values(bundle.metafile.outputs).flatMap((output) =>
        Object.entries(output.inputs).filter(
          ([path, use]) => path.endsWith('/locales/en.js') && use.bytesInOutput > 0,
        ),
      );
      expect(english, `${bundle.module}: zod's English messages (lambdas/core/zod-messages.ts)`).not.toEqual(
        [],
      );
    }
  });
});

describe('the tracer file', () => {
  it('holds the Powertools tracer and the X-Ray SDK, at most 250 KiB minified too', () => {
    expect(inputsOf(tracer).some((path) => path.includes('node_modules/aws-xray-sdk-core/'))).toBe(true);
    expect(
      inputsOf(tracer).some((path) => path.includes('node_modules/@aws-lambda-powertools/tracer/')),
    ).toBe(true);
    expect(tracer.bytes, kib(tracer.bytes)).toBeLessThanOrEqual(MAX_BUNDLE_BYTES);
  });

  it("is what the stack's bundling hook builds (its esbuild command line: the same options)", () => {
    const dir = mkdtempSync(join(tmpdir(), 'latchkey-tracer-'));
    try {
      execFileSync('bash', ['-c', tracerBuildCommand(localEsbuild(), process.cwd(), dir)], { stdio: 'pipe' });
      expect(Buffer.from(readFileSync(join(dir, TRACER_FILE))).equals(Buffer.from(tracer.code))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
