/**
 * What handlers depend on, built once per process (per Lambda cold start)
 * from the validated configuration.
 */
import { acquireBody, renewBody } from '../core/wire';
import { createDocumentClient } from '../store/document-client';
import { LockStore } from '../store/lock-store';
import { type Config, loadConfig } from './config';

export interface Deps {
  readonly config: Config;
  readonly locks: LockStore;
  /** Body schemas that depend on the configured lease bounds, built once. */
  readonly schemas: {
    readonly acquire: ReturnType<typeof acquireBody>;
    readonly renew: ReturnType<typeof renewBody>;
  };
}

let deps: Deps | undefined;

export function getDeps(): Deps {
  if (!deps) {
    const config = loadConfig();
    const db = createDocumentClient(config.dynamoEndpoint ? { endpoint: config.dynamoEndpoint } : {});
    const schemas = { acquire: acquireBody(config.limits), renew: renewBody(config.limits) };
    deps = { config, locks: new LockStore(db, config.store), schemas };
  }
  return deps;
}
