import type { Logger } from 'pino';
import { compareIds } from '../protocol/event-id.js';
import type { EventBus, EventBusFactory, EventSink } from './bus.js';

/** The bus every part of a gateway shares: several watchers of one project, several sinks. */
export interface SharedBus extends EventBus {
  /**
   * Adds a receiver of every delivered batch (rooms, the agents relay), in the order added. A sink
   * that throws is logged; the others and the bus go on.
   */
  addSink(sink: EventSink): void;
}

/**
 * A bus has one sink and one watch per project; the rooms watch a project while it has members, and
 * the agents relay watches the projects the agents-server subscribed to. This wrapper counts
 * watches per project so that the rooms' unwatch does not end the relay's watch (or the reverse):
 * the bus is asked to watch on the first watcher and to unwatch after the last. It also fans the
 * bus's one sink out to every part that registered one (addSink), which is how the bus reaches the
 * rooms without the composition root in between (centrifuge registers a broker event handler).
 *
 * A later watcher is told the newest id already delivered to the sinks (or the first watch's
 * answer, whichever is newer), exactly what the bus would have answered it.
 */
export function createSharedBus(factory: EventBusFactory, log: Logger): SharedBus {
  const watches = new Map<string, { count: number; ready: Promise<string>; lastDelivered: string | null }>();
  const sinks: EventSink[] = [];

  const bus = factory((guid, events) => {
    const w = watches.get(guid);
    const last = events[events.length - 1];
    if (w && last && (!w.lastDelivered || compareIds(last.id, w.lastDelivered) > 0)) w.lastDelivered = last.id;
    for (const sink of sinks) {
      try {
        sink(guid, events);
      } catch (err) {
        log.error({ err, projectGuid: guid }, 'an event sink failed; the others go on');
      }
    }
  });

  return {
    kind: bus.kind,
    appendsInline: bus.appendsInline,
    addSink: (sink) => void sinks.push(sink),
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
    publish: (guid, events, keyed) => bus.publish(guid, events, keyed),
    range: (guid, afterId, count) => bus.range(guid, afterId, count),
    rangeBack: (guid, beforeId, count) => bus.rangeBack(guid, beforeId, count),
    checkHistory: (guid, afterId) => bus.checkHistory(guid, afterId),
    catchUp: (timeoutMs) => bus.catchUp(timeoutMs),
    isReady: () => bus.isReady(),
    waitUntilReady: (timeoutMs) => bus.waitUntilReady(timeoutMs),
    close: () => bus.close(),
  };
}

