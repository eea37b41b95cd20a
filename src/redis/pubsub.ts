import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { createRedisClient, type RedisClient } from './client.js';

/** Receives the messages of one channel. Throwing is caught and logged; the connection goes on. */
export type ChannelHandler = (message: string) => void;

/**
 * The gateway's one pub/sub connection and who listens on it: each channel has exactly one handler
 * (targeted replies: one channel per user held here; presence: its changes channel; the edge: its
 * penalties channel). A message on a channel nobody registered (one just unsubscribed, say) is
 * logged at debug and dropped.
 *
 * After a reconnect ioredis subscribes again to every channel still registered by itself. What was
 * published meanwhile is lost, though (pub/sub keeps nothing), so registrants whose state follows the
 * messages rebuild it when `onResubscribed` says the channels are back.
 */
export interface PubSub {
  /** Routes `channel` to `handler` (one handler a channel: a second call replaces the first) and subscribes; resolves once Redis confirmed. */
  subscribe(channel: string, handler: ChannelHandler): Promise<void>;
  /** Stops routing `channel` and unsubscribes. */
  unsubscribe(channel: string): Promise<void>;
  /**
   * `listener` runs each time the connection is back after it was lost, once the registered channels
   * are subscribed again (not at the first connect: a registrant learns that from its subscribe()).
   */
  onResubscribed(listener: () => void): void;
  close(): void;
}

/** Opens the gateway's subscriber connection (`<node>:subscriber` in CLIENT LIST) and its router. */
export function openPubSub(redis: NonNullable<Config['redis']>, nodeId: string, log: Logger): PubSub {
  // Blocking: a SUBSCRIBE issued while Redis is away waits for the reconnect instead of failing.
  return createPubSub(createRedisClient(redis, nodeId, 'subscriber', { blocking: true, log }), log);
}

export function createPubSub(client: RedisClient, log: Logger): PubSub {
  const handlers = new Map<string, ChannelHandler>();
  const listeners: (() => void)[] = [];
  let everReady = false;
  let closed = false;

  client.on('message', (channel: string, message: string) => {
    const handler = handlers.get(channel);
    if (!handler) {
      log.debug({ channel }, 'pub/sub message on a channel nobody registered; dropped');
      return;
    }
    try {
      handler(message);
    } catch (err) {
      log.error({ err, channel }, 'pub/sub message handling failed');
    }
  });

  client.on('ready', () => {
    if (!everReady) {
      everReady = true;
      return;
    }
    // ioredis queued the SUBSCRIBE of every channel it held before emitting 'ready'. On one
    // connection replies come in order, so once a PING is answered those channels are subscribed:
    // anything published from then on arrives. (A Cluster's subscriber is a connection of its own
    // that a PING through the Cluster would not reach: there 'ready' is the best word there is.)
    const resubscribed = client instanceof Redis ? client.ping().then(() => true, () => false) : Promise.resolve(true);
    void resubscribed.then((ok) => {
      // Not ok: the connection dropped again; its next 'ready' says so once more.
      if (!ok || closed) return;
      for (const listener of listeners) {
        try {
          listener();
        } catch (err) {
          log.error({ err }, 'pub/sub resubscribe listener failed');
        }
      }
    });
  });

  return {
    async subscribe(channel, handler) {
      if (closed) return;
      handlers.set(channel, handler);
      await client.subscribe(channel);
    },
    async unsubscribe(channel) {
      if (closed || !handlers.delete(channel)) return;
      await client.unsubscribe(channel);
    },
    onResubscribed(listener) {
      listeners.push(listener);
    },
    close() {
      closed = true;
      handlers.clear();
      listeners.length = 0;
      // Not after the socket closed already: ioredis would arm a 2 s destroy timer that nothing
      // clears, and in a worker thread that timer alone keeps the thread alive.
      if (client.status !== 'end') client.disconnect();
    },
  };
}
