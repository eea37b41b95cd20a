// @ts-check
/**
 * Redis memory per retained event and per keyspace subscription, for docs/capacity.md.
 *
 *   node bench/redis-memory.mjs
 *
 * On a private redis-server: (1) appends 200,000 events (1,000 project streams × 200, fields
 * `type`, `data` ≈ 120 bytes of JSON, `origin`, as the gateway appends them) and reports
 * `used_memory` growth per event; (2) subscribes 10,000 keyspace channels on one connection (what
 * a gateway watching 10,000 projects holds on Redis) and reports growth per subscription.
 * Writes bench/results/redis-memory.md and .json.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { BENCH_DIR, roomGuid, startRedis } from './lib/servers.mjs';

const STREAMS = 1000;
const PER_STREAM = 200;
const CHANNELS = 10_000;
const DATA = JSON.stringify({ text: 'stage test finished: 42 passed, 0 failed', stage: 'test', progress: 0.75, build: 1234 });

/** @param {Redis} r */
async function usedMemory(r) {
  return Number(/used_memory:(\d+)/.exec(String(await r.info('memory')))?.[1] ?? 0);
}

async function main() {
  const redis = await startRedis();
  const r = new Redis(redis.url);
  const sub = new Redis(redis.url);
  try {
    const before = await usedMemory(r);
    for (let s = 0; s < STREAMS; s++) {
      const p = r.pipeline();
      for (let i = 0; i < PER_STREAM; i++) p.xadd(`autocode:{${roomGuid(s)}}:events`, '*', 'type', 'project_message', 'data', DATA, 'origin', 'gw-0123abcd');
      await p.exec();
    }
    const afterStreams = await usedMemory(r);
    const events = STREAMS * PER_STREAM;
    const perEvent = (afterStreams - before) / events;

    const beforeSub = await usedMemory(r);
    for (let i = 0; i < CHANNELS; i += 1000) {
      await sub.subscribe(...Array.from({ length: 1000 }, (_, j) => `__keyspace@0__:autocode:{${roomGuid(100_000 + i + j)}}:events`));
    }
    const afterSub = await usedMemory(r);
    const perSubscription = (afterSub - beforeSub) / CHANNELS;

    const result = { date: new Date().toISOString(), events, dataBytes: DATA.length, perEventBytes: perEvent, subscriptions: CHANNELS, perSubscriptionBytes: perSubscription };
    const md = [
      `# Redis memory per retained event and per keyspace subscription (${result.date})`,
      '',
      `redis-server ${String(await r.info('server')).match(/redis_version:(\S+)/)?.[1]}, used_memory deltas (INFO memory).`,
      '',
      '| what | count | bytes each |',
      '|---|---|---|',
      `| stream entry (type, data of ${DATA.length} bytes JSON, origin), ${PER_STREAM} per stream | ${events.toLocaleString('en-US')} | ${perEvent.toFixed(0)} |`,
      `| keyspace channel subscription (one per watched project per instance) | ${CHANNELS.toLocaleString('en-US')} | ${perSubscription.toFixed(0)} |`,
      '',
    ].join('\n');
    const dir = path.join(BENCH_DIR, 'results');
    fs.writeFileSync(path.join(dir, 'redis-memory.json'), JSON.stringify(result, null, 2) + '\n');
    fs.writeFileSync(path.join(dir, 'redis-memory.md'), md);
    console.log(md);
  } finally {
    sub.disconnect();
    r.disconnect();
    await redis.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
