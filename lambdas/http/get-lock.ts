/** GET /api/v1/locks/{name}: who holds it, until when, and the last fencing token issued. */
import { lockView } from '../core/wire';
import { getDeps } from '../shared/deps';
import { httpRoute, json } from '../shared/http';
import { lockNameFrom } from './lock-path';

export const handler = httpRoute(async (event) => {
  const name = lockNameFrom(event.pathParameters?.proxy);
  const item = await getDeps().locks.get(name);
  return json(200, lockView(name, item, Date.now()));
});
