import type { Connection } from './connection.js';

/**
 * This thread's open sockets, and each user's among them: the one place that knows who is
 * connected here (centrifuge's hub keeps both views together too). The heartbeat sweep and the
 * outbound budget walk all of them; targeted replies ask for a user's.
 */
export interface ConnectionRegistry {
  add(conn: Connection): void;
  remove(conn: Connection): void;
  /** Every open socket (do not add or remove while iterating: take a copy). */
  all(): Iterable<Connection>;
  /** A user's open sockets on this thread, or undefined. */
  ofUser(userId: string): ReadonlySet<Connection> | undefined;
  readonly size: number;
}

export function createConnectionRegistry(): ConnectionRegistry {
  const all = new Set<Connection>();
  const byUser = new Map<string, Set<Connection>>();
  return {
    add(conn) {
      all.add(conn);
      const userId = conn.principal.userId;
      const mine = byUser.get(userId);
      if (mine) mine.add(conn);
      else byUser.set(userId, new Set([conn]));
    },
    remove(conn) {
      if (!all.delete(conn)) return;
      const userId = conn.principal.userId;
      const mine = byUser.get(userId);
      if (mine?.delete(conn) && mine.size === 0) byUser.delete(userId);
    },
    all: () => all,
    ofUser: (userId) => byUser.get(userId),
    get size() {
      return all.size;
    },
  };
}
