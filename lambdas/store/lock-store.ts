/**
 * The lock repository: runs the core's protocols against DynamoDB. An
 * uncontended acquire, release or renew is one conditional UpdateItem; a
 * refusal comes back with the item as it was (ALL_OLD), so explaining it
 * needs no read.
 */
import { randomUUID } from 'node:crypto';
import {
  BatchGetCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  QueryCommand,
} from '@aws-sdk/lib-dynamodb';
import { invalidRequest } from '../core/errors';
import type { Item, Write } from '../core/expr';
import {
  type AcquireCommand,
  acquireProtocol,
  type Protocol,
  type ReleaseCommand,
  type RenewCommand,
  releaseProtocol,
  renewProtocol,
  runProtocol,
  type WriteResult,
} from '../core/lock';
import { lockNameProblem } from '../core/names';
import { conditionalUpdate } from './conditional-update';
import { toStoreError } from './errors';
import {
  DEFAULT_DEADLINE_MS,
  lockBatchReadRequest,
  lockListRequest,
  lockReadRequest,
  lockWriteRequest,
  type StoreSettings,
} from './lock-requests';
import { LIST_INDEX, lockKey, lockListing } from './table';

export interface LockPage {
  /** Locks in name order; a name whose item was collected between the Query and the read is left out. */
  readonly locks: readonly { readonly name: string; readonly item: Item }[];
  readonly nextCursor: string | undefined;
}

export class LockStore {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly settings: StoreSettings,
    private readonly clock: () => number = Date.now,
  ) {}

  acquire(cmd: AcquireCommand) {
    return this.run(cmd.name, (now) => acquireProtocol(cmd, now));
  }

  /** An acquire whose writes go through `via` (a transaction that also checks a session, say). */
  acquireVia(cmd: AcquireCommand, via: (write: Write, now: number) => Promise<WriteResult>) {
    const now = this.clock();
    return runProtocol(acquireProtocol(cmd, now), (write) => via(write, now), randomUUID);
  }

  release(cmd: ReleaseCommand) {
    return this.run(cmd.name, (now) => releaseProtocol(cmd, now));
  }

  renew(cmd: RenewCommand) {
    return this.run(cmd.name, (now) => renewProtocol(cmd, now));
  }

  /** One conditional write of the lock item outside a protocol (undoing a handoff, fixing a count). */
  write(name: string, write: Write): Promise<WriteResult> {
    return this.tryWrite(name, write, this.clock(), this.deadline());
  }

  /** The lock item (strongly consistent), or undefined if the name was never used or was collected. */
  async get(name: string): Promise<Item | undefined> {
    const out = await this.send((abortSignal) =>
      this.db.send(new GetCommand(lockReadRequest(this.settings, name)), { abortSignal }),
    );
    return out.Item as Item | undefined;
  }

  /** Locks whose names start with `prefix`, in name order: a Query on the listing index, never a Scan. */
  async list(prefix: string, limit: number, cursor?: string): Promise<LockPage> {
    const startKey = cursor === undefined ? undefined : decodeCursor(cursor, prefix);
    const page = await this.send((abortSignal) =>
      this.db.send(new QueryCommand(lockListRequest(this.settings, prefix, limit, startKey)), {
        abortSignal,
      }),
    );
    const names = (page.Items ?? []).map((key) => String(key[LIST_INDEX.sk]));
    const items = names.length ? await this.readMany(names) : new Map<string, Item>();
    return {
      locks: names.flatMap((name) => {
        const item = items.get(name);
        return item ? [{ name, item }] : [];
      }),
      nextCursor: page.LastEvaluatedKey ? encodeCursor(page.LastEvaluatedKey) : undefined,
    };
  }

  private async readMany(names: readonly string[]): Promise<Map<string, Item>> {
    const found = new Map<string, Item>();
    let request = lockBatchReadRequest(this.settings, names);
    for (let round = 0; round < 5; round++) {
      const out = await this.send((abortSignal) =>
        this.db.send(new BatchGetCommand(request), { abortSignal }),
      );
      for (const item of out.Responses?.[this.settings.tableName] ?? []) {
        found.set(String(item[LIST_INDEX.sk]), item as Item);
      }
      const unprocessed = out.UnprocessedKeys?.[this.settings.tableName];
      if (!unprocessed?.Keys?.length) return found;
      request = { RequestItems: { [this.settings.tableName]: unprocessed } };
      await new Promise((resolve) => setTimeout(resolve, 20 * 2 ** round));
    }
    throw toStoreError({ name: 'ProvisionedThroughputExceededException' });
  }

  private run<Outcome>(name: string, protocolAt: (now: number) => Protocol<Outcome>): Promise<Outcome> {
    const now = this.clock();
    const deadline = this.deadline();
    return runProtocol(protocolAt(now), (write) => this.tryWrite(name, write, now, deadline), randomUUID);
  }

  private deadline(): AbortSignal {
    return AbortSignal.timeout(this.settings.deadlineMs ?? DEFAULT_DEADLINE_MS);
  }

  private tryWrite(name: string, write: Write, now: number, abortSignal: AbortSignal): Promise<WriteResult> {
    return conditionalUpdate(this.db, lockWriteRequest(this.settings, name, write, now), abortSignal);
  }

  private async send<T>(call: (abortSignal: AbortSignal) => Promise<T>): Promise<T> {
    try {
      return await call(this.deadline());
    } catch (error) {
      throw toStoreError(error);
    }
  }
}

function encodeCursor(key: Record<string, unknown>): string {
  return Buffer.from(JSON.stringify(key)).toString('base64url');
}

/**
 * A cursor is the index key of the last lock of a page. It is checked to be one
 * this API could have issued for this prefix, so a forged or mismatched cursor is
 * a 400, never a DynamoDB validation error.
 */
function decodeCursor(cursor: string, prefix: string): Record<string, string> {
  let key: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (typeof parsed === 'object' && parsed !== null) key = parsed as Record<string, unknown>;
  } catch {
    // not JSON: refused below
  }
  const name = key[LIST_INDEX.sk];
  if (typeof name === 'string' && name.startsWith(prefix) && lockNameProblem(name) === undefined) {
    const expected: Record<string, string> = { ...lockKey(name), ...lockListing(name) };
    const same =
      Object.keys(key).length === Object.keys(expected).length &&
      Object.entries(expected).every(([attr, value]) => key[attr] === value);
    if (same) return expected;
  }
  throw invalidRequest(
    'cursor is not valid for this listing: pass back the next_cursor of the previous page, with the same prefix',
    [{ path: 'cursor', message: 'not a cursor this API issued for this prefix' }],
  );
}
