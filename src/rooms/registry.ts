import type { EventBus } from '../bus/bus.js';
import type { Connection } from '../connections/connection.js';
import type { Metrics } from '../metrics.js';
import { compareIds } from '../protocol/event-id.js';
import { retainedSize, type ProjectEvent } from '../protocol/events.js';
import { queuedEnd, SHARD_SIZE, type FanoutRoom, type FanoutShard } from './fanout.js';
import { roomTopic, shardTopic } from './topics.js';

/**
 * The rooms this instance watches: a room lives while it has local members (joined or joining), holds
 * the bus watch for its project and a bounded window of recent events, and places its sockets in shards.
 */

export { SHARD_SIZE };

/** A resume waiting for its shard to publish up to `id` (an id the client saw on another instance). */
export interface Waiter {
  readonly id: string;
  readonly resolve: (reached: boolean) => void;
}

export interface Shard extends FanoutShard {
  /** Memberships placed here (joined or joining). */
  members: number;
  /** Resumes waiting for flushedId to reach an id (resume.ts). */
  waiters: Waiter[];
  /** The joined sockets placed here, subscribed to the room topic or to this shard's (placement.ts). */
  sockets: Connection[];
}

/** One project watched by this instance. */
export interface Room extends FanoutRoom<Shard> {
  /** Local sockets joined or joining; the room (and the bus watch) lives while this is > 0. */
  members: number;
  /** Resolves once the bus watch has told us the project's head id. */
  readonly ready: Promise<void>;
  /** Recent events, oldest first: every event with id > floorId is here (bounded). */
  recent: ProjectEvent[];
  /** What `recent` holds, by retainedSize(). */
  recentBytes: number;
  floorId: string;
  /** Newest event received from the bus. */
  headId: string;
  /** Events that arrived before the watch resolved, ordered; filtered against the head on ready. */
  early: ProjectEvent[] | null;
}

export interface RegistryOptions {
  readonly bus: Pick<EventBus, 'watch' | 'unwatch'>;
  readonly metrics: Pick<Metrics, 'rooms'>;
  readonly recentEventsPerRoom: number;
  /** The recent window is bounded in bytes too: a room of 1 MiB events must not keep 256 of them. */
  readonly recentBytesPerRoom: number;
  /** New events were accepted into a room, in id order (the array is the callee's). */
  readonly onAccepted: (room: Room, events: ProjectEvent[]) => void;
  /** The last member left: the room is gone from the registry and its watch is being ended. */
  readonly onClosed: (room: Room) => void;
}

export function createRegistry(opts: RegistryOptions) {
  const { bus, metrics } = opts;
  const rooms = new Map<string, Room>();

  /** Takes a reference to a project's room, creating it (and its bus watch) for the first member. */
  function acquire(guid: string): Room {
    let room = rooms.get(guid);
    if (room) {
      room.members++;
      return room;
    }
    let markReady!: () => void;
    let failReady!: (err: unknown) => void;
    const ready = new Promise<void>((resolve, reject) => ((markReady = resolve), (failReady = reject)));
    ready.catch(() => {});
    const created: Room = {
      guid,
      topics: { json: roomTopic(guid, 'json'), msgpack: roomTopic(guid, 'msgpack') },
      spread: false,
      members: 1,
      shards: [newShard(guid, 0, '0-0', 0)],
      ready,
      recent: [],
      recentBytes: 0,
      floorId: '0-0',
      headId: '0-0',
      queuedId: '0-0',
      pending: [],
      pendingSince: 0,
      outbox: [],
      outboxBase: 0,
      outboxBytes: 0,
      releasedBytes: 0,
      early: [],
    };
    room = created;
    rooms.set(guid, room);
    metrics.rooms.set(rooms.size);
    bus.watch(guid).then(
      (head) => {
        created.floorId = created.headId = created.queuedId = head;
        // Shards opened by joins that arrived before the watch resolved start at the head too.
        for (const shard of created.shards) shard.flushedId = head;
        const early = created.early ?? [];
        created.early = null;
        if (early.length) accept(created, early);
        markReady();
      },
      (err: unknown) => {
        // A failed watch must not poison the room for later joiners.
        if (rooms.get(guid) === created) rooms.delete(guid);
        metrics.rooms.set(rooms.size);
        failReady(err);
      },
    );
    return room;
  }

  function newShard(guid: string, index: number, flushedId: string, next: number): Shard {
    return { topics: { json: shardTopic(guid, 'json', index), msgpack: shardTopic(guid, 'msgpack', index) }, members: 0, flushedId, next, waiters: [], sockets: [] };
  }

  /** The first shard with room for one more socket; a new one (starting after everything queued) when all are full. */
  function takeShard(room: Room): number {
    let index = room.shards.findIndex((s) => s.members < SHARD_SIZE);
    if (index < 0) {
      index = room.shards.length;
      const { flushedId, next } = queuedEnd(room);
      room.shards.push(newShard(room.guid, index, flushedId, next));
    }
    room.shards[index]!.members++;
    return index;
  }

  /** Gives back a member's reference (and its shard place); the last one closes the room. */
  function release(room: Room, shard: number): void {
    const s = room.shards[shard];
    if (s) s.members--;
    if (--room.members > 0) return;
    if (rooms.get(room.guid) !== room) return;
    rooms.delete(room.guid);
    opts.onClosed(room);
    bus.unwatch(room.guid);
    metrics.rooms.set(rooms.size);
  }

  /** The bus sink. Ignores projects nobody here watches; drops ids already seen. */
  function receive(guid: string, events: ProjectEvent[]): void {
    const room = rooms.get(guid);
    if (!room) return;
    if (room.early) room.early.push(...events);
    else accept(room, events);
  }

  function accept(room: Room, events: readonly ProjectEvent[]): void {
    let added: ProjectEvent[] | null = null;
    for (const e of events) {
      if (compareIds(e.id, room.headId) <= 0) continue;
      room.headId = e.id;
      room.recent.push(e);
      room.recentBytes += retainedSize(e);
      (added ??= []).push(e);
    }
    if (added === null) return;
    trimRecent(room);
    opts.onAccepted(room, added);
  }

  function trimRecent(room: Room): void {
    // Trimmed in chunks (amortized O(1) per event); every retained event is old-generation heap the GC must mark.
    if (room.recent.length <= opts.recentEventsPerRoom * 1.25 + 16 && room.recentBytes <= opts.recentBytesPerRoom) return;
    let drop = Math.max(0, room.recent.length - opts.recentEventsPerRoom);
    let bytes = room.recentBytes;
    for (let i = 0; i < drop; i++) bytes -= retainedSize(room.recent[i]!);
    while (bytes > opts.recentBytesPerRoom * 0.8 && drop < room.recent.length) bytes -= retainedSize(room.recent[drop++]!);
    const dropped = room.recent.splice(0, drop);
    room.recentBytes = bytes;
    // Resumes from before the floor read the bus's history instead of this window.
    if (dropped.length) room.floorId = dropped[dropped.length - 1]!.id;
  }

  return {
    get: (guid: string): Room | undefined => rooms.get(guid),
    acquire,
    release,
    takeShard,
    receive,
  };
}

export type Registry = ReturnType<typeof createRegistry>;
