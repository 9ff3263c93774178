#!/usr/bin/env node
/**
 * Builds the installable client into dist/ (`npm run build`; `npm pack` runs it):
 *   dist/index.js    the SDK, one ES module (its dependencies stay imports: --packages=external)
 *   dist/cli.js      the `latchkey` command, the same way
 *   dist/*.d.ts      the SDK's declarations, with `.js` in relative imports so that
 *                    `moduleResolution: node16/nodenext` consumers resolve them too
 *   dist/LICENSE     the repository's (npm packs no file from outside sdk/)
 * esbuild and typescript come from the repository's devDependencies.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { build } from 'esbuild';

const here = import.meta.dirname;
const dist = join(here, 'dist');
const started = performance.now();
rmSync(dist, { recursive: true, force: true });

await build({
  absWorkingDir: here,
  entryPoints: { index: 'index.ts', cli: 'cli/bin.ts' }, // cli/bin.ts starts with the #! line esbuild keeps
  outdir: 'dist',
  bundle: true,
  packages: 'external',
  platform: 'node',
  target: 'node20',
  format: 'esm',
  logLevel: 'warning',
});

const tsc = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc');
execFileSync(process.execPath, [tsc, '-p', join(here, 'tsconfig.build.json')], { stdio: 'inherit' });
for (const file of readdirSync(dist, { recursive: true, encoding: 'utf8' })) {
  if (!file.endsWith('.d.ts')) continue;
  const path = join(dist, file);
  const text = readFileSync(path, 'utf8');
  writeFileSync(path, text.replace(/((?:from|import\()\s*['"]\.{1,2}\/[^'"]*?)(?<!\.js)(['"])/g, '$1.js$2'));
}
const license = join(here, '..', 'LICENSE');
if (existsSync(license)) copyFileSync(license, join(dist, 'LICENSE'));
console.log(`sdk: built dist/ in ${Math.round(performance.now() - started)} ms`);
