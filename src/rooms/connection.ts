import type { WebSocket } from 'uWebSockets.js';
import type { Principal } from '../auth/tokens.js';
import type { Codec } from '../protocol/codec.js';

/** A membership entry; a new object per join so a superseded join can tell it lost. */
export interface Membership {
  joined: boolean;
}

/** Per-socket state (the uWS user data). Everything is copied out of the upgrade request. */
export interface Connection {
  readonly id: number;
  readonly principal: Principal;
  readonly codec: Codec;
  readonly remoteAddress: string;
  readonly connectedAt: number;
  ws: WebSocket<Connection> | null;
  closed: boolean;
  lastSeenAt: number;
  lastPingAt: number;
  readonly rooms: Map<string, Membership>;
  /** Token bucket for client frames. */
  tokens: number;
  tokensAt: number;
  /** Frames dropped while rate limited; too many closes the socket. */
  limitedDrops: number;
  drainWaiters: (() => void)[];
}

/**
 * Sends one frame outside a uWS callback. Corked so the headers and payload leave in one syscall;
 * returns false if the socket is gone or uWS dropped the frame (over maxBackpressure).
 */
export function sendTo(conn: Connection, frame: string | Uint8Array): boolean {
  const ws = conn.ws;
  if (!ws || conn.closed) return false;
  let status = 0;
  ws.cork(() => {
    status = ws.send(frame, conn.codec.binary, false);
  });
  return status !== 2;
}

/** Resolves once the socket's send buffer drops under `limit` (or it closes). */
export function whenDrained(conn: Connection, limit: number): Promise<void> {
  if (!conn.ws || conn.closed || conn.ws.getBufferedAmount() < limit) return Promise.resolve();
  return new Promise((resolve) => conn.drainWaiters.push(resolve));
}
