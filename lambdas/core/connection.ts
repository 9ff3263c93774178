/**
 * A WebSocket connection's item: the principal that signed its `$connect`,
 * the client it speaks for, when it opened, and (once `$disconnect` began)
 * when it closed. A lock held through a connection is held through a session
 * made for it, which may be made only while the connection is open: so a
 * `$disconnect` that marks the connection closed first, then ends its
 * session, leaves no lock held through a connection that is gone.
 */
import { and, type Condition, eq, exists, missing, set } from './expr';
import type { ItemWrite } from './items';

export const ConnectionAttr = {
  owner: 'principal',
  client: 'client_id',
  connectedAt: 'connected_at',
  closedAt: 'closed_at',
} as const;
const C = ConnectionAttr;

/** The connection is open and `owner`'s. */
export const openAndOwnedBy = (owner: string): Condition =>
  and(exists(C.client), missing(C.closedAt), eq(C.owner, owner));

export const openWrite = (
  owner: string,
  clientId: string,
  now: number,
): Omit<ItemWrite, 'sweepAt' | 'gcFrom'> => ({
  update: [set(C.owner, owner), set(C.client, clientId), set(C.connectedAt, now)],
});

/** `$disconnect` (or the sweeper) begins: from now on nothing may be held through it. */
export const closeWrite = (now: number): ItemWrite => ({
  condition: exists(C.client),
  update: [set(C.closedAt, now)],
});
