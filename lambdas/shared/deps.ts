/**
 * What handlers depend on, built once per process (per Lambda cold start)
 * from the validated configuration.
 */
import { createDocumentClient } from '../store/document-client';
import { LockStore } from '../store/lock-store';
import { type Config, loadConfig } from './config';

export interface Deps {
  readonly config: Config;
  readonly locks: LockStore;
}

let deps: Deps | undefined;

export function getDeps(): Deps {
  if (!deps) {
    const config = loadConfig();
    const db = createDocumentClient(config.dynamoEndpoint ? { endpoint: config.dynamoEndpoint } : {});
    deps = { config, locks: new LockStore(db, config.store) };
  }
  return deps;
}
