import type { JSONSchemaType } from 'ajv';
import { randomBytes } from 'node:crypto';
import { createAjv, describeAjvErrors } from './protocol/ajv.js';
import type { DataLimits } from './protocol/limits.js';

/**
 * The environment variables the gateway reads, their types and defaults. This schema IS the
 * documentation of the configuration: README's table is generated from the same names.
 */
interface Env {
  PORT: number;
  HOST: string;
  NODE_ID?: string;
  LOG_LEVEL: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
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
  MAX_EVENT_DATA_BYTES: number;
  MAX_DATA_DEPTH: number;
  MAX_ROOMS_PER_CONNECTION: number;
  RATE_LIMIT_PER_S: number;
  RATE_LIMIT_BURST: number;
  REDIS_URL?: string;
  REDIS_CLUSTER_NODES?: string;
  REDIS_PREFIX: string;
  REDIS_WAKEUP: 'auto' | 'poll';
  STREAM_MAXLEN: number;
  STREAM_TTL_S: number;
  STREAM_MAX_AGE_S: number;
  HISTORY_PAGE_SIZE: number;
  IDEMPOTENCY_WINDOW_S: number;
  MEMORY_BUS_MAX_EVENTS: number;
  RECENT_EVENTS_PER_ROOM: number;
  AGENTS_URL?: string;
  AGENTS_TOKEN?: string;
  SHUTDOWN_GRACE_MS: number;
}

const envSchema: JSONSchemaType<Env> = {
  type: 'object',
  additionalProperties: true,
  required: [],
  properties: {
    PORT: { type: 'integer', minimum: 0, maximum: 65535, default: 8080 },
    HOST: { type: 'string', minLength: 1, default: '0.0.0.0' },
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
    MAX_EVENT_DATA_BYTES: { type: 'integer', minimum: 256, maximum: 16777216, default: 65536 },
    MAX_DATA_DEPTH: { type: 'integer', minimum: 2, maximum: 256, default: 32 },
    MAX_ROOMS_PER_CONNECTION: { type: 'integer', minimum: 1, maximum: 10000, default: 100 },
    RATE_LIMIT_PER_S: { type: 'number', exclusiveMinimum: 0, maximum: 100000, default: 20 },
    RATE_LIMIT_BURST: { type: 'integer', minimum: 1, maximum: 100000, default: 60 },
    REDIS_URL: { type: 'string', pattern: '^rediss?://', nullable: true },
    REDIS_CLUSTER_NODES: { type: 'string', pattern: '^[^,\\s]+:\\d+(,[^,\\s]+:\\d+)*$', nullable: true },
    REDIS_PREFIX: { type: 'string', pattern: '^[A-Za-z0-9:_.-]{1,64}$', default: 'autocode' },
    REDIS_WAKEUP: { type: 'string', enum: ['auto', 'poll'], default: 'auto' },
    STREAM_MAXLEN: { type: 'integer', minimum: 1, maximum: 100000000, default: 10000 },
    STREAM_TTL_S: { type: 'integer', minimum: 0, maximum: 31536000, default: 86400 },
    STREAM_MAX_AGE_S: { type: 'integer', minimum: 0, maximum: 31536000, default: 0 },
    HISTORY_PAGE_SIZE: { type: 'integer', minimum: 1, maximum: 10000, default: 500 },
    IDEMPOTENCY_WINDOW_S: { type: 'integer', minimum: 1, maximum: 604800, default: 3600 },
    MEMORY_BUS_MAX_EVENTS: { type: 'integer', minimum: 1000, maximum: 100000000, default: 100000 },
    RECENT_EVENTS_PER_ROOM: { type: 'integer', minimum: 16, maximum: 1000000, default: 256 },
    AGENTS_URL: { type: 'string', pattern: '^wss?://', nullable: true },
    AGENTS_TOKEN: { type: 'string', minLength: 1, nullable: true },
    SHUTDOWN_GRACE_MS: { type: 'integer', minimum: 0, maximum: 600000, default: 3000 },
  },
};

export type JwtAlgorithm = 'HS256' | 'HS384' | 'HS512' | 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512' | 'ES256' | 'ES384' | 'ES512' | 'EdDSA';

export interface Config {
  readonly port: number;
  readonly host: string;
  /** Identifies this instance in logs, metrics and cross-instance messages. */
  readonly nodeId: string;
  readonly logLevel: Env['LOG_LEVEL'];
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
  /** Event data and feedback meta: every entry point rejects (or skips) what is over these. */
  readonly dataLimits: DataLimits;
  readonly maxRoomsPerConnection: number;
  readonly rateLimit: { readonly perSecond: number; readonly burst: number };
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
  /** In-process bus only: events kept over all projects; the least recently active projects' history goes first. */
  readonly memoryBusMaxEvents: number;
  readonly agents?: { readonly url: string; readonly token?: string };
  readonly shutdownGraceMs: number;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Names of every environment variable the gateway reads. */
export const ENV_VARIABLES = Object.keys(envSchema.properties ?? {});

const validateEnv = createAjv({ coerceTypes: true, useDefaults: true }).compile(envSchema);

/** Parses and validates the environment once; the result is deeply frozen. Throws ConfigError. */
export function parseConfig(env: Record<string, string | undefined>): Config {
  // Empty strings mean "unset", as in most shells' `FOO= cmd`.
  const raw: Record<string, unknown> = {};
  for (const key of ENV_VARIABLES) {
    const value = env[key];
    if (value !== undefined && value !== '') raw[key] = value;
  }
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

  const clusterNodes = e.REDIS_CLUSTER_NODES?.split(',').map((hp) => {
    const i = hp.lastIndexOf(':');
    return { host: hp.slice(0, i), port: Number(hp.slice(i + 1)) };
  });

  const config: Config = {
    port: e.PORT,
    host: e.HOST,
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
    dataLimits: { maxBytes: e.MAX_EVENT_DATA_BYTES, maxDepth: e.MAX_DATA_DEPTH },
    maxRoomsPerConnection: e.MAX_ROOMS_PER_CONNECTION,
    rateLimit: { perSecond: e.RATE_LIMIT_PER_S, burst: e.RATE_LIMIT_BURST },
    ...(e.REDIS_URL || clusterNodes
      ? { redis: { ...(e.REDIS_URL ? { url: e.REDIS_URL } : {}), ...(clusterNodes ? { clusterNodes } : {}), prefix: e.REDIS_PREFIX, wakeup: e.REDIS_WAKEUP } }
      : {}),
    stream: { maxLen: e.STREAM_MAXLEN, ttlS: e.STREAM_TTL_S, maxAgeS: e.STREAM_MAX_AGE_S, historyPageSize: e.HISTORY_PAGE_SIZE },
    recentEventsPerRoom: e.RECENT_EVENTS_PER_ROOM,
    idempotencyWindowS: e.IDEMPOTENCY_WINDOW_S,
    memoryBusMaxEvents: e.MEMORY_BUS_MAX_EVENTS,
    ...(e.AGENTS_URL ? { agents: { url: e.AGENTS_URL, ...(e.AGENTS_TOKEN ? { token: e.AGENTS_TOKEN } : {}) } } : {}),
    shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
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

