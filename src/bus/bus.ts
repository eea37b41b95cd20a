import { compareIds, ZERO_ID } from '../protocol/event-id.js';
import type { EventType, ProjectEvent } from '../protocol/messages.js';

export interface NewEvent {
  readonly type: EventType;
  readonly data: unknown;
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
  /** Appends events to a project's log, in order; resolves with their ids. */
  publish(projectGuid: string, events: readonly NewEvent[]): Promise<string[]>;
  /**
   * Starts live delivery of a project's events to the sink; resolves with the id of the newest
   * event at that moment ('0-0' if none). Every later event reaches the sink exactly once.
   */
  watch(projectGuid: string): Promise<string>;
  unwatch(projectGuid: string): void;
  /** Up to `count` events with id > afterId, oldest first. */
  range(projectGuid: string, afterId: string, count: number): Promise<ProjectEvent[]>;
  /**
   * 'complete' if every event after `afterId` is still retained; 'trimmed' if some were dropped
   * by retention; 'unknown' if the id is not one this log ever issued (e.g. the log was wiped).
   */
  checkHistory(projectGuid: string, afterId: string): Promise<HistoryCheck>;
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
 */
export function classifyHistory(afterId: string, log: { lastGenerated: string; maxDeleted: string; firstId: string | null }): HistoryCheck {
  if (compareIds(afterId, log.lastGenerated) > 0) return 'unknown';
  if (compareIds(afterId, log.maxDeleted) < 0) return 'trimmed';
  if (afterId !== ZERO_ID && log.firstId && compareIds(afterId, log.maxDeleted) > 0 && compareIds(afterId, log.firstId) < 0) return 'unknown';
  return 'complete';
}

export type EventBusFactory = (sink: EventSink) => EventBus;
