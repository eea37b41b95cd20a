// Entry point of one worker thread: a whole gateway (its own uWS app on the shared port, its own
// sockets and rooms) whose bus is either the main thread's in-process bus (over this thread's port)
// or its own Redis Streams connections.
import { parentPort, workerData } from 'node:worker_threads';
import { createGateway, type Gateway, type GatewayDeps } from '../gateway.js';
import { createLogger } from '../logger.js';
import { loadUws } from '../uws.js';
import type { FromWorker, ToWorker, WorkerStart } from './messages.js';
import { createAgentsHubPort } from './agents-hub-port.js';
import { createAdminHubPort } from './admin-hub.js';
import { createMainCaller, createPortTicketStore } from './main-calls.js';
import { createPortBus, type PortBus } from './port-bus.js';
import { createSyncCaller } from './sync-calls.js';
import { createWorkerUws, type WorkerUws } from './worker-uws.js';

/** After 1001 went out, how long clients get to answer the close before their sockets are cut. */
const CLOSE_HANDSHAKE_WAIT_MS = 500;

async function runWorker(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error('src/workers/worker.ts runs only as a worker thread');
  const { workerId, config, sharedMemoryBus, edgeState, appendChannel } = workerData as WorkerStart;
  const send = (message: FromWorker) => port.postMessage(message);
  const log = createLogger(config.logLevel, config.nodeId).child({ worker: workerId });

  /** Reports why, closes what uWS opened and lets the thread end (ending with uWS sockets open aborts the process). */
  const startFailed = (err: unknown, apps: WorkerUws | null) => {
    log.fatal({ err }, 'worker failed to start');
    send({ kind: 'start-failed', message: (err as Error).message });
    apps?.closeApps();
    port.close();
  };
  let loaded: WorkerUws;
  try {
    loaded = createWorkerUws(loadUws(), workerId);
  } catch (err) {
    return startFailed(err, null);
  }
  const workerUws = loaded;
  let portBus: PortBus | null = null;
  const caller = createMainCaller(send);
  const metricsWaiters = new Map<number, { resolve: (text: string) => void; reject: (err: Error) => void }>();
  let nextMetricsRequest = 1;
  const deps: GatewayDeps = {
    logger: log,
    instanceId: `${config.nodeId}.w${workerId}`,
    workerId,
    edgeState,
    uws: workerUws.uws,
    // GET /metrics on any worker answers for the whole process (the main thread sums every worker).
    renderMetrics: () =>
      new Promise((resolve, reject) => {
        const requestId = nextMetricsRequest++;
        metricsWaiters.set(requestId, { resolve, reject });
        send({ kind: 'metrics-request', requestId });
      }),
  };
  if (sharedMemoryBus) {
    const append = createSyncCaller(appendChannel!);
    deps.busFactory = (sink) => (portBus = createPortBus(caller, append, send, sink)).bus;
    // No Redis: tickets live in the main thread, one store for every worker.
    deps.tickets = createPortTicketStore(caller, config.edge.ticketTtlS);
  }
  // Without Redis the agents relay meets the other workers' in the main thread (agents-hub.ts), as the pool sets up.
  const agentsHubPort = sharedMemoryBus && config.agents ? createAgentsHubPort(send) : null;
  if (agentsHubPort) deps.agentsHub = agentsHubPort.hub;
  // Without Redis the server API reaches the other workers through the main thread (admin-hub.ts).
  const adminHubPort = sharedMemoryBus ? createAdminHubPort((request) => send({ kind: 'admin', request })) : null;
  if (adminHubPort) deps.adminFabric = adminHubPort.connect;

  // Handle messages from the start: the bus answers createGateway's first calls through them.
  let gateway: Gateway | null = null;
  port.on('message', (message: ToWorker) => {
    switch (message.kind) {
      case 'reply':
        caller.receive(message);
        return;
      case 'bus-events':
        portBus?.receive(message);
        return;
      case 'agents-hub':
        return agentsHubPort?.receive(message.message);
      case 'admin':
        return adminHubPort?.receive(message.message);
      case 'collect-metrics': {
        if (!gateway) return send({ kind: 'metrics-snapshot', collectId: message.collectId, metrics: [] });
        gateway.metrics.busReady.set(gateway.bus.isReady() ? 1 : 0);
        void gateway.metrics.registry.getMetricsAsJSON().then((metrics) =>
          send({ kind: 'metrics-snapshot', collectId: message.collectId, metrics: metrics as unknown as Extract<FromWorker, { kind: 'metrics-snapshot' }>['metrics'] }),
        );
        return;
      }
      case 'metrics-reply': {
        const waiter = metricsWaiters.get(message.requestId);
        metricsWaiters.delete(message.requestId);
        if (message.text === null) waiter?.reject(new Error('metrics aggregation failed in the main thread'));
        else waiter?.resolve(message.text);
        return;
      }
      case 'drain':
        void (gateway ? gateway.drain() : Promise.resolve()).finally(() => send({ kind: 'drained' }));
        return;
      case 'shutdown': {
        void shutdown().then(
          () => {
            send({ kind: 'closed' });
            // Nothing else keeps this thread alive now: it ends.
            port.close();
          },
          (err: unknown) => {
            log.error({ err }, 'worker shutdown failed');
            workerUws.closeApps();
            send({ kind: 'closed' });
            port.close();
          },
        );
        return;
      }
    }
  });

  /**
   * The gateway's own graceful close (stop listening, finish in-flight publishes, 1001 to every
   * socket), then a short wait for clients to answer the close handshake, then every remaining
   * socket (idle HTTP keep-alive ones too) is force-closed so the thread can end.
   */
  async function shutdown(): Promise<void> {
    if (!gateway) return workerUws.closeApps();
    await gateway.close();
    caller.close();
    const connections = async () => (await gateway!.metrics.connections.get()).values[0]?.value ?? 0;
    const deadline = Date.now() + CLOSE_HANDSHAKE_WAIT_MS;
    while ((await connections()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    workerUws.closeApps();
  }

  try {
    gateway = await createGateway(config, deps);
  } catch (err) {
    return startFailed(err, workerUws);
  }
  try {
    send({ kind: 'listening', port: await gateway.listen() });
  } catch (err) {
    // Tell the pool at once (it exits the process); then let go of what the gateway opened (Redis).
    startFailed(err, workerUws);
    await gateway.close().catch(() => {});
  }
}

void runWorker();
