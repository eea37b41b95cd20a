import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, postEvent, randomGuid, SECRET, until, userToken, type TestClient } from './helpers/gateway.js';
import { startAgentsStandIn, type AgentsStandIn, type StandInOptions } from './helpers/agents-server.js';
import { freePort, freePorts } from './helpers/ports.js';
import { spawnGateway, type GatewayProcess } from './helpers/processes.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

const SHARDS = 4;
const CLAIM_IDLE_MS = 2000;
const PRESENCE_EXPIRY_MS = 3000;
const feedbackKey = (shard: number) => `autocode:{feedback:${shard}}:stream`;
const eventsKey = (guid: string) => `autocode:{${guid}}:events`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The agents relay against a stand-in agents-server (a real WebSocket server speaking docs/agents.md),
 * one real Redis and three gateway processes, as in production.
 */
describe('agents relay: three gateway processes, one Redis, a stand-in agents-server', () => {
  let redis: RedisServer;
  let agentsPort: number;
  let agents: AgentsStandIn | null = null;
  const gateways: GatewayProcess[] = [];
  const clients: TestClient[] = [];

  const env = (node: string, port: number): Record<string, string> => ({
    PORT: String(port),
    HOST: '127.0.0.1',
    JWT_SECRET: SECRET,
    REDIS_URL: redis.url,
    LOG_LEVEL: 'warn',
    NODE_ID: node,
    AGENTS_URL: `ws://127.0.0.1:${agentsPort}/gateway`,
    AGENTS_RECONNECT_MAX_MS: '400',
    AGENTS_HEARTBEAT_MS: '1000',
    FEEDBACK_STREAM_SHARDS: String(SHARDS),
    FEEDBACK_CLAIM_IDLE_MS: String(CLAIM_IDLE_MS),
    PRESENCE_EXPIRY_MS: String(PRESENCE_EXPIRY_MS),
    RATE_LIMIT_PER_S: '1000',
    RATE_LIMIT_BURST: '1000',
  });
  const startInstance = async (i: number) => (gateways[i] = await spawnGateway(env(`gw-${i}`, await freePort())));
  /** (Re)starts the stand-in on the port every gateway points at. */
  const startAgents = async (options: StandInOptions = {}) => {
    await agents?.stop();
    agents = await startAgentsStandIn({ port: agentsPort, ...options });
    return agents;
  };
  const stopAgents = async () => {
    await agents?.stop();
    agents = null;
  };
  const user = async (gw: GatewayProcess, userId: string) => {
    const c = await connect(gw.wsUrl, userToken('*', userId));
    clients.push(c);
    return c;
  };
  const undelivered = async () => {
    let total = 0;
    for (let s = 0; s < SHARDS; s++) total += Number(await redis.cli('XLEN', feedbackKey(s)));
    return total;
  };
  /** Replies to each feedback (once: the stand-in dedupes) with a user_feedback_response addressed to its sender. */
  const replyToSender: StandInOptions['onFeedback'] = (fb, link, server) =>
    server.send(link, { type: 'user_feedback_response', projectGuid: fb.projectGuid, userId: fb.data.userId, id: fb.data.requestId, data: { feedbackId: fb.data.feedbackId, status: 'processed' } });

  beforeAll(async () => {
    redis = await startRedis();
    [agentsPort] = (await freePorts(1)) as [number];
    await Promise.all([0, 1, 2].map(startInstance));
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await stopAgents();
    await Promise.all(gateways.map((g) => g?.stop()));
    await redis?.stop();
  });

  it('stores 500 feedbacks sent on three instances while the agents-server is down, then delivers each once and replies to each sender', async () => {
    await stopAgents();
    const guid = randomGuid();
    const senders: { client: TestClient; userId: string }[] = [];
    for (let g = 0; g < 3; g++) for (let u = 0; u < 5; u++) senders.push({ client: await user(gateways[g]!, `fb-user-${g}-${u}`), userId: `fb-user-${g}-${u}` });

    const accepted = new Map<string, { client: TestClient; userId: string; requestId: string }>();
    await Promise.all(
      senders.map(async (s, i) => {
        const count = i < 500 % senders.length ? Math.ceil(500 / senders.length) : Math.floor(500 / senders.length);
        for (let n = 0; n < count; n++) {
          const requestId = `${s.userId}-req-${n}`;
          const res = await s.client.request({ type: 'user_feedback', id: requestId, projectGuid: guid, data: { content: `feedback ${n} from ${s.userId}` } }, 'user_feedback_response');
          expect(res.data).toMatchObject({ status: 'accepted', durable: true, accepted: true });
          accepted.set(res.data.feedbackId, { ...s, requestId });
        }
      }),
    );
    expect(accepted.size).toBe(500);
    // Accepted means stored: all 500 are in Redis before any agents-server exists.
    expect(await undelivered()).toBe(500);
    // Anyone can XADD: an entry the gateways did not write is logged and removed, never a poison pill.
    await redis.cli('XADD', feedbackKey(0), '*', 'junk', 'not a feedback');

    const standIn = await startAgents({ onFeedback: replyToSender });
    await until(() => standIn.processed.size >= 500, 20000, 'all 500 feedbacks at the agents-server');
    await until(async () => (await undelivered()) === 0, 10000, 'every feedback acked and removed from the outbox');
    expect(new Set(standIn.processed.keys())).toEqual(new Set(accepted.keys()));
    // None twice: every first delivery is a different feedback (a copy sent again would say redelivery: true).
    const firstDeliveries = standIn.deliveries.filter((d) => d.data.redelivery === false);
    expect(firstDeliveries.length).toBe(500);
    expect(new Set(firstDeliveries.map((d) => d.data.feedbackId)).size).toBe(500);
    const first = standIn.processed.get([...accepted.keys()][0]!)!;
    expect(first.data).toMatchObject({ projectGuid: guid, content: expect.stringMatching(/^feedback /), origin: expect.stringMatching(/^gw-\d$/), redelivery: false });

    // Every sender gets the targeted reply for each of its feedbacks, on the connection it used, once.
    for (const [feedbackId, s] of accepted) {
      const reply = await s.client.next((f) => f.type === 'user_feedback_response' && f.data.feedbackId === feedbackId && f.data.status === 'processed', 10000);
      expect(reply.id).toBe(s.requestId);
    }
    for (const s of senders) {
      const replies = s.client.envelopes.filter((f) => f.type === 'user_feedback_response' && f.data.status === 'processed');
      expect(replies.every((r) => accepted.get(r.data.feedbackId)?.userId === s.userId)).toBe(true);
      expect(new Set(replies.map((r) => r.data.feedbackId)).size).toBe(replies.length);
    }
  });

  it('redelivers 100 delivered but unacked feedbacks after the agents-server drops the links, and they dedupe by feedbackId', async () => {
    const replies: string[] = [];
    const standIn = await startAgents({ autoAck: false, onFeedback: (fb) => replies.push(fb.data.feedbackId) });
    await until(() => standIn.openLinks().length === 3, 5000, 'three links');
    const guid = randomGuid();
    const c = await user(gateways[1]!, 'dropper');
    const ids: string[] = [];
    for (let n = 0; n < 100; n++) {
      const res = await c.request({ type: 'user_feedback', id: `drop-${n}`, projectGuid: guid, data: { content: `unacked ${n}` } }, 'user_feedback_response');
      expect(res.data.status).toBe('accepted');
      ids.push(res.data.feedbackId);
    }
    await until(() => standIn.processed.size >= 100, 10000, '100 feedbacks delivered');
    expect(await undelivered()).toBe(100); // delivered, not acked: still in the outbox

    standIn.options.autoAck = true;
    standIn.dropLinks();
    await until(async () => (await undelivered()) === 0, 15000, 'redelivered feedback acked');
    for (const id of ids) {
      const copies = standIn.deliveries.filter((d) => d.data.feedbackId === id);
      expect(copies.length).toBeGreaterThanOrEqual(2);
      expect(copies.slice(1).every((d) => d.data.redelivery === true)).toBe(true);
    }
    // The agents-server processed each exactly once.
    expect(replies.sort()).toEqual([...ids].sort());
  });

  it('delivers a reply for a user on instance C, sent over instance A\'s link, to that user\'s connections only; keeps it for an offline user', async () => {
    const standIn = await startAgents();
    await until(() => !!standIn.linkOf('gw-0'), 5000, 'link of gw-0');
    const guid = randomGuid();
    const aliceOnC1 = await user(gateways[2]!, 'alice');
    const aliceOnC2 = await user(gateways[2]!, 'alice');
    const aliceOnB = await user(gateways[1]!, 'alice');
    const bobOnC = await user(gateways[2]!, 'bob');
    const bobOnA = await user(gateways[0]!, 'bob');
    await bobOnC.join(guid);
    await aliceOnC1.join(guid);
    // Both instances holding alice's connections have subscribed to her reply channel.
    await until(async () => (await redis.cli('PUBSUB', 'NUMSUB', 'autocode:{user:alice}:replies')).endsWith('2'), 5000, 'alice\'s reply channel subscribed on B and C');

    const linkA = standIn.linkOf('gw-0')!;
    standIn.send(linkA, { type: 'user_feedback_response', projectGuid: guid, userId: 'alice', id: 'req-42', data: { feedbackId: 'f-42', text: 'for alice only' } });
    for (const c of [aliceOnC1, aliceOnC2, aliceOnB]) {
      const got = await c.next((f) => f.type === 'user_feedback_response' && f.data.text === 'for alice only');
      expect(got).toMatchObject({ projectGuid: guid, id: 'req-42' });
    }
    await until(() => linkA.frames.some((f) => f.type === 'reply_status' && f.id === 'req-42'), 5000, 'reply status');
    expect(linkA.frames.find((f) => f.type === 'reply_status' && f.id === 'req-42')!.data).toEqual({ userId: 'alice', outcome: 'live' });
    // A direct agent_message is targeted too; it is not published to the room.
    standIn.send(linkA, { type: 'agent_message', projectGuid: guid, userId: 'alice', id: 'dm-1', data: { text: 'direct' } });
    await aliceOnC1.next((f) => f.type === 'agent_message' && f.data.text === 'direct');
    await sleep(300);
    for (const c of [bobOnC, bobOnA]) expect(c.envelopes.filter((f) => f.type === 'user_feedback_response' || f.type === 'agent_message')).toEqual([]);

    // Nobody is connected as carol: the reply is kept and delivered on her next connection.
    standIn.send(linkA, { type: 'user_feedback_response', projectGuid: guid, userId: 'carol', id: 'req-43', data: { text: 'while you were away' } });
    await until(() => linkA.frames.some((f) => f.type === 'reply_status' && f.id === 'req-43'), 5000, 'reply status');
    expect(linkA.frames.find((f) => f.type === 'reply_status' && f.id === 'req-43')!.data.outcome).toBe('stored');
    const carol = await user(gateways[1]!, 'carol');
    expect(await carol.next((f) => f.type === 'user_feedback_response')).toMatchObject({ id: 'req-43', data: { text: 'while you were away' } });

    // Hostile frames are answered with an error and skipped; the link stays up.
    standIn.send(linkA, 'not json');
    standIn.send(linkA, { type: 'user_feedback_response', projectGuid: guid, data: {} }); // no userId
    standIn.send(linkA, { type: 'agent_message', projectGuid: guid, userId: 'alice', data: { deep: JSON.parse('['.repeat(40) + ']'.repeat(40)) } });
    standIn.send(linkA, { type: 'feedback_ack', data: { feedbackIds: 'nope' } });
    await until(() => linkA.frames.filter((f) => f.type === 'error').length >= 4, 5000, 'four error frames');
    expect(linkA.frames.filter((f) => f.type === 'error').map((f) => f.data.code)).toEqual(['INVALID_FRAME', 'INVALID_FRAME', 'INVALID_DATA', 'INVALID_FRAME']);
    expect(linkA.ws.readyState).toBe(linkA.ws.OPEN);
  });

  it('sends project_update for a subscribed project\'s events appended with redis-cli XADD, in order, and resumes after a link outage with no gap', async () => {
    let standIn = await startAgents();
    await until(() => !!standIn.linkOf('gw-0'), 5000, 'link of gw-0');
    const guid = randomGuid();
    const xadd = (n: number) => redis.cli('XADD', eventsKey(guid), '*', 'type', 'project_stage_update', 'data', JSON.stringify({ n }));
    const before = await xadd(0); // before the subscription: not sent
    let link = standIn.linkOf('gw-0')!;
    standIn.send(link, { type: 'subscribe', id: 'sub-1', data: { projects: [{ projectGuid: guid }] } });
    await until(() => link.frames.some((f) => f.type === 'subscribed' && f.id === 'sub-1'), 5000, 'subscribed');
    const ids: string[] = [];
    for (let n = 1; n <= 5; n++) ids.push(await xadd(n));
    const updates = () => link.frames.filter((f) => f.type === 'project_update' && f.projectGuid === guid);
    await until(() => updates().length >= 5, 5000, 'five project_update frames');
    expect(updates().map((f) => f.data.eventId)).toEqual(ids);
    expect(updates().map((f) => f.data.event.n)).toEqual([1, 2, 3, 4, 5]);
    expect(updates()[0]!.data.eventType).toBe('project_stage_update');
    standIn.send(link, { type: 'project_update_ack', projectGuid: guid, data: { eventId: ids[4] } });
    await until(async () => (await redis.cli('HGET', 'autocode:{agents}:cursors', guid)) === ids[4], 5000, 'the confirmed position stored');

    // Outage: the agents-server is gone while five more events are appended (one through a gateway's HTTP API).
    await stopAgents();
    for (let n = 6; n <= 9; n++) ids.push(await xadd(n));
    const published = await postEvent(gateways[2]!.url, guid, { type: 'project_message', data: { n: 10 } });
    expect(published.status).toBe(202);
    ids.push(published.body.id);

    standIn = await startAgents();
    await until(() => !!standIn.linkOf('gw-1'), 5000, 'link of gw-1');
    link = standIn.linkOf('gw-1')!; // resume on another instance's link, from the confirmed id
    standIn.send(link, { type: 'subscribe', id: 'sub-2', data: { projects: [{ projectGuid: guid }] } });
    await until(() => updates().length >= 5, 5000, 'replayed updates');
    for (let n = 11; n <= 12; n++) ids.push(await xadd(n));
    await until(() => updates().length >= 7, 5000, 'live updates after the replay');
    expect(updates().map((f) => f.data.eventId)).toEqual(ids.slice(5));
    expect(link.frames.find((f) => f.type === 'subscribed' && f.id === 'sub-2')!.data).toMatchObject({ from: ids[4], replayed: 5, recovered: true });
    expect(updates().some((f) => f.data.eventId === before)).toBe(false);
    // The one appended through gw-2's HTTP API names its origin; a producer's own XADD names none.
    const origins = updates().map((f) => f.data.origin);
    expect(origins[ids.slice(5).indexOf(published.body.id)]).toBe('gw-2');
    expect(origins.filter((o) => o !== undefined)).toEqual(['gw-2']);
  });

  it('reports presence across three instances as a snapshot and as changes; a SIGKILLed instance\'s users disappear within the expiry', async () => {
    const standIn = await startAgents();
    await until(() => standIn.openLinks().length === 3, 5000, 'three links');
    const guid = randomGuid();
    const link = standIn.linkOf('gw-0')!;
    const changes = () => link.frames.filter((f) => f.type === 'project_status_sync' && f.data.kind === 'change' && f.projectGuid === guid);
    const users = () => changes().at(-1)?.data.users as string[] | undefined;
    const u1 = await user(gateways[0]!, 'p-u1');
    const u2 = await user(gateways[1]!, 'p-u2');
    const u3 = await user(gateways[2]!, 'p-u3');
    const u3b = await user(gateways[1]!, 'p-u3'); // the same user on two instances
    const u4 = await user(gateways[2]!, 'p-u4');
    for (const c of [u1, u2, u3, u3b, u4]) await c.join(guid);
    await until(() => users()?.join() === 'p-u1,p-u2,p-u3,p-u4', 5000, 'four users online');
    expect(changes().map((f) => f.data.joined).flat().sort()).toEqual(['p-u1', 'p-u2', 'p-u3', 'p-u4']);
    expect(changes().every((f, i, all) => i === 0 || f.data.seq > all[i - 1]!.data.seq)).toBe(true);

    await u2.request({ type: 'leave_project', id: 'leave-u2', projectGuid: guid });
    await until(() => users()?.join() === 'p-u1,p-u3,p-u4', 5000, 'p-u2 left');
    expect(changes().at(-1)!.data.left).toEqual(['p-u2']);

    // A new link gets a snapshot first.
    const snapshots = () => standIn.framesOf('project_status_sync', 'gw-2').filter((f) => f.data.kind === 'snapshot');
    const snapshotsBefore = snapshots().length;
    standIn.linkOf('gw-2')!.ws.terminate();
    await until(() => snapshots().length > snapshotsBefore, 5000, 'snapshot on the new link');
    const snapshot = snapshots().at(-1)!;
    expect(snapshot.projectGuid).toBeNull();
    expect(snapshot.data.projects.find((p: { projectGuid: string }) => p.projectGuid === guid)).toEqual({ projectGuid: guid, users: ['p-u1', 'p-u3', 'p-u4'] });

    // gw-2 dies without a word: p-u4 (only there) goes within the expiry plus one check interval;
    // p-u3 stays online through gw-1.
    const killedAt = Date.now();
    await gateways[2]!.stop('SIGKILL');
    await until(() => users()?.join() === 'p-u1,p-u3', PRESENCE_EXPIRY_MS * 2 + 3000, 'p-u4 removed after gw-2 died');
    expect(Date.now() - killedAt).toBeGreaterThan(PRESENCE_EXPIRY_MS / 2); // removed by expiry, not by anything gw-2 said
    expect(changes().at(-1)!.data.left).toEqual(['p-u4']);
    await startInstance(2);
  });

  it('hands feedback held by a SIGKILLed instance to another instance, which delivers it', async () => {
    const standIn = await startAgents({ autoAck: false, refuse: (node) => node !== 'gw-0' });
    await until(() => !!standIn.linkOf('gw-0'), 5000, 'only gw-0 linked');
    const guid = randomGuid();
    const c = await user(gateways[1]!, 'orphan');
    const ids: string[] = [];
    for (let n = 0; n < 20; n++) {
      const res = await c.request({ type: 'user_feedback', id: `o-${n}`, projectGuid: guid, data: { content: `held ${n}` } }, 'user_feedback_response');
      expect(res.data.status).toBe('accepted');
      ids.push(res.data.feedbackId);
    }
    await until(() => ids.every((id) => standIn.deliveredBy.get(id) === 'gw-0'), 10000, 'gw-0 holds all 20');

    await gateways[0]!.stop('SIGKILL');
    const deliveredBefore = standIn.deliveries.length;
    standIn.options.refuse = () => false;
    standIn.options.autoAck = true;
    await until(async () => (await undelivered()) === 0, CLAIM_IDLE_MS * 3 + 10000, 'orphaned feedback delivered by another instance and acked');
    const later = standIn.deliveries.slice(deliveredBefore);
    for (const id of ids) {
      const again = later.filter((d) => d.data.feedbackId === id);
      expect(again.length).toBeGreaterThanOrEqual(1);
      expect(again[0]!.data.redelivery).toBe(true);
    }
    const nodes = new Set(standIn.links.filter((l) => l.frames.some((f) => f.type === 'user_feedback' && ids.includes(f.data.feedbackId) && later.includes(f))).map((l) => l.node));
    expect(nodes.has('gw-0')).toBe(false);
    expect(nodes.size).toBeGreaterThanOrEqual(1);
    await startInstance(0);
  });
});
