import type { Cluster, Redis } from 'ioredis';
import { isEventType, isGuid, type EventType } from '../protocol/messages.js';
import { eventsKey, FIELD_DATA, FIELD_ORIGIN, FIELD_TYPE } from './keys.js';

export interface ProducerOptions {
  /** Key prefix, REDIS_PREFIX on the gateways (default 'autocode'). */
  prefix?: string;
  /** Approximate number of events kept per project (MAXLEN ~). */
  maxLen?: number;
  /** Seconds after the last append before an idle project's stream expires; 0 keeps it. */
  ttlS?: number;
  /** Events older than this many seconds are trimmed on each append (XTRIM MINID ~); 0 keeps them. */
  maxAgeS?: number;
  /** Recorded in the entry's `origin` field. */
  origin?: string;
}

export interface ProducerEvent {
  type: EventType;
  data: object;
}

/**
 * The producer side of the contract, for TypeScript backends: appends project events to the stream
 * every gateway instance reads. Events of one call are appended in order in one round trip.
 *
 *   const producer = createProducer(new Redis(url));
 *   const [id] = await producer.publish(guid, [{ type: 'project_message', data: { text: 'hi' } }]);
 */
export function createProducer(redis: Redis | Cluster, options: ProducerOptions = {}) {
  const prefix = options.prefix ?? 'autocode';
  const maxLen = options.maxLen ?? 10000;
  const ttlS = options.ttlS ?? 86400;
  const maxAgeS = options.maxAgeS ?? 0;
  // Refreshing the TTL on every append doubles the commands per publish; once per tenth of the TTL
  // per key keeps an active stream alive just the same.
  const ttlRefreshedAt = new Map<string, number>();
  const refreshEveryMs = (ttlS * 1000) / 10;
  return {
    async publish(projectGuid: string, events: readonly ProducerEvent[]): Promise<string[]> {
      if (!isGuid(projectGuid)) throw new TypeError(`not a GUID: ${projectGuid}`);
      const key = eventsKey(prefix, projectGuid.toLowerCase());
      const pipeline = redis.pipeline();
      for (const e of events) {
        if (!isEventType(e.type)) throw new TypeError(`not an event type: ${String(e.type)}`);
        const fields = [FIELD_TYPE, e.type, FIELD_DATA, JSON.stringify(e.data)];
        if (options.origin) fields.push(FIELD_ORIGIN, options.origin);
        pipeline.xadd(key, 'MAXLEN', '~', maxLen, '*', ...fields);
      }
      // XADD takes one trim strategy; age-based trimming is a second, equally approximate, command.
      if (maxAgeS > 0) pipeline.xtrim(key, 'MINID', '~', `${Date.now() - maxAgeS * 1000}-0`);
      if (ttlS > 0) {
        const now = Date.now();
        if (now - (ttlRefreshedAt.get(key) ?? 0) >= refreshEveryMs) {
          if (ttlRefreshedAt.size > 100000) ttlRefreshedAt.clear();
          ttlRefreshedAt.set(key, now);
          pipeline.expire(key, ttlS);
        }
      }
      const results = (await pipeline.exec()) ?? [];
      const ids: string[] = [];
      for (let i = 0; i < events.length; i++) {
        const [err, id] = results[i] ?? [new Error('no reply')];
        if (err) throw err;
        ids.push(id as string);
      }
      return ids;
    },
  };
}

export type Producer = ReturnType<typeof createProducer>;
