import type { Logger } from 'pino';
import type { TemplatedApp, us_listen_socket } from 'uWebSockets.js';
import type { RelayHub } from './agents/relay.js';
import { createSharedBus, type SharedBus } from './bus/shared-watches.js';
import { createIngress, type Ingress } from './bus/ingress.js';
import { checkProducerName, DEFAULT_IN_PROCESS_PRODUCER } from './bus/idempotency.js';
import { createMemoryTicketStore, createRedisTicketStore, ticketLimits, type TicketStore } from './auth/tickets.js';
import { createTokenVerifier, type TokenVerifier } from './auth/tokens.js';
import { createEdgeStateMemory, edgeCaps, openEdgeState, type EdgeState, type EdgeStateMemory } from './edge/admission.js';
import { openFanoutDelays, type FanoutDelays } from './edge/fanout-delay.js';
import { shareFanoutDelaysOverRedis } from './edge/shared-overload.js';
import { sharePenaltiesOverRedis } from './edge/shared-penalties.js';
import { overloadChannel, penaltiesChannel } from './redis/keys.js';
import type { PubSub } from './redis/pubsub.js';
import type { EventBus, EventBusFactory, NewEvent } from './bus/bus.js';
import { createMemoryBus, memoryBusOptions } from './bus/memory.js';
import type { Config } from './config.js';
import { CloseCodes } from './errors.js';
import { createMetrics, type Metrics } from './metrics.js';
import { registerHttpRoutes } from './http/routes.js';
import { registerStaticRoutes } from './http/static.js';
import { startMetricsServer } from './http/metrics-server.js';
import { createLogger, redactUrl } from './logger.js';
import { createRooms } from './rooms/rooms.js';
import { listenUws } from './listen.js';
import { loadUws, type UwsModule } from './uws.js';
import { createConnectionRegistry } from './connections/registry.js';
import { createOutboundBudget, type OutboundBudget } from './ws/outbound.js';
import { createWebSocketServer } from './ws/server.js';
import { openSanctions } from './edge/sanctions.js';
import { createAdminService, type AdminService } from './admin/service.js';
import type { AdminFabric, AdminLocal } from './admin/fabric.js';
import { readHistory } from './admin/history.js';
import { registerAdminRoutes } from './http/admin.js';
import { registerOpenApiRoute } from './http/openapi.js';
import { compressionFilter } from './connections/compression.js';

export interface PublishOptions {
  readonly idempotencyKey?: string;
  /**
   * Who publishes, for idempotencyKey: keys are each producer's own (bus/idempotency.ts). 1–128 of
   * A-Z a-z 0-9 . _ -; default 'gateway' (every in-process caller that names none).
   */
  readonly producer?: string;
}

export interface GatewayDeps {
  logger?: Logger;
  /** Builds the event bus; defaults to Redis Streams when config.redis is set, else in-process. */
  busFactory?: EventBusFactory;
  uws?: UwsModule;
  /** Renders GET /metrics; default: this gateway's registry (a worker thread answers for the whole process). */
  renderMetrics?: () => Promise<string>;
  /**
   * This gateway's identity where instances meet (Redis consumer names, presence, the agents link,
   * the origin of events it appends). Default NODE_ID; a worker thread is `<NODE_ID>.w<n>`, so two
   * threads of one process never pose as one consumer.
   */
  instanceId?: string;
  /** The process's edge state (worker threads share the main thread's); default: this gateway's own. */
  edgeState?: EdgeStateMemory;
  /** Where connection tickets live; default: Redis when configured, else this gateway's memory. */
  tickets?: TicketStore;
  /** The worker thread this gateway runs in (0 without workers): its slot in process-wide tallies. */
  workerId?: number;
  /** Without Redis, in a worker thread: where the agents relays of this process's threads meet (src/workers/agents-hub.ts). */
  agentsHub?: RelayHub;
  /** Without Redis, in a worker thread: how the server API reaches the other threads (src/workers/admin-hub.ts). */
  adminFabric?: (local: AdminLocal) => AdminFabric;
}

export interface Gateway {
  readonly config: Config;
  readonly bus: EventBus;
  readonly metrics: Metrics;
  /** Binds the port (0 picks a free one) and resolves with it. */
  listen(): Promise<number>;
  /**
   * Same path as the HTTP producer API: checks the data against the limits, appends to the bus,
   * resolves with the event id. With an idempotency key, a repeat by the same producer appends
   * nothing (see bus/idempotency.ts).
   */
  publish(projectGuid: string, event: NewEvent, options?: PublishOptions): Promise<string>;
  publishMany(projectGuid: string, events: readonly NewEvent[], options?: PublishOptions): Promise<string[]>;
  isReady(): boolean;
  /**
   * The first half of a graceful stop: stop listening, refuse new upgrades and publishes (503), and
   * resolve once the requests in flight are answered (at most SHUTDOWN_GRACE_MS). Sockets stay open
   * and keep receiving. A worker pool drains every worker before any closes its sockets, so an event
   * acknowledged by one worker still reaches the clients of all.
   */
  drain(): Promise<void>;
  /**
   * Graceful: drain, deliver every event the bus holds for the rooms here, close sockets with 1001
   * (clients reconnect anywhere and resume), then the bus and the rest.
   */
  close(): Promise<void>;
}

/**
 * Composes the gateway from its parts, each built after what it needs (no part is handed a
 * function that reaches a part built later). Never reads the environment: main.ts does, and tests
 * pass their own config (port 0) and dependencies.
 */
export async function createGateway(config: Config, deps: GatewayDeps = {}): Promise<Gateway> {
  const uws = deps.uws ?? loadUws();
  const log = deps.logger ?? createLogger(config.logLevel, config.nodeId);
  const metrics = createMetrics(config.nodeId);
  const verifyToken = createTokenVerifier(config.jwt);
  const instanceId = deps.instanceId ?? config.nodeId;
  const caps = edgeCaps(config.edge);
  let shuttingDown = false;
  const isShuttingDown = () => shuttingDown;

  // The bus, shared by the rooms and the agents relay (watches counted, one sink each).
  const bus = createSharedBus(deps.busFactory ?? (await defaultBusFactory(config, instanceId, log, metrics)), log);
  // Serve as soon as the bus is up; if it is not up in time, serve anyway and report not-ready
  // (clients can connect, /readyz says 503, and the bus keeps reconnecting).
  if (!(await bus.waitUntilReady(5000))) log.warn({ bus: bus.kind }, 'event bus not connected yet; serving as not-ready');

  // The edge: caps, buckets and penalties (the process's), tickets and penalties across instances.
  const edgeMemory = deps.edgeState ?? createEdgeStateMemory(caps);
  // The one pub/sub connection: the agents relay (replies, presence) and the edge (penalties) register channels on it.
  const pubsub = config.redis ? (await import('./redis/pubsub.js')).openPubSub(config.redis, instanceId, log) : null;
  const edge = await edgeAcrossInstances(config, instanceId, log, pubsub, {
    edgeState: openEdgeState(edgeMemory, caps),
    tickets: deps.tickets,
    fanoutDelays: openFanoutDelays(edgeMemory.fanoutDelays, deps.workerId ?? 0),
  });
  const { edgeState, fanoutDelays } = edge;

  // The server API's blocks and revocations: the process's (shared by its threads), loaded from Redis by the admin service.
  const sanctions = openSanctions(edgeMemory.sanctions);
  const app: TemplatedApp = uws.App();
  const registry = createConnectionRegistry();
  const outbound = createOutboundBudget({ config, registry, edgeState, threadSlot: deps.workerId ?? 0, log, metrics });
  const rooms = roomsOnBus(config, { app, bus, outbound, fanoutDelays, log, metrics });
  const ingress = createIngress({
    bus,
    limits: config.dataLimits,
    onAppended: (n) => metrics.eventsPublished.inc(n),
    fanoutBacklogOf: (guid) => fanoutDelays.backlogOf(guid),
    maxFanoutDelayMs: config.fanoutMaxDelayMs,
    onOverloaded: (n) => metrics.eventsRefusedOverload.inc(n),
  });
  if (config.agents) warnIfCredentialsInClear(config.agents, log);
  // Loaded only with an agents-server: the relay brings ws, ioredis (feedback store) and its schemas,
  // which every thread of a gateway without one would otherwise load at start.
  const agents = config.agents
    ? (await import('./agents/relay.js')).createAgentsRelay({ config, instanceId, hub: deps.agentsHub, pubsub, bus, log: log.child({ component: 'agents' }), metrics, publish: (guid, event) => ingress.append(guid, [event]) })
    : null;
  if (agents) bus.addSink(agents.receive);

  const websockets = createWebSocketServer({
    config,
    verifyToken,
    tickets: edge.tickets,
    edgeState,
    sanctions,
    registry,
    rooms,
    outbound,
    forwardFeedback: (feedback) => agents?.acceptFeedback(feedback) ?? null,
    hooks: agents ?? undefined,
    log,
    metrics,
    isShuttingDown,
    uws,
  });
  app.ws('/ws', websockets.behavior);
  const admin = await createAdminService({ config, instanceId, sanctions, registry, sockets: websockets, pubsub, hub: deps.adminFabric, log });

  const publishMany = async (guid: string, events: readonly NewEvent[], options: PublishOptions = {}) => {
    const { idempotencyKey } = options;
    const keyed = idempotencyKey === undefined ? undefined : { idempotencyKey, producer: checkProducerName(options.producer ?? DEFAULT_IN_PROCESS_PRODUCER) };
    return (await ingress.append(guid, events, keyed)).ids;
  };

  // What GET /metrics answers: this gateway's registry, or (a worker thread) the whole process's.
  const renderMetrics =
    deps.renderMetrics ??
    (() => {
      metrics.busReady.set(bus.isReady() ? 1 : 0);
      return metrics.registry.metrics();
    });
  let metricsServer: { close(): Promise<void> } | null = null;
  const inflight = { count: 0 };
  serveHttp(app, config, { verifyToken, bus, publish: ingress.append, edge, admin, metrics, log, isShuttingDown, inflight, renderMetrics });

  let listenSocket: us_listen_socket | null = null;
  let draining: Promise<void> | null = null;
  let closing: Promise<void> | null = null;
  // Each part gets a bounded time: a Redis that is gone or half-open must not hold the
  // shutdown (ioredis keeps a QUIT queued while it reconnects, with no timeout of its own).
  const stepMs = 3000;

  function drain(): Promise<void> {
    return (draining ??= (async () => {
      shuttingDown = true;
      if (listenSocket) uws.us_listen_socket_close(listenSocket);
      listenSocket = null;
      const deadline = Date.now() + config.shutdownGraceMs;
      while (inflight.count > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    })());
  }

  return {
    config,
    bus,
    metrics,
    async listen() {
      const bound = await listenUws(uws, app, { host: config.host, port: config.port, reusePort: config.reusePort, log });
      listenSocket = bound.socket;
      // METRICS_PORT: a port of its own (a worker pool serves it once, from the main thread).
      if (config.metricsPort !== undefined && !deps.renderMetrics) {
        metricsServer = await startMetricsServer({ host: config.host, port: config.metricsPort, contentType: metrics.registry.contentType, render: renderMetrics, log });
      }
      websockets.start();
      log.info({ port: bound.port, host: config.host, bus: bus.kind }, 'gateway listening');
      return bound.port;
    },
    publish: async (guid, event, options) => (await publishMany(guid, [event], options))[0]!,
    publishMany,
    isReady: () => bus.isReady() && !shuttingDown,
    drain,
    close() {
      return (closing ??= (async () => {
        await drain();
        websockets.stop();
        // Everything appended before now (by this gateway or any other) goes out before the 1001s.
        await closeWithin(stepMs, 'event bus catch-up', log, () => bus.catchUp(stepMs));
        rooms.flushNow();
        websockets.closeAll(CloseCodes.GOING_AWAY, 'server shutting down, reconnect');
        await closeWithin(stepMs, 'agents relay', log, () => agents?.close());
        await closeWithin(stepMs, 'event bus', log, () => bus.close());
        await closeWithin(stepMs, 'edge (tickets, penalties)', log, () => edge.close());
        await closeWithin(stepMs, 'server API', log, () => admin.close());
        pubsub?.close();
        await metricsServer?.close();
        log.info({ inflightAbandoned: inflight.count }, 'gateway closed');
      })());
    },
  };
}

/**
 * The rooms (the ProjectEventBroadcaster), fed by the bus: fan-out reports its bytes to the outbound
 * budget and its queueing delay to the overload bound the ingress refuses on.
 */
function roomsOnBus(
  config: Config,
  parts: { app: TemplatedApp; bus: SharedBus; outbound: OutboundBudget; fanoutDelays: FanoutDelays; log: Logger; metrics: Metrics },
) {
  const { app, bus, outbound, fanoutDelays, log, metrics } = parts;
  const rooms = createRooms({
    app,
    bus,
    log,
    metrics,
    recentEventsPerRoom: config.recentEventsPerRoom,
    recentBytesPerRoom: config.recentBytesPerRoom,
    historyPageSize: config.stream.historyPageSize,
    maxBackpressureBytes: config.maxBackpressureBytes,
    onFanOut: outbound.noteFanOut,
    compress: compressionFilter(config.compression),
    onQueueDelay: (backlogs, longestMs) => {
      fanoutDelays.report(backlogs);
      metrics.fanoutQueueDelay.set(longestMs / 1000);
    },
  });
  bus.addSink(rooms.receive);
  return rooms;
}

/** Every HTTP route on the app, in the order uWS must see them (the routes' catch-all 404 last). */
function serveHttp(
  app: TemplatedApp,
  config: Config,
  parts: {
    verifyToken: TokenVerifier;
    bus: EventBus;
    publish: Ingress['append'];
    edge: { tickets: TicketStore; edgeState: EdgeState };
    admin: AdminService;
    metrics: Metrics;
    log: Logger;
    isShuttingDown: () => boolean;
    inflight: { count: number };
    renderMetrics: () => Promise<string>;
  },
): void {
  const { verifyToken, bus, edge, admin, metrics, log, isShuttingDown, inflight } = parts;
  const { edgeState } = edge;
  registerAdminRoutes(app, { verifyToken, edgeState, metrics, isShuttingDown, inflight, admin, log, history: (guid, query) => readHistory(bus, guid, query) });
  registerOpenApiRoute(app);
  registerStaticRoutes(app, { config, log }); // the page at /, /client/*.js; before the routes' catch-all 404
  registerHttpRoutes(app, {
    verifyToken,
    publish: parts.publish,
    bus,
    metrics,
    log,
    nodeId: config.nodeId,
    maxBodyBytes: Math.max(config.maxPayloadBytes * 16, 1024 * 1024),
    isShuttingDown,
    inflight,
    tickets: edge.tickets,
    edgeState,
    allowedOrigins: config.edge.allowedOrigins,
    metricsOnThisPort: config.metricsPort === undefined,
    renderMetrics: parts.renderMetrics,
  });
  if (config.edge.allowedOrigins === 'any') log.info('ALLOWED_ORIGINS is not set: browser upgrades from any origin are accepted (clients authenticate with tokens, not cookies)');

}

/**
 * The link to the agents-server carries AGENTS_TOKEN (and any user:password in AGENTS_URL) in its
 * handshake: over ws:// to another host they cross the network in the clear. Said once, at start.
 */
function warnIfCredentialsInClear(agents: NonNullable<Config['agents']>, log: Logger): void {
  let url: URL;
  try {
    url = new URL(agents.url);
  } catch {
    return;
  }
  const credentials = agents.token !== undefined || url.username !== '' || url.password !== '';
  const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname) || url.hostname.startsWith('127.');
  if (url.protocol === 'ws:' && credentials && !loopback) {
    log.warn({ agentsUrl: redactUrl(agents.url) }, 'AGENTS_URL is ws:// to another host: AGENTS_TOKEN travels in the clear; use wss://');
  }
}

/** Runs one shutdown step, giving up (with a log line) after `ms`; a failed step does not stop the others. */
async function closeWithin(ms: number, what: string, log: Logger, step: () => Promise<unknown> | undefined): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  try {
    const outcome = await Promise.race([Promise.resolve(step()).then(() => 'done' as const), timedOut]);
    if (outcome === 'timeout') log.warn({ part: what, ms }, 'shutdown step did not finish in time; going on');
  } catch (err) {
    log.warn({ part: what, err: (err as Error).message }, 'shutdown step failed; going on');
  } finally {
    clearTimeout(timer);
  }
}

interface EdgeParts {
  readonly edgeState: EdgeState;
  readonly tickets: TicketStore;
  readonly fanoutDelays: FanoutDelays;
}

/**
 * What the edge keeps across instances when there is a Redis: tickets (redeemed on any instance),
 * penalties (enforced by every instance) and fan-out past the overload bound (refused by every
 * instance's ingress). Without Redis all three stay in this process.
 */
async function edgeAcrossInstances(
  config: Config,
  instanceId: string,
  log: Logger,
  pubsub: PubSub | null,
  local: Omit<EdgeParts, 'tickets'> & { readonly tickets: TicketStore | undefined },
): Promise<EdgeParts & { close: () => Promise<void> }> {
  const { edgeState, tickets, fanoutDelays } = local;
  if (!config.redis || !pubsub) return { edgeState, fanoutDelays, tickets: tickets ?? createMemoryTicketStore(ticketLimits(config)), close: async () => {} };
  const { createRedisClient, closeRedisClient } = await import('./redis/client.js');
  const client = createRedisClient(config.redis, instanceId, 'edge', { commandTimeoutMs: 2000 });
  // Its connection errors are not logged: the bus logs Redis trouble; a failed redeem answers 503
  // on its own, a penalty not shared is logged where it happens.
  return {
    edgeState: sharePenaltiesOverRedis(edgeState, { publisher: client, pubsub, channel: penaltiesChannel(config.redis.prefix), instanceId, log }),
    tickets: tickets ?? createRedisTicketStore(client, config.redis.prefix, ticketLimits(config)),
    fanoutDelays: shareFanoutDelaysOverRedis(fanoutDelays, { publisher: client, pubsub, channel: overloadChannel(config.redis.prefix), instanceId, boundMs: config.fanoutMaxDelayMs, log }),
    close: () => closeRedisClient(client),
  };
}

async function defaultBusFactory(config: Config, instanceId: string, log: Logger, metrics: Metrics): Promise<EventBusFactory> {
  if (!config.redis) {
    return (sink) => createMemoryBus(sink, memoryBusOptions(config));
  }
  const { createRedisBus } = await import('./bus/redis.js');
  return (sink) =>
    createRedisBus(sink, {
      redis: config.redis!,
      stream: config.stream,
      nodeId: instanceId,
      log,
      dataLimits: config.dataLimits,
      idempotencyWindowS: config.idempotencyWindowS,
      idempotencyKeysPerProducer: config.idempotencyKeysPerProducer,
      onSkippedEntry: () => metrics.busEntriesSkipped.inc(),
      onError: (kind) => metrics.busErrors.inc({ kind }),
      onReadLag: (seconds) => metrics.busReadLag.observe(seconds),
    });
}
