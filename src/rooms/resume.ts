import type { Logger } from 'pino';
import type { EventBus } from '../bus/bus.js';
import { GatewayError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { CodecName } from '../protocol/codec.js';
import { compareIds } from '../protocol/event-id.js';
import type { ProjectEvent } from '../protocol/events.js';
import { membershipOf, putMembership, removeMembership, type Connection, type Membership } from '../connections/connection.js';
import { replayWindowBytes, sendTo, whenDrained } from '../connections/send.js';
import type { Frame } from './fanout.js';
import { subscribeMember, unsubscribeMember } from './placement.js';
import type { Registry, Room, Shard } from './registry.js';

/**
 * Joining a socket to a room, and resume: replays the events it missed (from the room's recent
 * window or the bus's history), then subscribes it with no gap and no duplicate.
 */

export interface JoinResult {
  latestId: string;
  recovered?: boolean;
  replayed?: number;
}

/** After a shard's flushedId moved: wakes the resumes it now satisfies. */
export function settleWaiters(shard: Shard): void {
  if (shard.waiters.length === 0) return;
  shard.waiters = shard.waiters.filter((w) => {
    if (compareIds(shard.flushedId, w.id) < 0) return true;
    w.resolve(true);
    return false;
  });
}

/** A room that closed will publish nothing more: its waiting resumes give up. */
export function abandonWaiters(room: Room): void {
  for (const sh of room.shards) for (const w of sh.waiters) w.resolve(false);
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

/** Takes a joined socket off its topic (live deliveries stop; the membership stays). */
export function unsubscribe(conn: Connection, room: Room, m: Membership): void {
  const shard = room.shards[m.shard];
  if (shard) unsubscribeMember(conn, room, shard);
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

export interface JoinOptions {
  readonly registry: Pick<Registry, 'get' | 'acquire' | 'release' | 'takeShard'>;
  readonly bus: Pick<EventBus, 'checkHistory' | 'range'>;
  readonly log: Pick<Logger, 'debug'>;
  readonly metrics: Pick<Metrics, 'replayedEvents'>;
  /** The fan-out's encoder: a replay sends the same frames a live subscriber would get. */
  readonly encodeFrames: (name: CodecName, events: readonly ProjectEvent[]) => Frame[];
  readonly historyPageSize: number;
  readonly maxBackpressureBytes: number;
  /** How long a resuming client may wait for this instance to catch up with an id it saw elsewhere. */
  readonly catchUpTimeoutMs?: number;
  /** Whether a replayed frame goes out with uWS's `compress` flag; default never. */
  readonly compress?: (frame: Frame) => boolean;
}

/** One join in flight: where it goes, whether it still counts, and how it goes live. */
interface Joining {
  readonly conn: Connection;
  readonly room: Room;
  readonly shard: Shard;
  /** False once the join was superseded (leave, re-join or close). */
  readonly current: () => boolean;
  /** Subscribes the socket now: called in the same turn as the last check of what it has been sent. */
  readonly subscribe: (result: JoinResult) => JoinResult;
}

export function createJoin(opts: JoinOptions) {
  const { registry, bus, log, metrics } = opts;

  /**
   * Joins a socket to a project room, replaying everything after `since` first. Returns null if
   * the join was superseded (leave, re-join or close) while it waited.
   */
  async function join(conn: Connection, joinedGuid: string, since: string | undefined): Promise<JoinResult | null> {
    // The membership keeps the room's copy of the GUID, not the one parsed from this frame: an idle
    // socket would otherwise hold its own 36-character string (~56 bytes) for as long as it stays.
    const guid = registry.get(joinedGuid)?.guid ?? joinedGuid;
    const membership: Membership = { guid, joined: false, shard: 0 };
    const previous = putMembership(conn, membership);
    // A re-join replaces the old membership; its room and shard references are handed over, not taken twice.
    const handedOver = previous ? registry.get(guid) : undefined;
    const room = handedOver ?? registry.acquire(guid);
    membership.shard = handedOver ? previous!.shard : registry.takeShard(room);
    const shard = room.shards[membership.shard]!;
    let done = false;
    try {
      if (previous?.joined) unsubscribe(conn, room, previous);
      await room.ready;
      const joining: Joining = {
        conn,
        room,
        shard,
        current: () => !conn.closed && membershipOf(conn, guid) === membership,
        subscribe: (result) => {
          subscribeMember(conn, room, shard);
          membership.joined = true;
          done = true;
          return result;
        },
      };
      if (!joining.current()) return null;
      if (since === undefined) return joining.subscribe({ latestId: shard.flushedId });
      return await resume(joining, since);
    } finally {
      if (!done) {
        // Only the membership that still owns the room reference gives it back: one that was
        // replaced by a re-join handed its reference over.
        const now = membershipOf(conn, guid);
        if (now === membership) removeMembership(conn, membership);
        if (now === undefined || now === membership) registry.release(room, membership.shard);
      }
    }
  }

  /** Replays what the socket missed after `since`, then subscribes it; null if superseded meanwhile. */
  async function resume(j: Joining, since: string): Promise<JoinResult | null> {
    const { conn, room, shard, current, subscribe } = j;
    const guid = room.guid;
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
  }

  /** Sends already-flushed events to one socket, paced by its send buffer. */
  async function replay(conn: Connection, events: readonly ProjectEvent[]): Promise<boolean> {
    for (const frame of opts.encodeFrames(conn.codec.name, events)) {
      await whenDrained(conn, replayWindowBytes(opts.maxBackpressureBytes));
      if (!sendTo(conn, frame, opts.compress?.(frame) ?? false)) return false;
    }
    metrics.replayedEvents.inc(events.length);
    return true;
  }

  return join;
}
