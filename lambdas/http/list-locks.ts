/** GET /api/v1/locks?prefix=&limit=&cursor= : locks by name prefix, in name order, paginated. */
import { lastFencingToken, liveHolder } from '../core/lock';
import { listQuery, lockView } from '../core/wire';
import { getDeps } from '../shared/deps';
import { httpRoute, json, parseQuery } from '../shared/http';

const DEFAULT_PAGE = 50;

export const handler = httpRoute(async (event) => {
  const query = parseQuery(event, listQuery);
  const page = await getDeps().locks.list(query.prefix ?? '', query.limit ?? DEFAULT_PAGE, query.cursor);
  const now = Date.now();
  const locks = page.items.map((item) =>
    lockView(String(item.lock_name), liveHolder(item, now), lastFencingToken(item)),
  );
  return json(200, { locks, next_cursor: page.nextCursor ?? null });
});
