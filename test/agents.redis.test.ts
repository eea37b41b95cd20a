import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, randomGuid, startGateway, until, userToken, type StartedGateway } from './helpers/gateway.js';
import { startAgentsStandIn, type AgentsStandIn } from './helpers/agents-server.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

/** The durable outbox when Redis itself fails: one in-process gateway, its own Redis, a stand-in agents-server. */
describe('agents relay when Redis fails', () => {
  let redis: RedisServer;
  let standIn: AgentsStandIn;
  let g: StartedGateway;
  beforeAll(async () => {
    redis = await startRedis();
    standIn = await startAgentsStandIn();
    g = await startGateway({ REDIS_URL: redis.url, AGENTS_URL: standIn.url, AGENTS_RECONNECT_MAX_MS: '300', FEEDBACK_CLAIM_IDLE_MS: '1000', PRESENCE_EXPIRY_MS: '1500' });
  });
  afterAll(async () => {
    await g?.close();
    await standIn?.stop();
    await redis?.stop();
  });

  it('refuses feedback it cannot store while Redis is down, and stores and delivers again after Redis comes back empty', async () => {
    await until(() => standIn.openLinks().length === 1, 5000, 'link');
    const guid = randomGuid();
    const c = await connect(g.wsUrl, userToken('*', 'dora'));
    const ok = await c.request({ type: 'user_feedback', id: 'before', projectGuid: guid, data: { content: 'before' } }, 'user_feedback_response');
    expect(ok.data.status).toBe('accepted');
    await until(() => standIn.processed.has(ok.data.feedbackId), 5000, 'first feedback delivered');

    await redis.kill();
    const refused = await c.request({ type: 'user_feedback', id: 'during', projectGuid: guid, data: { content: 'during' } }, 'user_feedback_response', 15000);
    // Not stored, so never "accepted": the user is told to retry.
    expect(refused).toMatchObject({ type: 'error', id: 'during', data: { code: 'UNAVAILABLE' } });

    // Redis restarts without its data: the consumer group is gone too and is created again.
    await redis.restart();
    let after: string | null = null;
    await until(
      async () => {
        const res = await c.request({ type: 'user_feedback', id: `after-${Date.now()}`, projectGuid: guid, data: { content: 'after' } }, 'user_feedback_response', 6000);
        if (res.type === 'user_feedback_response') after = res.data.feedbackId;
        return after !== null;
      },
      15000,
      'feedback accepted again',
    );
    await until(() => standIn.processed.has(after!), 10000, 'feedback after the restart delivered');
    expect([...standIn.processed.values()].some((f) => f.data.content === 'during')).toBe(false);
    await c.close();
  });

  it('keeps a subscription\'s watch when a room of the same project empties, and stops after unsubscribe', async () => {
    await until(() => standIn.openLinks().length === 1, 5000, 'link');
    const link = standIn.openLinks()[0]!;
    const guid = randomGuid();
    const updates = () => link.frames.filter((f) => f.type === 'project_update' && f.projectGuid === guid).map((f) => f.data.event.n);
    standIn.send(link, { type: 'subscribe', id: 'w-1', data: { projects: [{ projectGuid: guid }] } });
    await until(() => link.frames.some((f) => f.type === 'subscribed' && f.id === 'w-1'), 5000, 'subscribed');
    // A user joins and leaves: the room watches the project, then unwatches it.
    const c = await connect(g.wsUrl, userToken('*', 'ivy'));
    await c.join(guid);
    await g.gw.publish(guid, { type: 'project_message', data: { n: 1 } });
    await c.waitForEvents(guid, 1);
    await c.request({ type: 'leave_project', id: 'l-1', projectGuid: guid });
    await c.close();
    await g.gw.publish(guid, { type: 'project_message', data: { n: 2 } });
    await redis.cli('XADD', `autocode:{${guid}}:events`, '*', 'type', 'project_message', 'data', '{"n":3}');
    await until(() => updates().length >= 3, 5000, 'updates after the room emptied');
    expect(updates()).toEqual([1, 2, 3]);

    standIn.send(link, { type: 'unsubscribe', data: { projects: [guid] } });
    await new Promise((r) => setTimeout(r, 200));
    await g.gw.publish(guid, { type: 'project_message', data: { n: 4 } });
    await new Promise((r) => setTimeout(r, 500));
    expect(updates()).toEqual([1, 2, 3]);
  });

  it('delivers a reply kept while the reply subscriber was reconnecting to its connected user, without a reconnect of the user', async () => {
    await until(() => standIn.openLinks().length === 1, 5000, 'link');
    const link = standIn.openLinks()[0]!;
    const guid = randomGuid();
    const c = await connect(g.wsUrl, userToken('*', 'ike'));
    const subscribed = async () => (await redis.cli('PUBSUB', 'NUMSUB', 'autocode:{user:ike}:replies')).endsWith('1');
    await until(subscribed, 5000, 'ike\'s reply channel subscribed');
    // The subscriber connection drops (as when Redis restarts) while the command connection stays:
    // a reply sent before the channel is subscribed again has no receiver and is kept in the inbox.
    let stored: string | null = null;
    for (let attempt = 0; attempt < 20 && stored === null; attempt++) {
      const id = `kept-${attempt}`;
      await redis.cli('CLIENT', 'KILL', 'TYPE', 'pubsub');
      standIn.send(link, { type: 'agent_message', projectGuid: guid, userId: 'ike', id, data: { text: id } });
      await until(() => link.frames.some((f) => f.type === 'reply_status' && f.id === id), 5000, 'reply status');
      if (link.frames.find((f) => f.type === 'reply_status' && f.id === id)!.data.outcome === 'stored') stored = id;
      await until(subscribed, 5000, 'ike\'s reply channel subscribed again');
    }
    expect(stored, 'a reply sent while the subscriber was away was stored').not.toBeNull();
    // Once the channel is back, the instance holding ike's connection reads the inbox: nothing waits there.
    expect(await c.next((f) => f.type === 'agent_message' && f.id === stored, 5000)).toMatchObject({ data: { text: stored } });
    await until(async () => (await redis.cli('XLEN', 'autocode:{user:ike}:inbox')) === '0', 5000, 'inbox emptied');
    await c.close();
  });

  it('notices a presence change it never heard of (lost pub/sub message) and sends a fresh snapshot', async () => {
    await until(() => standIn.openLinks().length === 1, 5000, 'link');
    const link = standIn.openLinks()[0]!;
    const guid = randomGuid();
    const snapshots = () => link.frames.filter((f) => f.type === 'project_status_sync' && f.data.kind === 'snapshot');
    const before = snapshots().length;
    // A change recorded in Redis whose pub/sub message never arrived (as when a subscriber reconnects).
    await redis.cli('ZADD', 'autocode:{presence}:nodes', '99999999999999', 'ghost-node');
    await redis.cli('HSET', 'autocode:{presence}:node:ghost-node', `${guid} ghost-user`, '1');
    await redis.cli('INCR', 'autocode:{presence}:seq');
    try {
      await until(() => snapshots().length > before, 5000, 'a rebuilt snapshot');
      expect(snapshots().at(-1)!.data.projects.find((p: { projectGuid: string }) => p.projectGuid === guid)).toEqual({ projectGuid: guid, users: ['ghost-user'] });
    } finally {
      await redis.cli('ZREM', 'autocode:{presence}:nodes', 'ghost-node');
      await redis.cli('DEL', 'autocode:{presence}:node:ghost-node');
    }
  });

  it('rebuilds presence from the instances\' own counts after Redis comes back empty', async () => {
    await until(() => standIn.openLinks().length === 1, 5000, 'link');
    const link = standIn.openLinks()[0]!;
    const guid = randomGuid();
    const presenceOf = () => {
      // The latest word on the project: a change for it, or a snapshot (where its absence means nobody).
      const frame = link.frames.filter((f) => f.type === 'project_status_sync' && (f.data.kind === 'snapshot' || f.projectGuid === guid)).at(-1);
      if (!frame) return undefined;
      if (frame.data.kind === 'change') return frame.data.users.join();
      return (frame.data.projects.find((p: { projectGuid: string }) => p.projectGuid === guid)?.users ?? []).join();
    };
    const leaving = await connect(g.wsUrl, userToken('*', 'gus'));
    await leaving.join(guid);
    await until(() => presenceOf() === 'gus', 5000, 'gus online');

    await redis.kill();
    await leaving.close(); // recorded only locally: Redis is down
    const joining = await connect(g.wsUrl, userToken('*', 'hal'));
    await joining.join(guid).catch(() => undefined); // the room's join needs Redis; retried below
    await redis.restart();
    await until(
      async () => {
        const ack = await joining.request({ type: 'join_project', id: `j-${Date.now()}`, projectGuid: guid }, 'join_project', 3000).catch(() => null);
        return ack?.type === 'join_project';
      },
      15000,
      'hal joined after the restart',
    );
    await until(() => presenceOf() === 'hal', 10000, 'presence rebuilt: hal online, gus gone');
    await joining.close();
  });
});

describe('agents relay: graceful shutdown hands unacked feedback over', () => {
  it('lets another instance take over unacked feedback at once instead of after the claim idle time', async () => {
    const redis = await startRedis();
    const standIn = await startAgentsStandIn({ autoAck: false, refuse: (node) => node !== 'leaving' });
    const env = { REDIS_URL: redis.url, AGENTS_URL: standIn.url, AGENTS_RECONNECT_MAX_MS: '200', FEEDBACK_CLAIM_IDLE_MS: '60000' };
    const leaving = await startGateway({ ...env, NODE_ID: 'leaving' });
    const staying = await startGateway({ ...env, NODE_ID: 'staying' });
    try {
      await until(() => !!standIn.linkOf('leaving'), 5000, 'link of the leaving instance');
      const c = await connect(staying.wsUrl, userToken('*', 'fay'));
      const res = await c.request({ type: 'user_feedback', id: 'h-1', projectGuid: randomGuid(), data: { content: 'hand me over' } }, 'user_feedback_response');
      expect(res.data.status).toBe('accepted');
      const fid = res.data.feedbackId as string;
      await until(() => standIn.deliveredBy.get(fid) === 'leaving', 5000, 'delivered by the leaving instance, not acked');

      await leaving.close();
      standIn.options.refuse = () => false;
      standIn.options.autoAck = true;
      // Well before the 60 s claim idle time: the staying instance claims it on its first round.
      await until(() => standIn.deliveries.some((d) => d.data.feedbackId === fid && d.data.redelivery === true), 10000, 'redelivered by the staying instance');
      const undelivered = async () => (await Promise.all([0, 1, 2, 3].map((shard) => redis.cli('XLEN', `autocode:{feedback:${shard}}:stream`)))).reduce((sum, n) => sum + Number(n), 0);
      await until(async () => (await undelivered()) === 0, 5000, 'acked');
      const metrics = await (await fetch(`${staying.httpUrl}/metrics`)).text();
      expect(metrics).toMatch(/feedback_redeliveries_total\{[^}]*\} [1-9]/);
      expect(metrics).toMatch(/feedback_acked_total\{[^}]*\} [1-9]/);
      expect(metrics).toMatch(/agents_link_up\{[^}]*\} 1/);
      await c.close();
    } finally {
      await staying.close();
      await leaving.close();
      await standIn.stop();
      await redis.stop();
    }
  });
});

describe('agents relay: in-flight bound', () => {
  it('sends at most FEEDBACK_MAX_INFLIGHT unacked feedbacks over a link and the rest as acks come back', async () => {
    const redis = await startRedis();
    const standIn = await startAgentsStandIn({ autoAck: false });
    const g = await startGateway({ REDIS_URL: redis.url, AGENTS_URL: standIn.url, FEEDBACK_MAX_INFLIGHT: '10', FEEDBACK_CLAIM_IDLE_MS: '60000' });
    try {
      await until(() => standIn.openLinks().length === 1, 5000, 'link');
      const c = await connect(g.wsUrl, userToken('*', 'jon'));
      const guid = randomGuid();
      for (let n = 0; n < 25; n++) {
        const res = await c.request({ type: 'user_feedback', id: `b-${n}`, projectGuid: guid, data: { content: `n${n}` } }, 'user_feedback_response');
        expect(res.data.status).toBe('accepted');
      }
      await until(() => standIn.deliveries.length === 10, 5000, 'ten in flight');
      await new Promise((r) => setTimeout(r, 500));
      expect(standIn.deliveries.length).toBe(10);
      standIn.ackAll();
      await until(() => standIn.deliveries.length === 20, 5000, 'ten more after the acks');
      standIn.ackAll();
      await until(() => standIn.deliveries.length === 25, 5000, 'the last five');
      // One project's feedback, one link: first deliveries in acceptance order.
      expect(standIn.deliveries.map((d) => d.data.requestId)).toEqual(Array.from({ length: 25 }, (_, n) => `b-${n}`));
      await c.close();
    } finally {
      await g.close();
      await standIn.stop();
      await redis.stop();
    }
  });
});
