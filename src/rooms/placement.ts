import type { Connection } from '../connections/connection.js';
import type { CodecName } from '../protocol/codec.js';
import type { Room, Shard } from './registry.js';

/**
 * Which uWS topic a member's socket listens on: its room's while the room has no fan-out backlog
 * (one publish per frame reaches everyone), its shard's while the room is spread (fanout.ts). A
 * shard keeps the sockets subscribed through it, so a move can take them all across.
 */

const liveTopics = (room: Room, shard: Shard): Record<CodecName, string> => (room.spread ? shard.topics : room.topics);

/** Subscribes a joining socket where its shard listens now: it receives what is published from here on. */
export function subscribeMember(conn: Connection, room: Room, shard: Shard): void {
  conn.ws!.subscribe(liveTopics(room, shard)[conn.codec.name]);
  shard.sockets.push(conn);
}

/** Takes a joined socket off its topic (live deliveries stop; the membership is the caller's). */
export function unsubscribeMember(conn: Connection, room: Room, shard: Shard): void {
  forgetMember(conn, shard);
  conn.ws?.unsubscribe(liveTopics(room, shard)[conn.codec.name]);
}

/** A closed socket: uWS already dropped its topics; the shard stops listing it. */
export function forgetMember(conn: Connection, shard: Shard): void {
  const i = shard.sockets.indexOf(conn);
  if (i < 0) return;
  shard.sockets[i] = shard.sockets[shard.sockets.length - 1]!;
  shard.sockets.pop();
}

/**
 * Moves every socket of the room from the room topic to its shard's (`toShards`) or back. uWS keeps
 * what was published this turn and not yet written per socket, not per topic, and topic calls and
 * publishes run synchronously on this thread: done between two publishes, a move loses nothing and
 * repeats nothing. Subscribing before unsubscribing matters: a socket that drops its last topic
 * loses its uWS subscriber record, and with it the frames queued for it this turn.
 */
export function moveMembers(room: Room, toShards: boolean): void {
  for (const shard of room.shards) {
    const from = toShards ? room.topics : shard.topics;
    const to = toShards ? shard.topics : room.topics;
    for (const conn of shard.sockets) {
      const ws = conn.ws;
      // A socket chosen to be cut was taken off every topic (ws/outbound.ts): it stays off.
      if (!ws || conn.closed || conn.cutPending) continue;
      const name = conn.codec.name;
      try {
        ws.subscribe(to[name]);
        ws.unsubscribe(from[name]);
      } catch {
        // uWS throws on any call to a socket it has invalidated. The close handler takes a socket off
        // (closed, ws null) first, so this is a backstop: one such socket must not leave the rest of
        // the room on the wrong topic.
      }
    }
  }
}
