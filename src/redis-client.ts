import { Cluster, Redis } from 'ioredis';
import type { Config } from './config.js';

/** Reconnect backoff for every Redis connection: capped exponential, with jitter so instances do not reconnect in step. */
export const redisRetryStrategy = (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000) + Math.floor(Math.random() * 100);

export interface RedisClientOptions {
  /**
   * For a blocking read or a subscriber (a connection that can run nothing else): commands wait for
   * the reconnect instead of failing. Otherwise a command issued while (re)connecting waits in the
   * offline queue at most `commandTimeoutMs`, and callers check readiness first to fail at once.
   */
  readonly blocking?: boolean;
  readonly commandTimeoutMs?: number;
}

/** The one way the gateway opens a Redis (or Cluster) connection, named `<node>:<role>` in CLIENT LIST. */
export function createRedisClient(redis: NonNullable<Config['redis']>, nodeId: string, role: string, options: RedisClientOptions = {}): Redis | Cluster {
  const blocking = options.blocking ?? false;
  const connection = {
    connectionName: `${nodeId}:${role}`,
    retryStrategy: redisRetryStrategy,
    lazyConnect: false,
    maxRetriesPerRequest: blocking ? null : 1,
    ...(blocking ? {} : { commandTimeout: options.commandTimeoutMs ?? 5000 }),
  };
  if (redis.clusterNodes) return new Cluster([...redis.clusterNodes], { clusterRetryStrategy: redisRetryStrategy, redisOptions: connection });
  return new Redis(redis.url!, connection);
}

/**
 * Closes a connection politely if Redis answers within `ms` (QUIT), and for certain either way:
 * ioredis keeps a QUIT queued while it reconnects, with no timeout of its own, so a Redis that is
 * gone would hold the shutdown; disconnect() also stops any further reconnect.
 */
export async function closeRedisClient(client: Redis | Cluster, ms = 1000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([client.quit().catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
  client.disconnect();
}
