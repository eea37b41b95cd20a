import type { TemplatedApp } from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { EventBus } from '../bus/bus.js';
import { GatewayError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { CODEC_NAMES, CODECS, type CodecName } from '../protocol/codec.js';
import { compareIds } from '../protocol/event-id.js';
import { retainedSize, type ProjectEvent } from '../protocol/messages.js';
import { membershipOf, putMembership, removeMembership, replayWindowBytes, sendTo, whenDrained, type Connection, type Membership } from './connection.js';
import { roomTopic } from './topics.js';

/** One project watched by this instance. */
interface Room {
  readonly guid: string;
  readonly topics: Record<CodecName, string>;
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
  /** Newest event handed to the uWS topics: a socket subscribed now receives exactly the events after it. */
  flushedId: string;
  pending: ProjectEvent[];
  pendingSince: number;
  /** Events that arrived before the watch resolved, ordered; filtered against the head on ready. */
  early: ProjectEvent[] | null;
  flushWaiters: { id: string; resolve: (reached: boolean) => void }[];
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
      topics: { json: roomTopic(guid, 'json'), msgpack: roomTopic(guid, 'msgpack') },
      members: 1,
      ready,
      recent: [],
      recentBytes: 0,
      floorId: '0-0',
      headId: '0-0',
      flushedId: '0-0',
      pending: [],
      pendingSince: 0,
      early: [],
      flushWaiters: [],
    };
    room = created;
    rooms.set(guid, room);
    metrics.rooms.set(rooms.size);
    bus.watch(guid).then(
      (head) => {
        created.floorId = created.headId = created.flushedId = head;
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

  function release(room: Room): void {
    if (--room.members > 0) return;
    if (rooms.get(room.guid) !== room) return;
    rooms.delete(room.guid);
    dirty.delete(room);
    bus.unwatch(room.guid);
    for (const w of room.flushWaiters) w.resolve(false);
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
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flush);
    }
  }

  function flush(): void {
    flushScheduled = false;
    const now = performance.now();
    let fannedOut = 0;
    for (const room of dirty) {
      const events = room.pending;
      if (events.length === 0) continue;
      room.pending = [];
      // A backstop: nothing in one room's flush may stop the others (or escape into uWS/the bus).
      try {
        for (const name of CODEC_NAMES) {
          const subscribers = app.numSubscribers(room.topics[name]);
          if (subscribers === 0) continue;
          for (const frame of frames(name, events)) {
            app.publish(room.topics[name], frame, CODECS[name].binary, false);
            metrics.framesPublished.inc();
            fannedOut += frame.length * subscribers;
          }
          metrics.deliveries.inc(subscribers * events.length);
        }
      } catch (err) {
        log.error({ err, projectGuid: room.guid, firstId: events[0]!.id, lastId: events[events.length - 1]!.id }, 'room flush failed; continuing with the next events');
      }
      metrics.eventsDelivered.inc(events.length);
      metrics.deliveryLag.observe((now - room.pendingSince) / 1000);
      room.flushedId = events[events.length - 1]!.id;
      if (room.flushWaiters.length) settleWaiters(room);
    }
    dirty.clear();
    if (fannedOut > 0) opts.onFanOut?.(fannedOut);
  }

  /**
   * Frames for a run of one room's events in one encoding, each under MAX_FRAME_BYTES unless a
   * single event is larger. An event the encoder cannot carry is logged, counted and left out:
   * every entry point checks data against the limits, so this only catches what slipped past them.
   */
  function frames(name: CodecName, events: readonly ProjectEvent[]): (string | Uint8Array)[] {
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

  function settleWaiters(room: Room): void {
    room.flushWaiters = room.flushWaiters.filter((w) => {
      if (compareIds(room.flushedId, w.id) < 0) return true;
      w.resolve(true);
      return false;
    });
  }

  function flushedReaches(room: Room, id: string, timeoutMs: number): Promise<boolean> {
    if (compareIds(room.flushedId, id) >= 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = { id, resolve: (ok: boolean) => (clearTimeout(timer), resolve(ok)) };
      const timer = setTimeout(() => {
        room.flushWaiters = room.flushWaiters.filter((w) => w !== waiter);
        resolve(false);
      }, timeoutMs);
      room.flushWaiters.push(waiter);
    });
  }

  /** Sends already-flushed events to one socket, paced by its send buffer. */
  async function replay(conn: Connection, events: readonly ProjectEvent[]): Promise<boolean> {
    for (const frame of frames(conn.codec.name, events)) {
      await whenDrained(conn, replayWindowBytes(opts.maxBackpressureBytes));
      if (!sendTo(conn, frame)) return false;
    }
    metrics.replayedEvents.inc(events.length);
    return true;
  }

  function eventsAfter(room: Room, afterId: string): ProjectEvent[] {
    const out: ProjectEvent[] = [];
    for (const e of room.recent) {
      if (compareIds(e.id, afterId) <= 0) continue;
      if (compareIds(e.id, room.flushedId) > 0) break;
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
    const membership: Membership = { guid, joined: false };
    const previous = putMembership(conn, membership);
    // A re-join replaces the old membership; its room reference is handed over, not taken twice.
    const room = (previous && rooms.get(guid)) || acquire(guid);
    const current = () => !conn.closed && membershipOf(conn, guid) === membership;
    let done = false;
    try {
      if (previous?.joined) conn.ws?.unsubscribe(room.topics[conn.codec.name]);
      await room.ready;
      if (!current()) return null;
      const subscribe = (result: JoinResult): JoinResult => {
        conn.ws!.subscribe(room.topics[conn.codec.name]);
        membership.joined = true;
        done = true;
        return result;
      };
      if (since === undefined) return subscribe({ latestId: room.flushedId });

      let cursor = since;
      let replayed = 0;
      const inMemory = () => compareIds(cursor, room.floorId) >= 0 && compareIds(cursor, room.flushedId) <= 0;
      if (!inMemory()) {
        const history = await bus.checkHistory(guid, cursor);
        if (!current()) return null;
        if (history !== 'complete') {
          log.debug({ guid, since, history }, 'resume impossible, client must reload');
          return subscribe({ latestId: room.flushedId, recovered: false, replayed: 0 });
        }
      }
      for (let stalls = 0; ; ) {
        if (compareIds(cursor, room.flushedId) > 0) {
          // The client saw events (on another instance) that this one has not delivered yet.
          const reached = await flushedReaches(room, cursor, opts.catchUpTimeoutMs ?? 5000);
          if (!current()) return null;
          if (!reached) throw new GatewayError('UNAVAILABLE', 'this instance is behind the event stream; retry');
          continue;
        }
        if (compareIds(cursor, room.floorId) >= 0) {
          const missed = eventsAfter(room, cursor);
          if (missed.length && !(await replay(conn, missed))) return null;
          if (!current()) return null;
          // Sending may have waited for the socket to drain: new events may have been flushed since.
          if (missed.length) {
            cursor = missed[missed.length - 1]!.id;
            replayed += missed.length;
            if (compareIds(cursor, room.flushedId) < 0) continue;
          }
          return subscribe({ latestId: room.flushedId, recovered: true, replayed });
        }
        const page = await bus.range(guid, cursor, opts.historyPageSize);
        if (!current()) return null;
        // The page holds every entry from the cursor to page.lastId; what this room has not flushed
        // yet comes live after the subscribe, so the replay stops at `limit`.
        const limit = room.flushedId;
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
        if (now === undefined || now === membership) release(room);
      }
    }
  }

  function leave(conn: Connection, guid: string): boolean {
    const membership = membershipOf(conn, guid);
    if (!membership) return false;
    removeMembership(conn, membership);
    const room = rooms.get(guid);
    if (membership.joined && room) {
      conn.ws?.unsubscribe(room.topics[conn.codec.name]);
      release(room);
    }
    // A join still in flight notices it was superseded and releases the room itself.
    return true;
  }

  /** On close: uWS already dropped the topic subscriptions; give back the room references. */
  function leaveAll(conn: Connection): void {
    for (const membership of conn.rooms) {
      if (!membership.joined) continue;
      const room = rooms.get(membership.guid);
      if (room) release(room);
    }
    conn.rooms = [];
  }

  return {
    deliver,
    join,
    leave,
    leaveAll,
    flushNow: flush,
  };
}

export type Rooms = ReturnType<typeof createRooms>;
