import { compareIds, nextEventId, ZERO_ID } from '../protocol/event-id.js';
import { envelopeJsonOf, retainedSize, type ProjectEvent } from '../protocol/events.js';
import type { Config } from '../config.js';
import { GatewayError } from '../errors.js';
import { DEFAULT_KEYS_PER_PRODUCER } from '../protocol/limits.js';
import { fingerprintEvents, keysExhausted } from './idempotency.js';
import { classifyHistory, type EventBus, type EventSink, type HistoryCheck, type IdempotentPublish, type NewEvent } from './bus.js';

interface Log {
  events: ProjectEvent[];
  lastId: string;
  /** Highest id dropped by retention, as Redis' max-deleted-entry-id. */
  maxDeletedId: string;
}

/**
 * The embedded bus for a single instance: per-project logs kept in memory, bounded by `maxLen`.
 * Same id format and history semantics as the Redis Streams bus, so resume works the same.
 */
export interface MemoryBusOptions {
  readonly maxLen: number;
  readonly maxEvents: number;
  readonly maxBytes: number;
  readonly idempotencyWindowS: number;
  /** Unexpired idempotency keys one producer may hold, over all projects (IDEMPOTENCY_KEYS_PER_PRODUCER; default its default). */
  readonly keysPerProducer?: number;
}

interface IdempotencyRecord {
  readonly fingerprint: string;
  readonly ids: string[];
  readonly expiresAt: number;
  readonly producer: string;
}

/** When each of a producer's unexpired records expires, oldest first: a queue read from `head`. */
interface ProducerKeys {
  expiries: number[];
  head: number;
}

/** The in-process bus's settings, from the one place that knows their names (a gateway or the worker pool). */
export function memoryBusOptions(config: Config): MemoryBusOptions {
  return {
    maxLen: config.stream.maxLen,
    maxEvents: config.memoryBusMaxEvents,
    maxBytes: config.memoryBusMaxBytes,
    idempotencyWindowS: config.idempotencyWindowS,
    keysPerProducer: config.idempotencyKeysPerProducer,
  };
}

export function createMemoryBus(sink: EventSink, options: MemoryBusOptions): EventBus {
  /** In least-recently-published order (a publish moves its project to the end). */
  const logs = new Map<string, Log>();
  const watched = new Set<string>();
  let retained = 0;
  let closed = false;
  let retainedBytes = 0;
  const idempotency = createIdempotencyRecords(options.idempotencyWindowS, options.keysPerProducer ?? DEFAULT_KEYS_PER_PRODUCER);

  const logOf = (guid: string): Log => {
    let log = logs.get(guid);
    if (log) logs.delete(guid);
    else log = { events: [], lastId: ZERO_ID, maxDeletedId: ZERO_ID };
    logs.set(guid, log);
    return log;
  };

  const drop = (log: Log, count: number) => {
    const dropped = log.events.splice(0, count);
    if (dropped.length) log.maxDeletedId = dropped[dropped.length - 1]!.id;
    retained -= dropped.length;
    for (const e of dropped) retainedBytes -= retainedSize(e);
  };

  const over = () => retained > options.maxEvents || retainedBytes > options.maxBytes;

  /** Bounds memory over all projects, in events and in bytes: the least recently active projects' history goes first. */
  const enforceTotal = () => {
    for (const log of logs.values()) {
      if (!over()) return;
      let count = Math.max(0, Math.min(log.events.length, retained - options.maxEvents));
      let bytes = retainedBytes;
      for (let i = 0; i < count; i++) bytes -= retainedSize(log.events[i]!);
      while (bytes > options.maxBytes && count < log.events.length) bytes -= retainedSize(log.events[count++]!);
      drop(log, count);
    }
  };

  return {
    kind: 'memory',
    appendsInline: true,
    async publish(guid, input: readonly NewEvent[], keyed) {
      const key = keyed === undefined ? null : idempotency.check(guid, keyed, input);
      if (key?.replay) return { ids: key.replay, replayed: true };
      const log = logOf(guid);
      const timestamp = new Date().toISOString();
      const added: ProjectEvent[] = [];
      for (const e of input) {
        log.lastId = nextEventId(log.lastId);
        // With its checked JSON, an event keeps only that string (see ProjectEvent); the producer's
        // object is not retained.
        // `json` is in the literal (not added afterwards) so the object is one allocation with no property array.
        const id = log.lastId;
        const event: ProjectEvent =
          e.dataJson !== undefined
            ? { id, projectGuid: guid, type: e.type, timestamp, json: envelopeJsonOf(e.type, guid, timestamp, id, e.dataJson) }
            : { id, projectGuid: guid, type: e.type, data: e.data, timestamp };
        added.push(event);
      }
      log.events.push(...added);
      retained += added.length;
      for (const e of added) retainedBytes += retainedSize(e);
      // Trim in chunks so retention is amortized O(1) per event instead of a shift per event.
      if (log.events.length > options.maxLen * 1.25 + 16) drop(log, log.events.length - options.maxLen);
      if (over()) enforceTotal();
      if (watched.has(guid)) sink(guid, added);
      const ids = added.map((e) => e.id);
      if (key) idempotency.remember(key, ids);
      return { ids, replayed: false };
    },
    async watch(guid) {
      watched.add(guid);
      return logs.get(guid)?.lastId ?? ZERO_ID;
    },
    unwatch(guid) {
      watched.delete(guid);
    },
    async range(guid, afterId, count) {
      const events = logs.get(guid)?.events ?? [];
      let lo = 0;
      let hi = events.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (compareIds(events[mid]!.id, afterId) <= 0) lo = mid + 1;
        else hi = mid;
      }
      const page = events.slice(lo, lo + count);
      return { events: page, lastId: page.length ? page[page.length - 1]!.id : afterId };
    },
    async rangeBack(guid, beforeId, count) {
      const events = logs.get(guid)?.events ?? [];
      let lo = 0;
      let hi = events.length;
      while (beforeId !== null && lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (compareIds(events[mid]!.id, beforeId) < 0) lo = mid + 1;
        else hi = mid;
      }
      const page = events.slice(Math.max(0, hi - count), hi).reverse();
      return { events: page, lastId: page.length ? page[page.length - 1]!.id : (beforeId ?? ZERO_ID) };
    },
    async checkHistory(guid, afterId): Promise<HistoryCheck> {
      const log = logs.get(guid);
      if (!log) return afterId === ZERO_ID ? 'complete' : 'unknown';
      return classifyHistory(afterId, { lastGenerated: log.lastId, maxDeleted: log.maxDeletedId, firstId: log.events[0]?.id ?? null });
    },
    // Appends reach the sink inside publish(): there is never anything to catch up with.
    catchUp: async () => {},
    isReady: () => !closed,
    waitUntilReady: async () => !closed,
    async close() {
      closed = true;
      watched.clear();
    },
  };
}

/**
 * The in-process bus's idempotency records: per (project, key, producer), expiring after the window,
 * at most `keysPerProducer` unexpired per producer (bus/idempotency.ts).
 */
function createIdempotencyRecords(windowS: number, keysPerProducer: number) {
  /**
   * Idempotency records of every producer, oldest first (a Map keeps insertion order; one window for
   * all), so expiry looks only at the head. A record goes only when it expires: what bounds them is
   * each producer's count (see bus/idempotency.ts), never another producer's publishes.
   */
  const records = new Map<string, IdempotencyRecord>();
  /** The producers holding unexpired records; a producer's queue is its subsequence of `records`. */
  const producers = new Map<string, ProducerKeys>();

  const expireRecords = (now: number) => {
    for (const [k, r] of records) {
      if (r.expiresAt > now) break;
      records.delete(k);
      // This record is the oldest left of all, so the oldest left of its producer: its queue's head.
      const keys = producers.get(r.producer)!;
      if (++keys.head === keys.expiries.length) {
        producers.delete(r.producer);
      } else if (keys.head >= 1024 && keys.head * 2 >= keys.expiries.length) {
        keys.expiries = keys.expiries.slice(keys.head);
        keys.head = 0;
      }
    }
  };

  const remember = (recordKey: string, producer: string, fingerprint: string, ids: string[]) => {
    const expiresAt = Date.now() + windowS * 1000;
    records.set(recordKey, { fingerprint, ids, expiresAt, producer });
    const keys = producers.get(producer);
    if (keys) keys.expiries.push(expiresAt);
    else producers.set(producer, { expiries: [expiresAt], head: 0 });
  };

  return {
    /**
     * A keyed publish's record key and fingerprint, or the ids of the publish it repeats (replay);
     * throws when the key was used with other events, or the producer holds its bound of keys.
     */
    check(guid: string, keyed: IdempotentPublish, input: readonly NewEvent[]): { recordKey: string; producer: string; fingerprint: string; replay?: string[] } {
      // The producer last: neither a GUID nor a key holds a newline, so the three read one way only.
      const recordKey = `${guid}\n${keyed.idempotencyKey}\n${keyed.producer}`;
      const fingerprint = fingerprintEvents(input.map((e) => [e.type, e.dataJson ?? JSON.stringify(e.data)]));
      const now = Date.now();
      expireRecords(now);
      const record = records.get(recordKey);
      if (record) {
        if (record.fingerprint !== fingerprint) throw new GatewayError('IDEMPOTENCY_KEY_REUSED');
        return { recordKey, producer: keyed.producer, fingerprint, replay: record.ids };
      }
      // A new key: refused (nothing appended) while the producer holds its bound of unexpired ones.
      const keys = producers.get(keyed.producer);
      if (keys && keys.expiries.length - keys.head >= keysPerProducer) throw keysExhausted(keysPerProducer, keys.expiries[keys.head]! - now);
      return { recordKey, producer: keyed.producer, fingerprint };
    },
    remember(key: { recordKey: string; producer: string; fingerprint: string }, ids: string[]): void {
      remember(key.recordKey, key.producer, key.fingerprint, ids);
    },
  };
}
