import type { DataLimits } from './protocol/limits.js';

// What the gateway's parts receive: the configuration as parsed (config.ts reads the environment into
// it, checks it against its schema and freezes it). Kept apart from the schema so a part that only
// needs the shape does not read 300 lines of environment handling.

/** WS_COMPRESSION: permessage-deflate off, one shared compressor, or a sliding window per socket (src/connections/compression.ts). */
export const COMPRESSION_MODES = ['off', 'shared', 'dedicated-3kb', 'dedicated-4kb', 'dedicated-8kb', 'dedicated-16kb', 'dedicated-32kb', 'dedicated-64kb', 'dedicated-128kb', 'dedicated-256kb'] as const;
export type CompressionMode = (typeof COMPRESSION_MODES)[number];

export type JwtAlgorithm = 'HS256' | 'HS384' | 'HS512' | 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512' | 'ES256' | 'ES384' | 'ES512' | 'EdDSA';

export interface Config {
  readonly port: number;
  /** /metrics on this port only (0: a free one), not on the public port; undefined: on the public port. */
  readonly metricsPort?: number;
  readonly host: string;
  /** Several processes on one port on purpose (SO_REUSEPORT); off, a port in use is a startup error. */
  readonly reusePort: boolean;
  /** Identifies this instance in logs, metrics and cross-instance messages. */
  readonly nodeId: string;
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  readonly jwt: {
    readonly key: string;
    readonly algorithms: readonly JwtAlgorithm[];
    readonly issuer?: string;
    readonly audience?: string;
    readonly clockToleranceMs: number;
  };
  readonly heartbeatIntervalMs: number;
  readonly idleTimeoutMs: number;
  readonly maxPayloadBytes: number;
  readonly maxBackpressureBytes: number;
  /** A socket whose unsent bytes make no progress for this long is cut (a write that cannot complete). */
  readonly writeTimeoutMs: number;
  /** Event data and feedback meta: every entry point rejects (or skips) what is over these. */
  readonly dataLimits: DataLimits;
  readonly maxRoomsPerConnection: number;
  readonly rateLimit: { readonly perSecond: number; readonly burst: number; readonly penaltyS: number };
  /** Edge policy: who may connect, from where, how often (src/edge). */
  readonly edge: {
    readonly maxConnections: number;
    readonly maxConnectionsPerUser: number;
    readonly maxConnectionsPerIp: number;
    readonly upgradesPerIp: { readonly perSecond: number; readonly burst: number };
    readonly httpPerToken: { readonly perSecond: number; readonly burst: number };
    /** Exact origins allowed to open browser WebSockets, or 'any'. */
    readonly allowedOrigins: readonly string[] | 'any';
    readonly trustedProxies: readonly string[];
    /** IPv6 clients are counted by this network prefix (one subscriber line gets a whole /64). */
    readonly ipv6ClientPrefix: number;
    readonly ticketTtlS: number;
    /** Tickets one user may be issued per TICKET_TTL_S (a reconnect takes one). */
    readonly ticketsPerUser: number;
  };
  /** All sockets' unsent bytes together; above it the slowest consumers are closed first. */
  readonly maxBufferedBytes: number;
  /** The longest an accepted event may wait for fan-out: past it, publishes to that project are refused (OVERLOADED). */
  readonly fanoutMaxDelayMs: number;
  readonly recentBytesPerRoom: number;
  readonly memoryBusMaxBytes: number;
  readonly redis?: {
    readonly url?: string;
    readonly clusterNodes?: readonly { host: string; port: number }[];
    readonly prefix: string;
    /**
     * How the reader learns that a watched stream changed: 'auto' = keyspace notifications (enabled
     * with CONFIG SET if needed), falling back to polling when Redis refuses; 'poll' = always poll.
     */
    readonly wakeup?: 'auto' | 'poll';
  };
  readonly stream: { readonly maxLen: number; readonly ttlS: number; readonly maxAgeS: number; readonly historyPageSize: number };
  readonly recentEventsPerRoom: number;
  /** How long a publish's Idempotency-Key is remembered. */
  readonly idempotencyWindowS: number;
  /**
   * Unexpired Idempotency-Keys one producer may hold (per project with Redis, over all projects on the
   * in-process bus); past it, publishes with a new key are refused (IDEMPOTENCY_KEYS_EXHAUSTED).
   */
  readonly idempotencyKeysPerProducer: number;
  /** In-process bus only: events kept over all projects; the least recently active projects' history goes first. */
  readonly memoryBusMaxEvents: number;
  readonly agents?: {
    readonly url: string;
    readonly token?: string;
    /** Ping the agents-server this often; a link with no pong by the next ping is closed and reconnected. */
    readonly heartbeatMs: number;
    /** Upper bound of the reconnect backoff (exponential, with jitter). */
    readonly reconnectMaxMs: number;
  };
  /** The feedback outbox and the other agents-relay settings (used only when `agents` is set). */
  readonly feedback: {
    /** Feedback streams (Redis): a project's feedback always goes to the same one. */
    readonly streamShards: number;
    /** Undelivered entries per feedback stream before new feedback is refused (FEEDBACK_QUEUE_FULL). */
    readonly streamMax: number;
    /** Without Redis: feedback kept in memory before new feedback is refused (per process: every worker thread's queue together). */
    readonly memoryQueue: number;
    /** Feedback sent but not acked for this long is sent again (by any instance with a link: XAUTOCLAIM). */
    readonly claimIdleMs: number;
    /** Feedback sent over one link and not yet acked, at most. */
    readonly maxInflight: number;
    /**
     * Feedback accepted and not yet acked, at most per user and per project (0: no quota), so one
     * user or project cannot fill the store for everyone while the agents-server is away. Per process
     * without Redis (every worker thread together), over every instance with Redis.
     */
    readonly pendingPerUser: number;
    readonly pendingPerProject: number;
    /** With Redis: a feedback pending this long stops counting towards the quotas (a count left by an instance that died mid-accept heals). */
    readonly quotaHealS: number;
  };
  /** An instance that stopped refreshing its presence this long ago is dead: its users go offline. */
  readonly presenceExpiryMs: number;
  /** Targeted replies for a user with no live connection are kept this long (0: dropped). */
  readonly agentReplyOfflineS: number;
  readonly shutdownGraceMs: number;
  /** How long a project revocation of the server API is enforced (edge/sanctions.ts): longer than your tokens live. */
  readonly revocationTtlS: number;
  /** uWS apps in worker threads on one port (main.ts only; createGateway is always one app). 1: no worker thread. */
  readonly workers: number;
  /** permessage-deflate for clients that offer it (src/connections/compression.ts). */
  readonly compression: {
    readonly mode: CompressionMode;
    /** Frames shorter than this go out plain even to a socket that negotiated (a few bytes saved cost a deflate). */
    readonly minBytes: number;
  };
}
