// The resync under the keyspace notifications (src/bus/redis-resync.ts, docs/redis-wakeup.md): it
// sweeps a master's watched streams only when the master's write marker moved, so an idle instance
// runs no XREAD at all (inside scripts or out), and a lost notification is still found at the next
// resync. Counts, never timings; real redis-server processes and a real 3-master cluster.
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventBus } from '../src/bus/bus.js';
import { createRedisBus, type RedisBusOptions } from '../src/bus/redis.js';
import { writeMarkerOf } from '../src/bus/redis-write-marker.js';
import { DEFAULT_DATA_LIMITS } from '../src/protocol/limits.js';
import type { ProjectEvent } from '../src/protocol/events.js';
import { randomGuid, until } from './helpers/gateway.js';
import { commandStats, masterPortForKey, startRedis, startRedisCluster, statsDelta, type RedisCluster, type RedisServer } from './helpers/redis.js';

const key = (guid: string) => `autocode:{${guid}}:events`;
const RESYNC_MS = 300;

function busOn(redis: RedisBusOptions['redis']) {
  const received = new Map<string, string[]>();
  const bus: EventBus = createRedisBus(
    (guid: string, events: ProjectEvent[]) => received.set(guid, [...(received.get(guid) ?? []), ...events.map((e) => e.id)]),
    {
      redis,
      stream: { maxLen: 10000, ttlS: 0, maxAgeS: 0, historyPageSize: 500 },
      nodeId: `resync-${Math.random().toString(36).slice(2, 8)}`,
      log: pino({ level: 'silent' }),
      dataLimits: DEFAULT_DATA_LIMITS,
      idempotencyWindowS: 60,
      resyncMs: RESYNC_MS,
    },
  );
  return { bus, received };
}

async function watchAll(bus: EventBus, guids: string[]): Promise<void> {
  for (let i = 0; i < guids.length; i += 200) await Promise.all(guids.slice(i, i + 200).map((g) => bus.watch(g)));
}

const channelCount = async (cli: (...args: string[]) => Promise<string>) => Number(/pubsub_channels:(\d+)/.exec(await cli('INFO', 'stats'))?.[1] ?? 0);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the write marker', () => {
  it('counts the calls of every command that can put entries into a stream, 0 for those never called', () => {
    const info = '# Commandstats\r\ncmdstat_xadd:calls=7,usec=70,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\ncmdstat_get:calls=3,usec=1\r\ncmdstat_restore-asking:calls=2,usec=5\r\n';
    expect(writeMarkerOf(info)).toBe('xadd=7,restore=0,restore-asking=2,rename=0,renamenx=0,copy=0,move=0,swapdb=0,config|resetstat=0');
    expect(writeMarkerOf(info.replace('xadd:calls=7', 'xadd:calls=8'))).not.toBe(writeMarkerOf(info));
  });
});

describe('Redis Cluster: the resync sweeps only the masters written to', () => {
  let cluster: RedisCluster;
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 });
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });
  const statsOf = (port: number) => commandStats((...a) => cluster.cli(port, ...a));

  it('runs no XREAD while idle over many resyncs, then finds a lost notification on one master by sweeping that master only', async () => {
    const { bus, received } = busOn({ clusterNodes: cluster.nodes, prefix: 'autocode' });
    try {
      const guids = Array.from({ length: 300 }, () => randomGuid());
      await watchAll(bus, guids);
      const subscribed = async () => (await Promise.all(cluster.ports.map((p) => channelCount((...a) => cluster.cli(p, ...a))))).reduce((a, b) => a + b);
      await until(async () => (await subscribed()) === 300, 10000, 'every watched stream subscribed on its master');
      await until(() => bus.isReady(), 5000, 'bus ready');
      await sleep(3 * RESYNC_MS); // the first resync sweeps every master once

      const idleBefore = await Promise.all(cluster.ports.map(statsOf));
      await sleep(10 * RESYNC_MS);
      const idle = (await Promise.all(cluster.ports.map(statsOf))).map((after, i) => statsDelta(idleBefore[i]!, after));
      for (const d of idle) {
        // Resyncs ran (each checks the flags on every master)...
        expect(d.get('config|get') ?? 0, JSON.stringify([...d])).toBeGreaterThanOrEqual(3);
        // ...and read nothing: before the marker, each one ran an XREAD per watched key inside a script.
        expect(d.get('xread') ?? 0, JSON.stringify([...d])).toBe(0);
        expect((d.get('eval') ?? 0) + (d.get('evalsha') ?? 0)).toBe(0);
      }

      // A notification lost on one master (an operator removed the flags), with an XADD there.
      const guid = guids[0]!;
      const port = await masterPortForKey(cluster, key(guid));
      const before = await Promise.all(cluster.ports.map(statsOf));
      await cluster.cli(port, 'CONFIG', 'SET', 'notify-keyspace-events', '');
      const id = await cluster.cli(port, 'XADD', key(guid), '*', 'type', 'project_message', 'data', '{}');
      // Found by the next resync: bounded by one resync period plus the sweep (docs/redis-wakeup.md).
      await until(() => received.get(guid)?.length === 1, 10000, 'event found by the resync');
      expect(received.get(guid)).toEqual([id]);
      const deltas = (await Promise.all(cluster.ports.map(statsOf))).map((after, i) => statsDelta(before[i]!, after));
      cluster.ports.forEach((p, i) => {
        if (p === port) expect(deltas[i]!.get('xread') ?? 0).toBeGreaterThan(0);
        else expect(deltas[i]!.get('xread') ?? 0, `master ${p} was not written to`).toBe(0);
      });
      expect(await cluster.cli(port, 'CONFIG', 'GET', 'notify-keyspace-events')).toMatch(/K/);
    } finally {
      await bus.close();
    }
  });
});

describe('standalone Redis whose ACL forbids INFO', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
    await redis.cli('ACL', 'SETUSER', 'gw', 'on', 'nopass', '~*', '&*', '+@all', '-info');
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('sweeps at every resync, as without a marker, and finds a lost notification', async () => {
    const { bus, received } = busOn({ url: redis.url.replace('redis://', 'redis://gw@'), prefix: 'autocode' });
    try {
      const guid = randomGuid();
      await bus.watch(guid);
      await until(async () => (await channelCount(redis.cli)) === 1, 5000, 'subscribed');
      await until(() => bus.isReady(), 5000, 'bus ready');
      await sleep(3 * RESYNC_MS);
      const before = await commandStats(redis.cli);
      await sleep(5 * RESYNC_MS);
      expect(statsDelta(before, await commandStats(redis.cli)).get('xread') ?? 0).toBeGreaterThan(0);
      await redis.cli('CONFIG', 'SET', 'notify-keyspace-events', '');
      const id = await redis.cli('XADD', key(guid), '*', 'type', 'project_message', 'data', '{}');
      await until(() => received.get(guid)?.length === 1, 10000, 'event found by the resync');
      expect(received.get(guid)).toEqual([id]);
    } finally {
      await bus.close();
    }
  });
});
