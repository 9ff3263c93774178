/** GET /api/v1/locks/{name}: who holds it, until when, who waits (first 100), and (to its holder) the token. */
import { lockView } from '../core/wire';
import { httpRoute, json, principalFrom } from '../shared/http';
import { lockNameFrom } from './lock-path';

export const handler = httpRoute(async (event, { storage, clock }) => {
  const name = lockNameFrom(event);
  const { lock, waiters } = await storage.queue(name, 100);
  return json(200, lockView(name, lock, clock.now(), principalFrom(event), waiters));
});
