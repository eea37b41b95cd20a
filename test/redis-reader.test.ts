// The Redis reader's overlapping read passes (src/bus/redis-notify.ts, redis-reader.ts): while
// writers keep appending to many streams, passes start whenever a stream is notified (up to four
// in flight on one connection), full pages send a stream round again, and every entry still
// reaches the sink exactly once, in order. Real redis-server; counts and orders, never timings.
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventBus } from '../src/bus/bus.js';
import { createRedisBus } from '../src/bus/redis.js';
import { DEFAULT_DATA_LIMITS } from '../src/protocol/limits.js';
import type { ProjectEvent } from '../src/protocol/events.js';
import { randomGuid, until } from './helpers/gateway.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

const key = (guid: string) => `autocode:{${guid}}:events`;

describe('Redis reader: overlapping read passes', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('delivers every entry of 40 streams written by 8 concurrent writers once and in order, with pages of 3', async () => {
    const received = new Map<string, string[]>();
    const bus: EventBus = createRedisBus(
      (guid: string, events: ProjectEvent[]) => {
        const ids = received.get(guid) ?? [];
        for (const e of events) ids.push(e.id);
        received.set(guid, ids);
      },
      {
        redis: { url: redis.url, prefix: 'autocode' },
        stream: { maxLen: 100000, ttlS: 0, maxAgeS: 0, historyPageSize: 500 },
        nodeId: `reader-${Math.random().toString(36).slice(2, 8)}`,
        log: pino({ level: 'silent' }),
        dataLimits: DEFAULT_DATA_LIMITS,
        idempotencyWindowS: 60,
        // Small pages: most reads return a full page, so streams go round again while others are read.
        readCount: 3,
      },
    );
    const writers = Array.from({ length: 8 }, () => new Redis(redis.url));
    try {
      const guids = Array.from({ length: 40 }, () => randomGuid());
      for (const g of guids) await bus.watch(g);
      await until(() => bus.isReady(), 5000, 'bus ready');
      await new Promise((r) => setTimeout(r, 300)); // the keyspace subscriptions
      await Promise.all(
        writers.map(async (w, i) => {
          for (let round = 0; round < 25; round++) {
            const pipeline = w.pipeline();
            for (const g of guids.filter((_, j) => j % writers.length === i || round % 5 === 0)) pipeline.xadd(key(g), '*', 'type', 'project_message', 'data', `{"round":${round}}`);
            await pipeline.exec();
          }
        }),
      );
      const appended = new Map<string, string[]>();
      for (const g of guids) appended.set(g, ((await writers[0]!.xrange(key(g), '-', '+')) as [string, string[]][]).map(([id]) => id));
      await until(() => guids.every((g) => (received.get(g)?.length ?? 0) >= appended.get(g)!.length), 20000, 'every entry delivered');
      await new Promise((r) => setTimeout(r, 200));
      for (const g of guids) expect(received.get(g)).toEqual(appended.get(g));
    } finally {
      await Promise.all(writers.map((w) => w.quit()));
      await bus.close();
    }
  });
});
