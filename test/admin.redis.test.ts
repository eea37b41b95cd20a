import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, producerToken, randomGuid, SECRET, until, userToken, type TestClient } from './helpers/gateway.js';
import { adminCall, tryUpgrade } from './helpers/admin.js';
import { freePorts } from './helpers/ports.js';
import { spawnGateway, type GatewayProcess } from './helpers/processes.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { connectOnWorker } from './helpers/workers.js';

/**
 * The server API across instances: two gateway processes on one Redis, A with two worker threads
 * and B with one. Actions are issued on A and must take effect on B's sockets (and on both of A's
 * threads) within a second; sanctions are kept in Redis, so B restarted still enforces them.
 */

const within = <T>(p: Promise<T>, ms: number) => Promise.race([p, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms))]);

describe('server API across two instances on Redis', () => {
  let redis: RedisServer;
  let a: GatewayProcess;
  let b: GatewayProcess;
  let bPort: number;
  const envOf = (port: number, nodeId: string, workers: string) => ({
    PORT: String(port),
    HOST: '127.0.0.1',
    JWT_SECRET: SECRET,
    REDIS_URL: redis.url,
    LOG_LEVEL: 'warn',
    NODE_ID: nodeId,
    WORKERS: workers,
    REVOCATION_TTL_S: '60',
  });

  beforeAll(async () => {
    redis = await startRedis();
    const [aPort, port] = await freePorts(2);
    bPort = port!;
    [a, b] = await Promise.all([spawnGateway(envOf(aPort!, 'gw-a', '2'), { timeoutMs: 30_000 }), spawnGateway(envOf(bPort, 'gw-b', '1'), { timeoutMs: 30_000 })]);
    // Both of A's threads subscribed: info counts three gateways.
    await until(async () => (await adminCall(a.url, 'GET', '/v1/admin/info')).body.nodes?.length === 3, 10_000, 'three gateways answering');
  }, 70_000);
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  it("a disconnect issued on A closes the user's sockets on B and on both of A's threads within a second", async () => {
    const user = `dis-${randomGuid()}`;
    const token = userToken('*', user);
    const sockets = [await connect(b.wsUrl, token), await connectOnWorker(a.wsUrl, token, 0), await connectOnWorker(a.wsUrl, token, 1)];
    const res = await adminCall(a.url, 'POST', '/v1/admin/disconnect', { userId: user, reason: 'bye' });
    expect(res.status).toBe(200);
    for (const s of sockets) expect(await within(s.closed, 1000)).toEqual({ code: 4403, reason: 'bye' });
  });

  it('a revocation issued on A takes effect on B within a second, and a re-join with the old token is refused on both', async () => {
    const user = `rev-${randomGuid()}`;
    const project = randomGuid();
    const oldToken = userToken('*', user);
    const onB = await connect(b.wsUrl, oldToken);
    await onB.join(project);
    const res = await adminCall(a.url, 'POST', '/v1/admin/revoke', { userId: user, projectGuid: project });
    expect(res.status).toBe(200);
    const left = await onB.next((f) => f.type === 'leave_project' && f.projectGuid === project, 1000);
    expect(left.data).toEqual({ reason: 'access_revoked' });
    const refusedOn = async (url: string, worker?: number) => {
      const s: TestClient = worker === undefined ? await connect(url, oldToken) : await connectOnWorker(url, oldToken, worker);
      const answer = await s.request({ type: 'join_project', id: 'j', projectGuid: project, data: {} });
      await s.close();
      return answer.data.code as string;
    };
    expect(await refusedOn(b.wsUrl)).toBe('ACCESS_REVOKED');
    expect(await refusedOn(a.wsUrl, 0)).toBe('ACCESS_REVOKED');
    expect(await refusedOn(a.wsUrl, 1)).toBe('ACCESS_REVOKED');
    await onB.close();
  });

  it('a block issued on A refuses upgrades on B with 403 until it ends, and still after B restarts', async () => {
    const user = `blk-${randomGuid()}`;
    const token = userToken('*', user);
    const onB = await connect(b.wsUrl, token);
    // Long enough for B's restart under a loaded machine (a start took up to 8 s at load average 17).
    const blockedUntil = Date.now() + 20_000;
    expect((await adminCall(a.url, 'POST', '/v1/admin/block', { userId: user, until: blockedUntil, reason: 'spam' })).status).toBe(200);
    expect(await within(onB.closed, 1000)).toEqual({ code: 4403, reason: 'spam' });
    expect(await tryUpgrade(b.wsUrl, token)).toMatchObject({ status: 403, code: 'USER_BLOCKED' });
    // Hostile entries beside it: a sanction whose value is not two numbers, a field of no known kind.
    const farFuture = String(Date.now() + 600_000);
    await redis.cli('SET', 'autocode:{admin}:sanction:b evil', 'not numbers');
    await redis.cli('ZADD', 'autocode:{admin}:sanctions', farFuture, 'b evil', farFuture, 'x what');
    // B restarts: it knows of the block only from Redis.
    await b.stop();
    b = await spawnGateway(envOf(bPort, 'gw-b', '1'), { timeoutMs: 30_000 });
    const afterRestart = await tryUpgrade(b.wsUrl, token);
    expect(Date.now(), 'B restarted before the block ended').toBeLessThan(blockedUntil);
    expect(afterRestart).toMatchObject({ status: 403, code: 'USER_BLOCKED' });
    expect((await tryUpgrade(b.wsUrl, userToken('*', 'evil'))).status).toBe(101);
    await new Promise((r) => setTimeout(r, blockedUntil - Date.now() + 50));
    expect((await tryUpgrade(b.wsUrl, token)).status).toBe(101);
    // And the key expired with the block.
    expect(await redis.cli('EXISTS', `autocode:{admin}:sanction:b ${user}`)).toBe('0');
  }, 60_000);

  it('messages on the admin channel that are not well formed are skipped; actions go on', async () => {
    const channel = 'autocode:{admin}:actions';
    for (const junk of ['not json', 'null', '{"o":"x"}', '{"o":"x","a":{"op":"disconnect","userId":""}}', '{"o":"x","a":{"op":"revoke","userId":"u","projectGuid":"nope","at":1,"expiresAt":2}}', '{"o":"x","q":{"id":"1","query":{"op":"presence","projectGuid":"bad"}}}', '{"o":"x","q":{"id":7,"query":{"op":"info"}}}']) {
      await redis.cli('PUBLISH', channel, junk);
    }
    const user = `after-junk-${randomGuid()}`;
    const onB = await connect(b.wsUrl, userToken('*', user));
    expect((await adminCall(a.url, 'POST', '/v1/admin/disconnect', { userId: user })).status).toBe(200);
    expect(await within(onB.closed, 1000)).toMatchObject({ code: 4403 });
    expect(b.output()).toMatch(/malformed admin/);
  });

  it('history pages read on B join up with a resume on B, and say recovered: false once the stream was trimmed past since', async () => {
    const project = randomGuid();
    const publish = await fetch(`${a.url}/v1/projects/${project}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${producerToken()}` },
      body: JSON.stringify({ events: Array.from({ length: 12 }, (_, i) => ({ type: 'project_message', data: { i } })) }),
    });
    const { ids } = (await publish.json()) as { ids: string[] };
    const paged: string[] = [];
    for (let cursor: string | null = ids[1]!; cursor; ) {
      const page: Awaited<ReturnType<typeof adminCall>> = await adminCall(b.url, 'GET', `/v1/admin/projects/${project}/history?since=${cursor}&limit=4`);
      expect(page.body.recovered).toBe(true);
      paged.push(...page.body.events.map((e: { id: string }) => e.id));
      cursor = page.body.next;
    }
    const resumed = await connect(b.wsUrl, userToken());
    await resumed.join(project, ids[1]);
    expect((await resumed.waitForEvents(project, 10)).map((e) => e.id)).toEqual(paged);
    await resumed.close();
    await redis.cli('XTRIM', `autocode:{${project}}:events`, 'MAXLEN', '5');
    const trimmed = await adminCall(b.url, 'GET', `/v1/admin/projects/${project}/history?since=${ids[1]}`);
    expect(trimmed.body, JSON.stringify(trimmed.body).slice(0, 300)).toMatchObject({ recovered: false });
    expect(trimmed.body.events.map((e: { id: string }) => e.id)).toEqual(ids.slice(7));
    // Newest first: paging back no longer reaches the project's first event (XTRIM is not in the stream's
    // max-deleted-entry-id; its entries-added against the length tells).
    const newest = await adminCall(b.url, 'GET', `/v1/admin/projects/${project}/history?order=newest`);
    expect(newest.body, JSON.stringify(newest.body).slice(0, 300)).toMatchObject({ recovered: false });
    expect(newest.body.events.map((e: { id: string }) => e.id)).toEqual(ids.slice(7).reverse());

    // Everything trimmed: a socket resuming from an id before the last is told it missed events, not recovered.
    await redis.cli('XTRIM', `autocode:{${project}}:events`, 'MAXLEN', '0');
    const late = await connect(b.wsUrl, userToken());
    const ack = await late.join(project, ids[9]);
    expect(ack.data).toMatchObject({ recovered: false, replayed: 0 });
    await late.close();
    const current = await connect(b.wsUrl, userToken());
    expect((await current.join(project, ids[11])).data).toMatchObject({ recovered: true, replayed: 0 });
    await current.close();
  });

  it('presence and info count the sockets of both instances and all three gateways', async () => {
    const project = randomGuid();
    const [alice, bob] = [`alice-${randomGuid()}`, `bob-${randomGuid()}`];
    const sockets = [
      await connect(b.wsUrl, userToken('*', alice)),
      await connectOnWorker(a.wsUrl, userToken('*', alice), 0),
      await connectOnWorker(a.wsUrl, userToken('*', bob), 1),
    ];
    for (const s of sockets) await s.join(project);
    const presence = await adminCall(a.url, 'GET', `/v1/admin/projects/${project}/presence`);
    expect(presence.body).toMatchObject({
      projectGuid: project,
      users: [
        { userId: alice, connections: 2 },
        { userId: bob, connections: 1 },
      ],
      connections: 3,
      nodes: 3,
    });
    const info = await adminCall(b.url, 'GET', '/v1/admin/info');
    expect(info.body.nodes.map((n: { node: string }) => n.node)).toEqual(['gw-a.w0', 'gw-a.w1', 'gw-b']);
    await until(async () => (await adminCall(b.url, 'GET', '/v1/admin/info')).body.connections === 3, 3000, 'info counting the three sockets');
    await Promise.all(sockets.map((s) => s.close()));
  });
});
