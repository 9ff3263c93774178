/**
 * GET /api/v1/locks/{name}: who holds it, until when, who waits (first 100), and (to its holder) the
 * token. GET /api/v1/locks/{name}/waits: who waits for whom from it outward, and any cycle among them.
 */
import { edgeBody } from '../core/deadlock';
import { lockView } from '../core/wire';
import { httpRoute, json, principalFrom } from '../shared/http';
import { lockViewFrom } from './lock-path';

export const handler = httpRoute(async (event, { storage, clock, deadlocks }) => {
  const { name, view } = lockViewFrom(event);
  if (view === 'waits') {
    const graph = await deadlocks.graphFrom(name);
    const viewer = principalFrom(event);
    return json(200, {
      lock: name,
      edges: graph.edges.map((e) => edgeBody(e, viewer)),
      cycles: graph.cycles.map((cycle) => cycle.map((e) => edgeBody(e, viewer))),
      complete: graph.exhaustive,
    });
  }
  const { lock, waiters } = await storage.queue(name, 100);
  return json(200, lockView(name, lock, clock.now(), principalFrom(event), waiters));
});
