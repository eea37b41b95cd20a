import { compareIds, ZERO_ID } from '../protocol/event-id.js';
import type { EventType } from '../protocol/messages.js';
import type { ProjectEvent } from '../protocol/events.js';

export interface NewEvent {
  readonly type: EventType;
  readonly data: unknown;
  /** `data` as JSON, when the caller already encoded it (after checking it against the data limits). */
  readonly dataJson?: string;
}

/**
 * A keyed publish: the producer's idempotency key, and who the producer is. A key is the producer's
 * own (see idempotency.ts): another producer's same key is another request, and a producer holds a
 * bounded number of unexpired keys.
 */
export interface IdempotentPublish {
  readonly idempotencyKey: string;
  /**
   * Who publishes: an HTTP API caller is its token's principal (httpProducer), an in-process or
   * exported-producer caller names itself (PRODUCER_NAME_PATTERN).
   */
  readonly producer: string;
}

/** What an append did: the ids of the events, and whether an idempotency key made it a replay. */
export interface AppendResult {
  readonly ids: string[];
  /** True when the key had been used already: nothing was appended, `ids` are the first call's (see idempotency.ts). */
  readonly replayed: boolean;
}

/** A page of history: the events, and the id of the last entry read (skipped malformed ones included). */
export interface HistoryPage {
  readonly events: ProjectEvent[];
  /** Where the next page starts; equal to the request's afterId when nothing was read. */
  readonly lastId: string;
}

/** Receives the events of watched projects, in id order per project, in batches. */
export type EventSink = (projectGuid: string, events: ProjectEvent[]) => void;

/** Whether the history still holds every event after a given id. */
export type HistoryCheck = 'complete' | 'trimmed' | 'unknown';

/**
 * The event bus: an ordered, bounded log per project plus live delivery of the projects this
 * instance watches. The in-process bus serves one instance; the Redis Streams bus makes many
 * instances act as one.
 */
export interface EventBus {
  readonly kind: 'memory' | 'redis';
  /**
   * True when publish() settles within the microtasks of its caller (the in-process bus of a
   * single-thread gateway): the HTTP API then answers inside the read that carried the request,
   * which is what uWS needs to serve pipelined requests (see http/respond.ts holdReads).
   */
  readonly appendsInline: boolean;
  /**
   * Appends events to a project's log, in order; resolves with their ids. With an idempotency key,
   * a repeat by the same producer within the window appends nothing and resolves with the first
   * call's ids; a producer at its bound of unexpired keys is refused (see idempotency.ts).
   */
  publish(projectGuid: string, events: readonly NewEvent[], keyed?: IdempotentPublish): Promise<AppendResult>;
  /**
   * Starts live delivery of a project's events to the sink; resolves with the id of the newest
   * event at that moment ('0-0' if none). Every later event reaches the sink exactly once.
   */
  watch(projectGuid: string): Promise<string>;
  unwatch(projectGuid: string): void;
  /**
   * Up to `count` entries with id > afterId, oldest first. Entries that are not valid events are
   * left out of `events` but still move `lastId`, so a run of them can never stall a resume.
   */
  range(projectGuid: string, afterId: string, count: number): Promise<HistoryPage>;
  /**
   * Up to `count` entries with id < beforeId (null: the newest), NEWEST first: the server API's
   * history read backwards. `lastId` is the oldest entry read (the next page's beforeId); malformed
   * entries are left out of `events` but still move it. Equal to beforeId ('0-0' for null) when nothing was read.
   */
  rangeBack(projectGuid: string, beforeId: string | null, count: number): Promise<HistoryPage>;
  /**
   * 'complete' if every event after `afterId` is still retained; 'trimmed' if some were dropped
   * by retention; 'unknown' if the id is not one this log ever issued (e.g. the log was wiped).
   */
  checkHistory(projectGuid: string, afterId: string): Promise<HistoryCheck>;
  /**
   * Delivers to the sink, before resolving, every event of a watched project that the log held when
   * this was called (a shutdown calls it before closing sockets). Gives up after `timeoutMs`.
   */
  catchUp(timeoutMs: number): Promise<void>;
  /** False while the bus cannot deliver (e.g. Redis unreachable). */
  isReady(): boolean;
  /** Resolves true once connected, or false after `timeoutMs` (the bus keeps trying either way). */
  waitUntilReady(timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * Whether every event after `afterId` is still in a log, from the log's bookkeeping (the same
 * fields Redis 7 keeps per stream). Between the highest deleted id and the first entry no id ever
 * existed, so an id there comes from an earlier incarnation of the log (wiped or expired): unknown.
 *
 * `droppedUncounted`: entries were dropped that `maxDeleted` does not cover. Redis moves
 * max-deleted-entry-id only on XDEL, not when XADD MAXLEN or XTRIM drop the oldest entries; its
 * entries-added against the length still shows that some went. Then an id before the first entry
 * is 'unknown' as above (it may be the last one dropped, or older: Redis keeps no record of which),
 * the start of the log (0-0) is 'trimmed', and so is any id before the last generated one once
 * nothing is left (every event after it was dropped).
 */
export function classifyHistory(afterId: string, log: { lastGenerated: string; maxDeleted: string; firstId: string | null; droppedUncounted?: boolean }): HistoryCheck {
  if (compareIds(afterId, log.lastGenerated) > 0) return 'unknown';
  if (compareIds(afterId, log.maxDeleted) < 0) return 'trimmed';
  if (log.droppedUncounted && compareIds(afterId, log.lastGenerated) < 0 && (afterId === ZERO_ID || log.firstId === null)) return 'trimmed';
  if (afterId !== ZERO_ID && log.firstId && compareIds(afterId, log.maxDeleted) > 0 && compareIds(afterId, log.firstId) < 0) return 'unknown';
  return 'complete';
}

export type EventBusFactory = (sink: EventSink) => EventBus;
