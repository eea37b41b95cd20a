import { createMemoryBus, type MemoryBusOptions } from '../bus/memory.js';
import type { BusRequest, MainResult, ToWorker } from './messages.js';

export interface BusHost {
  attach(workerId: number, send: (message: ToWorker) => void): void;
  /** Forgets a worker that exited: its watches end. */
  detach(workerId: number): void;
  /** Runs a worker's bus call; the pool sends the answer back. */
  run(workerId: number, request: BusRequest): Promise<MainResult>;
  unwatch(workerId: number, guid: string): void;
  close(): Promise<void>;
}

/**
 * The one in-process bus of a multi-worker process, in the main thread. Workers publish into it and
 * watch projects through it; each event is appended once (one id), then posted to every worker that
 * watches its project, on that worker's port: in order, and once per worker.
 */
export function createBusHost(options: MemoryBusOptions): BusHost {
  const workers = new Map<number, (message: ToWorker) => void>();
  /** Project → the workers watching it. */
  const watchers = new Map<string, Set<number>>();

  const bus = createMemoryBus((guid, events) => {
    const watching = watchers.get(guid);
    if (!watching) return;
    for (const workerId of watching) workers.get(workerId)?.({ kind: 'bus-events', guid, events });
  }, options);

  function unwatch(workerId: number, guid: string): void {
    const watching = watchers.get(guid);
    if (!watching?.delete(workerId) || watching.size > 0) return;
    watchers.delete(guid);
    bus.unwatch(guid);
  }

  async function run(workerId: number, request: BusRequest): Promise<MainResult> {
    switch (request.op) {
      case 'publish':
        return bus.publish(request.guid, request.events, request.keyed);
      case 'watch': {
        // Registered before the head is read: any event after the head reaches this worker.
        let watching = watchers.get(request.guid);
        if (!watching) watchers.set(request.guid, (watching = new Set()));
        watching.add(workerId);
        return bus.watch(request.guid);
      }
      case 'range':
        return bus.range(request.guid, request.afterId, request.count);
      case 'rangeBack':
        return bus.rangeBack(request.guid, request.beforeId, request.count);
      case 'checkHistory':
        return bus.checkHistory(request.guid, request.afterId);
      case 'catchUp':
        return null;
    }
  }

  return {
    attach(workerId, send) {
      workers.set(workerId, send);
    },
    detach(workerId) {
      workers.delete(workerId);
      for (const guid of [...watchers.keys()]) unwatch(workerId, guid);
    },
    run,
    unwatch,
    close: () => bus.close(),
  };
}
