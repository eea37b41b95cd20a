import type { TemplatedApp } from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { EventBus } from '../bus/bus.js';
import type { FanoutBacklog } from '../bus/ingress.js';
import type { Metrics } from '../metrics.js';
import { membershipOf, membershipsOf, removeMembership, type Connection } from '../connections/connection.js';
import { createFanout } from './fanout.js';
import { forgetMember, moveMembers } from './placement.js';
import { createRegistry, type Room, type Shard } from './registry.js';
import { abandonWaiters, createJoin, settleWaiters, unsubscribe } from './resume.js';

export { FANOUT_BACKLOG_BYTES, FANOUT_SLICE_BYTES, SHARD_SIZE } from './fanout.js';
export type { JoinResult } from './resume.js';

export interface RoomsOptions {
  readonly app: TemplatedApp;
  readonly bus: EventBus;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly recentEventsPerRoom: number;
  /** The recent window is bounded in bytes too: a room of 1 MiB events must not keep 256 of them. */
  readonly recentBytesPerRoom: number;
  readonly historyPageSize: number;
  readonly maxBackpressureBytes: number;
  /** After each flush: the bytes handed to uWS (frame bytes × subscribers), an upper bound of how much the send buffers grew. */
  readonly onFanOut?: (bytes: number) => void;
  /** After each fan-out turn: how long an event accepted now would wait in each room still behind, and the longest (fanout.ts). */
  readonly onQueueDelay?: (backlogs: ReadonlyMap<string, FanoutBacklog>, longestMs: number) => void;
  /** How long a resuming client may wait for this instance to catch up with an id it saw elsewhere. */
  readonly catchUpTimeoutMs?: number;
  /** Whether a frame (fan-out or replay) goes out with uWS's `compress` flag (src/connections/compression.ts). */
  readonly compress?: (frame: string | Uint8Array) => boolean;
}

/**
 * Project rooms on uWS native topics: the rooms themselves and their bus watches (registry.ts), their
 * per-tick batched, sliced fan-out (fanout.ts), and joins with resume (resume.ts). What is left here
 * is leaving.
 */
export function createRooms(opts: RoomsOptions) {
  const { app, bus, log, metrics } = opts;
  const fanout = createFanout<Shard, Room>({
    port: app,
    log,
    metrics,
    moveMembers,
    onFanOut: opts.onFanOut,
    onShardFlushed: settleWaiters,
    onQueueDelay: opts.onQueueDelay,
    compress: opts.compress,
  });
  const registry = createRegistry({
    bus,
    metrics,
    recentEventsPerRoom: opts.recentEventsPerRoom,
    recentBytesPerRoom: opts.recentBytesPerRoom,
    onAccepted: fanout.enqueue,
    onClosed: (room) => {
      fanout.forget(room);
      abandonWaiters(room);
    },
  });
  const join = createJoin({
    registry,
    bus,
    log,
    metrics,
    encodeFrames: fanout.encodeFrames,
    historyPageSize: opts.historyPageSize,
    maxBackpressureBytes: opts.maxBackpressureBytes,
    catchUpTimeoutMs: opts.catchUpTimeoutMs,
    compress: opts.compress,
  });

  function leave(conn: Connection, guid: string): boolean {
    const membership = membershipOf(conn, guid);
    if (!membership) return false;
    removeMembership(conn, membership);
    const room = registry.get(guid);
    if (membership.joined && room) {
      unsubscribe(conn, room, membership);
      registry.release(room, membership.shard);
    }
    // A join still in flight notices it was superseded and releases the room itself.
    return true;
  }

  /** On close: uWS already dropped the topic subscriptions; give back the room references. */
  function leaveAll(conn: Connection): void {
    for (const membership of membershipsOf(conn)) {
      if (!membership.joined) continue;
      const room = registry.get(membership.guid);
      if (!room) continue;
      const shard = room.shards[membership.shard];
      if (shard) forgetMember(conn, shard);
      registry.release(room, membership.shard);
    }
    conn.rooms = null;
  }

  return {
    /** The bus sink: events of the watched projects, in id order per project. */
    receive: registry.receive,
    join,
    leave,
    leaveAll,
    /** Publishes everything queued, ignoring the per-turn slice (shutdown). */
    flushNow: fanout.flushNow,
  };
}

export type Rooms = ReturnType<typeof createRooms>;
