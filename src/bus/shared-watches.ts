import type { EventBus } from '../bus/bus.js';
import { compareIds } from '../protocol/event-id.js';
import type { ProjectEvent } from '../protocol/events.js';

/**
 * The bus has one sink and one watch per project; rooms watch a project while it has members, and
 * the agents relay watches the projects the agents-server subscribed to. This wrapper counts
 * watches per project so that rooms' unwatch does not end the relay's watch (or the reverse): the
 * bus is asked to watch on the first watcher and to unwatch after the last.
 *
 * A later watcher is told the newest id already delivered to the sink (or the first watch's
 * answer, whichever is newer), exactly what the bus would have answered it.
 */
export function shareWatches(bus: EventBus): { bus: EventBus; observe(projectGuid: string, events: readonly ProjectEvent[]): void } {
  const watches = new Map<string, { count: number; ready: Promise<string>; lastDelivered: string | null }>();

  const shared: EventBus = Object.create(bus) as EventBus;
  Object.assign(shared, {
    kind: bus.kind,
    appendsInline: bus.appendsInline,
    watch(guid: string): Promise<string> {
      const existing = watches.get(guid);
      if (existing) {
        existing.count++;
        return existing.ready.then((id) => (existing.lastDelivered && compareIds(existing.lastDelivered, id) > 0 ? existing.lastDelivered : id));
      }
      const w = { count: 1, ready: bus.watch(guid), lastDelivered: null as string | null };
      watches.set(guid, w);
      // A failed watch is forgotten, so the next watcher asks the bus again.
      w.ready.catch(() => {
        if (watches.get(guid) === w) watches.delete(guid);
      });
      return w.ready;
    },
    unwatch(guid: string): void {
      const w = watches.get(guid);
      if (!w) return;
      if (--w.count > 0) return;
      watches.delete(guid);
      bus.unwatch(guid);
    },
  });
  for (const method of ['publish', 'range', 'checkHistory', 'catchUp', 'isReady', 'waitUntilReady', 'close'] as const) {
    (shared as unknown as Record<string, unknown>)[method] = (bus[method] as (...args: unknown[]) => unknown).bind(bus);
  }

  return {
    bus: shared,
    observe(guid, events) {
      const w = watches.get(guid);
      const last = events[events.length - 1];
      if (w && last && (!w.lastDelivered || compareIds(last.id, w.lastDelivered) > 0)) w.lastDelivered = last.id;
    },
  };
}
