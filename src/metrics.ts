import { statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { CloseCodes, ErrorCodes, type ErrorCode } from './errors.js';

/**
 * The close codes that get a series of their own in ws_connections_closed_total: the standard ones
 * a WebSocket ends with, ours (src/errors.ts CloseCodes) and the client library's (4000). A client
 * chooses the code it closes with; any other code is counted as 'other', so a client cannot make
 * the gateway keep a series per code it invents (4000-4999 alone is a thousand).
 */
const CLOSE_CODE_LABELS = new Set([1000, 1001, 1005, 1006, 1009, 1011, 4000, ...Object.values(CloseCodes)].map(String));
export function closeCodeLabel(code: number): string {
  const text = String(code);
  return CLOSE_CODE_LABELS.has(text) ? text : 'other';
}

/**
 * The error codes an upgrade is refused with (src/ws/upgrade.ts), the `reason` of
 * ws_upgrades_rejected_total; a code not listed here (one added later) counts as 'other' until it is.
 */
export const UPGRADE_REFUSAL_REASONS = ['UNAUTHORIZED', 'FORBIDDEN', 'RATE_LIMITED', 'TOO_MANY_CONNECTIONS', 'UNSUPPORTED_PROTOCOL', 'UNAVAILABLE', 'USER_BLOCKED'] as const satisfies readonly ErrorCode[];
const UPGRADE_REASON_LABELS = new Set<string>(UPGRADE_REFUSAL_REASONS);
export function upgradeReasonLabel(code: ErrorCode): string {
  return UPGRADE_REASON_LABELS.has(code) ? code : 'other';
}

/**
 * What the Redis bus counts in bus_errors_total{kind} (README: Metrics): a connection's error (each
 * failed connect or reconnect attempt), a failed read of the watched streams, a failed watch or
 * history command, an unconfirmed append, a failed resync or notification check, and an entry read
 * and skipped as not an event (also in bus_entries_skipped_total).
 */
export const BUS_ERROR_KINDS = ['connection', 'read', 'command', 'publish', 'resync', 'entry_skipped'] as const;
export type BusErrorKind = (typeof BUS_ERROR_KINDS)[number];

/**
 * Why user_feedback was refused, the `reason` of feedback_refused_total, each with the error code the
 * user got (its `code` label, which the alerts read): the user's pending quota, the project's, or the
 * whole store's bound (all three FEEDBACK_QUEUE_FULL), the store not answering (Redis), data over the
 * limits, a bug.
 */
export const FEEDBACK_REFUSALS = [
  { reason: 'user_quota', code: 'FEEDBACK_QUEUE_FULL' },
  { reason: 'project_quota', code: 'FEEDBACK_QUEUE_FULL' },
  { reason: 'store_full', code: 'FEEDBACK_QUEUE_FULL' },
  { reason: 'store_unavailable', code: 'UNAVAILABLE' },
  { reason: 'data_limits', code: 'INVALID_DATA' },
  { reason: 'data_limits', code: 'PAYLOAD_TOO_LARGE' },
  { reason: 'internal', code: 'INTERNAL' },
] as const satisfies readonly { reason: string; code: ErrorCode }[];
export type FeedbackRefusalReason = (typeof FEEDBACK_REFUSALS)[number]['reason'];

/**
 * The server API's actions (src/http/admin.ts), the `action` of admin_actions_total: a block whose
 * time is already past lifts one, and counts as `unblock`.
 */
export const ADMIN_ACTIONS = ['disconnect', 'revoke', 'block', 'unblock'] as const;

/**
 * Prometheus metrics, one registry per gateway so several gateways in one test process do not
 * collide. Hot paths count per batch (per room per tick), never per recipient.
 */
export function createMetrics(nodeId: string) {
  const registry = new Registry();
  registry.setDefaultLabels({ node: nodeId });
  collectDefaultMetrics({ register: registry });
  replaceOpenFdsGauge(registry);
  const metrics = {
    registry,
    connections: new Gauge({ name: 'ws_connections', help: 'Open WebSocket connections', registers: [registry] }),
    connectionsOpened: new Counter({ name: 'ws_connections_opened_total', help: 'WebSocket connections accepted', registers: [registry] }),
    connectionsClosed: new Counter({ name: 'ws_connections_closed_total', help: 'WebSocket connections closed, by close code (the documented ones; any other is other)', labelNames: ['code'], registers: [registry] }),
    upgradesRejected: new Counter({ name: 'ws_upgrades_rejected_total', help: 'Upgrade requests refused before the WebSocket opened, by HTTP status and error code', labelNames: ['status', 'reason'], registers: [registry] }),
    rooms: new Gauge({ name: 'ws_rooms', help: 'Projects watched by this instance', registers: [registry] }),
    framesReceived: new Counter({ name: 'ws_frames_received_total', help: 'Client frames received, by type', labelNames: ['type'], registers: [registry] }),
    errors: new Counter({ name: 'ws_errors_total', help: 'Error frames and HTTP errors sent, by code', labelNames: ['code'], registers: [registry] }),
    eventsPublished: new Counter({ name: 'events_published_total', help: 'Events appended through this instance', registers: [registry] }),
    eventsDelivered: new Counter({ name: 'events_fanned_out_total', help: 'Events handed to uWS topics (each once per room, whatever the subscriber count)', registers: [registry] }),
    deliveries: new Counter({ name: 'ws_deliveries_total', help: 'Event deliveries to sockets (events × subscribers)', registers: [registry] }),
    framesPublished: new Counter({ name: 'ws_frames_published_total', help: 'Frames published to rooms (one per room per tick per encoding)', registers: [registry] }),
    fanOutDeferred: new Counter({
      name: 'ws_fanout_deferred_total',
      help: 'Room flushes that reached FANOUT_SLICE_BYTES and left the rest of their fan-out for a later event-loop turn',
      registers: [registry],
    }),
    shardMoves: new Counter({
      name: 'ws_fanout_shard_moves_total',
      help: "Rooms whose members moved to their shards' topics (to=shards: a fan-out backlog started) or back to the room topic (to=room: it cleared)",
      labelNames: ['to'],
      registers: [registry],
    }),
    replayedEvents: new Counter({ name: 'events_replayed_total', help: 'Events replayed to resuming clients', registers: [registry] }),
    deliveryLag: new Histogram({
      name: 'event_delivery_lag_seconds',
      help: 'From an event entering this instance (bus read or local publish) to its publish to the last shard of its room',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    eventsUnencodable: new Counter({ name: 'events_unencodable_total', help: 'Events skipped in fan-out or replay because an encoder could not carry them, by codec', labelNames: ['codec'], registers: [registry] }),
    busEntriesSkipped: new Counter({ name: 'bus_entries_skipped_total', help: 'Stream entries read from the bus and skipped as malformed or over the data limits', registers: [registry] }),
    bufferedBytes: new Gauge({ name: 'ws_buffered_bytes', help: 'Unsent bytes over all sockets (checked twice a second)', registers: [registry] }),
    fanoutQueueDelay: new Gauge({ name: 'fanout_queue_delay_seconds', help: 'How long an event accepted now would wait for fan-out here, in the room furthest behind (its backlog over its drain rate, at least its oldest event\'s wait; after each fan-out turn; 0 when none waits)', registers: [registry] }),
    eventsRefusedOverload: new Counter({ name: 'events_refused_overload_total', help: 'Events refused (OVERLOADED, nothing appended) because their project\'s fan-out was behind FANOUT_MAX_DELAY_MS', registers: [registry] }),
    slowConsumersDropped: new Counter({ name: 'ws_slow_consumers_dropped_total', help: 'Sockets cut for not reading, by reason (process_budget, write_timeout)', labelNames: ['reason'], registers: [registry] }),
    busReady: new Gauge({ name: 'bus_ready', help: '1 while the event bus is connected', registers: [registry] }),
    // The Redis bus's reader (src/bus/redis.ts); nothing on the in-process bus.
    busReadLag: new Histogram({
      name: 'bus_read_lag_seconds',
      help: "From a stream entry's id time (Redis's clock at XADD) to this instance reading it: one sample per stream per read, its oldest entry",
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 1, 2.5, 10, 30, 120],
      registers: [registry],
    }),
    busErrors: new Counter({ name: 'bus_errors_total', help: 'Redis bus errors, by kind (connection, read, command, publish, resync, entry_skipped)', labelNames: ['kind'], registers: [registry] }),
    // Agents-server relay (src/agents/).
    agentsLinkUp: new Gauge({ name: 'agents_link_up', help: '1 while the WebSocket to the agents-server is open', registers: [registry] }),
    agentsLinkConnects: new Counter({ name: 'agents_link_connects_total', help: 'Agents-server link openings', registers: [registry] }),
    agentsLinkHeartbeatTimeouts: new Counter({ name: 'agents_link_heartbeat_timeouts_total', help: 'Agents-server links closed because no pong came back in time', registers: [registry] }),
    agentsFramesReceived: new Counter({ name: 'agents_frames_received_total', help: 'Frames from the agents-server, by type', labelNames: ['type'], registers: [registry] }),
    agentsFramesInvalid: new Counter({ name: 'agents_frames_invalid_total', help: 'Frames from the agents-server logged and skipped', labelNames: ['reason'], registers: [registry] }),
    feedbackAccepted: new Counter({ name: 'feedback_accepted_total', help: 'user_feedback stored in the outbox (durable with Redis)', registers: [registry] }),
    feedbackRefused: new Counter({
      name: 'feedback_refused_total',
      help: 'user_feedback not accepted, by the error code the user got and why (user_quota, project_quota, store_full, store_unavailable, data_limits, internal)',
      labelNames: ['code', 'reason'],
      registers: [registry],
    }),
    feedbackSent: new Counter({ name: 'feedback_sent_total', help: 'user_feedback frames sent upstream (first deliveries and redeliveries)', registers: [registry] }),
    feedbackRedeliveries: new Counter({ name: 'feedback_redeliveries_total', help: 'user_feedback sent again (after a link loss, an ack timeout or a dead instance)', registers: [registry] }),
    feedbackAcked: new Counter({ name: 'feedback_acked_total', help: 'user_feedback confirmed by the agents-server and removed from the outbox', registers: [registry] }),
    feedbackPending: new Gauge({ name: 'feedback_pending', help: 'Feedback stored and not yet acked by the agents-server (all instances with Redis; sampled)', registers: [registry] }),
    feedbackInflight: new Gauge({ name: 'feedback_inflight', help: 'Feedback sent over this instance\'s link and not acked yet', registers: [registry] }),
    feedbackOldestAge: new Gauge({ name: 'feedback_oldest_undelivered_age_seconds', help: 'Age of the oldest feedback not yet acked (0 when none; sampled)', registers: [registry] }),
    agentReplies: new Counter({ name: 'agent_replies_total', help: 'Targeted replies from the agents-server, by outcome (live, stored for an offline user, dropped)', labelNames: ['outcome'], registers: [registry] }),
    projectUpdatesSent: new Counter({ name: 'agents_project_updates_sent_total', help: 'project_update frames sent upstream', registers: [registry] }),
    presenceChangesSent: new Counter({ name: 'agents_presence_frames_sent_total', help: 'project_status_sync frames sent upstream, by kind', labelNames: ['kind'], registers: [registry] }),
    // The server API (src/http/admin.ts); its reads (info, presence, history) are not actions.
    adminActions: new Counter({
      name: 'admin_actions_total',
      help: 'Server API actions this instance answered 200 (applied here and sent to every other gateway), by action (disconnect, revoke, block, unblock: a block with a time already past)',
      labelNames: ['action'],
      registers: [registry],
    }),
  };
  zeroKnownSeries(metrics);
  return metrics;
}

/**
 * Every series of a counter with a fixed label set exists from the start at 0, so rate() and the
 * alerts read a first event as a rise (a series born at 1 has no earlier sample to rise from).
 */
function zeroKnownSeries(m: Omit<Metrics, 'registry'>): void {
  for (const reason of UPGRADE_REFUSAL_REASONS) m.upgradesRejected.inc({ status: String(ErrorCodes[reason].http), reason }, 0);
  for (const code of [...CLOSE_CODE_LABELS, 'other']) m.connectionsClosed.inc({ code }, 0);
  for (const code of Object.keys(ErrorCodes)) m.errors.inc({ code }, 0);
  for (const kind of BUS_ERROR_KINDS) m.busErrors.inc({ kind }, 0);
  for (const reason of ['process_budget', 'write_timeout']) m.slowConsumersDropped.inc({ reason }, 0);
  for (const codec of ['json', 'msgpack']) m.eventsUnencodable.inc({ codec }, 0);
  for (const reason of ['binary', 'malformed', 'invalid', 'data']) m.agentsFramesInvalid.inc({ reason }, 0);
  for (const outcome of ['live', 'stored', 'dropped']) m.agentReplies.inc({ outcome }, 0);
  for (const kind of ['snapshot', 'change']) m.presenceChangesSent.inc({ kind }, 0);
  for (const { code, reason } of FEEDBACK_REFUSALS) m.feedbackRefused.inc({ code, reason }, 0);
  for (const action of ADMIN_ACTIONS) m.adminActions.inc({ action }, 0);
}

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * process_open_fds as prom-client's default, without listing /proc/self/fd on the event loop: the
 * default lists it with readdirSync, one entry per socket (measured: 41-55 ms of the main thread per
 * /metrics answer at 19,000 connections, ~95% of the answer; every scrape stalled every socket that
 * long). Since Linux 6.2 the directory's size is the count (one stat, no listing); on older kernels
 * (size 0) it is listed in libuv's thread pool, which leaves the loop only the names to take in.
 * Linux only, as the default.
 */
function replaceOpenFdsGauge(registry: Registry): void {
  if (process.platform !== 'linux') return;
  registry.removeSingleMetric('process_open_fds');
  new Gauge({
    name: 'process_open_fds',
    help: 'Number of open file descriptors.',
    registers: [registry],
    async collect() {
      try {
        const { size } = statSync('/proc/self/fd');
        // Listed: less the descriptor the listing itself had open.
        this.set(size > 0 ? size : (await readdir('/proc/self/fd')).length - 1);
      } catch {
        // The figure stays at its last value.
      }
    },
  });
}
