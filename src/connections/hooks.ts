import type { Connection } from './connection.js';

/**
 * What a socket's life looks like to those who follow it without owning it (the agents relay:
 * targeted replies, presence). Called by the WebSocket layer; a hook must not throw.
 */
export interface ConnectionHooks {
  opened(conn: Connection): void;
  /** A join_project was acknowledged. */
  joined(conn: Connection, projectGuid: string): void;
  /** The socket left a project: leave_project, or a refreshed token that no longer grants it. */
  left(conn: Connection, projectGuid: string): void;
  /** Called before the connection's memberships are released. */
  closed(conn: Connection): void;
}
