import type { Logger } from 'pino';
import type { EventBus } from '../bus/bus.js';
import { compareIds } from '../protocol/event-id.js';
import { eventData, type ProjectEvent } from '../protocol/events.js';

/** Where the agents-server's confirmed positions are kept (Redis hash, or memory). */
export interface CursorStore {
  get(projectGuid: string): Promise<string | null>;
  set(projectGuid: string, eventId: string): Promise<void>;
}

export interface UpdateFrame {
  type: 'project_update';
  projectGuid: string;
  id: string;
  timestamp: string;
  data: { eventId: string; eventType: string; event: unknown; timestamp: string };
}

interface Subscription {
  readonly guid: string;
  /** Id of the last event sent upstream (or the starting point). */
  cursor: string;
  /** Events that arrived live while history was still being replayed. */
  early: ProjectEvent[] | null;
}

/**
 * The projects the agents-server subscribed to over the current link. Each gets every event of the
 * project, whoever produced it (HTTP API, XADD, another instance), once and in id order: the history
 * after the starting point is replayed in pages, live events that arrive meanwhile are held and sent
 * after it, and anything at or before the cursor is never sent twice. Subscriptions belong to one
 * link: after a reconnect the agents-server subscribes again (from `since`, or from the last id it
 * confirmed with `project_update_ack`).
 */
export function createSubscriptions(options: {
  bus: EventBus;
  log: Logger;
  historyPageSize: number;
  cursors: CursorStore;
  /** Sends a frame upstream; false if the link is gone. */
  send: (frame: UpdateFrame | { type: 'subscribed' | 'error'; projectGuid: string | null; id: string | null; data: unknown }) => boolean;
  onSent: () => void;
  /** Resolves when the link can take more (a replay of a long history must not fill memory). */
  drained: () => Promise<void>;
}) {
  const { bus, log } = options;
  const subs = new Map<string, Subscription>();
  /** Bumped on every link change, so a replay for an old link stops. */
  let epoch = 0;

  function sendEvents(sub: Subscription, events: readonly ProjectEvent[]): boolean {
    for (const e of events) {
      if (compareIds(e.id, sub.cursor) <= 0) continue;
      const ok = options.send({
        type: 'project_update',
        projectGuid: sub.guid,
        id: e.id,
        timestamp: e.timestamp,
        data: { eventId: e.id, eventType: e.type, event: eventData(e), timestamp: e.timestamp, ...(e.origin ? { origin: e.origin } : {}) },
      });
      if (!ok) return false;
      sub.cursor = e.id;
      options.onSent();
    }
    return true;
  }

  async function start(guid: string, since: string | undefined, requestId: string | null): Promise<void> {
    const myEpoch = epoch;
    const existing = subs.get(guid);
    if (existing) {
      subs.delete(guid);
      bus.unwatch(guid);
    }
    const sub: Subscription = { guid, cursor: '0-0', early: [] };
    subs.set(guid, sub);
    const current = () => epoch === myEpoch && subs.get(guid) === sub;
    try {
      const latest = await bus.watch(guid);
      if (!current()) return;
      const confirmed = since === undefined ? await options.cursors.get(guid) : null;
      const from = since ?? confirmed ?? latest;
      sub.cursor = from;
      const history = from === latest ? 'complete' : await bus.checkHistory(guid, from);
      let replayed = 0;
      // Replay up to the newest event the sink had delivered when the watch began; everything later arrives live.
      while (compareIds(sub.cursor, latest) < 0) {
        await options.drained();
        if (!current()) return;
        const page = await bus.range(guid, sub.cursor, options.historyPageSize);
        if (!current()) return;
        const upTo = page.events.filter((e) => compareIds(e.id, latest) <= 0);
        const before = sub.cursor;
        if (!sendEvents(sub, upTo)) return;
        replayed += upTo.length;
        // Skipped (malformed) entries move the cursor too, so they cannot stall the replay.
        const next = compareIds(page.lastId, latest) <= 0 ? page.lastId : latest;
        if (compareIds(next, sub.cursor) > 0) sub.cursor = next;
        if (compareIds(sub.cursor, before) <= 0) break; // nothing more in history
      }
      const early = sub.early ?? [];
      sub.early = null;
      if (!sendEvents(sub, early)) return;
      options.send({ type: 'subscribed', projectGuid: guid, id: requestId, data: { from, replayed, recovered: history === 'complete', latestId: sub.cursor } });
    } catch (err) {
      if (subs.get(guid) === sub) {
        subs.delete(guid);
        bus.unwatch(guid);
      }
      log.warn({ err: (err as Error).message, projectGuid: guid }, 'agents relay: subscribe failed');
      options.send({ type: 'error', projectGuid: guid, id: requestId, data: { code: 'UNAVAILABLE', message: 'could not subscribe; retry' } });
    }
  }

  return {
    subscribe(projects: readonly { projectGuid: string; since?: string }[], requestId: string | null): void {
      for (const p of projects) void start(p.projectGuid, p.since, requestId);
    },
    unsubscribe(projects: readonly string[]): void {
      for (const guid of projects) {
        if (!subs.delete(guid)) continue;
        bus.unwatch(guid);
      }
    },
    /** The bus sink's events (all watched projects, rooms' too). */
    receive(guid: string, events: readonly ProjectEvent[]): void {
      const sub = subs.get(guid);
      if (!sub) return;
      if (sub.early) sub.early.push(...events);
      else sendEvents(sub, events);
    },
    confirm(guid: string, eventId: string): void {
      options.cursors.set(guid, eventId).catch((err: unknown) => log.warn({ err: (err as Error).message }, 'agents relay: could not store the confirmed position'));
    },
    /** The link closed: every subscription ends with it. */
    reset(): void {
      epoch++;
      for (const guid of subs.keys()) bus.unwatch(guid);
      subs.clear();
    },
    count: () => subs.size,
  };
}
