import type { Logger } from 'pino';
import type { TemplatedApp, us_listen_socket } from 'uWebSockets.js';
import { createAgentsLink } from './agents/link.js';
import { createTokenVerifier } from './auth/tokens.js';
import type { EventBus, EventBusFactory, EventSink, NewEvent } from './bus/bus.js';
import { createMemoryBus } from './bus/memory.js';
import type { Config } from './config.js';
import { CloseCodes, GatewayError } from './errors.js';
import { createMetrics, type Metrics } from './http/metrics.js';
import { registerHttpRoutes } from './http/routes.js';
import { createLogger } from './logger.js';
import { isEventType, isGuid } from './protocol/messages.js';
import { createRooms } from './rooms/rooms.js';
import { loadUws, type UwsModule } from './uws.js';
import { createSocketLayer, type FeedbackForwarder } from './ws/socket.js';

export interface GatewayDeps {
  logger?: Logger;
  /** Builds the event bus; defaults to Redis Streams when config.redis is set, else in-process. */
  busFactory?: EventBusFactory;
  uws?: UwsModule;
  /** Renders GET /metrics; default: this gateway's registry (a worker thread answers for the whole process). */
  renderMetrics?: () => Promise<string>;
}

export interface Gateway {
  readonly config: Config;
  readonly bus: EventBus;
  readonly metrics: Metrics;
  /** Binds the port (0 picks a free one) and resolves with it. */
  listen(): Promise<number>;
  /** Same path as the HTTP producer API: appends to the bus, resolves with the event id. */
  publish(projectGuid: string, event: NewEvent): Promise<string>;
  publishMany(projectGuid: string, events: readonly NewEvent[]): Promise<string[]>;
  isReady(): boolean;
  /** Graceful: stop accepting, let in-flight requests finish (up to SHUTDOWN_GRACE_MS), close sockets with 1001. */
  close(): Promise<void>;
}

/**
 * Composes the gateway from its parts. Never reads the environment: main.ts does, and tests pass
 * their own config (port 0) and dependencies.
 */
export async function createGateway(config: Config, deps: GatewayDeps = {}): Promise<Gateway> {
  const uws = deps.uws ?? loadUws();
  const log = deps.logger ?? createLogger(config.logLevel, config.nodeId);
  const metrics = createMetrics(config.nodeId);
  const verifyToken = createTokenVerifier(config.jwt);
  let shuttingDown = false;
  const isShuttingDown = () => shuttingDown;

  // The bus and the rooms need each other: the bus delivers into rooms, rooms watch through the bus.
  let deliver: EventSink = () => {};
  const sink: EventSink = (guid, events) => deliver(guid, events);
  const busFactory = deps.busFactory ?? (await defaultBusFactory(config, log));
  const bus = busFactory(sink);
  // Serve as soon as the bus is up; if it is not up in time, serve anyway and report not-ready
  // (clients can connect, /readyz says 503, and the bus keeps reconnecting).
  if (!(await bus.waitUntilReady(5000))) log.warn({ bus: bus.kind }, 'event bus not connected yet; serving as not-ready');

  const app: TemplatedApp = uws.App();
  const rooms = createRooms({
    app,
    bus,
    log,
    metrics,
    recentEventsPerRoom: config.recentEventsPerRoom,
    historyPageSize: config.stream.historyPageSize,
    maxBackpressureBytes: config.maxBackpressureBytes,
  });
  deliver = rooms.deliver;

  const agents = config.agents
    ? createAgentsLink({ ...config.agents, nodeId: config.nodeId, log: log.child({ component: 'agents' }), publish: (guid, event) => publishMany(guid, [event]) })
    : null;
  const forwardFeedback: FeedbackForwarder = (feedback) => agents?.forwardFeedback(feedback) ?? null;

  const sockets = createSocketLayer({
    config,
    verifyToken,
    rooms,
    forwardFeedback,
    log,
    metrics,
    isShuttingDown,
  });
  app.ws('/ws', sockets.behavior);

  async function publishMany(projectGuid: string, events: readonly NewEvent[]): Promise<string[]> {
    if (!isGuid(projectGuid)) throw new GatewayError('INVALID_GUID');
    for (const e of events) if (!isEventType(e.type)) throw new GatewayError('UNKNOWN_TYPE');
    const guid = projectGuid.toLowerCase();
    const ids = await bus.publish(guid, events);
    metrics.eventsPublished.inc(ids.length);
    if (agents) events.forEach((e, i) => agents.notifyEvent(guid, { id: ids[i]!, type: e.type, data: e.data }));
    return ids;
  }

  const inflight = { count: 0 };
  registerHttpRoutes(app, {
    verifyToken,
    publish: publishMany,
    bus,
    metrics,
    log,
    nodeId: config.nodeId,
    maxBodyBytes: Math.max(config.maxPayloadBytes * 16, 1024 * 1024),
    isShuttingDown,
    inflight,
    renderMetrics: deps.renderMetrics,
  });

  let listenSocket: us_listen_socket | null = null;
  let sweepTimer: NodeJS.Timeout | null = null;
  let closing: Promise<void> | null = null;

  return {
    config,
    bus,
    metrics,
    listen() {
      return new Promise((resolve, reject) => {
        app.listen(config.host, config.port, (socket) => {
          if (!socket) return reject(new Error(`could not listen on ${config.host}:${config.port} (port in use or not permitted)`));
          listenSocket = socket;
          sweepTimer = setInterval(sockets.sweep, Math.min(1000, config.heartbeatIntervalMs));
          sweepTimer.unref();
          const port = uws.us_socket_local_port(socket);
          log.info({ port, host: config.host, bus: bus.kind }, 'gateway listening');
          resolve(port);
        });
      });
    },
    publish: async (guid, event) => (await publishMany(guid, [event]))[0]!,
    publishMany,
    isReady: () => bus.isReady() && !shuttingDown,
    close() {
      return (closing ??= (async () => {
        shuttingDown = true;
        if (listenSocket) uws.us_listen_socket_close(listenSocket);
        listenSocket = null;
        if (sweepTimer) clearInterval(sweepTimer);
        const deadline = Date.now() + config.shutdownGraceMs;
        while (inflight.count > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
        rooms.flushNow();
        sockets.closeAll(CloseCodes.GOING_AWAY, 'server shutting down, reconnect');
        agents?.close();
        await bus.close();
        log.info({ inflightAbandoned: inflight.count }, 'gateway closed');
      })());
    },
  };
}

async function defaultBusFactory(config: Config, log: Logger): Promise<EventBusFactory> {
  if (!config.redis) return (sink) => createMemoryBus(sink, { maxLen: config.stream.maxLen, maxEvents: config.memoryBusMaxEvents });
  const { createRedisBus } = await import('./bus/redis.js');
  return (sink) => createRedisBus(sink, { redis: config.redis!, stream: config.stream, nodeId: config.nodeId, log });
}
