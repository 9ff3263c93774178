/**
 * The README's examples, run as written against the local stack, so they cannot rot.
 *
 * Every ```ts and ```sh block runs, unless the line before it says
 * `<!-- readme-test: skip (why) -->`. The only change made to a block is the ports: the README
 * says 127.0.0.1:3000 and :3001 (what `npm start` uses), the test's stack runs on free ports.
 * TypeScript blocks import the built client (`latchkey`, sdk/dist), as a user's code would; shell
 * blocks run with bash -euo pipefail, `npx latchkey` is the built CLI, and curl fails on any HTTP
 * error (--fail-with-body), so an example that answers an error fails here.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { CreateTableCommand, DynamoDBClient, ResourceInUseException } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalStack } from '../../local/stack';
import { dynamoEndpoint } from '../support/dynamo';
import { startTestStack } from '../support/stack';

const ROOT = join(import.meta.dirname, '..', '..');
const RUN_DIR = join(ROOT, 'test', '.readme-run'); // inside the repository, so `latchkey` resolves
/** The AWS credentials the examples' own AWS clients see (DynamoDB Local keeps tables per key). */
const EXAMPLE_AWS = { accessKeyId: 'readme', secretAccessKey: 'readme' };
const tsx = createRequire(import.meta.url).resolve('tsx');

interface Block {
  readonly lang: 'ts' | 'sh';
  readonly line: number;
  readonly code: string;
  readonly skip?: string;
}

/** The README's TypeScript and shell blocks, with their skip reasons. */
function readmeBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w+)?/.exec(lines[i] as string);
    if (!open) continue;
    const end = lines.findIndex((l, j) => j > i && l.startsWith('```'));
    const lang = open[1] ?? '';
    const previous = lines.slice(0, i).findLast((l) => l.trim() !== '') ?? '';
    const skip = /^<!-- readme-test: skip \((.+)\) -->$/.exec(previous.trim())?.[1];
    if (['ts', 'typescript'].includes(lang) || ['sh', 'bash', 'shell'].includes(lang))
      blocks.push({
        lang: lang.startsWith('t') ? 'ts' : 'sh',
        line: i + 1,
        code: lines.slice(i + 1, end).join('\n'),
        ...(skip ? { skip } : {}),
      });
    i = end;
  }
  return blocks;
}

const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
const blocks = readmeBlocks(README);
let stack: LocalStack;

/** The built client, rebuilt when any of its sources is newer than the build. */
function ensureClientBuilt(): void {
  const built = join(ROOT, 'sdk', 'dist', 'index.js');
  const newest = (dir: string): number =>
    Math.max(
      ...readdirSync(dir, { withFileTypes: true })
        .filter((e) => e.name !== 'dist' && e.name !== 'node_modules')
        .map((e) => (e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs)),
    );
  if (existsSync(built) && statSync(built).mtimeMs >= newest(join(ROOT, 'sdk'))) return;
  const build = spawnSync('npm', ['run', 'build', '-w', 'sdk'], { cwd: ROOT, encoding: 'utf8' });
  if (build.status !== 0) throw new Error(`building the client failed:\n${build.stdout}\n${build.stderr}`);
}

beforeAll(async () => {
  ensureClientBuilt();
  // As `npm start -- --hierarchical-prefixes tenants/` runs it (the Hierarchies section's examples).
  stack = await startTestStack('readme', { hierarchicalPrefixes: ['tenants/'] });
  rmSync(RUN_DIR, { recursive: true, force: true });
  mkdirSync(RUN_DIR, { recursive: true });
  // The fenced-write example's resource: a table `ledger` keyed by `id`.
  try {
    await new DynamoDBClient({
      endpoint: dynamoEndpoint(),
      region: 'us-east-1',
      credentials: EXAMPLE_AWS,
    }).send(
      new CreateTableCommand({
        TableName: 'ledger',
        KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
        AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'S' }],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    );
  } catch (error) {
    if (!(error instanceof ResourceInUseException)) throw error;
  }
}, 120_000);
afterAll(async () => {
  await stack?.stop();
  rmSync(RUN_DIR, { recursive: true, force: true });
});

/** The block as a user would run it, on the test stack's ports. */
const onTestPorts = (code: string) =>
  code
    .replaceAll('http://127.0.0.1:3000', stack.url)
    .replaceAll('ws://127.0.0.1:3001/v1', stack.wsUrl)
    .replaceAll('127.0.0.1:3000', new URL(stack.url).host);

function run(command: string, args: string[]): Promise<{ code: number | null; output: string }> {
  const child = spawn(command, args, {
    cwd: RUN_DIR,
    env: {
      ...process.env,
      LATCHKEY_ENDPOINT: stack.url,
      LATCHKEY_WS_ENDPOINT: stack.wsUrl,
      AWS_ENDPOINT_URL_DYNAMODB: dynamoEndpoint(),
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: EXAMPLE_AWS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: EXAMPLE_AWS.secretAccessKey,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c));
  child.stderr.on('data', (c: Buffer) => (output += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
  return new Promise((resolve) =>
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    }),
  );
}

describe('the README', () => {
  it('has examples to run, and says why for each one it does not run', () => {
    const runnable = blocks.filter((b) => !b.skip);
    expect(runnable.filter((b) => b.lang === 'ts').length).toBeGreaterThanOrEqual(3);
    expect(runnable.filter((b) => b.lang === 'sh').length).toBeGreaterThanOrEqual(3);
    for (const b of blocks.filter((b) => b.skip))
      expect(b.skip?.length, `line ${b.line}`).toBeGreaterThan(10);
  });

  it.each(blocks.filter((b) => !b.skip).map((b) => [`${b.lang} block at line ${b.line}`, b] as const))(
    'runs the %s',
    { timeout: 120_000 },
    async (_title, block) => {
      const code = onTestPorts(block.code);
      const ran =
        block.lang === 'ts'
          ? await (async () => {
              const file = join(RUN_DIR, `line-${block.line}.mts`);
              writeFileSync(file, code);
              return run(process.execPath, ['--import', tsx, file]);
            })()
          : await run('bash', [
              '-euo',
              'pipefail',
              '-c',
              `curl() { command curl --fail-with-body "$@"; }\n${code}`,
            ]);
      expect(ran.code, `README line ${block.line}:\n${ran.output}`).toBe(0);
    },
  );
});
