/**
 * The per-socket record and its memberships: made by the WebSocket layer at upgrade, read by the
 * rooms (memberships), the outbound budget and the agents relay (who a socket's user is).
 */
import type { WebSocket } from 'uWebSockets.js';
import type { Principal } from '../auth/principal.js';
import type { Codec } from '../protocol/codec.js';

/**
 * The clock of a connection's own timestamps (connectedAt, lastSeenAt, lastPingAt, tokensAt,
 * stalledSince): whole milliseconds since this process started, monotonic (a wall-clock step neither
 * closes every socket as idle nor refills rate limits). Small integers are stored inside the socket
 * object; epoch milliseconds are not, and cost a 16-byte heap number per field per socket
 * (measured: 4 per idle connection). Past 2^31 ms (24.8 days of uptime) they are stored as heap
 * numbers again; nothing else changes. Token expiry and penalties stay on the wall clock.
 */
export const monotonicMs = (): number => Math.floor(performance.now());

/** A membership entry; a new object per join so a superseded join can tell it lost. */
export interface Membership {
  readonly guid: string;
  joined: boolean;
  /** The room shard (its own uWS topics) this socket is placed in. */
  shard: number;
}

/**
 * What res.upgrade() is given. uWS copies every own property of it onto its WebSocket object when the
 * socket opens (getUserData() returns that object), one C++ Get and Set per property: the 14
 * properties of a Connection cost ~8 µs per connection there (perf, the helper session's
 * connect+join ramp), and with 16 the JS heap per idle socket went from 587 to 1,239-1,245 B
 * (bench/results/issue11-after-slicing.md). One property pointing at the Connection costs one.
 */
export interface SocketData {
  readonly conn: Connection;
}

/** Per-socket state (reached through the uWS user data). Everything is copied out of the upgrade request. */
export interface Connection {
  readonly id: number;
  /** Replaced by a successful auth_refresh (same user). */
  principal: Principal;
  readonly codec: Codec;
  /** The client's address (canonical), for logs. */
  readonly remoteAddress: string;
  /** What the per-address limits count this socket under (an IPv6 client's network); null for a trusted proxy's own requests. */
  readonly addressKey: string | null;
  readonly connectedAt: number;
  ws: WebSocket<SocketData> | null;
  closed: boolean;
  lastSeenAt: number;
  lastPingAt: number;
  /**
   * Joined or joining projects; read and changed only through the functions below. Most sockets join
   * one project, held here as its Membership itself; two or more are an array. An array for one costs
   * 58 bytes per socket, a Map ~240 (bench/results/conn-heap-gateway.md).
   */
  rooms: Membership | Membership[] | null;
  /** Token bucket for client frames. */
  tokens: number;
  tokensAt: number;
  /** Frames dropped while rate limited; too many closes the socket. */
  limitedDrops: number;
  /** Allocated only while a replay waits for the socket to drain. */
  drainWaiters: (() => void)[] | null;
  /**
   * Since when the socket has had unsent bytes without the kernel taking any (0: nothing unsent, or
   * progress seen). Unsent bytes in uWS mean the kernel's send buffer is already full.
   */
  stalledSince: number;
  /** Chosen to be cut (write timeout or process budget); the cut happens on a later turn. */
  cutPending: boolean;
}

export function membershipOf(conn: Connection, guid: string): Membership | undefined {
  const r = conn.rooms;
  if (r === null) return undefined;
  if (!Array.isArray(r)) return r.guid === guid ? r : undefined;
  for (const m of r) if (m.guid === guid) return m;
  return undefined;
}

/** A snapshot of the socket's memberships (safe to leave rooms while iterating it). */
export function membershipsOf(conn: Connection): readonly Membership[] {
  const r = conn.rooms;
  return r === null ? [] : Array.isArray(r) ? r.slice() : [r];
}

export function roomCount(conn: Connection): number {
  const r = conn.rooms;
  return r === null ? 0 : Array.isArray(r) ? r.length : 1;
}

/** Adds `m`, replacing any membership of the same project; returns the replaced one. */
export function putMembership(conn: Connection, m: Membership): Membership | undefined {
  const r = conn.rooms;
  if (r === null) {
    conn.rooms = m;
    return undefined;
  }
  if (!Array.isArray(r)) {
    if (r.guid === m.guid) {
      conn.rooms = m;
      return r;
    }
    conn.rooms = [r, m];
    return undefined;
  }
  const i = r.findIndex((x) => x.guid === m.guid);
  if (i < 0) {
    r.push(m);
    return undefined;
  }
  const previous = r[i];
  r[i] = m;
  return previous;
}

export function removeMembership(conn: Connection, m: Membership): void {
  const r = conn.rooms;
  if (r === m) conn.rooms = null;
  else if (Array.isArray(r)) {
    const i = r.indexOf(m);
    if (i >= 0) r.splice(i, 1);
    if (r.length === 1) conn.rooms = r[0]!;
  }
}
