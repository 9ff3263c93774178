/**
 * How every Lambda function is bundled: the esbuild options, in one place. The CDK functions
 * (constructs/lock-function.ts `bundlingOptions`) are built from them, and so are the bundles the
 * cold-start bench (test/bench/cold-start.ts) and the bundle-size test measure, so what is measured
 * is what is deployed. No CDK import here: the bench and tests load it without aws-cdk-lib.
 *
 * ES modules (middy is ESM-only), for the Node.js 24 runtime, minified, with source maps. The AWS
 * SDK (`@aws-sdk/*`) is external: the Lambda Node.js runtime ships SDK v3, so the functions import
 * the runtime's copy (not the version the tests ran) and the bundles stay small (issue "Cold start":
 * at most 250 KiB). The banner gives CommonJS dependencies that call `require` one inside the ESM.
 *
 * Each function's asset holds two files: index.mjs (the handler) and tracer.mjs (the Powertools
 * tracer and the X-Ray SDK, built from TRACER_PACKAGE with the same options by the CDK hook
 * `tracerBuildCommand`). lambdas/shared/tracing.ts imports tracer.mjs only when tracing is on, by
 * the path the `define` below gives it: esbuild does not follow an import of a variable, so the
 * tracer stays out of index.mjs.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { BuildOptions } from 'esbuild';

/** The tracer's file in each function's asset, beside index.mjs. */
export const TRACER_FILE = 'tracer.mjs';
/** What tracer.mjs is built from (its exports: the package's). */
export const TRACER_PACKAGE = '@aws-lambda-powertools/tracer';

export const ESBUILD_OPTIONS = {
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node24',
  minify: true,
  sourcemap: true,
  mainFields: ['module', 'main'],
  external: ['@aws-sdk/*'],
  // lambdas/shared/tracing.ts: where the bundled handler finds the tracer (unbundled: the package).
  define: { LATCHKEY_TRACER_MODULE: JSON.stringify(`./${TRACER_FILE}`) },
  banner: {
    js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
  },
} satisfies BuildOptions;

/** The entry file of a function whose handler module (FunctionSpec.module) is `module`, from the project root. */
export const functionEntry = (module: string): string => `lambdas/${module}.ts`;

type Options = typeof ESBUILD_OPTIONS;

/** ESBUILD_OPTIONS as esbuild command-line flags (every option must have its flag here). */
const FLAGS: { [K in keyof Options]: (value: Options[K]) => string[] } = {
  bundle: (on) => (on ? ['--bundle'] : []),
  platform: (platform) => [`--platform=${platform}`],
  format: (format) => [`--format=${format}`],
  target: (target) => [`--target=${target}`],
  minify: (on) => (on ? ['--minify'] : []),
  sourcemap: (on) => (on ? ['--sourcemap'] : []),
  mainFields: (fields) => [`--main-fields=${fields.join(',')}`],
  external: (modules) => modules.map((module) => `--external:${module}`),
  define: (defines) => Object.entries(defines).map(([name, value]) => `--define:${name}=${value}`),
  banner: (banner) => [`--banner:js=${banner.js}`],
};

/** One shell word (bash). */
const shellWord = (word: string): string =>
  /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;

/**
 * The shell command (bash) that builds tracer.mjs into `outputDir` with ESBUILD_OPTIONS, from the
 * project in `inputDir` (where the tracer package resolves): the CDK functions' `afterBundling`
 * hook. `esbuild`: the esbuild executable.
 */
export function tracerBuildCommand(esbuild: string, inputDir: string, outputDir: string): string {
  const flags = (Object.keys(FLAGS) as (keyof Options)[]).flatMap((key) =>
    (FLAGS[key] as (value: Options[typeof key]) => string[])(ESBUILD_OPTIONS[key]),
  );
  const build = [
    esbuild,
    TRACER_PACKAGE,
    ...flags,
    `--outfile=${outputDir}/${TRACER_FILE}`,
    '--log-level=warning',
  ];
  return `cd ${shellWord(inputDir)} && ${build.map(shellWord).join(' ')}`;
}

/** This project's esbuild executable (the one CDK bundles the handlers with, when run locally). */
export function localEsbuild(): string {
  return join(dirname(createRequire(import.meta.url).resolve('esbuild/package.json')), 'bin', 'esbuild');
}
