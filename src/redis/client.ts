import { Cluster, Redis } from 'ioredis';
import type { Logger } from 'pino';
import { exponentialBackoff } from '../common/backoff.js';
import type { Config } from '../config.js';
import { throttledWarn } from '../logger.js';

/** A connection to a standalone Redis or to a Cluster: the gateway speaks to both alike. */
export type RedisClient = Redis | Cluster;

/**
 * Reconnect backoff for every Redis connection: 50 ms doubling to 2 s (ioredis counts `times` from
 * 1, so the first wait is 100 ms at most), with jitter so instances do not reconnect in step.
 */
export const redisRetryStrategy = (times: number) => Math.round(exponentialBackoff(times, { minMs: 50, maxMs: 2000, jitter: 0.5 }));

export interface RedisClientOptions {
  /**
   * For a blocking read or a subscriber (a connection that can run nothing else): commands wait for
   * the reconnect instead of failing. Otherwise a command issued while (re)connecting waits in the
   * offline queue at most `commandTimeoutMs`, and callers check readiness first to fail at once.
   */
  readonly blocking?: boolean;
  readonly commandTimeoutMs?: number;
  /**
   * Where connection errors are logged (once a second at most). Without it they are swallowed: for a
   * connection whose trouble another part already reports (the event bus logs every Redis outage).
   */
  readonly log?: Logger;
}

/**
 * The one way the gateway opens a Redis (or Cluster) connection, named `<node>:<role>` in CLIENT LIST.
 * Blocking reads and pub/sub get connections of their own (a blocked or subscribed connection can run
 * nothing else).
 */
export function createRedisClient(redis: NonNullable<Config['redis']>, nodeId: string, role: string, options: RedisClientOptions = {}): RedisClient {
  const blocking = options.blocking ?? false;
  const connection = {
    connectionName: `${nodeId}:${role}`,
    retryStrategy: redisRetryStrategy,
    lazyConnect: false,
    maxRetriesPerRequest: blocking ? null : 1,
    ...(blocking ? {} : { commandTimeout: options.commandTimeoutMs ?? 5000 }),
  };
  const client: RedisClient = redis.clusterNodes ? new Cluster([...redis.clusterNodes], { clusterRetryStrategy: redisRetryStrategy, redisOptions: connection }) : new Redis(redis.url!, connection);
  // An 'error' listener is always there: without one, ioredis's errors would be unhandled events.
  const warn = options.log ? throttledWarn(options.log) : null;
  client.on('error', (err: Error) => warn?.('redis connection error', err, { role }));
  return client;
}

/**
 * Closes a connection politely if Redis answers within `ms` (QUIT), and for certain either way:
 * ioredis keeps a QUIT queued while it reconnects, with no timeout of its own, so a Redis that is
 * gone would hold the shutdown; disconnect() also stops any further reconnect.
 */
export async function closeRedisClient(client: RedisClient, ms = 1000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([client.quit().catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
  client.disconnect();
}
