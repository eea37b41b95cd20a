import type { Logger } from 'pino';
import { GATHER_MS, checkAction, checkQuery, checkReport, createGatherings, type AdminAction, type AdminFabric, type AdminLocal, type AdminQuery, type NodeReport } from '../admin/fabric.js';

/** A worker's message to the hub (FromWorker 'admin'). */
export type AdminHubRequest =
  | { readonly op: 'action'; readonly action: AdminAction }
  | { readonly op: 'gather'; readonly requestId: number; readonly query: AdminQuery }
  | { readonly op: 'report'; readonly gatherId: string; readonly report: NodeReport };

/** The hub's message to a worker (ToWorker 'admin'). */
export type AdminHubMessage =
  | { readonly op: 'action'; readonly action: AdminAction }
  | { readonly op: 'query'; readonly gatherId: string; readonly query: AdminQuery }
  | { readonly op: 'gathered'; readonly requestId: number; readonly reports: NodeReport[] };

/**
 * Without Redis, the server API's way between the worker threads of one process, in the main
 * thread: what the admin channel does between instances. An action from one worker goes to every
 * other; a query goes to every other and their reports go back to the asker together.
 */
export function createAdminHub(log: Logger) {
  const workers = new Map<number, (message: AdminHubMessage) => void>();
  const gatherings = createGatherings<NodeReport>();
  let nextGather = 1;

  function run(workerId: number, request: AdminHubRequest): void {
    switch (request.op) {
      case 'action':
        for (const [id, send] of workers) if (id !== workerId) send({ op: 'action', action: request.action });
        return;
      case 'gather': {
        const gatherId = String(nextGather++);
        const others = [...workers].filter(([id]) => id !== workerId);
        void gatherings.wait(gatherId, others.length, GATHER_MS).then((reports) => workers.get(workerId)?.({ op: 'gathered', requestId: request.requestId, reports }));
        for (const [, send] of others) send({ op: 'query', gatherId, query: request.query });
        return;
      }
      case 'report':
        return gatherings.answer(request.gatherId, request.report);
      default:
        log.warn({ workerId, op: (request as { op?: unknown }).op }, 'admin hub: unknown request skipped');
    }
  }

  return {
    attach(workerId: number, send: (message: AdminHubMessage) => void): void {
      workers.set(workerId, send);
    },
    detach(workerId: number): void {
      workers.delete(workerId);
    },
    handle(workerId: number, request: AdminHubRequest): void {
      try {
        run(workerId, request);
      } catch (err) {
        log.error({ err, workerId }, 'admin hub: request failed');
      }
    },
  };
}

/** A worker thread's side of the hub: its fabric, once the gateway says what it applies and reports (connect). */
export function createAdminHubPort(send: (request: AdminHubRequest) => void) {
  const waiting = new Map<number, (reports: NodeReport[]) => void>();
  let nextRequest = 1;
  let local: AdminLocal | null = null;
  const fabric: AdminFabric = {
    broadcast: async (action) => send({ op: 'action', action }),
    gather: (query) =>
      new Promise((resolve) => {
        const requestId = nextRequest++;
        waiting.set(requestId, resolve);
        send({ op: 'gather', requestId, query });
      }),
    close: async () => {
      local = null;
      for (const resolve of waiting.values()) resolve([]);
      waiting.clear();
    },
  };
  return {
    connect(to: AdminLocal): AdminFabric {
      local = to;
      return fabric;
    },
    receive(message: AdminHubMessage): void {
      switch (message.op) {
        case 'action': {
          const action = checkAction(message.action);
          if (action) local?.apply(action);
          return;
        }
        case 'query': {
          const query = checkQuery(message.query);
          // A gateway not built yet has nothing connected: it answers as an empty one.
          const report = query && local ? local.report(query) : null;
          if (report && checkReport(report)) send({ op: 'report', gatherId: message.gatherId, report });
          else send({ op: 'report', gatherId: message.gatherId, report: { node: '', connections: 0, rooms: 0 } });
          return;
        }
        case 'gathered': {
          const resolve = waiting.get(message.requestId);
          waiting.delete(message.requestId);
          return resolve?.(message.reports.filter((r) => r.node !== ''));
        }
      }
    },
  };
}

export type AdminHubPort = ReturnType<typeof createAdminHubPort>;
