import { compareIds, nextEventId, ZERO_ID } from '../protocol/event-id.js';
import { envelopeJsonOf, retainedSize, type ProjectEvent } from '../protocol/events.js';
import type { Config } from '../config.js';
import { GatewayError } from '../errors.js';
import { fingerprintEvents } from './idempotency.js';
import { classifyHistory, type EventBus, type EventSink, type HistoryCheck, type NewEvent } from './bus.js';

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
}

/** The in-process bus's settings, from the one place that knows their names (a gateway or the worker pool). */
export function memoryBusOptions(config: Config): MemoryBusOptions {
  return { maxLen: config.stream.maxLen, maxEvents: config.memoryBusMaxEvents, maxBytes: config.memoryBusMaxBytes, idempotencyWindowS: config.idempotencyWindowS };
}

export function createMemoryBus(sink: EventSink, options: MemoryBusOptions): EventBus {
  /** In least-recently-published order (a publish moves its project to the end). */
  const logs = new Map<string, Log>();
  const watched = new Set<string>();
  let retained = 0;
  let closed = false;
  let retainedBytes = 0;
  /** Idempotency records, oldest first (a Map keeps insertion order), so expiry looks only at the head. */
  const records = new Map<string, { fingerprint: string; ids: string[]; expiresAt: number }>();
  const MAX_RECORDS = 100_000;

  const recordFor = (key: string, now: number) => {
    for (const [k, r] of records) {
      if (r.expiresAt > now && records.size <= MAX_RECORDS) break;
      records.delete(k);
    }
    return records.get(key);
  };

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
      let recordKey: string | null = null;
      let fingerprint = '';
      if (keyed !== undefined) {
        // The producer last: neither a GUID nor a key holds a newline, so the three read one way only.
        recordKey = `${guid}\n${keyed.idempotencyKey}\n${keyed.producer}`;
        fingerprint = fingerprintEvents(input.map((e) => [e.type, e.dataJson ?? JSON.stringify(e.data)]));
        const record = recordFor(recordKey, Date.now());
        if (record) {
          if (record.fingerprint !== fingerprint) throw new GatewayError('IDEMPOTENCY_KEY_REUSED');
          return { ids: record.ids, replayed: true };
        }
      }
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
      if (recordKey) records.set(recordKey, { fingerprint, ids, expiresAt: Date.now() + options.idempotencyWindowS * 1000 });
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
