import type { EventBus, EventSink, HistoryCheck, HistoryPage } from '../bus/bus.js';
import type { AppendResult } from '../bus/idempotency.js';
import { GatewayError } from '../errors.js';
import type { BusRequest, BusResult, FromWorker, ToWorker } from './messages.js';

export interface PortBus {
  readonly bus: EventBus;
  /** Feeds the main thread's replies and events in; call for every bus message the worker receives. */
  receive(message: Extract<ToWorker, { kind: 'bus-reply' | 'bus-events' }>): void;
}

/**
 * A worker thread's view of the in-process bus that lives in the main thread: every call is a
 * message, every event of a watched project arrives as a message on the same port, in order.
 * Implements EventBus, so the gateway runs on it unchanged.
 */
export function createPortBus(send: (message: FromWorker) => void, sink: EventSink): PortBus {
  const pending = new Map<number, { resolve: (value: BusResult) => void; reject: (err: Error) => void }>();
  let nextRequestId = 1;
  let closed = false;

  function call(request: BusRequest): Promise<BusResult> {
    if (closed) return Promise.reject(new Error('bus closed'));
    const requestId = nextRequestId++;
    return new Promise((resolve, reject) => {
      pending.set(requestId, { resolve, reject });
      send({ kind: 'bus-request', requestId, request });
    });
  }

  const bus: EventBus = {
    kind: 'memory',
    publish: async (guid, events, idempotencyKey) => (await call({ op: 'publish', guid, events, idempotencyKey })) as AppendResult,
    watch: async (guid) => (await call({ op: 'watch', guid })) as string,
    unwatch(guid) {
      if (!closed) send({ kind: 'bus-unwatch', guid });
    },
    range: async (guid, afterId, count) => (await call({ op: 'range', guid, afterId, count })) as HistoryPage,
    checkHistory: async (guid, afterId) => (await call({ op: 'checkHistory', guid, afterId })) as HistoryCheck,
    // The main thread's bus is in memory: up whenever this thread can reach it.
    isReady: () => !closed,
    waitUntilReady: async () => !closed,
    async close() {
      closed = true;
      for (const { reject } of pending.values()) reject(new Error('bus closed'));
      pending.clear();
    },
  };

  return {
    bus,
    receive(message) {
      if (message.kind === 'bus-events') {
        if (!closed) sink(message.guid, message.events);
        return;
      }
      const waiter = pending.get(message.requestId);
      if (!waiter) return;
      pending.delete(message.requestId);
      if (message.ok) waiter.resolve(message.value);
      else waiter.reject(message.code ? new GatewayError(message.code, message.message) : new Error(message.message));
    },
  };
}
