/** WebSocket connections: which client each speaks for, kept until $disconnect or API Gateway's 2-hour limit. */

import { ConnectionAttr, closeWrite, openWrite } from '../core/connection';
import { LatchkeyError } from '../core/errors';
import { connectionRef } from '../core/items';
import type { Clock } from './clock';
import type { Handoff } from './handoff';
import type { Sessions } from './sessions';
import type { Storage } from './storage';

export interface Connection {
  readonly id: string;
  /** The principal that opened it (its $connect was signed by it). */
  readonly owner: string;
  readonly clientId: string;
  readonly connectedAt: number;
}

/** API Gateway closes a connection after two hours; past that (and a minute) its $disconnect is overdue. */
const CONNECTION_DUE_MS = 2 * 3_600_000 + 60_000;

export class Connections {
  constructor(
    private readonly storage: Storage,
    private readonly sessions: Sessions,
    private readonly handoff: Handoff,
    private readonly clock: Clock,
  ) {}

  /**
   * The connection closed ($disconnect, or the sweeper after API Gateway's
   * limit): the locks held through it go to their next waiters, its waiters
   * leave their queues, and its item goes. The session first: its item keeps
   * the connection's locks findable should this stop midway.
   */
  async closed(id: string): Promise<{ locksReleased: number; waitersRemoved: number }> {
    // Closed first: a lock being taken through it now is refused, or its session ends just below.
    await this.storage.write(connectionRef(id), closeWrite(this.clock.now()));
    const locksReleased = await this.sessions.endConnection(id);
    const waitersRemoved = await this.handoff.forgetConnection(id);
    return { locksReleased, waitersRemoved };
  }

  async open(id: string, owner: string, clientId: string): Promise<Connection> {
    const connectedAt = this.clock.now();
    await this.storage.write(connectionRef(id), {
      ...openWrite(owner, clientId, connectedAt),
      // The sweeper's backstop for a lost $disconnect.
      sweepAt: connectedAt + CONNECTION_DUE_MS,
      gcFrom: connectedAt + CONNECTION_DUE_MS,
    });
    return { id, owner, clientId, connectedAt };
  }

  async get(id: string): Promise<Connection | undefined> {
    const item = await this.storage.read(connectionRef(id));
    const clientId = item?.[ConnectionAttr.client];
    if (!item || typeof clientId !== 'string' || item[ConnectionAttr.closedAt] !== undefined)
      return undefined;
    return {
      id,
      owner: String(item[ConnectionAttr.owner] ?? ''),
      clientId,
      connectedAt: Number(item[ConnectionAttr.connectedAt] ?? 0),
    };
  }

  /** The connection, if it is open and `owner`'s: a grant may be pushed there. */
  async owned(id: string, owner: string): Promise<Connection> {
    const connection = await this.get(id);
    if (!connection)
      throw new LatchkeyError(
        'NOT_FOUND',
        `no open WebSocket connection ${id}: connect, and send {"action":"hello"}`,
      );
    if (connection.owner !== owner)
      throw new LatchkeyError('FORBIDDEN', 'that WebSocket connection belongs to another principal');
    return connection;
  }
}
