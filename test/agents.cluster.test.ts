import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, randomGuid, startGateway, until, userToken, type StartedGateway } from './helpers/gateway.js';
import { presenceOn, startAgentsStandIn, type AgentsStandIn } from './helpers/agents-server.js';
import { masterPortForKey, startRedisCluster, type RedisCluster } from './helpers/redis.js';

/** The agents relay on a three-master Redis Cluster: feedback shards on several masters, replies, presence. */
describe('agents relay on a Redis Cluster', () => {
  let cluster: RedisCluster;
  let standIn: AgentsStandIn;
  let gws: StartedGateway[];
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 });
    standIn = await startAgentsStandIn({
      onFeedback: (fb, link, server) => server.send(link, { type: 'user_feedback_response', projectGuid: fb.projectGuid, userId: fb.data.userId, id: fb.data.requestId, data: { feedbackId: fb.data.feedbackId, status: 'processed' } }),
    });
    const nodes = cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',');
    gws = await Promise.all([0, 1].map((i) => startGateway({ REDIS_CLUSTER_NODES: nodes, NODE_ID: `cl-${i}`, AGENTS_URL: standIn.url, FEEDBACK_STREAM_SHARDS: '8', RATE_LIMIT_BURST: '200' })));
  }, 60_000);
  afterAll(async () => {
    await Promise.all((gws ?? []).map((g) => g.close()));
    await standIn?.stop();
    await cluster?.stop();
  });

  it('spreads the feedback streams over the masters and delivers feedback, replies and presence', async () => {
    const masters = new Set(await Promise.all(Array.from({ length: 8 }, (_, i) => masterPortForKey(cluster, `autocode:{feedback:${i}}:stream`))));
    expect(masters.size).toBeGreaterThan(1);
    await until(() => standIn.openLinks().length === 2, 10000, 'two links');

    const guids = Array.from({ length: 6 }, randomGuid);
    const a = await connect(gws[0]!.wsUrl, userToken('*', 'kim'));
    const b = await connect(gws[1]!.wsUrl, userToken('*', 'lee'));
    for (const g of guids) await b.join(g);
    const ids: string[] = [];
    for (const [i, g] of guids.entries()) {
      const res = await a.request({ type: 'user_feedback', id: `c-${i}`, projectGuid: g, data: { content: `on ${g}` } }, 'user_feedback_response');
      expect(res.data.status).toBe('accepted');
      ids.push(res.data.feedbackId);
    }
    await until(() => ids.every((id) => standIn.processed.has(id)), 10000, 'feedback from every shard delivered');
    for (const id of ids) await a.next((f) => f.type === 'user_feedback_response' && f.data.feedbackId === id && f.data.status === 'processed');

    // lee (on cl-1) is online in every project, as any link reports.
    await until(() => standIn.openLinks().every((link) => guids.every((g) => presenceOn(link).get(g)?.includes('lee'))), 10000, 'presence on both links');
    await a.close();
    await b.close();
  });
});
