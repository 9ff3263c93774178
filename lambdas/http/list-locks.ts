/** GET /api/v1/locks?prefix=&limit=&cursor= : locks by name prefix, in name order, paginated. */
import { listQuery, lockView } from '../core/wire';
import { getDeps } from '../shared/deps';
import { httpRoute, json, parseQuery } from '../shared/http';

const DEFAULT_PAGE = 50;

export const handler = httpRoute(async (event) => {
  const query = parseQuery(event, listQuery);
  const page = await getDeps().locks.list(query.prefix ?? '', query.limit ?? DEFAULT_PAGE, query.cursor);
  const now = Date.now();
  const locks = page.locks.map(({ name, item }) => lockView(name, item, now));
  return json(200, { locks, next_cursor: page.nextCursor ?? null });
});
