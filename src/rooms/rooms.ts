import type { TemplatedApp } from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { EventBus } from '../bus/bus.js';
import { GatewayError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { CODEC_NAMES, CODECS, type CodecName } from '../protocol/codec.js';
import { compareIds } from '../protocol/event-id.js';
import { retainedSize, type ProjectEvent } from '../protocol/events.js';
import { membershipOf, membershipsOf, putMembership, removeMembership, type Connection, type Membership } from '../connections/connection.js';
import { replayWindowBytes, sendTo, whenDrained } from '../connections/send.js';
import { roomTopic } from './topics.js';

/**
 * A slice of a room's subscribers with topics of their own. A room's fan-out is published shard by
 * shard, so one room with thousands of subscribers (a flood into a crowd of slow readers) is spread
 * over several event-loop turns instead of blocking every other room for the whole of it.
 */
interface Shard {
  readonly topics: Record<CodecName, string>;
  /** Memberships placed here (joined or joining). */
  members: number;
  /** Newest event published to this shard's topics: a socket subscribed now receives exactly the events after it. */
  flushedId: string;
  /** Sequence number (room.outboxBase-relative numbering) of the next outbox chunk to publish here. */
  next: number;
  waiters: { id: string; resolve: (reached: boolean) => void }[];
}

/** Events queued for fan-out, at most one frame's worth; encoded once per wire encoding, when first needed. */
interface Chunk {
  readonly events: ProjectEvent[];
  readonly lastId: string;
  readonly bytes: number;
  readonly queuedAt: number;
  frames: Partial<Record<CodecName, (string | Uint8Array)[]>>;
}

/** One project watched by this instance. */
interface Room {
  readonly guid: string;
  /** Local sockets joined or joining; the room (and the bus watch) lives while this is > 0. */
  members: number;
  /** Never empty; shard 0 uses the plain room topics. */
  readonly shards: Shard[];
  /** Resolves once the bus watch has told us the project's head id. */
  readonly ready: Promise<void>;
  /** Recent events, oldest first: every event with id > floorId is here (bounded). */
  recent: ProjectEvent[];
  /** What `recent` holds, by retainedSize(). */
  recentBytes: number;
  floorId: string;
  /** Newest event received from the bus. */
  headId: string;
  /** Newest event moved into the outbox (every shard will publish everything up to it). */
  queuedId: string;
  pending: ProjectEvent[];
  pendingSince: number;
  /** Chunks not yet published to every shard; outbox[0] has sequence number outboxBase. */
  outbox: Chunk[];
  outboxBase: number;
  outboxBytes: number;
  /** Events that arrived before the watch resolved, ordered; filtered against the head on ready. */
  early: ProjectEvent[] | null;
}

export interface JoinResult {
  latestId: string;
  recovered?: boolean;
  replayed?: number;
}

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
  /** How long a resuming client may wait for this instance to catch up with an id it saw elsewhere. */
  readonly catchUpTimeoutMs?: number;
}

/** Frames above this are split, so one burst cannot produce a multi-megabyte frame. */
const MAX_FRAME_BYTES = 256 * 1024;
/**
 * Sockets per shard. Small, so that one frame to one shard (the unit a turn cannot split) stays
 * short: a 40 KB send into a socket whose kernel buffer is still filling took ~165 µs alone on this
 * machine (loopback) and 2-6× that under load, and with 128 per shard the units blocked the loop for
 * 20-60 ms. A room publishes each frame once per shard: ~1 µs per extra uWS publish call.
 */
export const SHARD_SIZE = 8;
/**
 * Fan-out work (frame bytes × subscribers) one room may do per event-loop turn before the rest waits
 * for the next turn; every other room, and uWS's I/O, runs in between. At least one shard's publish
 * of one chunk always goes out, so the delay a room adds to the others is at most this plus one
 * chunk to one shard (≤ MAX_FRAME_BYTES × SHARD_SIZE).
 */
export const FANOUT_SLICE_BYTES = 256 * 1024;
/**
 * A room may defer at most this many bytes of events. Beyond it (fan-out slower than the events
 * arrive, sustained) the room publishes its whole backlog in one turn, as without slicing: the event
 * loop slows for everyone, which slows the producers, instead of the backlog growing without bound.
 */
export const FANOUT_BACKLOG_BYTES = 16 * 1024 * 1024;

/**
 * Project rooms on uWS native topics, with per-tick batching: every event that reaches a room during
 * one event-loop turn goes out as one publish per room per encoding, serialized once. Also owns
 * resume: replays missed events to one socket and subscribes it with no gap and no duplicate.
 */
export function createRooms(opts: RoomsOptions) {
  const { app, bus, log, metrics } = opts;
  const rooms = new Map<string, Room>();
  const dirty = new Set<Room>();
  let flushScheduled = false;

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
    return { topics: { json: roomTopic(guid, 'json', index), msgpack: roomTopic(guid, 'msgpack', index) }, members: 0, flushedId, next, waiters: [] };
  }

  /** The first shard with room for one more socket; a new one (starting after everything queued) when all are full. */
  function takeShard(room: Room): number {
    let index = room.shards.findIndex((s) => s.members < SHARD_SIZE);
    if (index < 0) {
      index = room.shards.length;
      room.shards.push(newShard(room.guid, index, room.queuedId, room.outboxBase + room.outbox.length));
    }
    room.shards[index]!.members++;
    return index;
  }

  function release(room: Room, shard: number): void {
    const s = room.shards[shard];
    if (s) s.members--;
    if (--room.members > 0) return;
    if (rooms.get(room.guid) !== room) return;
    rooms.delete(room.guid);
    dirty.delete(room);
    bus.unwatch(room.guid);
    for (const sh of room.shards) for (const w of sh.waiters) w.resolve(false);
    metrics.rooms.set(rooms.size);
  }

  /** The bus sink. Ignores projects nobody here watches; drops ids already seen. */
  function deliver(guid: string, events: ProjectEvent[]): void {
    const room = rooms.get(guid);
    if (!room) return;
    if (room.early) room.early.push(...events);
    else accept(room, events);
  }

  function accept(room: Room, events: readonly ProjectEvent[]): void {
    let added = 0;
    for (const e of events) {
      if (compareIds(e.id, room.headId) <= 0) continue;
      room.headId = e.id;
      room.recent.push(e);
      room.recentBytes += retainedSize(e);
      room.pending.push(e);
      added++;
    }
    if (added === 0) return;
    // Trimmed in chunks (amortized O(1) per event); every retained event is old-generation heap the GC must mark.
    if (room.recent.length > opts.recentEventsPerRoom * 1.25 + 16 || room.recentBytes > opts.recentBytesPerRoom) {
      let drop = Math.max(0, room.recent.length - opts.recentEventsPerRoom);
      let bytes = room.recentBytes;
      for (let i = 0; i < drop; i++) bytes -= retainedSize(room.recent[i]!);
      while (bytes > opts.recentBytesPerRoom * 0.8 && drop < room.recent.length) bytes -= retainedSize(room.recent[drop++]!);
      const dropped = room.recent.splice(0, drop);
      room.recentBytes = bytes;
      // Resumes from before the floor read the bus's history instead of this window.
      if (dropped.length) room.floorId = dropped[dropped.length - 1]!.id;
    }
    if (room.pending.length === added) room.pendingSince = performance.now();
    dirty.add(room);
    schedule();
  }

  function schedule(): void {
    if (flushScheduled) return;
    flushScheduled = true;
    setImmediate(flush);
  }

  /**
   * One turn of fan-out for the rooms with new events: each publishes at most FANOUT_SLICE_BYTES
   * (plus one chunk to one shard) unless `all`. Rooms with a backlog from earlier turns continue in
   * flushBacklog, on the next turn: uWS sends the small frames published here before it polls, so
   * they do not wait behind a crowded room's slice.
   */
  function flush(all = false): void {
    flushScheduled = false;
    let fannedOut = 0;
    for (const room of dirty) if (all || !hasBacklog(room)) fannedOut += flushRoom(room, all);
    if (dirty.size) scheduleBacklog();
    if (fannedOut > 0) opts.onFanOut?.(fannedOut);
  }

  /** Work left by an earlier turn: the outbox changes only inside flushRoom, which empties it unless a slice ran out. */
  const hasBacklog = (room: Room) => room.outbox.length > 0;

  let backlogScheduled = false;
  function scheduleBacklog(): void {
    if (backlogScheduled) return;
    backlogScheduled = true;
    setImmediate(flushBacklog);
  }

  /** One slice for every room with a backlog. */
  function flushBacklog(): void {
    backlogScheduled = false;
    let fannedOut = 0;
    let more = false;
    for (const room of dirty) {
      if (hasBacklog(room)) fannedOut += flushRoom(room, false);
      if (hasBacklog(room)) more = true;
    }
    if (more) scheduleBacklog();
    if (fannedOut > 0) opts.onFanOut?.(fannedOut);
  }

  function flushRoom(room: Room, all: boolean): number {
    if (room.pending.length) queueChunks(room);
    let spent = 0;
    // A backstop: nothing in one room's flush may stop the others (or escape into uWS/the bus).
    try {
      const unlimited = all || room.outboxBytes > FANOUT_BACKLOG_BYTES;
      if (unlimited && !all) log.warn({ projectGuid: room.guid, backlogBytes: room.outboxBytes, limit: FANOUT_BACKLOG_BYTES }, 'room fan-out backlog over its limit; publishing it in one turn');
      // Chunk by chunk, every shard that is at this chunk publishes it: shards stay in step, the
      // ones behind catch up first, and a chunk is released once the last shard has it.
      chunks: for (let i = 0; i < room.outbox.length; i++) {
        const seq = room.outboxBase + i;
        const chunk = room.outbox[i]!;
        for (const shard of room.shards) {
          if (shard.next !== seq) continue;
          spent += publishChunk(chunk, shard);
          shard.next = seq + 1;
          shard.flushedId = chunk.lastId;
          if (shard.waiters.length) settleWaiters(shard);
          if (spent >= FANOUT_SLICE_BYTES && !unlimited) break chunks;
        }
      }
    } catch (err) {
      const first = room.outbox[0]?.events[0]?.id;
      log.error({ err, projectGuid: room.guid, firstId: first }, 'room flush failed; continuing with the next events');
      // Skip what failed rather than retrying it forever: every shard moves past the whole outbox.
      for (const shard of room.shards) {
        shard.next = room.outboxBase + room.outbox.length;
        shard.flushedId = room.queuedId;
        if (shard.waiters.length) settleWaiters(shard);
      }
    }
    releaseChunks(room);
    if (hasBacklog(room)) metrics.fanOutDeferred.inc();
    else dirty.delete(room);
    return spent;
  }

  /** Moves pending events into the outbox as chunks of at most MAX_FRAME_BYTES (of JSON). */
  function queueChunks(room: Room): void {
    const queuedAt = room.pendingSince;
    let events: ProjectEvent[] = [];
    let bytes = 0;
    const push = () => {
      room.outbox.push({ events, lastId: events[events.length - 1]!.id, bytes, queuedAt, frames: {} });
      room.outboxBytes += bytes;
    };
    for (const e of room.pending) {
      const size = retainedSize(e);
      if (events.length && bytes + size > MAX_FRAME_BYTES) {
        push();
        events = [];
        bytes = 0;
      }
      events.push(e);
      bytes += size;
    }
    if (events.length) push();
    room.queuedId = room.pending[room.pending.length - 1]!.id;
    room.pending = [];
  }

  /** Publishes one chunk to one shard in every encoding somebody there uses; returns frame bytes × subscribers. */
  function publishChunk(chunk: Chunk, shard: Shard): number {
    let spent = 0;
    for (const name of CODEC_NAMES) {
      const topic = shard.topics[name];
      const subscribers = app.numSubscribers(topic);
      if (subscribers === 0) continue;
      const frames = (chunk.frames[name] ??= encodeFrames(name, chunk.events));
      for (const frame of frames) {
        app.publish(topic, frame, CODECS[name].binary, false);
        metrics.framesPublished.inc();
        spent += frame.length * subscribers;
      }
      metrics.deliveries.inc(subscribers * chunk.events.length);
    }
    return spent;
  }

  /** Drops the chunks every shard has published. */
  function releaseChunks(room: Room): void {
    let min = Infinity;
    for (const shard of room.shards) if (shard.next < min) min = shard.next;
    const done = min - room.outboxBase;
    if (done <= 0) return;
    const now = performance.now();
    for (let i = 0; i < done; i++) {
      const chunk = room.outbox[i]!;
      room.outboxBytes -= chunk.bytes;
      metrics.eventsDelivered.inc(chunk.events.length);
      metrics.deliveryLag.observe((now - chunk.queuedAt) / 1000);
    }
    room.outbox.splice(0, done);
    room.outboxBase = min;
  }

  /**
   * Frames for a run of one room's events in one encoding, each under MAX_FRAME_BYTES unless a
   * single event is larger. An event the encoder cannot carry is logged, counted and left out:
   * every entry point checks data against the limits, so this only catches what slipped past them.
   */
  function encodeFrames(name: CodecName, events: readonly ProjectEvent[]): (string | Uint8Array)[] {
    const codec = CODECS[name];
    const out: (string | Uint8Array)[] = [];
    let batch: (string | Uint8Array)[] = [];
    let bytes = 0;
    for (const e of events) {
      const part = codec.encodeEvent(e);
      if (part === null) {
        metrics.eventsUnencodable.inc({ codec: name });
        log.error({ projectGuid: e.projectGuid, id: e.id, type: e.type, codec: name }, 'event cannot be encoded; skipped for this encoding');
        continue;
      }
      if (batch.length && bytes + part.length > MAX_FRAME_BYTES) {
        out.push(codec.joinEvents(batch));
        batch = [];
        bytes = 0;
      }
      batch.push(part);
      bytes += part.length;
    }
    if (batch.length) out.push(codec.joinEvents(batch));
    return out;
  }

  function settleWaiters(shard: Shard): void {
    shard.waiters = shard.waiters.filter((w) => {
      if (compareIds(shard.flushedId, w.id) < 0) return true;
      w.resolve(true);
      return false;
    });
  }

  function flushedReaches(shard: Shard, id: string, timeoutMs: number): Promise<boolean> {
    if (compareIds(shard.flushedId, id) >= 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = { id, resolve: (ok: boolean) => (clearTimeout(timer), resolve(ok)) };
      const timer = setTimeout(() => {
        shard.waiters = shard.waiters.filter((w) => w !== waiter);
        resolve(false);
      }, timeoutMs);
      shard.waiters.push(waiter);
    });
  }

  /** Sends already-flushed events to one socket, paced by its send buffer. */
  async function replay(conn: Connection, events: readonly ProjectEvent[]): Promise<boolean> {
    for (const frame of encodeFrames(conn.codec.name, events)) {
      await whenDrained(conn, replayWindowBytes(opts.maxBackpressureBytes));
      if (!sendTo(conn, frame)) return false;
    }
    metrics.replayedEvents.inc(events.length);
    return true;
  }

  function eventsAfter(room: Room, afterId: string, upTo: string): ProjectEvent[] {
    const out: ProjectEvent[] = [];
    for (const e of room.recent) {
      if (compareIds(e.id, afterId) <= 0) continue;
      if (compareIds(e.id, upTo) > 0) break;
      out.push(e);
    }
    return out;
  }

  /**
   * Joins a socket to a project room, replaying everything after `since` first. Returns null if
   * the join was superseded (leave, re-join or close) while it waited.
   */
  async function join(conn: Connection, joinedGuid: string, since: string | undefined): Promise<JoinResult | null> {
    // The membership keeps the room's copy of the GUID, not the one parsed from this frame: an idle
    // socket would otherwise hold its own 36-character string (~56 bytes) for as long as it stays.
    const guid = rooms.get(joinedGuid)?.guid ?? joinedGuid;
    const membership: Membership = { guid, joined: false, shard: 0 };
    const previous = putMembership(conn, membership);
    // A re-join replaces the old membership; its room and shard references are handed over, not taken twice.
    const handedOver = previous ? rooms.get(guid) : undefined;
    const room = handedOver ?? acquire(guid);
    membership.shard = handedOver ? previous!.shard : takeShard(room);
    const shard = room.shards[membership.shard]!;
    const current = () => !conn.closed && membershipOf(conn, guid) === membership;
    let done = false;
    try {
      if (previous?.joined) unsubscribe(conn, room, previous);
      await room.ready;
      if (!current()) return null;
      const subscribe = (result: JoinResult): JoinResult => {
        conn.ws!.subscribe(shard.topics[conn.codec.name]);
        membership.joined = true;
        done = true;
        return result;
      };
      if (since === undefined) return subscribe({ latestId: shard.flushedId });

      let cursor = since;
      let replayed = 0;
      const inMemory = () => compareIds(cursor, room.floorId) >= 0 && compareIds(cursor, shard.flushedId) <= 0;
      if (!inMemory()) {
        const history = await bus.checkHistory(guid, cursor);
        if (!current()) return null;
        if (history !== 'complete') {
          log.debug({ guid, since, history }, 'resume impossible, client must reload');
          return subscribe({ latestId: shard.flushedId, recovered: false, replayed: 0 });
        }
      }
      for (let stalls = 0; ; ) {
        if (compareIds(cursor, shard.flushedId) > 0) {
          // The client saw events (on another instance) that this one has not delivered yet.
          const reached = await flushedReaches(shard, cursor, opts.catchUpTimeoutMs ?? 5000);
          if (!current()) return null;
          if (!reached) throw new GatewayError('UNAVAILABLE', 'this instance is behind the event stream; retry');
          continue;
        }
        if (compareIds(cursor, room.floorId) >= 0) {
          const missed = eventsAfter(room, cursor, shard.flushedId);
          if (missed.length && !(await replay(conn, missed))) return null;
          if (!current()) return null;
          // Sending may have waited for the socket to drain: new events may have been flushed since.
          if (missed.length) {
            cursor = missed[missed.length - 1]!.id;
            replayed += missed.length;
            if (compareIds(cursor, shard.flushedId) < 0) continue;
          }
          return subscribe({ latestId: shard.flushedId, recovered: true, replayed });
        }
        const page = await bus.range(guid, cursor, opts.historyPageSize);
        if (!current()) return null;
        // The page holds every entry from the cursor to page.lastId; what this room has not flushed
        // yet comes live after the subscribe, so the replay stops at `limit`.
        const limit = shard.flushedId;
        const flushed = page.events.filter((e) => compareIds(e.id, limit) <= 0);
        if (flushed.length && !(await replay(conn, flushed))) return null;
        if (!current()) return null;
        replayed += flushed.length;
        // Entries the bus skipped (malformed) move the cursor too: a run of them never stalls a resume.
        const next = compareIds(page.lastId, limit) <= 0 ? page.lastId : limit;
        if (compareIds(next, cursor) > 0) {
          cursor = next;
          stalls = 0;
        } else if (++stalls > 3) {
          throw new GatewayError('UNAVAILABLE', 'history read made no progress; retry');
        } else {
          await new Promise((r) => setTimeout(r, 10 * stalls));
        }
      }
    } finally {
      if (!done) {
        // Only the membership that still owns the room reference gives it back: one that was
        // replaced by a re-join handed its reference over.
        const now = membershipOf(conn, guid);
        if (now === membership) removeMembership(conn, membership);
        if (now === undefined || now === membership) release(room, membership.shard);
      }
    }
  }

  function leave(conn: Connection, guid: string): boolean {
    const membership = membershipOf(conn, guid);
    if (!membership) return false;
    removeMembership(conn, membership);
    const room = rooms.get(guid);
    if (membership.joined && room) {
      unsubscribe(conn, room, membership);
      release(room, membership.shard);
    }
    // A join still in flight notices it was superseded and releases the room itself.
    return true;
  }

  /**
   * Stops every live delivery to a socket that is about to be cut, without leaving its rooms (close
   * gives the references back): until then it would only add to what it does not read.
   */
  function muteAll(conn: Connection): void {
    for (const m of membershipsOf(conn)) {
      const room = m.joined ? rooms.get(m.guid) : undefined;
      if (room) unsubscribe(conn, room, m);
    }
  }

  /** Takes a joined socket off its shard's topic (live deliveries stop; the membership stays). */
  function unsubscribe(conn: Connection, room: Room, m: Membership): void {
    const shard = room.shards[m.shard];
    if (shard) conn.ws?.unsubscribe(shard.topics[conn.codec.name]);
  }

  /** On close: uWS already dropped the topic subscriptions; give back the room references. */
  function leaveAll(conn: Connection): void {
    for (const membership of membershipsOf(conn)) {
      if (!membership.joined) continue;
      const room = rooms.get(membership.guid);
      if (room) release(room, membership.shard);
    }
    conn.rooms = null;
  }

  return {
    deliver,
    join,
    leave,
    leaveAll,
    muteAll,
    /** Publishes everything queued, ignoring the per-turn slice (shutdown). */
    flushNow: () => flush(true),
  };
}

export type Rooms = ReturnType<typeof createRooms>;
