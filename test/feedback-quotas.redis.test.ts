import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisLedger } from '../src/agents/feedback-quotas-redis.js';
import { createRedisClient, type RedisClient } from '../src/redis/client.js';
import { until } from './helpers/gateway.js';
import { startRedis, startRedisCluster, type RedisServer } from './helpers/redis.js';
import type { FeedbackLedger } from '../src/agents/feedback-quotas.js';

const entry = (n: number, userId = 'u', projectGuid = 'P') => ({ feedbackId: `f-${userId}-${projectGuid}-${n}`, userId, projectGuid });

/** Quotas 5 per user, 8 per project, over three ledgers (three instances) at once. */
async function expectExactQuotas(makeLedger: () => FeedbackLedger, prefix: string, zcard: (key: string) => Promise<number>): Promise<void> {
  const instances = [makeLedger(), makeLedger(), makeLedger()];
  // 30 reserves of user u at once, spread over three connections: exactly 5 counted.
  const answers = await Promise.all(Array.from({ length: 30 }, (_, n) => instances[n % 3]!.reserve(entry(n))));
  expect(answers.filter((a) => a === null)).toHaveLength(5);
  expect(answers.filter((a) => a === 'user')).toHaveLength(25);
  expect(await zcard(`${prefix}:{user:u}:feedback-pending`)).toBe(5);
  // The 25 the user's quota refused were never counted in the project's set.
  expect(await zcard(`${prefix}:{P}:feedback-pending`)).toBe(5);
  // Other users fill project P to 8, then it refuses, and their own counts are (or are made) nothing.
  const others = await Promise.all(Array.from({ length: 6 }, (_, n) => instances[n % 3]!.reserve(entry(n, `v${n}`))));
  expect(others.filter((a) => a === null)).toHaveLength(3);
  expect(others.filter((a) => a === 'project')).toHaveLength(3);
  expect(await zcard(`${prefix}:{P}:feedback-pending`)).toBe(8);
  await until(async () => {
    let counted = 0;
    for (let n = 0; n < 6; n++) counted += await zcard(`${prefix}:{user:v${n}}:feedback-pending`);
    return counted === 3;
  }, 2000, 'refused users uncounted');
}

/**
 * The pending-feedback quotas in a real Redis (agents/feedback-quotas-redis.ts), below the outbox:
 * many instances counting at once never pass a quota; a duplicate release frees one place once; and
 * a count nobody releases (its instance died between two steps) stops counting after the heal time.
 */
describe('pending-feedback quotas in Redis', () => {
  let redis: RedisServer;
  const clients: RedisClient[] = [];
  const ledger = (prefix: string, healMs = 60_000, quotas = { perUser: 5, perProject: 8 }) => {
    const cmd = createRedisClient({ url: redis.url, prefix, wakeup: 'poll' }, `quota-${clients.length}`, 'cmd');
    clients.push(cmd);
    return createRedisLedger({ cmd, prefix, quotas, clustered: false, healMs, onReleaseError: (err) => { throw err; } });
  };
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await redis?.stop();
  });

  it('holds each quota exactly under concurrent reserves from several instances; a feedback refused by one quota never counts in the other', () =>
    expectExactQuotas(() => ledger('a'), 'a', async (key) => Number(await redis.cli('ZCARD', key))));

  it('frees one place per feedback however often it is released (a duplicate ack after a claim)', async () => {
    const l = ledger('b');
    for (let n = 0; n < 5; n++) expect(await l.reserve(entry(n))).toBeNull();
    expect(await l.reserve(entry(5))).toBe('user');
    l.release([entry(0)]);
    l.release([entry(0)]);
    ledger('b').release([entry(0)]);
    await until(async () => Number(await redis.cli('ZCARD', 'b:{user:u}:feedback-pending')) === 4, 2000, 'released');
    expect(await l.reserve(entry(6))).toBeNull();
    expect(await l.reserve(entry(7))).toBe('user');
  });

  it('heals a count nobody released: older than the heal time, it no longer counts, even while newer ones keep the set alive; the sets expire', async () => {
    const healMs = 2000;
    const l = ledger('c', healMs);
    // Three counted by an instance that then "died": nobody releases them.
    for (let n = 0; n < 3; n++) expect(await l.reserve(entry(n))).toBeNull();
    await new Promise((r) => setTimeout(r, 1200));
    // Two more (they refresh the set's TTL): the quota (5) is full.
    for (let n = 3; n < 5; n++) expect(await l.reserve(entry(n))).toBeNull();
    expect(await l.reserve(entry(5))).toBe('user');
    const ttl = Number(await redis.cli('PTTL', 'c:{user:u}:feedback-pending'));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(healMs);
    // Past the heal time of the first three (not of the set): they no longer count.
    await new Promise((r) => setTimeout(r, 1000));
    expect(await l.reserve(entry(6))).toBeNull();
    expect(Number(await redis.cli('ZCARD', 'c:{user:u}:feedback-pending'))).toBe(3);
    await until(async () => Number(await redis.cli('EXISTS', 'c:{user:u}:feedback-pending', 'c:{P}:feedback-pending')) === 0, healMs + 1000, 'the sets expired');
  });

  it('counts nothing (and asks Redis nothing) with both quotas off', async () => {
    const l = ledger('d', 60_000, { perUser: 0, perProject: 0 });
    for (let n = 0; n < 20; n++) expect(await l.reserve(entry(n))).toBeNull();
    expect(await redis.cli('KEYS', 'd:*')).toBe('');
  });
});

describe('pending-feedback quotas on a Redis Cluster (user and project sets in different slots)', () => {
  it('holds each quota exactly under concurrent reserves from several instances; a feedback refused by one quota never counts in the other', async () => {
    const cluster = await startRedisCluster({ masters: 3 });
    const clients: RedisClient[] = [];
    try {
      const config = { clusterNodes: cluster.nodes, prefix: 'k', wakeup: 'poll' as const };
      const reader = createRedisClient(config, 'quota-reader', 'cmd');
      clients.push(reader);
      const makeLedger = () => {
        const cmd = createRedisClient(config, `quota-${clients.length}`, 'cmd');
        clients.push(cmd);
        return createRedisLedger({ cmd, prefix: 'k', quotas: { perUser: 5, perProject: 8 }, clustered: true, healMs: 60_000, onReleaseError: (err) => { throw err; } });
      };
      await expectExactQuotas(makeLedger, 'k', async (key) => Number(await reader.call('ZCARD', key)));
    } finally {
      for (const c of clients) c.disconnect();
      await cluster.stop();
    }
  }, 60_000);
});
