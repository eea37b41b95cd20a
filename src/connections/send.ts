import type { Connection } from './connection.js';

/**
 * Sending to one socket outside the rooms' topics (replies, replays, targeted agent replies), and
 * waiting for its send buffer: one place that knows uWS's large-send pitfall below.
 */

/**
 * A topic nothing is ever published on. uWS v20.30 (the newest build this Debian's glibc can run)
 * has a fast path for large sends to sockets that subscribe to no topic (16 KiB or more, nothing
 * buffered or corked yet) that loses the payload when the kernel takes fewer bytes than the frame
 * header, corrupting the stream (fixed upstream in uWebSockets #1662, Sep 2023; seen here as
 * "invalid UTF-8" in replays to slow clients). A subscribed socket never takes that path.
 */
export const LARGE_SEND_GUARD_TOPIC = 'gateway/large-send-guard';
/** The smallest send that can take that path, in bytes. */
export const UWS_LARGE_SEND_BYTES = 16 * 1024;

/** Wakes replays waiting for this socket to drain (also on close, so they notice and stop). */
export function releaseDrainWaiters(conn: Connection): void {
  const waiters = conn.drainWaiters;
  conn.drainWaiters = null;
  if (waiters) for (const w of waiters) w();
}

/**
 * Sends one frame outside a uWS callback. Corked so the headers and payload leave in one syscall;
 * returns false if the socket is gone or uWS dropped the frame (over maxBackpressure). `compress`:
 * deflate it if the socket negotiated permessage-deflate (src/connections/compression.ts decides).
 */
export function sendTo(conn: Connection, frame: string | Uint8Array, compress = false): boolean {
  const ws = conn.ws;
  if (!ws || conn.closed) return false;
  // A string's UTF-8 length is at most three times its length: guard whenever it could be large.
  if ((typeof frame === 'string' ? frame.length * 3 : frame.length) >= UWS_LARGE_SEND_BYTES) ws.subscribe(LARGE_SEND_GUARD_TOPIC);
  let status = 0;
  ws.cork(() => {
    status = ws.send(frame, conn.codec.binary, compress);
  });
  return status !== 2;
}

/**
 * How many unsent bytes a replay lets build up on one socket before it waits for a drain. Small on
 * purpose: during a reconnect storm thousands of sockets replay at once, and what they hold counts
 * against MAX_BUFFERED_BYTES, the budget that cuts the largest holders first.
 */
export function replayWindowBytes(maxBackpressureBytes: number): number {
  return Math.min(maxBackpressureBytes / 2, 256 * 1024);
}

/** Resolves once the socket's send buffer drops under `limit` (or it closes). */
export function whenDrained(conn: Connection, limit: number): Promise<void> {
  if (!conn.ws || conn.closed || conn.ws.getBufferedAmount() < limit) return Promise.resolve();
  return new Promise((resolve) => (conn.drainWaiters ??= []).push(resolve));
}
