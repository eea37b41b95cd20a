import type { Logger } from 'pino';
import { ANY_PROJECT, type FanoutBacklog } from '../bus/ingress.js';
import type { Metrics } from '../metrics.js';
import { CODEC_NAMES, CODECS, type CodecName } from '../protocol/codec.js';
import type { ProjectEvent } from '../protocol/events.js';
import { encodeFrames, MAX_FRAME_BYTES, queueChunks, releaseChunks, type Chunk, type Frame, type Outbox } from './chunks.js';

export { MAX_FRAME_BYTES, type Chunk, type Frame };

/**
 * Getting a room's pending events onto the wire: per-tick batching (every event that reaches a room
 * during one event-loop turn goes out serialized once, as one publish per encoding to the room topic),
 * frames of at most MAX_FRAME_BYTES, and per-turn slicing so that one crowded room cannot stall the
 * others: when a turn's fan-out would pass the slice (or one unit), the room's members move to their
 * shards' topics and the shards are published in step, over as many turns as it takes; once the backlog
 * is gone they move back to the room topic.
 */

/**
 * Sockets per shard. Small, so that one frame to one shard (the unit a turn cannot split while a
 * room has a backlog) stays short: a 40 KB send into a socket whose kernel buffer is still filling
 * took ~165 µs alone on this machine (loopback) and 2-6× that under load, and with 128 per shard the
 * units blocked the loop for 20-60 ms. While a room has a backlog it publishes each frame once per
 * shard (~1 µs per extra uWS publish call); without one, once to the room topic.
 */
export const SHARD_SIZE = 8;
/**
 * Fan-out work (frame bytes × subscribers) one room may do per event-loop turn before the rest waits
 * for the next turn; every other room, and uWS's I/O, runs in between. At least one unit always goes
 * out, so the delay a room adds to the others is at most this plus FANOUT_UNIT_BYTES.
 */
export const FANOUT_SLICE_BYTES = 256 * 1024;
/**
 * The most one unit of fan-out, which a turn cannot split, may cost: one chunk to one full shard. A
 * room without a backlog may publish its turn's first chunk to the whole room at once when that costs
 * no more (a 3 KB frame to 100 sockets is one publish, not 13).
 */
export const FANOUT_UNIT_BYTES = MAX_FRAME_BYTES * SHARD_SIZE;
/**
 * A room may defer at most this many bytes of events. Beyond it (fan-out slower than the events
 * arrive, sustained) the room publishes its whole backlog in one turn, as without slicing: the event
 * loop slows for everyone, which slows the producers, instead of the backlog growing without bound.
 */
export const FANOUT_BACKLOG_BYTES = 16 * 1024 * 1024;

/** Where frames go: uWS's app satisfies it; the unit tests record the calls. */
export interface FanoutPort {
  publish(topic: string, frame: Frame, isBinary: boolean, compress: boolean): unknown;
  numSubscribers(topic: string): number;
}

/**
 * A slice of a room's subscribers with topics of their own. While a room has a backlog its fan-out
 * is published shard by shard, so one room with thousands of subscribers (a flood into a crowd of
 * slow readers) is spread over several event-loop turns instead of blocking every other room for the
 * whole of it. Without a backlog every shard is at the same place and the room topic serves them all.
 */
export interface FanoutShard {
  readonly topics: Record<CodecName, string>;
  /** Newest event published to this shard's members (on the room topic or its own): a socket subscribed now receives exactly the events after it. */
  flushedId: string;
  /** Sequence number (room.outboxBase-relative numbering) of the next outbox chunk to publish here. */
  next: number;
}

/** What fan-out keeps per room (the room record, registry.ts, has these fields and more). */
export interface FanoutRoom<S extends FanoutShard = FanoutShard> extends Outbox {
  readonly guid: string;
  /** Where every member listens while `spread` is false: one publish reaches the whole room. */
  readonly topics: Record<CodecName, string>;
  /**
   * Members listen on their shard's topics: set when a turn's fan-out would pass the slice, cleared
   * when the backlog is gone (every shard then is at the same place). While false the outbox is
   * empty between turns.
   */
  spread: boolean;
  /** Never empty. */
  readonly shards: S[];
}

/** Where a shard opened now starts: after everything already queued (its sockets subscribe after that). */
export function queuedEnd(room: FanoutRoom): { flushedId: string; next: number } {
  return { flushedId: room.queuedId, next: room.outboxBase + room.outbox.length };
}

export interface FanoutOptions<S extends FanoutShard, R extends FanoutRoom<S> = FanoutRoom<S>> {
  readonly port: FanoutPort;
  readonly log: Pick<Logger, 'warn' | 'error'>;
  readonly metrics: Pick<Metrics, 'framesPublished' | 'deliveries' | 'fanOutDeferred' | 'eventsDelivered' | 'deliveryLag' | 'eventsUnencodable' | 'shardMoves'>;
  /**
   * Moves every member of the room from the room topic to its shard's topics (`toShards`) or back,
   * synchronously: called between publishes, so no frame is published while a member is between
   * topics, and what was published to its old topic this turn is still sent to it, before the rest.
   */
  readonly moveMembers: (room: R, toShards: boolean) => void;
  /** After each flush: the bytes handed to uWS (frame bytes × subscribers), an upper bound of how much the send buffers grew. */
  readonly onFanOut?: (bytes: number) => void;
  /** A shard's flushedId moved (resumes may be waiting for it). */
  readonly onShardFlushed?: (shard: S) => void;
  /** Runs a turn later (setImmediate: after uWS has sent what this turn published); tests drive turns by hand. */
  readonly schedule?: (turn: () => void) => void;
  /**
   * After every turn: for each room still waiting to fan out, how long an event accepted now would
   * wait (ms) and the bytes queued ahead of it; then the longest wait of any room here (0 when none
   * waits). What the ingress refuses on.
   */
  readonly onQueueDelay?: (backlogs: ReadonlyMap<string, FanoutBacklog>, longestMs: number) => void;
  /** Whether a frame is published with uWS's `compress` flag (src/connections/compression.ts); default never. */
  readonly compress?: (frame: Frame) => boolean;
  /** The clock of queueing and of the delay reports (ms); performance.now unless a test turns it by hand. */
  readonly now?: () => number;
}

export function createFanout<S extends FanoutShard, R extends FanoutRoom<S> = FanoutRoom<S>>(opts: FanoutOptions<S, R>) {
  const { port, log, metrics } = opts;
  const schedule = opts.schedule ?? ((turn: () => void) => void setImmediate(turn));
  const shardFlushed = opts.onShardFlushed ?? (() => {});
  const { subscribersOf, costOf, publishChunk, encodeFrames: encode } = createChunkPublisher(opts);
  const dirty = new Set<R>();
  const now = opts.now ?? (() => performance.now());
  const reportDelays = delayReporter(dirty, opts.onQueueDelay, now);
  let flushScheduled = false;
  let backlogScheduled = false;

  /** Queues events accepted into a room (new ones, in id order) for the next turn's flush; takes the array. */
  function enqueue(room: R, events: ProjectEvent[]): void {
    if (room.pending.length === 0) {
      room.pending = events;
      room.pendingSince = now();
    } else {
      for (const e of events) room.pending.push(e);
    }
    dirty.add(room);
    if (flushScheduled) return;
    flushScheduled = true;
    schedule(() => flush(false));
  }

  /** A room that closed: nothing of it is published any more. */
  function forget(room: R): void {
    dirty.delete(room);
  }

  /**
   * One turn of fan-out for the rooms with new events: each publishes at most FANOUT_SLICE_BYTES
   * (plus one chunk to one shard) unless `all`. Rooms with a backlog from earlier turns continue in
   * flushBacklog, on the next turn: uWS sends the small frames published here before it polls, so
   * they do not wait behind a crowded room's slice.
   */
  function flush(all: boolean): void {
    flushScheduled = false;
    let fannedOut = 0;
    for (const room of dirty) if (all || !hasBacklog(room)) fannedOut += flushRoom(room, all);
    if (dirty.size) scheduleBacklog();
    if (fannedOut > 0) opts.onFanOut?.(fannedOut);
    reportDelays();
  }

  /** Work left by an earlier turn: the outbox changes only inside flushRoom, which empties it unless a slice ran out. */
  const hasBacklog = (room: R) => room.outbox.length > 0;

  function scheduleBacklog(): void {
    if (backlogScheduled) return;
    backlogScheduled = true;
    schedule(flushBacklog);
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
    reportDelays();
  }

  function flushRoom(room: R, all: boolean): number {
    if (room.pending.length) queueChunks(room);
    let spent = 0;
    // A backstop: nothing in one room's flush may stop the others (or escape into uWS/the bus).
    try {
      const unlimited = all || room.outboxBytes > FANOUT_BACKLOG_BYTES;
      if (unlimited && !all) log.warn({ projectGuid: room.guid, backlogBytes: room.outboxBytes, limit: FANOUT_BACKLOG_BYTES }, 'room fan-out backlog over its limit; publishing it in one turn');
      if (!room.spread) spent = publishToRoom(room, unlimited);
      if (room.spread) spent = publishToShards(room, unlimited, spent);
    } catch (err) {
      const first = room.outbox[0]?.events[0]?.id;
      log.error({ err, projectGuid: room.guid, firstId: first }, 'room flush failed; continuing with the next events');
      // Skip what failed rather than retrying it forever: every shard moves past the whole outbox.
      for (const shard of room.shards) advance(shard, room.outboxBase + room.outbox.length, room.queuedId);
    }
    releaseChunks(room, metrics);
    if (hasBacklog(room)) {
      metrics.fanOutDeferred.inc();
      return spent;
    }
    dirty.delete(room);
    // Every shard has everything queued: they are at one place again, which the room topic can serve.
    if (room.spread) move(room, false);
    return spent;
  }

  /**
   * Without a backlog every shard is at the outbox's first chunk: each chunk goes to the room topic,
   * once per encoding, while the turn's fan-out stays within the slice (the first chunk: within one
   * unit). The first chunk that does not fit moves the members to their shards, where the rest
   * continues, this turn if the slice is not spent yet (publishToShards).
   */
  function publishToRoom(room: R, unlimited: boolean): number {
    const { topics } = room;
    const subscribers = subscribersOf(topics);
    let spent = 0;
    for (let i = 0; i < room.outbox.length; i++) {
      const chunk = room.outbox[i]!;
      if (!unlimited) {
        const cost = costOf(chunk, subscribers);
        if (spent + cost > FANOUT_SLICE_BYTES && (spent > 0 || cost > FANOUT_UNIT_BYTES)) {
          move(room, true);
          return spent;
        }
      }
      spent += publishChunk(chunk, topics, subscribers);
      const seq = room.outboxBase + i;
      for (const shard of room.shards) advance(shard, seq + 1, chunk.lastId);
    }
    return spent;
  }

  /**
   * Chunk by chunk, every shard that is at this chunk publishes it: shards stay in step, the ones
   * behind catch up first, and a chunk is released once the last shard has it. Stops once the turn
   * has spent the slice (at least one chunk to one shard goes out, unless the room topic took this
   * turn's unit already).
   */
  function publishToShards(room: R, unlimited: boolean, spent: number): number {
    if (spent >= FANOUT_SLICE_BYTES && !unlimited) return spent;
    for (let i = 0; i < room.outbox.length; i++) {
      const seq = room.outboxBase + i;
      const chunk = room.outbox[i]!;
      for (const shard of room.shards) {
        if (shard.next !== seq) continue;
        spent += publishChunk(chunk, shard.topics, subscribersOf(shard.topics));
        advance(shard, seq + 1, chunk.lastId);
        if (spent >= FANOUT_SLICE_BYTES && !unlimited) return spent;
      }
    }
    return spent;
  }

  function advance(shard: S, next: number, flushedId: string): void {
    shard.next = next;
    shard.flushedId = flushedId;
    shardFlushed(shard);
  }

  function move(room: R, toShards: boolean): void {
    opts.moveMembers(room, toShards);
    room.spread = toShards;
    metrics.shardMoves.inc({ to: toShards ? 'shards' : 'room' });
  }

  return {
    enqueue,
    forget,
    /** Publishes everything queued, ignoring the per-turn slice (shutdown). */
    flushNow: () => flush(true),
    /** Also what a replay to one socket sends (resume.ts). */
    encodeFrames: encode,
  };
}


/**
 * After a turn: for each room still behind (the rooms still dirty), how long an event accepted for it
 * now would wait for fan-out, and the backlog that wait is for. The wait is what is left of the
 * backlog over the rate the room has drained since its backlog began, and never less than its oldest
 * event has already waited. The age of the oldest alone is not enough: a producer posting large
 * batches can queue many seconds of fan-out while the oldest event is still young (measured: 200
 * events a request, 32 lanes: 7.5 s queued under a 500 ms bound that looked only at the oldest).
 */
function delayReporter(dirty: ReadonlySet<FanoutRoom<FanoutShard>>, onQueueDelay: FanoutOptions<FanoutShard>['onQueueDelay'], clock: () => number): () => void {
  if (!onQueueDelay) return () => {};
  const backlogs = new Map<string, FanoutBacklog>();
  /** Where each room behind was when its backlog began: the drain rate is measured from there. */
  const began = new Map<FanoutRoom<FanoutShard>, { at: number; drained: number }>();
  let reportedLongest = 0;
  return function reportDelays(): void {
    if (dirty.size === 0 && reportedLongest === 0) return;
    const now = clock();
    backlogs.clear();
    // A room that caught up since the last report is reported once more, as 0: its record goes.
    for (const room of began.keys()) {
      if (dirty.has(room)) continue;
      began.delete(room);
      backlogs.set(room.guid, CAUGHT_UP);
    }
    let longest = 0;
    let behind = 0;
    let fastest: FanoutBacklog | null = null;
    for (const room of dirty) {
      const since = room.outbox.length ? room.outbox[0]!.queuedAt : room.pending.length ? room.pendingSince : now;
      const ahead = publishedAhead(room);
      let start = began.get(room);
      // What the room drained before this backlog is not its rate now (the first report undercounts: conservative).
      if (!start) began.set(room, (start = { at: since, drained: room.releasedBytes }));
      const drained = room.releasedBytes + ahead - start.drained;
      const left = room.outboxBytes - ahead;
      const elapsed = now - since;
      // Nothing drained yet: the rate is at most one chunk's share over the time taken so far.
      const rate = drained > 0 ? drained / Math.max(now - start.at, 1e-3) : room.outbox.length ? room.outbox[0]!.bytes / Math.max(elapsed, 1e-3) : Infinity;
      const ms = Math.max(elapsed, left > 0 ? left / rate : 0);
      backlogs.set(room.guid, { ms, bytes: room.outboxBytes });
      if (ms > longest) longest = ms;
      if (room.outboxBytes > 0 && (!fastest || ms / room.outboxBytes < fastest.ms / fastest.bytes)) fastest = { ms, bytes: room.outboxBytes };
      behind++;
    }
    // The thread as a whole, once several projects are behind: they share it turn by turn, so a room
    // with nothing queued that takes a batch now drains it at about their pace; the fastest pace of
    // them (ms per byte), so a room of many members does not make every small room look slow. One
    // project alone behind holds back only itself.
    backlogs.set(ANY_PROJECT, behind > 1 && fastest ? fastest : CAUGHT_UP);
    reportedLongest = longest;
    onQueueDelay(backlogs, longest);
  };
}

const CAUGHT_UP: FanoutBacklog = { ms: 0, bytes: 0 };

/**
 * Outbox bytes the room's shards have published, averaged over its shards: each shard goes through
 * the outbox at its own pace, and a chunk leaves the outbox only once every shard has it.
 */
function publishedAhead(room: FanoutRoom<FanoutShard>): number {
  const n = room.outbox.length;
  if (n === 0) return 0;
  // How many shards have published each number of chunks; then one pass over the outbox: a room of
  // thousands of shards and a long backlog costs shards + chunks per report, not their product.
  const shardsAt = new Array<number>(n + 1).fill(0);
  for (const shard of room.shards) shardsAt[Math.max(0, Math.min(n, shard.next - room.outboxBase))]!++;
  let sum = 0;
  let notYet = room.shards.length - shardsAt[0]!;
  for (let i = 0; i < n && notYet > 0; i++) {
    // Shards past chunk i: those that published more than i chunks.
    sum += room.outbox[i]!.bytes * notYet;
    notYet -= shardsAt[i + 1]!;
  }
  return sum / room.shards.length;
}

/**
 * Publishing a chunk to a set of topics (a room's or a shard's), one frame list per encoding, encoded
 * on first use and kept for every later publish; what it spends is frame bytes × subscribers.
 */
function createChunkPublisher(opts: Pick<FanoutOptions<FanoutShard, FanoutRoom<FanoutShard>>, 'port' | 'log' | 'metrics' | 'compress'>) {
  const { port, log, metrics } = opts;
  const compress = opts.compress ?? (() => false);

  /** A chunk's frames in one encoding, encoded on first use (and kept for every later publish). */
  function framesOf(chunk: Chunk, name: CodecName): Frame[] {
    return (chunk.frames[name] ??= encodeFrames(name, chunk.events, unencodable));
  }

  /** Subscribers per encoding (CODEC_NAMES order). */
  function subscribersOf(topics: Record<CodecName, string>): number[] {
    return CODEC_NAMES.map((name) => port.numSubscribers(topics[name]));
  }

  /** What publishing a chunk to these subscribers would spend: frame bytes × subscribers. */
  function costOf(chunk: Chunk, subscribers: readonly number[]): number {
    let cost = 0;
    CODEC_NAMES.forEach((name, i) => {
      if (subscribers[i]) for (const frame of framesOf(chunk, name)) cost += frame.length * subscribers[i]!;
    });
    return cost;
  }

  /** Publishes one chunk to one set of topics in every encoding somebody there uses; returns frame bytes × subscribers. */
  function publishChunk(chunk: Chunk, topics: Record<CodecName, string>, subscribers: readonly number[]): number {
    let spent = 0;
    CODEC_NAMES.forEach((name, i) => {
      if (subscribers[i]) spent += publishFrames(chunk, name, topics[name], subscribers[i]!);
    });
    return spent;
  }

  function publishFrames(chunk: Chunk, name: CodecName, topic: string, subscribers: number): number {
    let spent = 0;
    const binary = CODECS[name].binary;
    // uWS deflates per subscriber that negotiated (compression.ts), and sends plain to the others.
    for (const frame of framesOf(chunk, name)) {
      port.publish(topic, frame, binary, compress(frame));
      spent += frame.length * subscribers;
    }
    metrics.framesPublished.inc(chunk.frames[name]!.length);
    metrics.deliveries.inc(subscribers * chunk.events.length);
    return spent;
  }

  /** An event the encoder could not carry: logged, counted, left out of this encoding's frames. */
  function unencodable(e: ProjectEvent, name: CodecName): void {
    metrics.eventsUnencodable.inc({ codec: name });
    log.error({ projectGuid: e.projectGuid, id: e.id, type: e.type, codec: name }, 'event cannot be encoded; skipped for this encoding');
  }

  return {
    subscribersOf,
    costOf,
    publishChunk,
    /** Also what a replay to one socket sends (resume.ts). */
    encodeFrames: (name: CodecName, events: readonly ProjectEvent[]): Frame[] => encodeFrames(name, events, unencodable),
  };
}
