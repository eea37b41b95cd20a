import type { Logger } from 'pino';
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import type { Config } from '../config.js';
import { memoryBusOptions } from '../bus/memory.js';
import { createEdgeStateMemory, edgeCaps } from '../edge/admission.js';
import { createBusHost, type BusHost } from './bus-host.js';
import { serveSyncCalls } from './sync-calls.js';
import type { FromWorker, MainRequest, MainResult, ToWorker, WorkerStart } from './messages.js';
import { createAgentsHub } from './agents-hub.js';
import { createAdminHub } from './admin-hub.js';
import { createMemoryTicketStore, ticketLimits, type TicketStore } from '../auth/tickets.js';
import { GatewayError } from '../errors.js';
import { createMetricsCollector } from './metrics.js';
import { startMetricsServer } from '../http/metrics-server.js';

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ port: 0, host, exclusive: true }, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface WorkerPool {
  readonly port: number;
  readonly workers: number;
  /** SIGTERM path: every worker stops accepting, drains and closes its sockets with 1001; resolves when all threads have ended. */
  close(): Promise<void>;
}

/** A worker that said it closed but whose thread has not ended after this long is terminated. */
const EXIT_AFTER_CLOSE_MS = 2000;

interface Running {
  readonly workerId: number;
  readonly thread: Worker;
  readonly send: (message: ToWorker) => void;
  readonly exited: Promise<number>;
  /** Resolves when the worker answered `drain` (or ended). */
  readonly drained: Promise<void>;
  closed: boolean;
}

/** Runs a worker's call on the main thread's bus or ticket store and answers it on the worker's port. */
function answerCall(
  main: { host: BusHost | null; tickets: TicketStore | null },
  send: (message: ToWorker) => void,
  requestId: number,
  request: MainRequest,
  workerId: number,
): void {
  const { host, tickets } = main;
  let result: Promise<MainResult>;
  switch (request.op) {
    case 'issueTicket':
    case 'redeemTicket':
      result = !tickets ? Promise.reject(new Error('no ticket store in the main thread (Redis holds tickets)')) : request.op === 'issueTicket' ? tickets.issue(request.principal) : tickets.redeem(request.ticket);
      break;
    default:
      result = host ? host.run(workerId, request) : Promise.reject(new Error('no in-process bus in the main thread (Redis is the bus)'));
  }
  result.then(
    (value) => send({ kind: 'reply', requestId, ok: true, value }),
    (err: unknown) => send({ kind: 'reply', requestId, ok: false, message: (err as Error).message, code: err instanceof GatewayError ? err.code : undefined, retryAfterS: err instanceof GatewayError ? err.retryAfterS : undefined }),
  );
}

/**
 * Two phases. First every worker stops accepting and answers its requests in flight, so every
 * publish that got its 202 is in the bus. Only then does any worker close its sockets: an event one
 * worker acknowledged reaches the clients of all of them (the in-process bus posts it to each
 * worker's port before the `shutdown` that follows; with Redis each catches up first).
 */
async function closeWorkers(workers: readonly Running[], graceMs: number): Promise<void> {
  for (const w of workers) w.send({ kind: 'drain' });
  const drainWait = new Promise<void>((resolve) => setTimeout(resolve, graceMs + 1000).unref());
  await Promise.race([Promise.all(workers.map((w) => w.drained)), drainWait]);
  for (const w of workers) w.send({ kind: 'shutdown' });
  await Promise.all(
    workers.map(async (w) => {
      // A thread that reported closed but lingers (a handle left open) must not hold the process.
      const watchdog = setInterval(() => {
        if (w.closed) {
          clearInterval(watchdog);
          setTimeout(() => void w.thread.terminate(), EXIT_AFTER_CLOSE_MS).unref();
        }
      }, 50);
      await w.exited;
      clearInterval(watchdog);
    }),
  );
}

/**
 * `config.workers` gateways in worker threads on one port (uWS listens with SO_REUSEPORT, so every
 * thread binds the same port and the kernel spreads connections over them). With the in-process bus, the bus
 * lives here in the main thread and every worker reaches it through its port (bus-host.ts); with
 * Redis, each worker has its own Redis connections and reader.
 *
 * `onWorkerLost` is called when a worker ends without being asked to: the caller shuts the rest
 * down and exits non-zero so the orchestrator restarts the process.
 */
export async function startWorkerPool(config: Config, log: Logger, onWorkerLost: (workerId: number) => void): Promise<WorkerPool> {
  const host: BusHost | null = config.redis ? null : createBusHost(memoryBusOptions(config));
  // Caps, rate buckets and penalties are per process, not per thread: every worker opens this memory.
  const edgeState = createEdgeStateMemory(edgeCaps(config.edge));
  // Without Redis the workers' agents relays share presence, replies and positions here (with Redis, there).
  const agentsHub = host && config.agents ? createAgentsHub({ offlineWindowS: config.agentReplyOfflineS, log, feedback: { perUser: config.feedback.pendingPerUser, perProject: config.feedback.pendingPerProject, total: config.feedback.memoryQueue } }) : null;
  // Without Redis the server API reaches every worker through the main thread (with Redis, over its channel).
  const adminHub = host ? createAdminHub(log) : null;
  const running = new Map<number, Running>();
  let closing: Promise<void> | null = null;
  /** Until every worker listens, a lost worker fails the start instead. */
  let started = false;

  // Without Redis the process has one ticket store, here, so a ticket issued on one worker is redeemed on any.
  const tickets = config.redis ? null : createMemoryTicketStore(ticketLimits(config));

  // /metrics: one collect round per request over the workers still serving, summed.
  const metrics = createMetricsCollector(() => [...running.values()].filter((w) => !w.closed).map((w) => w.send), config.nodeId, { sharedFeedbackStore: !!config.redis });
  const processMetrics = metrics.collect;

  function spawn(workerId: number, workerConfig: Config): { worker: Running; listening: Promise<number> } {
    const appends = host ? serveSyncCalls((request) => host.run(workerId, request)) : null;
    const start: WorkerStart = { workerId, config: workerConfig, sharedMemoryBus: host !== null, edgeState, appendChannel: appends?.channel ?? null };
    const thread = new Worker(new URL('./worker.js', import.meta.url), { workerData: start, transferList: appends ? [appends.transfer] : [] });
    const send = (message: ToWorker) => thread.postMessage(message);
    let resolveListening!: (port: number) => void;
    let rejectListening!: (err: Error) => void;
    const listening = new Promise<number>((resolve, reject) => {
      resolveListening = resolve;
      rejectListening = reject;
    });
    const exited = new Promise<number>((resolve) => thread.once('exit', resolve));
    let markDrained!: () => void;
    const drained = new Promise<void>((resolve) => (markDrained = resolve));
    void exited.then(() => markDrained());
    const worker: Running = { workerId, thread, send, exited, drained, closed: false };
    running.set(workerId, worker);
    host?.attach(workerId, send);
    agentsHub?.attach(workerId, (message) => send({ kind: 'agents-hub', message }));
    adminHub?.attach(workerId, (message) => send({ kind: 'admin', message }));

    thread.on('message', (message: FromWorker) => {
      switch (message.kind) {
        case 'listening':
          return resolveListening(message.port);
        case 'start-failed':
          return rejectListening(new Error(`worker ${workerId}: ${message.message}`));
        case 'call':
          return answerCall({ host, tickets }, send, message.requestId, message.request, workerId);
        case 'bus-unwatch':
          return host?.unwatch(workerId, message.guid);
        case 'agents-hub':
          return agentsHub?.handle(workerId, message.request);
        case 'admin':
          return adminHub?.handle(workerId, message.request);
        case 'metrics-request':
          void processMetrics().then(
            ({ text }) => send({ kind: 'metrics-reply', requestId: message.requestId, text }),
            (err: unknown) => {
              log.error({ err }, 'metrics aggregation failed');
              send({ kind: 'metrics-reply', requestId: message.requestId, text: null });
            },
          );
          return;
        case 'metrics-snapshot':
          return metrics.received(message.collectId, message.metrics);
        case 'drained':
          return markDrained();
        case 'closed':
          worker.closed = true;
          return;
      }
    });
    thread.on('error', (err) => log.error({ err, worker: workerId }, 'worker thread failed'));
    void exited.then((code) => {
      appends?.close();
      running.delete(workerId);
      host?.detach(workerId);
      agentsHub?.detach(workerId);
      adminHub?.detach(workerId);
      rejectListening(new Error(`worker ${workerId} exited with code ${code} before listening`));
      if (started && !closing) {
        log.error({ worker: workerId, code }, 'worker thread ended unexpectedly');
        onWorkerLost(workerId);
      }
    });
    return { worker, listening };
  }

  async function close(): Promise<void> {
    await closeWorkers([...running.values()], config.shutdownGraceMs);
    await host?.close();
  }

  try {
    // uSockets sets SO_REUSEPORT only on a non-zero port, so PORT=0 becomes a free port chosen here
    // that every worker then binds (another process could take it in between: PORT=0 is for tests).
    const port = config.port === 0 ? await freePort(config.host) : config.port;
    const sharedConfig: Config = { ...config, port };
    // The first worker alone first: a port that cannot be bound (or that another process listens
    // on, unless REUSE_PORT) fails fast, with one message. The others then share the port it holds.
    await spawn(0, sharedConfig).listening;
    const siblingConfig: Config = { ...sharedConfig, reusePort: true };
    const rest = Array.from({ length: config.workers - 1 }, (_, i) => spawn(i + 1, siblingConfig).listening);
    await Promise.all(rest);
    started = true;
    log.info({ port, workers: config.workers, bus: host ? 'memory (main thread)' : 'redis (one reader per worker)' }, 'all workers listening');
    // METRICS_PORT: served here, once for the process, with every worker's metrics summed.
    const metricsServer =
      config.metricsPort === undefined
        ? null
        : await startMetricsServer({ host: config.host, port: config.metricsPort, contentType: 'text/plain; version=0.0.4; charset=utf-8', render: async () => (await processMetrics()).text, log });
    return {
      port,
      workers: config.workers,
      close: () => (closing ??= close().then(() => metricsServer?.close())),
    };
  } catch (err) {
    // Nothing was served: no drain. End every thread now, so a start-up failure exits at once
    // (a worker that opened Redis connections would otherwise linger until they time out).
    closing ??= Promise.all([...running.values()].map((w) => w.thread.terminate())).then(() => host?.close());
    await closing;
    throw err;
  }
}
