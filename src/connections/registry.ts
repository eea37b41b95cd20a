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
  /** A user's open sockets on this thread (a copy: safe to close them while iterating). */
  ofUser(userId: string): Connection[];
  readonly size: number;
}

export function createConnectionRegistry(): ConnectionRegistry {
  const all = new Set<Connection>();
  // Most users have one socket here: it is held as itself, and a Set only from the second on
  // (a Set per user costs ~100 bytes of heap per idle connection and an allocation per connect).
  const byUser = new Map<string, Connection | Set<Connection>>();
  return {
    add(conn) {
      all.add(conn);
      const userId = conn.principal.userId;
      const mine = byUser.get(userId);
      if (mine === undefined) byUser.set(userId, conn);
      else if (mine instanceof Set) mine.add(conn);
      else if (mine !== conn) byUser.set(userId, new Set([mine, conn]));
    },
    remove(conn) {
      if (!all.delete(conn)) return;
      const userId = conn.principal.userId;
      const mine = byUser.get(userId);
      if (mine === conn) byUser.delete(userId);
      else if (mine instanceof Set && mine.delete(conn) && mine.size === 1) byUser.set(userId, mine.values().next().value!);
    },
    all: () => all,
    ofUser(userId) {
      const mine = byUser.get(userId);
      return mine === undefined ? [] : mine instanceof Set ? [...mine] : [mine];
    },
    get size() {
      return all.size;
    },
  };
}
