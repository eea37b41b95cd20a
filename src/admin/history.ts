import type { EventBus } from '../bus/bus.js';
import { eventEnvelope } from '../protocol/events.js';
import type { Envelope, EventType } from '../protocol/messages.js';
import { ZERO_ID } from '../protocol/event-id.js';

export interface HistoryQuery {
  /** Oldest first: events after this id (a resume's `since`). Newest first: events before it. Absent: from the start / the newest. */
  readonly since: string | undefined;
  readonly limit: number;
  readonly order: 'oldest' | 'newest';
}

export interface HistoryAnswer {
  readonly projectGuid: string;
  readonly order: 'oldest' | 'newest';
  /** As a WebSocket client receives them: type, projectGuid, data, timestamp, id. */
  readonly events: Envelope<EventType>[];
  /**
   * As a resume's `recovered`. Oldest first: true when the history holds every event after `since`
   * (the pages from there join up with what a socket resuming from `since` gets); false when some
   * were trimmed or `since` is unknown to the log (then the events are read from the oldest one
   * retained: reload, do not merge). Newest first: true when paging back reaches the project's first event.
   */
  readonly recovered: boolean;
  /**
   * The `since` of the next page in the same order (skipped malformed entries included); null when
   * this page read nothing (the end of the log as it is now, or its beginning when newest first).
   */
  readonly next: string | null;
}

/**
 * The server API's history of a project, paged by the same event ids as a resume: what a backend
 * reads for a first page load without opening a WebSocket.
 */
export async function readHistory(bus: Pick<EventBus, 'range' | 'rangeBack' | 'checkHistory'>, projectGuid: string, q: HistoryQuery): Promise<HistoryAnswer> {
  if (q.order === 'newest') {
    const [page, whole] = await Promise.all([bus.rangeBack(projectGuid, q.since ?? null, q.limit), bus.checkHistory(projectGuid, ZERO_ID)]);
    const ended = page.lastId === (q.since ?? ZERO_ID);
    return { projectGuid, order: 'newest', events: page.events.map(eventEnvelope), recovered: whole === 'complete', next: ended ? null : page.lastId };
  }
  const since = q.since ?? ZERO_ID;
  const check = await bus.checkHistory(projectGuid, since);
  const from = check === 'complete' ? since : ZERO_ID;
  const page = await bus.range(projectGuid, from, q.limit);
  const ended = page.lastId === from;
  return { projectGuid, order: 'oldest', events: page.events.map(eventEnvelope), recovered: check === 'complete', next: ended ? null : page.lastId };
}
