import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, randomGuid, startGateway, userToken, type StartedGateway } from './helpers/gateway.js';
import { masterPortForKey, startRedisCluster, type RedisCluster } from './helpers/redis.js';

const key = (guid: string) => `autocode:{${guid}}:events`;

describe('Redis Cluster (three masters)', () => {
  let cluster: RedisCluster;
  let gws: StartedGateway[];
  const projects: { guid: string; port: number }[] = [];

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 });
    // Pick projects until every master owns at least two of them.
    const perMaster = new Map<number, number>();
    while (projects.length < 6) {
      const guid = randomGuid();
      const port = await masterPortForKey(cluster, key(guid));
      if ((perMaster.get(port) ?? 0) >= 2) continue;
      perMaster.set(port, (perMaster.get(port) ?? 0) + 1);
      projects.push({ guid, port });
    }
    const nodes = cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',');
    gws = await Promise.all([0, 1].map((i) => startGateway({ REDIS_CLUSTER_NODES: nodes, NODE_ID: `cluster-${i}` })));
  }, 60_000);
  afterAll(async () => {
    await Promise.all((gws ?? []).map((g) => g.close()));
    await cluster?.stop();
  });

  it('uses projects that live on different masters', () => {
    expect(new Set(projects.map((p) => p.port)).size).toBe(3);
  });

  it('publishes and delivers across projects on every master, from either instance', async () => {
    const [a, b] = gws as [StartedGateway, StartedGateway];
    const onB = await connect(b.wsUrl, userToken());
    for (const p of projects) await onB.join(p.guid);
    const published = new Map<string, string[]>();
    for (const p of projects) published.set(p.guid, await a.gw.publishMany(p.guid, Array.from({ length: 5 }, (_, i) => ({ type: 'project_message' as const, data: { i } }))));
    for (const p of projects) {
      const events = await onB.waitForEvents(p.guid, 5);
      expect(events.map((e) => e.id)).toEqual(published.get(p.guid));
    }
    // Each project's stream lives on the master that owns its slot.
    for (const p of projects) expect(Number(await cluster.cli(p.port, 'XLEN', key(p.guid)))).toBe(5);
    await onB.close();
  });

  it('resumes from since on the other instance for projects on every master', async () => {
    const [a, b] = gws as [StartedGateway, StartedGateway];
    const first = await connect(a.wsUrl, userToken());
    const lastSeen = new Map<string, string>();
    for (const p of projects) lastSeen.set(p.guid, (await first.join(p.guid)).data.latestId);
    await first.close();
    const missed = new Map<string, string[]>();
    for (const p of projects) missed.set(p.guid, await a.gw.publishMany(p.guid, Array.from({ length: 7 }, (_, i) => ({ type: 'project_stage_update' as const, data: { i } }))));
    // One appended straight to the owning master, as a producer would.
    const direct = await cluster.cli(projects[0]!.port, 'XADD', key(projects[0]!.guid), '*', 'type', 'project_message', 'data', '{"direct":true}');
    missed.get(projects[0]!.guid)!.push(direct);
    const second = await connect(b.wsUrl, userToken());
    for (const p of projects) {
      const ack = await second.join(p.guid, lastSeen.get(p.guid));
      expect(ack.data).toMatchObject({ recovered: true, replayed: missed.get(p.guid)!.length });
    }
    for (const p of projects) {
      const events = await second.waitForEvents(p.guid, missed.get(p.guid)!.length);
      expect(events.map((e) => e.id)).toEqual(missed.get(p.guid));
    }
    const live = await b.gw.publish(projects[1]!.guid, { type: 'project_message', data: { live: true } });
    const events = await second.waitForEvents(projects[1]!.guid, 8);
    expect(events.at(-1)!.id).toBe(live);
    await second.close();
  });
});
