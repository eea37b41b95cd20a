import { Cluster, Redis } from 'ioredis';
import type { Config } from './config.js';

/** Reconnect backoff for every Redis connection: capped exponential, with jitter so instances do not reconnect in step. */
export const redisRetryStrategy = (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000) + Math.floor(Math.random() * 100);

/**
 * A Redis (or Cluster) connection for short commands, named `<node>:<role>` in CLIENT LIST.
 * Commands fail after `commandTimeoutMs` instead of waiting forever for a stalled server.
 */
export function createRedisClient(redis: NonNullable<Config['redis']>, nodeId: string, role: string, commandTimeoutMs = 5000): Redis | Cluster {
  const options = { connectionName: `${nodeId}:${role}`, retryStrategy: redisRetryStrategy, maxRetriesPerRequest: 1, commandTimeout: commandTimeoutMs };
  if (redis.clusterNodes) return new Cluster([...redis.clusterNodes], { clusterRetryStrategy: redisRetryStrategy, redisOptions: options });
  return new Redis(redis.url!, options);
}
