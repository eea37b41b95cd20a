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
  const bus: EventBus = {
    kind: 'memory',
    // Appends are synchronous calls on the main thread (sync-calls.ts); the other calls are messages.
    appendsInline: true,
    publish(guid, events, idempotencyKey) {
      try {
        return Promise.resolve(append({ op: 'publish', guid, events, idempotencyKey }) as AppendResult);
      } catch (err) {
        return Promise.reject(err);
      }
    },
    watch: async (guid) => (await caller.call({ op: 'watch', guid })) as string,
    unwatch(guid) {
      if (!closed) send({ kind: 'bus-unwatch', guid });
    },
    range: async (guid, afterId, count) => (await caller.call({ op: 'range', guid, afterId, count })) as HistoryPage,
    checkHistory: async (guid, afterId) => (await caller.call({ op: 'checkHistory', guid, afterId })) as HistoryCheck,
    // Events come on this port in order; the pool's two-phase stop sends `shutdown` after the last of them.
    catchUp: async () => {},
    // The main thread's bus is in memory: up whenever this thread can reach it.
    isReady: () => !closed,
    waitUntilReady: async () => !closed,
    async close() {
      closed = true;
    },
  };

  return {
    bus,
    receive(message) {
      if (!closed) sink(message.guid, message.events);
    },
  };
}
