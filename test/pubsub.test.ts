// The gateway's pub/sub router (src/redis/pubsub.ts) against a real redis-server: exact channel
// dispatch, what it does with a message nobody registered and with a handler that throws, and the
// word it gives after a reconnect.
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPubSub, openPubSub, type PubSub } from '../src/redis/pubsub.js';
import { until } from './helpers/gateway.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

describe('pub/sub router', () => {
  let redis: RedisServer;
  let pubsub: PubSub;
  const logLines: string[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    const log = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) });
    pubsub = openPubSub({ url: redis.url, prefix: 'autocode' }, 'router-test', log);
  });
  afterAll(async () => {
    pubsub?.close();
    await redis?.stop();
  });

  it('sends each message to the handler of exactly its channel; a throwing handler is logged and the connection goes on', async () => {
    const got: string[] = [];
    await pubsub.subscribe('t:{a}:x', (m) => got.push(`a:${m}`));
    await pubsub.subscribe('t:{b}:x', (m) => got.push(`b:${m}`));
    await pubsub.subscribe('t:boom', () => {
      throw new Error('handler bug');
    });
    await redis.cli('PUBLISH', 't:boom', '1');
    await redis.cli('PUBLISH', 't:{a}:x', '2');
    await redis.cli('PUBLISH', 't:{b}:x', '3');
    await until(() => got.length === 2, 5000, 'two messages');
    expect(got).toEqual(['a:2', 'b:3']);
    expect(logLines.join('')).toMatch(/pub\/sub message handling failed/);

    await pubsub.unsubscribe('t:{a}:x');
    await redis.cli('PUBLISH', 't:{a}:x', '4');
    await redis.cli('PUBLISH', 't:{b}:x', '5');
    await until(() => got.length === 3, 5000, 'the message of the channel still registered');
    expect(got).toEqual(['a:2', 'b:3', 'b:5']);
  });

  it('logs at debug and drops a message on a channel nobody registered', async () => {
    const lines: string[] = [];
    const client = new Redis(redis.url);
    const own = createPubSub(client, pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) }));
    try {
      const got: string[] = [];
      await own.subscribe('t:known', (m) => got.push(m));
      // Subscribed behind the router's back: Redis sends it, nobody registered it.
      await client.subscribe('t:stray');
      await redis.cli('PUBLISH', 't:stray', 's');
      await redis.cli('PUBLISH', 't:known', 'k');
      await until(() => got.length === 1, 5000, 'known channel');
      expect(got).toEqual(['k']);
      const dropped = lines.map((l) => JSON.parse(l) as { level: number; msg: string; channel?: string }).filter((l) => l.channel === 't:stray');
      expect(dropped).toEqual([expect.objectContaining({ level: 20, msg: 'pub/sub message on a channel nobody registered; dropped' })]);
    } finally {
      own.close();
    }
  });

  it('after a reconnect, resubscribes every registered channel and then says so', async () => {
    let resubscribed = 0;
    pubsub.onResubscribed(() => resubscribed++);
    const got: string[] = [];
    await pubsub.subscribe('t:after', (m) => got.push(m));
    await redis.cli('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await until(() => resubscribed === 1, 5000, 'resubscribed');
    // Told only once the channel is subscribed again: a publish now reaches the handler.
    expect(await redis.cli('PUBLISH', 't:after', 'back')).toBe('1');
    await until(() => got.length === 1, 5000, 'message after the reconnect');
    expect(got).toEqual(['back']);
  });
});
