import type { Cluster, Redis } from 'ioredis';
import { createRedisClient } from '../redis-client.js';
import type { Logger } from 'pino';
import type { Config } from '../config.js';

export type RedisClient = Redis | Cluster;

/**
 * A Redis connection for the agents relay (opened by src/redis-client.ts), its errors logged at most
 * once a second. `role` names it in CLIENT LIST. Blocking reads and pub/sub get connections of
 * their own (role 'feedback-reader', 'subscriber'): a blocked or subscribed connection can run nothing else.
 */
export function createRelayRedisClient(redis: NonNullable<Config['redis']>, nodeId: string, role: string, log: Logger): RedisClient {
  // Commands on the command connection fail fast while Redis is down (feedback is then refused,
  // never accepted); the reader and the subscriber wait for the reconnect instead.
  const client = createRedisClient(redis, nodeId, `agents-${role}`, { blocking: role !== 'cmd' });
  let lastLog = 0;
  client.on('error', (err: Error) => {
    // One line per second at most: an outage must not flood the logs.
    if (Date.now() - lastLog < 1000) return;
    lastLog = Date.now();
    log.warn({ role, err: err.message }, 'agents relay: redis connection error');
  });
  return client;
}
