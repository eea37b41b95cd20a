import type { JSONSchemaType } from 'ajv';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { createAjv, describeAjvErrors } from './protocol/ajv.js';
import { DEFAULT_KEYS_PER_PRODUCER } from './protocol/limits.js';
import { isIP } from 'node:net';
import { COMPRESSION_MODES, type CompressionMode, type Config, type JwtAlgorithm } from './config-shape.js';

export { COMPRESSION_MODES, type CompressionMode, type Config, type JwtAlgorithm } from './config-shape.js';

/**
 * The environment variables the gateway reads, their types and defaults. This schema IS the
 * documentation of the configuration: README's table is generated from the same names.
 */
interface Env {
  PORT: number;
  METRICS_PORT?: number;
  HOST: string;
  REUSE_PORT: boolean;
  NODE_ID?: string;
  LOG_LEVEL: Config['logLevel'];
  JWT_SECRET?: string;
  JWT_PUBLIC_KEY?: string;
  JWT_ALGORITHMS?: string;
  JWT_ISSUER?: string;
  JWT_AUDIENCE?: string;
  JWT_CLOCK_TOLERANCE_S: number;
  HEARTBEAT_INTERVAL_S: number;
  IDLE_TIMEOUT_S: number;
  MAX_PAYLOAD_BYTES: number;
  MAX_BACKPRESSURE_BYTES: number;
  WRITE_TIMEOUT_S: number;
  MAX_EVENT_DATA_BYTES: number;
  MAX_DATA_DEPTH: number;
  MAX_ROOMS_PER_CONNECTION: number;
  RATE_LIMIT_PER_S: number;
  RATE_LIMIT_BURST: number;
  RATE_LIMIT_PENALTY_S: number;
  MAX_CONNECTIONS: number;
  MAX_CONNECTIONS_PER_USER: number;
  MAX_CONNECTIONS_PER_IP: number;
  UPGRADES_PER_IP_PER_S: number;
  UPGRADES_PER_IP_BURST: number;
  HTTP_RATE_LIMIT_PER_S: number;
  HTTP_RATE_LIMIT_BURST: number;
  ALLOWED_ORIGINS: string;
  TRUSTED_PROXIES?: string;
  IPV6_CLIENT_PREFIX: number;
  TICKET_TTL_S: number;
  TICKETS_PER_USER: number;
  MAX_BUFFERED_BYTES: number;
  FANOUT_MAX_DELAY_MS: number;
  RECENT_BYTES_PER_ROOM: number;
  MEMORY_BUS_MAX_BYTES: number;
  REDIS_URL?: string;
  REDIS_CLUSTER_NODES?: string;
  REDIS_PREFIX: string;
  REDIS_WAKEUP: 'auto' | 'poll';
  STREAM_MAXLEN: number;
  STREAM_TTL_S: number;
  STREAM_MAX_AGE_S: number;
  HISTORY_PAGE_SIZE: number;
  IDEMPOTENCY_WINDOW_S: number;
  IDEMPOTENCY_KEYS_PER_PRODUCER: number;
  MEMORY_BUS_MAX_EVENTS: number;
  RECENT_EVENTS_PER_ROOM: number;
  AGENTS_URL?: string;
  AGENTS_TOKEN?: string;
  AGENTS_HEARTBEAT_MS: number;
  AGENTS_RECONNECT_MAX_MS: number;
  FEEDBACK_STREAM_SHARDS: number;
  FEEDBACK_STREAM_MAX: number;
  FEEDBACK_MEMORY_QUEUE: number;
  FEEDBACK_CLAIM_IDLE_MS: number;
  FEEDBACK_MAX_INFLIGHT: number;
  FEEDBACK_PENDING_PER_USER: number;
  FEEDBACK_PENDING_PER_PROJECT: number;
  FEEDBACK_QUOTA_HEAL_S: number;
  PRESENCE_EXPIRY_MS: number;
  AGENT_REPLY_OFFLINE_S: number;
  SHUTDOWN_GRACE_MS: number;
  REVOCATION_TTL_S: number;
  WORKERS?: number;
  WS_COMPRESSION: CompressionMode;
  WS_COMPRESSION_MIN_BYTES: number;
}

const envSchema: JSONSchemaType<Env> = {
  type: 'object',
  additionalProperties: true,
  required: [],
  properties: {
    PORT: { type: 'integer', minimum: 0, maximum: 65535, default: 8080 },
    METRICS_PORT: { type: 'integer', minimum: 0, maximum: 65535, nullable: true },
    HOST: { type: 'string', minLength: 1, default: '0.0.0.0' },
    REUSE_PORT: { type: 'boolean', default: false },
    NODE_ID: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$', nullable: true },
    LOG_LEVEL: { type: 'string', enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },
    JWT_SECRET: { type: 'string', minLength: 8, nullable: true },
    JWT_PUBLIC_KEY: { type: 'string', minLength: 1, nullable: true },
    JWT_ALGORITHMS: { type: 'string', pattern: '^(HS256|HS384|HS512|RS256|RS384|RS512|PS256|PS384|PS512|ES256|ES384|ES512|EdDSA)(,(HS256|HS384|HS512|RS256|RS384|RS512|PS256|PS384|PS512|ES256|ES384|ES512|EdDSA))*$', nullable: true },
    JWT_ISSUER: { type: 'string', minLength: 1, nullable: true },
    JWT_AUDIENCE: { type: 'string', minLength: 1, nullable: true },
    JWT_CLOCK_TOLERANCE_S: { type: 'integer', minimum: 0, maximum: 300, default: 5 },
    HEARTBEAT_INTERVAL_S: { type: 'integer', minimum: 1, maximum: 3600, default: 25 },
    IDLE_TIMEOUT_S: { type: 'integer', minimum: 2, maximum: 7200, default: 60 },
    MAX_PAYLOAD_BYTES: { type: 'integer', minimum: 256, maximum: 16777216, default: 65536 },
    MAX_BACKPRESSURE_BYTES: { type: 'integer', minimum: 65536, maximum: 1073741824, default: 4194304 },
    WRITE_TIMEOUT_S: { type: 'integer', minimum: 1, maximum: 3600, default: 5 },
    MAX_EVENT_DATA_BYTES: { type: 'integer', minimum: 256, maximum: 16777216, default: 65536 },
    MAX_DATA_DEPTH: { type: 'integer', minimum: 2, maximum: 256, default: 32 },
    MAX_ROOMS_PER_CONNECTION: { type: 'integer', minimum: 1, maximum: 10000, default: 100 },
    RATE_LIMIT_PER_S: { type: 'number', exclusiveMinimum: 0, maximum: 100000, default: 20 },
    RATE_LIMIT_BURST: { type: 'integer', minimum: 1, maximum: 100000, default: 60 },
    RATE_LIMIT_PENALTY_S: { type: 'integer', minimum: 0, maximum: 3600, default: 10 },
    MAX_CONNECTIONS: { type: 'integer', minimum: 1, maximum: 10000000, default: 50000 },
    MAX_CONNECTIONS_PER_USER: { type: 'integer', minimum: 1, maximum: 10000000, default: 20 },
    MAX_CONNECTIONS_PER_IP: { type: 'integer', minimum: 1, maximum: 10000000, default: 1000 },
    UPGRADES_PER_IP_PER_S: { type: 'number', exclusiveMinimum: 0, maximum: 1000000, default: 50 },
    UPGRADES_PER_IP_BURST: { type: 'integer', minimum: 1, maximum: 10000000, default: 200 },
    HTTP_RATE_LIMIT_PER_S: { type: 'number', exclusiveMinimum: 0, maximum: 10000000, default: 500 },
    HTTP_RATE_LIMIT_BURST: { type: 'integer', minimum: 1, maximum: 10000000, default: 1000 },
    ALLOWED_ORIGINS: { type: 'string', pattern: '^(\\*|[a-z][a-z0-9+.-]*://[^,\\s/]+(,[a-z][a-z0-9+.-]*://[^,\\s/]+)*)$', default: '*' },
    TRUSTED_PROXIES: { type: 'string', pattern: '^[0-9a-fA-F:./]+(,[0-9a-fA-F:./]+)*$', nullable: true },
    IPV6_CLIENT_PREFIX: { type: 'integer', minimum: 1, maximum: 128, default: 64 },
    TICKET_TTL_S: { type: 'integer', minimum: 1, maximum: 300, default: 30 },
    TICKETS_PER_USER: { type: 'integer', minimum: 1, maximum: 100000, default: 50 },
    MAX_BUFFERED_BYTES: { type: 'integer', minimum: 1048576, maximum: 68719476736, default: 268435456 },
    FANOUT_MAX_DELAY_MS: { type: 'integer', minimum: 10, maximum: 600000, default: 500 },
    RECENT_BYTES_PER_ROOM: { type: 'integer', minimum: 65536, maximum: 1073741824, default: 1048576 },
    MEMORY_BUS_MAX_BYTES: { type: 'integer', minimum: 1048576, maximum: 68719476736, default: 134217728 },
    REDIS_URL: { type: 'string', pattern: '^rediss?://', nullable: true },
    REDIS_CLUSTER_NODES: { type: 'string', pattern: '^[^,\\s]+:\\d+(,[^,\\s]+:\\d+)*$', nullable: true },
    REDIS_PREFIX: { type: 'string', pattern: '^[A-Za-z0-9:_.-]{1,64}$', default: 'autocode' },
    REDIS_WAKEUP: { type: 'string', enum: ['auto', 'poll'], default: 'auto' },
    STREAM_MAXLEN: { type: 'integer', minimum: 1, maximum: 100000000, default: 10000 },
    STREAM_TTL_S: { type: 'integer', minimum: 0, maximum: 31536000, default: 86400 },
    STREAM_MAX_AGE_S: { type: 'integer', minimum: 0, maximum: 31536000, default: 0 },
    HISTORY_PAGE_SIZE: { type: 'integer', minimum: 1, maximum: 10000, default: 500 },
    IDEMPOTENCY_WINDOW_S: { type: 'integer', minimum: 1, maximum: 604800, default: 3600 },
    IDEMPOTENCY_KEYS_PER_PRODUCER: { type: 'integer', minimum: 1, maximum: 100000000, default: DEFAULT_KEYS_PER_PRODUCER },
    MEMORY_BUS_MAX_EVENTS: { type: 'integer', minimum: 1000, maximum: 100000000, default: 100000 },
    RECENT_EVENTS_PER_ROOM: { type: 'integer', minimum: 16, maximum: 1000000, default: 256 },
    AGENTS_URL: { type: 'string', pattern: '^wss?://', nullable: true },
    AGENTS_TOKEN: { type: 'string', minLength: 1, nullable: true },
    AGENTS_HEARTBEAT_MS: { type: 'integer', minimum: 100, maximum: 600000, default: 10000 },
    AGENTS_RECONNECT_MAX_MS: { type: 'integer', minimum: 100, maximum: 600000, default: 10000 },
    FEEDBACK_STREAM_SHARDS: { type: 'integer', minimum: 1, maximum: 64, default: 4 },
    FEEDBACK_STREAM_MAX: { type: 'integer', minimum: 1, maximum: 100000000, default: 100000 },
    FEEDBACK_MEMORY_QUEUE: { type: 'integer', minimum: 1, maximum: 1000000, default: 1000 },
    FEEDBACK_CLAIM_IDLE_MS: { type: 'integer', minimum: 200, maximum: 86400000, default: 30000 },
    FEEDBACK_MAX_INFLIGHT: { type: 'integer', minimum: 1, maximum: 100000, default: 1000 },
    FEEDBACK_PENDING_PER_USER: { type: 'integer', minimum: 0, maximum: 100000000, default: 100 },
    FEEDBACK_PENDING_PER_PROJECT: { type: 'integer', minimum: 0, maximum: 100000000, default: 500 },
    FEEDBACK_QUOTA_HEAL_S: { type: 'integer', minimum: 60, maximum: 604800, default: 3600 },
    PRESENCE_EXPIRY_MS: { type: 'integer', minimum: 1000, maximum: 3600000, default: 30000 },
    AGENT_REPLY_OFFLINE_S: { type: 'integer', minimum: 0, maximum: 604800, default: 3600 },
    SHUTDOWN_GRACE_MS: { type: 'integer', minimum: 0, maximum: 600000, default: 3000 },
    REVOCATION_TTL_S: { type: 'integer', minimum: 1, maximum: 31536000, default: 86400 },
    WORKERS: { type: 'integer', minimum: 1, maximum: 256, nullable: true },
    WS_COMPRESSION: { type: 'string', enum: [...COMPRESSION_MODES], default: 'shared' },
    WS_COMPRESSION_MIN_BYTES: { type: 'integer', minimum: 1, maximum: 16777216, default: 1024 },
  },
};

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Names of every environment variable the gateway reads. */
export const ENV_VARIABLES = Object.keys(envSchema.properties ?? {});

// Compiled on the first parse, not at import: worker threads import this module (types, defaults)
// but never parse the environment, and the compile is a good part of a thread's start.
let compiledEnv: ReturnType<ReturnType<typeof createAjv>['compile']> | null = null;
const envValidator = () => (compiledEnv ??= createAjv({ coerceTypes: true, useDefaults: true }).compile(envSchema));

/** Parses and validates the environment once; the result is deeply frozen. Throws ConfigError. */
export function parseConfig(env: Record<string, string | undefined>): Config {
  // Empty strings mean "unset", as in most shells' `FOO= cmd`.
  const raw: Record<string, unknown> = {};
  for (const key of ENV_VARIABLES) {
    const value = env[key];
    if (value !== undefined && value !== '') raw[key] = value;
  }
  const validateEnv = envValidator();
  if (!validateEnv(raw)) {
    const err = validateEnv.errors?.[0];
    const name = err?.instancePath.replace(/^\//, '') || 'environment';
    throw new ConfigError(`invalid ${name}: ${describeAjvErrors(validateEnv.errors)} (got ${JSON.stringify(name in raw ? raw[name] : undefined)})`);
  }
  const e = raw as unknown as Env;

  if (!e.JWT_SECRET && !e.JWT_PUBLIC_KEY) throw new ConfigError('set JWT_SECRET (HS256) or JWT_PUBLIC_KEY (PEM, RS256/ES256): the gateway never runs without token verification');
  if (e.JWT_SECRET && e.JWT_PUBLIC_KEY) throw new ConfigError('set only one of JWT_SECRET and JWT_PUBLIC_KEY');
  const publicKey = e.JWT_PUBLIC_KEY?.replace(/\\n/g, '\n');
  if (publicKey && !publicKey.includes('-----BEGIN')) throw new ConfigError('JWT_PUBLIC_KEY must be a PEM public key');
  const algorithms = (e.JWT_ALGORITHMS?.split(',') as JwtAlgorithm[] | undefined) ?? (e.JWT_SECRET ? ['HS256'] : ['RS256', 'ES256']);
  const symmetric = algorithms.every((a) => a.startsWith('HS'));
  const asymmetric = algorithms.every((a) => !a.startsWith('HS'));
  if (e.JWT_SECRET && !symmetric) throw new ConfigError('JWT_ALGORITHMS must be HS* when JWT_SECRET is set');
  if (publicKey && !asymmetric) throw new ConfigError('JWT_ALGORITHMS must not contain HS* when JWT_PUBLIC_KEY is set');
  if (e.HEARTBEAT_INTERVAL_S >= e.IDLE_TIMEOUT_S) throw new ConfigError(`HEARTBEAT_INTERVAL_S (${e.HEARTBEAT_INTERVAL_S}) must be smaller than IDLE_TIMEOUT_S (${e.IDLE_TIMEOUT_S})`);
  if (e.REDIS_URL && e.REDIS_CLUSTER_NODES) throw new ConfigError('set only one of REDIS_URL and REDIS_CLUSTER_NODES');

  const trustedProxies = e.TRUSTED_PROXIES?.split(',') ?? [];
  const badProxy = trustedProxies.find((c) => !isCidr(c));
  if (badProxy) throw new ConfigError(`invalid TRUSTED_PROXIES: ${JSON.stringify(badProxy)} is not an IP address or CIDR`);

  const clusterNodes = e.REDIS_CLUSTER_NODES?.split(',').map((hp) => {
    const i = hp.lastIndexOf(':');
    return { host: hp.slice(0, i), port: Number(hp.slice(i + 1)) };
  });

  const config: Config = {
    port: e.PORT,
    ...(e.METRICS_PORT !== undefined ? { metricsPort: e.METRICS_PORT } : {}),
    host: e.HOST,
    reusePort: e.REUSE_PORT,
    nodeId: e.NODE_ID ?? `gw-${randomBytes(4).toString('hex')}`,
    logLevel: e.LOG_LEVEL,
    jwt: {
      key: e.JWT_SECRET ?? publicKey!,
      algorithms,
      ...(e.JWT_ISSUER ? { issuer: e.JWT_ISSUER } : {}),
      ...(e.JWT_AUDIENCE ? { audience: e.JWT_AUDIENCE } : {}),
      clockToleranceMs: e.JWT_CLOCK_TOLERANCE_S * 1000,
    },
    heartbeatIntervalMs: e.HEARTBEAT_INTERVAL_S * 1000,
    idleTimeoutMs: e.IDLE_TIMEOUT_S * 1000,
    maxPayloadBytes: e.MAX_PAYLOAD_BYTES,
    maxBackpressureBytes: e.MAX_BACKPRESSURE_BYTES,
    writeTimeoutMs: e.WRITE_TIMEOUT_S * 1000,
    dataLimits: { maxBytes: e.MAX_EVENT_DATA_BYTES, maxDepth: e.MAX_DATA_DEPTH },
    maxRoomsPerConnection: e.MAX_ROOMS_PER_CONNECTION,
    rateLimit: { perSecond: e.RATE_LIMIT_PER_S, burst: e.RATE_LIMIT_BURST, penaltyS: e.RATE_LIMIT_PENALTY_S },
    edge: {
      maxConnections: e.MAX_CONNECTIONS,
      maxConnectionsPerUser: e.MAX_CONNECTIONS_PER_USER,
      maxConnectionsPerIp: e.MAX_CONNECTIONS_PER_IP,
      upgradesPerIp: { perSecond: e.UPGRADES_PER_IP_PER_S, burst: e.UPGRADES_PER_IP_BURST },
      httpPerToken: { perSecond: e.HTTP_RATE_LIMIT_PER_S, burst: e.HTTP_RATE_LIMIT_BURST },
      allowedOrigins: e.ALLOWED_ORIGINS === '*' ? 'any' : e.ALLOWED_ORIGINS.split(',').map((o) => o.toLowerCase()),
      trustedProxies,
      ipv6ClientPrefix: e.IPV6_CLIENT_PREFIX,
      ticketTtlS: e.TICKET_TTL_S,
      ticketsPerUser: e.TICKETS_PER_USER,
    },
    maxBufferedBytes: e.MAX_BUFFERED_BYTES,
    fanoutMaxDelayMs: e.FANOUT_MAX_DELAY_MS,
    recentBytesPerRoom: e.RECENT_BYTES_PER_ROOM,
    memoryBusMaxBytes: e.MEMORY_BUS_MAX_BYTES,
    ...(e.REDIS_URL || clusterNodes
      ? { redis: { ...(e.REDIS_URL ? { url: e.REDIS_URL } : {}), ...(clusterNodes ? { clusterNodes } : {}), prefix: e.REDIS_PREFIX, wakeup: e.REDIS_WAKEUP } }
      : {}),
    stream: { maxLen: e.STREAM_MAXLEN, ttlS: e.STREAM_TTL_S, maxAgeS: e.STREAM_MAX_AGE_S, historyPageSize: e.HISTORY_PAGE_SIZE },
    recentEventsPerRoom: e.RECENT_EVENTS_PER_ROOM,
    idempotencyWindowS: e.IDEMPOTENCY_WINDOW_S,
    idempotencyKeysPerProducer: e.IDEMPOTENCY_KEYS_PER_PRODUCER,
    memoryBusMaxEvents: e.MEMORY_BUS_MAX_EVENTS,
    ...(e.AGENTS_URL
      ? { agents: { url: e.AGENTS_URL, ...(e.AGENTS_TOKEN ? { token: e.AGENTS_TOKEN } : {}), heartbeatMs: e.AGENTS_HEARTBEAT_MS, reconnectMaxMs: e.AGENTS_RECONNECT_MAX_MS } }
      : {}),
    feedback: {
      streamShards: e.FEEDBACK_STREAM_SHARDS,
      streamMax: e.FEEDBACK_STREAM_MAX,
      memoryQueue: e.FEEDBACK_MEMORY_QUEUE,
      claimIdleMs: e.FEEDBACK_CLAIM_IDLE_MS,
      maxInflight: e.FEEDBACK_MAX_INFLIGHT,
      pendingPerUser: e.FEEDBACK_PENDING_PER_USER,
      pendingPerProject: e.FEEDBACK_PENDING_PER_PROJECT,
      quotaHealS: e.FEEDBACK_QUOTA_HEAL_S,
    },
    presenceExpiryMs: e.PRESENCE_EXPIRY_MS,
    agentReplyOfflineS: e.AGENT_REPLY_OFFLINE_S,
    shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
    revocationTtlS: e.REVOCATION_TTL_S,
    // The CPUs this process may run on (follows affinity / a container's cpuset).
    workers: e.WORKERS ?? availableParallelism(),
    compression: { mode: e.WS_COMPRESSION, minBytes: e.WS_COMPRESSION_MIN_BYTES },
  };
  return deepFreeze(config);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** TRUSTED_PROXIES entries: an IPv4/IPv6 address in its ordinary form, optionally with a /prefix. */
function isCidr(value: string): boolean {
  const [address, bits, extra] = value.split('/');
  if (extra !== undefined || !address) return false;
  const family = isIP(address);
  if (family === 0) return false;
  if (bits === undefined) return true;
  const n = Number(bits);
  return /^\d{1,3}$/.test(bits) && n <= (family === 6 ? 128 : 32);
}
