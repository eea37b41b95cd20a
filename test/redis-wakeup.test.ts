// The Redis bus woken by keyspace notifications (docs/redis-wakeup.md), against real redis-server
// processes and a real 3-master cluster. Counts, never timings: how many commands an idle
// instance sends, and that every event still arrives exactly once.
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventBus } from '../src/bus/bus.js';
import { createRedisBus, type RedisBusOptions } from '../src/bus/redis.js';
import { withRequiredFlags } from '../src/bus/wakeup.js';
import { DEFAULT_DATA_LIMITS } from '../src/protocol/limits.js';
import type { ProjectEvent } from '../src/protocol/events.js';
import { randomGuid, until } from './helpers/gateway.js';
import { commandStats, masterPortForKey, startRedis, startRedisCluster, statsDelta, totalCalls, type RedisCluster, type RedisServer } from './helpers/redis.js';

const key = (guid: string) => `autocode:{${guid}}:events`;

/** A bus as the gateway builds it, recording what it delivers and what it logs. */
function busOn(redis: RedisBusOptions['redis'], extra: Partial<RedisBusOptions> = {}) {
  const received = new Map<string, string[]>();
  const logLines: string[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) });
  const bus: EventBus = createRedisBus(
    (guid: string, events: ProjectEvent[]) => {
      const ids = received.get(guid) ?? [];
      ids.push(...events.map((e) => e.id));
      received.set(guid, ids);
    },
    {
      redis,
      stream: { maxLen: 10000, ttlS: 0, maxAgeS: 0, historyPageSize: 500 },
      nodeId: `wake-${Math.random().toString(36).slice(2, 8)}`,
      log,
      dataLimits: DEFAULT_DATA_LIMITS,
      idempotencyWindowS: 60,
      ...extra,
    },
  );
  return { bus, received, logLines };
}

async function watchAll(bus: EventBus, guids: string[]): Promise<void> {
  for (let i = 0; i < guids.length; i += 200) await Promise.all(guids.slice(i, i + 200).map((g) => bus.watch(g)));
}

/** Subscribed keyspace channels on one server (the bus subscribes one per watched key it owns). */
async function channelCount(cli: (...args: string[]) => Promise<string>): Promise<number> {
  return Number(/pubsub_channels:(\d+)/.exec(await cli('INFO', 'stats'))?.[1] ?? 0);
}

const IDLE_WINDOW_MS = 3000;

describe('notify-keyspace-events flags', () => {
  it('adds only what is missing (K, and t unless A covers it) and keeps every flag already set', () => {
    expect(withRequiredFlags('')).toBe('Kt');
    expect(withRequiredFlags('Ex')).toBe('ExKt');
    expect(withRequiredFlags('KEA')).toBeNull();
    expect(withRequiredFlags('AE')).toBe('AEK');
    expect(withRequiredFlags('tK')).toBeNull();
  });
});

describe('standalone Redis: woken by keyspace notifications', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('an idle instance watching 2,000 projects sends a few small commands, then delivers an XADD at once', async () => {
    const { bus, received, logLines } = busOn({ url: redis.url, prefix: 'autocode' });
    try {
      const guids = Array.from({ length: 2000 }, () => randomGuid());
      await watchAll(bus, guids);
      await until(async () => (await channelCount(redis.cli)) === 2000, 10000, 'every watched stream subscribed');
      await until(() => bus.isReady(), 5000, 'bus ready');
      // The notification flags were added, not set from scratch.
      expect(await redis.cli('CONFIG', 'GET', 'notify-keyspace-events')).toMatch(/K/);
      expect(logLines.join('')).toMatch(/keyspace notifications/);

      const before = await commandStats(redis.cli);
      await new Promise((r) => setTimeout(r, IDLE_WINDOW_MS));
      const delta = statsDelta(before, await commandStats(redis.cli));
      // Health PINGs (2/s), no XREAD carrying 2,000 keys (~130 KB each when polling). The resync
      // (every 15 s: one script per master) falls outside this window; the bench counts it.
      expect(totalCalls(delta), JSON.stringify([...delta])).toBeLessThanOrEqual((IDLE_WINDOW_MS / 1000) * 6);
      expect(delta.get('xread') ?? 0).toBe(0);
      expect(delta.get('net_input_bytes') ?? 0).toBeLessThan(10_000);

      const target = guids[1234]!;
      const id = await redis.cli('XADD', key(target), '*', 'type', 'project_message', 'data', '{"woken":true}');
      await until(() => received.get(target)?.length === 1, 5000, 'event delivered');
      expect(received.get(target)).toEqual([id]);
      expect([...received.keys()]).toEqual([target]);
    } finally {
      await bus.close();
    }
  });

  it('when polling (REDIS_WAKEUP=poll) the same idle instance re-sends every watched key: what the check above rules out', async () => {
    const { bus } = busOn({ url: redis.url, prefix: 'autocode', wakeup: 'poll' }, { blockMs: 500 });
    try {
      await watchAll(bus, Array.from({ length: 2000 }, () => randomGuid()));
      const before = await commandStats(redis.cli);
      await new Promise((r) => setTimeout(r, IDLE_WINDOW_MS));
      const delta = statsDelta(before, await commandStats(redis.cli));
      expect(delta.get('xread') ?? 0).toBeGreaterThanOrEqual(2);
      expect(delta.get('net_input_bytes') ?? 0).toBeGreaterThan(200_000);
    } finally {
      await bus.close();
    }
  });

  it('finds an event whose notification was lost (flags removed by an operator) at the next resync, and restores the flags', async () => {
    const { bus, received } = busOn({ url: redis.url, prefix: 'autocode' }, { resyncMs: 500 });
    try {
      const guid = randomGuid();
      await bus.watch(guid);
      await until(async () => (await channelCount(redis.cli)) === 1, 5000, 'subscribed');
      await until(() => bus.isReady(), 5000, 'bus ready');
      await redis.cli('CONFIG', 'SET', 'notify-keyspace-events', '');
      const id = await redis.cli('XADD', key(guid), '*', 'type', 'project_message', 'data', '{}');
      await until(() => received.get(guid)?.length === 1, 10000, 'event found by the resync');
      expect(received.get(guid)).toEqual([id]);
      expect(await redis.cli('CONFIG', 'GET', 'notify-keyspace-events')).toMatch(/K/);
    } finally {
      await bus.close();
    }
  });

  it('re-reads after its subscriber connection is killed, so the event appended while nobody listened arrives', async () => {
    const { bus, received } = busOn({ url: redis.url, prefix: 'autocode' });
    const admin = new Redis(redis.url);
    try {
      const guid = randomGuid();
      await bus.watch(guid);
      await until(async () => (await channelCount(redis.cli)) === 1, 5000, 'subscribed');
      // One pipeline: Redis kills the subscriber, then appends with nobody subscribed, so this
      // event's notification is lost for sure; only the re-read after resubscribing can find it.
      const [, [, id]] = (await admin.pipeline().call('CLIENT', 'KILL', 'TYPE', 'pubsub').xadd(key(guid), '*', 'type', 'project_message', 'data', '{}').exec()) as [unknown, [unknown, string]];
      await until(() => received.get(guid)?.length === 1, 5000, 'event found by the re-read after resubscribing');
      expect(received.get(guid)).toEqual([id]);
      await until(async () => (await channelCount(redis.cli)) === 1, 5000, 'subscribed again');
      const next = await redis.cli('XADD', key(guid), '*', 'type', 'project_message', 'data', '{}');
      await until(() => received.get(guid)?.length === 2, 5000, 'woken again by a notification');
      expect(received.get(guid)).toEqual([id, next]);
    } finally {
      admin.disconnect();
      await bus.close();
    }
  });

  it('keeps the operator\'s notify-keyspace-events flags and only adds K and t', async () => {
    await redis.cli('CONFIG', 'SET', 'notify-keyspace-events', 'Ex');
    const { bus } = busOn({ url: redis.url, prefix: 'autocode' });
    try {
      await bus.watch(randomGuid());
      await until(async () => /K/.test(await redis.cli('CONFIG', 'GET', 'notify-keyspace-events')), 5000, 'flags added');
      const flags = (await redis.cli('CONFIG', 'GET', 'notify-keyspace-events')).split('\n')[1]!;
      for (const f of ['K', 'E', 'x', 't']) expect(flags).toContain(f);
    } finally {
      await bus.close();
    }
  });
});

describe('Redis that forbids CONFIG (as managed services do)', () => {
  it('logs one line saying it falls back to polling, and still delivers', async () => {
    const redis = await startRedis({ args: ['--rename-command', 'CONFIG', ''] });
    const { bus, received, logLines } = busOn({ url: redis.url, prefix: 'autocode' });
    try {
      const guid = randomGuid();
      await bus.watch(guid);
      await until(() => logLines.some((l) => /falling back to polling/.test(l)), 5000, 'fallback logged');
      expect(logLines.filter((l) => /falling back to polling/.test(l))).toHaveLength(1);
      const id = await redis.cli('XADD', key(guid), '*', 'type', 'project_message', 'data', '{}');
      await until(() => received.get(guid)?.length === 1, 5000, 'event delivered by polling');
      expect(received.get(guid)).toEqual([id]);
      expect(bus.isReady()).toBe(true);
    } finally {
      await bus.close();
      await redis.stop();
    }
  });
});

describe('Redis Cluster: woken by keyspace notifications on the owning master', () => {
  let cluster: RedisCluster;
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 });
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });
  const allStats = async () => Promise.all(cluster.ports.map((p) => commandStats((...a) => cluster.cli(p, ...a))));
  const sumDelta = (before: Map<string, number>[], after: Map<string, number>[]) => {
    const total = new Map<string, number>();
    before.forEach((b, i) => {
      for (const [name, n] of statsDelta(b, after[i]!)) total.set(name, (total.get(name) ?? 0) + n);
    });
    return total;
  };

  it('an idle instance watching 1,000 projects on three masters sends a few commands/s, and wakes on an XADD on any master', async () => {
    const { bus, received } = busOn({ clusterNodes: cluster.nodes, prefix: 'autocode' });
    try {
      const guids = Array.from({ length: 1000 }, () => randomGuid());
      await watchAll(bus, guids);
      await until(async () => (await Promise.all(cluster.ports.map((p) => channelCount((...a) => cluster.cli(p, ...a))))).reduce((a, b) => a + b) === 1000, 10000, 'every watched stream subscribed on its master');
      await until(() => bus.isReady(), 5000, 'bus ready');

      const before = await allStats();
      await new Promise((r) => setTimeout(r, IDLE_WINDOW_MS));
      const delta = sumDelta(before, await allStats());
      // Health PINGs and a slot-table refresh every 2 s; polling sends ~1,000 XREADs every 5 ms.
      expect(totalCalls(delta), JSON.stringify([...delta])).toBeLessThanOrEqual((IDLE_WINDOW_MS / 1000) * 6);
      expect(delta.get('xread') ?? 0).toBe(0);

      const owners = new Map<number, string>();
      for (const g of guids) {
        const port = await masterPortForKey(cluster, key(g));
        if (!owners.has(port)) owners.set(port, g);
        if (owners.size === 3) break;
      }
      const ids = new Map<string, string>();
      for (const [port, g] of owners) ids.set(g, await cluster.cli(port, 'XADD', key(g), '*', 'type', 'project_message', 'data', '{}'));
      await until(() => [...ids.keys()].every((g) => received.get(g)?.length === 1), 5000, 'events delivered from every master');
      for (const [g, id] of ids) expect(received.get(g)).toEqual([id]);
    } finally {
      await bus.close();
    }
  });

  it('when polling the same idle instance sends thousands of XREADs: what the check above rules out', async () => {
    const { bus } = busOn({ clusterNodes: cluster.nodes, prefix: 'autocode', wakeup: 'poll' });
    try {
      await watchAll(bus, Array.from({ length: 1000 }, () => randomGuid()));
      const before = await allStats();
      await new Promise((r) => setTimeout(r, IDLE_WINDOW_MS));
      const delta = sumDelta(before, await allStats());
      expect(delta.get('xread') ?? 0).toBeGreaterThan(1000);
    } finally {
      await bus.close();
    }
  });

  it('finds events whose notifications were lost on every master at the next resync (one script per master)', async () => {
    const { bus, received } = busOn({ clusterNodes: cluster.nodes, prefix: 'autocode' }, { resyncMs: 500 });
    try {
      const guids = Array.from({ length: 30 }, () => randomGuid());
      await watchAll(bus, guids);
      await until(async () => (await Promise.all(cluster.ports.map((p) => channelCount((...a) => cluster.cli(p, ...a))))).reduce((a, b) => a + b) === 30, 10000, 'subscribed');
      await until(() => bus.isReady(), 5000, 'bus ready');
      await Promise.all(cluster.ports.map((p) => cluster.cli(p, 'CONFIG', 'SET', 'notify-keyspace-events', '')));
      const ids = new Map<string, string>();
      for (const g of guids) ids.set(g, await cluster.cli(await masterPortForKey(cluster, key(g)), 'XADD', key(g), '*', 'type', 'project_message', 'data', '{}'));
      await until(() => guids.every((g) => received.get(g)?.length === 1), 10000, 'events found by the resync');
      for (const [g, id] of ids) expect(received.get(g)).toEqual([id]);
      for (const p of cluster.ports) expect(await cluster.cli(p, 'CONFIG', 'GET', 'notify-keyspace-events')).toMatch(/K/);
    } finally {
      await bus.close();
    }
  });
});
