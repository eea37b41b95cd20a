import { Cluster, Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config.js';

export type RedisClient = Redis | Cluster;

/**
 * A Redis connection for the agents relay, configured like the bus's (capped exponential backoff
 * with jitter). `role` names it in CLIENT LIST. Blocking reads and pub/sub get connections of their
 * own (role 'feedback-reader', 'subscriber'): a blocked or subscribed connection can run nothing else.
 */
export function createRedisClient(redis: NonNullable<Config['redis']>, nodeId: string, role: string, log: Logger): RedisClient {
  const retryStrategy = (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000) + Math.floor(Math.random() * 100);
  const blocking = role !== 'cmd';
  const common = {
    connectionName: `${nodeId}:agents-${role}`,
    retryStrategy,
    // Commands on the command connection fail fast while Redis is down (feedback is then refused,
    // never accepted); the reader and the subscriber wait for the reconnect instead.
    maxRetriesPerRequest: blocking ? null : 1,
    ...(blocking ? {} : { commandTimeout: 5000 }),
  };
  const client: RedisClient = redis.clusterNodes
    ? new Cluster([...redis.clusterNodes], { clusterRetryStrategy: retryStrategy, redisOptions: common })
    : new Redis(redis.url!, common);
  let lastLog = 0;
  client.on('error', (err: Error) => {
    // One line per second at most: an outage must not flood the logs.
    if (Date.now() - lastLog < 1000) return;
    lastLog = Date.now();
    log.warn({ role, err: err.message }, 'agents relay: redis connection error');
  });
  return client;
}
