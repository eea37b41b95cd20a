import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, randomGuid, startGateway, userToken, type StartedGateway } from './helpers/gateway.js';
import { adminCall, tryUpgrade } from './helpers/admin.js';
import { startRedisCluster, type RedisCluster } from './helpers/redis.js';

/**
 * The server API on a Redis Cluster (three masters): sanctions are stored with one script under the
 * {admin} hash tag and read back with MGET by an instance that starts later; queries wait the gather
 * window (a Cluster's PUBLISH does not say how many subscribers it reached) and still count everyone.
 */
describe('server API on a Redis Cluster', () => {
  let cluster: RedisCluster;
  let gws: StartedGateway[] = [];
  let nodes: string;

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 });
    nodes = cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',');
    gws = await Promise.all([0, 1].map((i) => startGateway({ REDIS_CLUSTER_NODES: nodes, NODE_ID: `cl-${i}` })));
  }, 60_000);
  afterAll(async () => {
    await Promise.all(gws.map((g) => g.close()));
    await cluster?.stop();
  });

  it('a block issued on one instance holds on the other and on an instance started after it; a disconnect reaches the other', async () => {
    const [a, b] = gws as [StartedGateway, StartedGateway];
    const user = `cl-${randomGuid()}`;
    const token = userToken('*', user);
    const onB = await connect(b.wsUrl, token);
    expect((await adminCall(a.httpUrl, 'POST', '/v1/admin/block', { userId: user, until: Date.now() + 60_000, reason: 'x' })).status).toBe(200);
    expect((await onB.closed).code).toBe(4403);
    expect(await tryUpgrade(b.wsUrl, token)).toMatchObject({ status: 403, code: 'USER_BLOCKED' });
    const late = await startGateway({ REDIS_CLUSTER_NODES: nodes, NODE_ID: 'cl-late' });
    gws.push(late);
    expect(await tryUpgrade(late.wsUrl, token)).toMatchObject({ status: 403, code: 'USER_BLOCKED' });
    const other = `cl-other-${randomGuid()}`;
    const onLate = await connect(late.wsUrl, userToken('*', other));
    expect((await adminCall(a.httpUrl, 'POST', '/v1/admin/disconnect', { userId: other })).status).toBe(200);
    expect((await onLate.closed).code).toBe(4403);
  }, 30_000);

  it('presence counts the sockets of every instance', async () => {
    const [a, b] = gws as [StartedGateway, StartedGateway];
    const project = randomGuid();
    const user = `p-${randomGuid()}`;
    const sockets = [await connect(a.wsUrl, userToken('*', user)), await connect(b.wsUrl, userToken('*', user))];
    for (const s of sockets) await s.join(project);
    const presence = await adminCall(b.httpUrl, 'GET', `/v1/admin/projects/${project}/presence`);
    expect(presence.body).toEqual({ projectGuid: project, users: [{ userId: user, connections: 2 }], connections: 2, nodes: gws.length });
    await Promise.all(sockets.map((s) => s.close()));
  });
});
