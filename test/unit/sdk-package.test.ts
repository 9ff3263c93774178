/** The SDK and CLI as published: bundles that pull in no CDK and no handler code. */
import { build } from 'esbuild';
import { describe, expect, it } from 'vitest';

describe('the published entry points', () => {
  it.each(['sdk/index.ts', 'bin/latchkey.ts'])(
    '%s bundles from sdk/ alone (no lib/, lambdas/ or local/)',
    async (entry) => {
      const result = await build({
        entryPoints: [entry],
        bundle: true,
        platform: 'node',
        format: 'esm',
        packages: 'external',
        write: false,
        metafile: true,
        logLevel: 'silent',
      });
      const inputs = Object.keys(result.metafile.inputs);
      expect(inputs.filter((f) => !f.startsWith('sdk/') && f !== entry)).toEqual([]);
      const imports = Object.values(result.metafile.outputs).flatMap((o) => o.imports.map((i) => i.path));
      expect(imports.filter((p) => p.startsWith('aws-cdk-lib') || p.startsWith('constructs'))).toEqual([]);
    },
  );
});
