import type { AppendResult, EventBus, EventSink, HistoryCheck, HistoryPage } from '../bus/bus.js';
import type { MainCaller } from './main-calls.js';
import type { BusRequest, FromWorker, MainResult, ToWorker } from './messages.js';

export interface PortBus {
  readonly bus: EventBus;
  /** Feeds the main thread's events in; call for every bus-events message the worker receives. */
  receive(message: Extract<ToWorker, { kind: 'bus-events' }>): void;
}

/**
 * A worker thread's view of the in-process bus that lives in the main thread: every call is a
 * message, every event of a watched project arrives as a message on the same port, in order.
 * Implements EventBus, so the gateway runs on it unchanged.
 */
export function createPortBus(caller: MainCaller, append: (request: BusRequest) => MainResult, send: (message: FromWorker) => void, sink: EventSink): PortBus {
  let closed = false;
  /**
   * The projects this worker watches. The main thread may still post a project's events after this
   * worker unwatched it (the unwatch and an append travel on different ports, read in no fixed
   * order): what arrives for a project no longer watched is dropped here, as the other buses do.
   */
  const watching = new Set<string>();
  const bus: EventBus = {
    kind: 'memory',
    // Appends are synchronous calls on the main thread (sync-calls.ts); the other calls are messages.
    appendsInline: true,
    publish(guid, events, keyed) {
      try {
        return Promise.resolve(append({ op: 'publish', guid, events, keyed }) as AppendResult);
      } catch (err) {
        return Promise.reject(err);
      }
    },
    async watch(guid) {
      // Before the call: events the host posts once it counts this worker arrive before its answer.
      watching.add(guid);
      try {
        return (await caller.call({ op: 'watch', guid })) as string;
      } catch (err) {
        watching.delete(guid);
        throw err;
      }
    },
    unwatch(guid) {
      watching.delete(guid);
      if (!closed) send({ kind: 'bus-unwatch', guid });
    },
    range: async (guid, afterId, count) => (await caller.call({ op: 'range', guid, afterId, count })) as HistoryPage,
    rangeBack: async (guid, beforeId, count) => (await caller.call({ op: 'rangeBack', guid, beforeId, count })) as HistoryPage,
    checkHistory: async (guid, afterId) => (await caller.call({ op: 'checkHistory', guid, afterId })) as HistoryCheck,
    // A round trip on the port the events come on: its answer follows every event the host posted
    // before it (a port keeps order), including those of this worker's own appends.
    catchUp: async () => void (await caller.call({ op: 'catchUp' })),
    // The main thread's bus is in memory: up whenever this thread can reach it.
    isReady: () => !closed,
    waitUntilReady: async () => !closed,
    async close() {
      closed = true;
      watching.clear();
    },
  };

  return {
    bus,
    receive(message) {
      if (!closed && watching.has(message.guid)) sink(message.guid, message.events);
    },
  };
}
