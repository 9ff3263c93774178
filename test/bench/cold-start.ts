/**
 * Cold start of each Lambda function, as deployed: its bundle built with the options the CDK stack
 * builds it with (lib/bundling.ts: the AWS SDK external, the tracer a file of its own), its size
 * (minified, gzipped) and the time a fresh Node process takes to import it (the module load part of
 * a cold start: the handler's first invocation, which reads the configuration and makes the
 * clients, is not in it). The external SDK imports resolve to this project's node_modules, as they
 * would to the runtime's in Lambda. Also: the tracer file (tracer.mjs) and what two functions take
 * to load with tracing on (handler and tracer); an empty ES module (the floor: what any import
 * costs); where the bytes of the largest bundle go; and the same two functions with the AWS SDK
 * bundled in (the build before the SDK was left to the runtime).
 *
 * Used by `npm run bench` (run.ts; `BENCH_SECTIONS=cold npm run bench` runs this section alone)
 * and, for the sizes only, by test/infra/bundle-size.test.ts.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { type BuildOptions, build, type Metafile } from 'esbuild';
import { ROUTES } from '../../lambdas/http/routes';
import { NOTIFIER, SWEEPER, TIMER } from '../../lambdas/shared/function-spec';
import { WS_ROUTES } from '../../lambdas/ws/routes';
import { ESBUILD_OPTIONS, functionEntry, TRACER_FILE, TRACER_PACKAGE } from '../../lib/bundling';

/** The most a function's bundle may weigh, minified (issue "Cold start"). */
export const MAX_BUNDLE_BYTES = 250 * 1024;

/** Every function's handler module, once (two HTTP routes share the listing's). */
export const FUNCTION_MODULES: readonly string[] = [
  ...new Set([...ROUTES, ...WS_ROUTES, NOTIFIER, TIMER, SWEEPER].map((spec) => spec.module)),
];

export interface Bundle {
  readonly module: string;
  /** The minified bundle (index.mjs), without its source map. */
  readonly code: Uint8Array;
  readonly map: Uint8Array | undefined;
  readonly bytes: number;
  readonly gzipped: number;
  readonly metafile: Metafile;
}

/** `module` bundled as the stack deploys it (`overrides`: to compare, e.g. the AWS SDK bundled). */
export function bundleFunction(module: string, overrides: BuildOptions = {}): Promise<Bundle> {
  // CDK's name for an ESM bundle.
  return bundleEntry(module, functionEntry(module), 'index.mjs', overrides);
}

/** The tracer file (tracer.mjs) of every function's asset, as the stack's bundling hook builds it. */
export function bundleTracer(): Promise<Bundle> {
  return bundleEntry('tracer', TRACER_PACKAGE, TRACER_FILE);
}

async function bundleEntry(module: string, entry: string, file: string, overrides: BuildOptions = {}) {
  const out = await build({
    ...ESBUILD_OPTIONS,
    ...overrides,
    entryPoints: [entry],
    // Nothing is written here (write: false).
    outfile: resolve('cdk.out', 'cold-start', module, file),
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
  const code = out.outputFiles.find((file) => file.path.endsWith('.mjs'))?.contents;
  if (!code) throw new Error(`${module}: esbuild wrote no .mjs`);
  const map = out.outputFiles.find((file) => file.path.endsWith('.mjs.map'))?.contents;
  return {
    module,
    code,
    map,
    bytes: code.byteLength,
    gzipped: gzipSync(code).byteLength,
    metafile: out.metafile,
  };
}

/** Bytes in the bundle by npm package (or, for the project's own code, by lambdas/ folder), largest first. */
export function bytesByPackage(metafile: Metafile): [string, number][] {
  const totals = new Map<string, number>();
  for (const output of Object.values(metafile.outputs))
    for (const [path, input] of Object.entries(output.inputs)) {
      const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path)?.[1];
      const key = pkg ?? path.split('/').slice(0, 2).join('/');
      totals.set(key, (totals.get(key) ?? 0) + input.bytesInOutput);
    }
  return [...totals].sort((a, b) => b[1] - a[1]);
}

/**
 * The child that times one import: fresh process, one `import()` of the file, timed inside.
 * It exits at once, so a handler that starts timers at import still reports.
 */
const TIMER_SCRIPT = `const file = process.argv[2];
const start = performance.now();
await import(file);
process.stdout.write(String(performance.now() - start));
process.exit(0);
`;

/** Env of the timing child: as in Lambda (deployed NODE_OPTIONS, tracing off or on), no configuration. */
const childEnv = (tracing: boolean): NodeJS.ProcessEnv => ({
  PATH: process.env.PATH,
  NODE_OPTIONS: '--enable-source-maps',
  POWERTOOLS_TRACE_ENABLED: String(tracing),
  AWS_REGION: 'us-east-1',
});

/** A file to time, and whether tracing is on (the handler then loads tracer.mjs too). */
interface Timed {
  readonly file: string;
  readonly tracing: boolean;
}

function timeImport(timer: string, { file, tracing }: Timed): Promise<number> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [timer, file], {
      env: childEnv(tracing),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
    });
    child.stderr.on('data', (chunk) => {
      err += chunk;
    });
    child.once('error', fail);
    child.once('exit', (code) => {
      const ms = Number(out);
      if (code === 0 && Number.isFinite(ms) && out !== '') done(ms);
      else fail(new Error(`importing ${file} failed (exit ${code}): ${err.trim() || out}`));
    });
  });
}

export interface LoadTime {
  readonly median: number;
  readonly min: number;
}

const summarize = (times: number[]): LoadTime => {
  const sorted = [...times].sort((a, b) => a - b);
  return { median: sorted[Math.floor(sorted.length / 2)] ?? Number.NaN, min: sorted[0] ?? Number.NaN };
};

/**
 * Import times of each file, `runs` fresh processes each, interleaved (run 1 of every file, then
 * run 2, ...) so that a slow moment of the machine spreads over all of them.
 */
async function loadTimes(dir: string, files: readonly Timed[], runs: number): Promise<LoadTime[]> {
  const timer = join(dir, 'time-import.mjs');
  await writeFile(timer, TIMER_SCRIPT);
  const times: number[][] = files.map(() => []);
  for (let run = 0; run < runs; run++)
    for (const [i, file] of files.entries()) times[i]?.push(await timeImport(timer, file));
  return times.map(summarize);
}

async function writeBundle(dir: string, name: string, bundle: Bundle): Promise<string> {
  const file = join(dir, name.endsWith('.mjs') ? name : `${name.replace(/\//g, '-')}.mjs`);
  await writeFile(file, bundle.code);
  // The deployed functions run with --enable-source-maps: the map sits beside the bundle there too.
  if (bundle.map) await writeFile(`${file}.map`, bundle.map);
  return file;
}

const kib = (bytes: number) => (bytes / 1024).toFixed(1);
const ms = (t: number) => t.toFixed(1);

/** The section's report, markdown. `runs`: fresh processes per bundle. */
export async function coldStartSection(runs = Number(process.env.BENCH_COLD_RUNS ?? 5)): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), 'latchkey-cold-'));
  try {
    // The bundles side by side, as in an asset: each handler imports ./tracer.mjs when tracing is
    // on; the AWS SDK they leave external resolves to this project's node_modules.
    await symlink(resolve('node_modules'), join(dir, 'node_modules'), 'dir');
    const [tracer, ...bundles] = await Promise.all([
      bundleTracer(),
      ...FUNCTION_MODULES.map((module) => bundleFunction(module)),
    ]);
    if (!tracer) throw new Error('no tracer bundle');
    const files = await Promise.all(bundles.map((bundle) => writeBundle(dir, bundle.module, bundle)));
    await writeBundle(dir, TRACER_FILE, tracer);
    const empty = join(dir, 'empty.mjs');
    await writeFile(empty, '');

    // Two functions with tracing on, and with the AWS SDK bundled in (the build before).
    const compared = ['http/health', 'http/lock-commands'];
    const comparedFiles = compared.map((module) => files[FUNCTION_MODULES.indexOf(module)] ?? '');
    const sdkBundled = await Promise.all(compared.map((module) => bundleFunction(module, { external: [] })));
    const sdkBundledFiles = await Promise.all(
      sdkBundled.map((bundle) => writeBundle(dir, `${bundle.module}-sdk-bundled`, bundle)),
    );

    const off = (file: string): Timed => ({ file, tracing: false });
    const [floor, ...times] = await loadTimes(
      dir,
      [
        off(empty),
        ...files.map(off),
        ...comparedFiles.map((file) => ({ file, tracing: true })),
        ...sdkBundledFiles.map(off),
      ],
      runs,
    );
    const tracedTimes = times.slice(bundles.length, bundles.length + compared.length);
    const sdkBundledTimes = times.slice(bundles.length + compared.length);
    const lines = [
      `\n### Cold start: function bundles (esbuild as deployed, lib/bundling.ts) and module load time`,
      `\nNode ${process.version}; load time: one \`import()\` of the bundle in a fresh \`node\` process, ${runs} processes each, tracing off; the AWS SDK (external) loads from node_modules.\n`,
      '| function | minified KiB | gzipped KiB | load ms (median) | load ms (min) |',
      '|---|---:|---:|---:|---:|',
    ];
    for (const [i, bundle] of bundles.entries()) {
      const t = times[i];
      const over = bundle.bytes > MAX_BUNDLE_BYTES ? ' (over 250 KiB)' : '';
      lines.push(
        `| ${bundle.module} | ${kib(bundle.bytes)}${over} | ${kib(bundle.gzipped)} | ${ms(t?.median ?? Number.NaN)} | ${ms(t?.min ?? Number.NaN)} |`,
      );
    }
    lines.push(
      `| (${TRACER_FILE}: every asset's, loaded only with tracing on) | ${kib(tracer.bytes)} | ${kib(tracer.gzipped)} | | |`,
      `| (empty ES module: the floor) | 0.0 | 0.0 | ${ms(floor?.median ?? 0)} | ${ms(floor?.min ?? 0)} |`,
    );

    const largest = bundles.reduce((a, b) => (b.bytes > a.bytes ? b : a));
    lines.push(
      `\nWhere the bytes of the largest bundle (${largest.module}, ${kib(largest.bytes)} KiB) go:\n`,
      '| package or folder | KiB |',
      '|---|---:|',
      ...bytesByPackage(largest.metafile)
        .slice(0, 8)
        .map(([name, bytes]) => `| ${name} | ${kib(bytes)} |`),
    );

    lines.push(
      `\nTracing off or on (on: the handler imports ${TRACER_FILE} too), and the AWS SDK left to the runtime (deployed) or bundled in:\n`,
      '| function | build | minified KiB | load ms (median) | load ms (min) |',
      '|---|---|---:|---:|---:|',
    );
    for (const [i, module] of compared.entries()) {
      const bundle = bundles.find((b) => b.module === module);
      const t = times[FUNCTION_MODULES.indexOf(module)];
      const tt = tracedTimes[i];
      const b = sdkBundled[i];
      const tb = sdkBundledTimes[i];
      if (bundle && t)
        lines.push(
          `| ${module} | deployed, tracing off | ${kib(bundle.bytes)} | ${ms(t.median)} | ${ms(t.min)} |`,
        );
      if (bundle && tt)
        lines.push(
          `| ${module} | deployed, tracing on | ${kib(bundle.bytes)} + ${kib(tracer.bytes)} | ${ms(tt.median)} | ${ms(tt.min)} |`,
        );
      if (b && tb)
        lines.push(
          `| ${module} | AWS SDK bundled, tracing off | ${kib(b.bytes)} | ${ms(tb.median)} | ${ms(tb.min)} |`,
        );
    }
    return lines;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
