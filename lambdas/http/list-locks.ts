/** GET /api/v1/locks?prefix=&limit=&cursor= : locks by name prefix, in name order, paginated. */
import { listQuery, lockView } from '../core/wire';
import { httpRoute, json, parseQuery } from '../shared/http';

const DEFAULT_PAGE = 50;

export const handler = httpRoute(async (event, { storage, clock }) => {
  const query = parseQuery(event, listQuery);
  const page = await storage.listLocks(query.prefix ?? '', query.limit ?? DEFAULT_PAGE, query.cursor);
  const now = clock.now();
  const locks = page.locks.map(({ name, item }) => lockView(name, item, now));
  return json(200, { locks, next_cursor: page.nextCursor ?? null });
});
