/**
 * GET /api/v1/list/{prefix} (and GET /api/v1/list for every name): locks whose names start with the
 * prefix, in name order, paginated (?limit=&cursor=). The prefix is in the path, so IAM can scope it.
 */
import { listQuery, lockView } from '../core/wire';
import { httpRoute, json, parseQuery, principalFrom } from '../shared/http';
import { listPrefixFrom } from './lock-path';

const DEFAULT_PAGE = 50;

export const handler = httpRoute(async (event, { storage, clock }) => {
  const prefix = listPrefixFrom(event);
  const query = parseQuery(event, listQuery);
  const page = await storage.listLocks(prefix, query.limit ?? DEFAULT_PAGE, query.cursor);
  const now = clock.now();
  const viewer = principalFrom(event);
  const locks = page.locks.map(({ name, item }) => lockView(name, item, now, viewer));
  return json(200, { prefix, locks, next_cursor: page.nextCursor ?? null });
});
