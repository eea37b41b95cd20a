// A slot migrates between masters while a producer appends: keyspace notifications are node-local,
// so the gateways must follow the slot to its new master. Every event arrives, none twice.
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareIds } from '../src/protocol/event-id.js';
import { connect, randomGuid, startGateway, until, userToken, type StartedGateway, type TestClient } from './helpers/gateway.js';
import { masterPortForKey, startRedisCluster, type RedisCluster } from './helpers/redis.js';

const key = (guid: string) => `autocode:{${guid}}:events`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('Redis Cluster: a slot migrates while a producer appends', () => {
  let cluster: RedisCluster;
  let gws: StartedGateway[];
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 });
    const nodes = cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',');
    gws = await Promise.all([0, 1].map((i) => startGateway({ REDIS_CLUSTER_NODES: nodes, NODE_ID: `reshard-${i}` })));
  }, 60_000);
  afterAll(async () => {
    await Promise.all((gws ?? []).map((g) => g.close()));
    await cluster?.stop();
  });

  it('delivers every event exactly once, in order, to clients on both instances and to one resuming mid-migration', async () => {
    const [a, b] = gws as [StartedGateway, StartedGateway];
    const moving = randomGuid();
    const staying = randomGuid();
    const slot = Number(await cluster.cli(cluster.ports[0]!, 'CLUSTER', 'KEYSLOT', key(moving)));
    const source = await masterPortForKey(cluster, key(moving));
    const target = cluster.ports.find((p) => p !== source)!;
    const idOf = async (port: number) => cluster.cli(port, 'CLUSTER', 'MYID');
    const [sourceId, targetId] = [await idOf(source), await idOf(target)];

    const onA = await connect(a.wsUrl, userToken());
    const onB = await connect(b.wsUrl, userToken());
    for (const c of [onA, onB]) for (const g of [moving, staying]) await c.join(g);

    // The producer is any client that follows MOVED/ASK: here ioredis, one plain XADD per event.
    const producer = new Cluster(cluster.nodes);
    const appended = new Map<string, string[]>([[moving, []], [staying, []]]);
    let producing = true;
    const produce = (async () => {
      for (let i = 0; producing; i++) {
        const guid = i % 4 === 3 ? staying : moving;
        appended.get(guid)!.push((await producer.xadd(key(guid), '*', 'type', 'project_message', 'data', JSON.stringify({ i })))!);
        await sleep(2);
      }
    })();

    await sleep(300);
    // The documented manual resharding steps (CLUSTER SETSLOT + MIGRATE), slowly enough that the
    // producer writes through every phase: before, during (ASK to the target), after.
    await cluster.cli(target, 'CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', sourceId);
    await cluster.cli(source, 'CLUSTER', 'SETSLOT', String(slot), 'MIGRATING', targetId);
    await sleep(300);
    // A client joins with `since` while the slot is migrating.
    const resumeFrom = appended.get(moving)!.at(-1)!;
    const resumer = await connect(b.wsUrl, userToken());
    const resumeAck = await resumer.join(moving, resumeFrom);
    expect(resumeAck.data.recovered).toBe(true);
    const keys = (await cluster.cli(source, 'CLUSTER', 'GETKEYSINSLOT', String(slot), '100')).split('\n').filter(Boolean);
    expect(keys).toContain(key(moving));
    await cluster.cli(source, 'MIGRATE', '127.0.0.1', String(target), '', '0', '5000', 'KEYS', ...keys);
    await sleep(500);
    for (const port of [target, source, ...cluster.ports.filter((p) => p !== source && p !== target)]) {
      await cluster.cli(port, 'CLUSTER', 'SETSLOT', String(slot), 'NODE', targetId);
    }
    await until(async () => (await masterPortForKey(cluster, key(moving))) === target, 10000, 'slot owned by the target');
    await sleep(1000);
    // On a slow or busy machine the producer's 2 ms pauses stretch: it goes on (after the migration)
    // until the moving stream holds enough events for the check below to mean something.
    await until(() => appended.get(moving)!.length > 300, 20000, 'more than 300 events appended to the moving stream');
    producing = false;
    await produce;
    await producer.quit();

    // The stream now lives on the target, and both instances listen for it there.
    expect(Number(await cluster.cli(target, 'XLEN', key(moving)))).toBe(appended.get(moving)!.length);
    expect(await cluster.cli(source, 'EXISTS', key(moving))).toMatch(/MOVED/);
    await until(async () => Number((await cluster.cli(target, 'PUBSUB', 'NUMSUB', `__keyspace@0__:${key(moving)}`)).split('\n')[1]) === 2, 10000, 'both instances subscribed on the new owner');

    const expectAll = async (c: TestClient, guid: string, ids: string[]) => {
      await until(() => c.events(guid).length >= ids.length, 20000, `all ${ids.length} events of ${guid}`);
      await sleep(100);
      const got = c.events(guid).map((e) => e.id!);
      expect(new Set(got).size).toBe(got.length);
      expect(got).toEqual(ids);
    };
    const all = appended.get(moving)!;
    expect(all.length).toBeGreaterThan(300);
    for (const c of [onA, onB]) {
      await expectAll(c, moving, all);
      await expectAll(c, staying, appended.get(staying)!);
    }
    await expectAll(resumer, moving, all.filter((id) => compareIds(id, resumeFrom) > 0));

    // Live delivery keeps working on the new owner.
    const after = await cluster.cli(target, 'XADD', key(moving), '*', 'type', 'project_message', 'data', '{"after":true}');
    for (const c of [onA, onB]) await until(() => c.events(moving).at(-1)?.id === after, 5000, 'event after the migration');
    await Promise.all([onA.close(), onB.close(), resumer.close()]);
  }, 60_000);
});
