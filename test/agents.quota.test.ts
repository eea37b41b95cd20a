import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgentsGateway, type AgentsGateway } from './helpers/agents-gateway.js';
import { startAgentsStandIn, type AgentsStandIn } from './helpers/agents-server.js';
import { connect, randomGuid, SECRET, until, userToken, type Frame, type TestClient } from './helpers/gateway.js';
import { freePort } from './helpers/ports.js';
import { spawnGateway, type GatewayProcess } from './helpers/processes.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { metricSum, metricValue } from './helpers/topology.js';

/**
 * Pending-feedback quotas (issue 22): while the agents-server is away, one user flooding feedback
 * must not fill the store for everyone. The store here is small (40: FEEDBACK_MEMORY_QUEUE, or
 * FEEDBACK_STREAM_MAX on one shard), so without the quotas the flood fills it and the other user is
 * refused, which this test then fails on.
 */
const PER_USER = 10;
const PER_PROJECT = 15;
const STORE = 40;
const QUOTAS = { FEEDBACK_PENDING_PER_USER: String(PER_USER), FEEDBACK_PENDING_PER_PROJECT: String(PER_PROJECT) };
const STORE_BOUND = { FEEDBACK_MEMORY_QUEUE: String(STORE), FEEDBACK_STREAM_MAX: String(STORE), FEEDBACK_STREAM_SHARDS: '1' };
/** Feedback data above this is refused (data_limits); the feedback of the tests above is far smaller. */
const DATA_LIMIT = { MAX_EVENT_DATA_BYTES: '2048' };

/** Sockets of one user, spread over every worker (on a WORKERS=2 process the counts must be the process's, not a thread's). */
async function socketsOf(fx: AgentsGateway, userId: string, count: number): Promise<TestClient[]> {
  const out: TestClient[] = [];
  for (let i = 0; i < count; i++) out.push(fx.workers > 1 ? await fx.userOn(i % fx.workers, userId) : (await fx.user(userId)).client);
  return out;
}

/** Sends `perSocket` feedbacks on every socket at once; resolves every answer. */
async function flood(sockets: TestClient[], projectGuid: string, perSocket: number, tag: string): Promise<Frame[]> {
  const sent: Promise<Frame>[] = [];
  for (const [s, socket] of sockets.entries()) {
    for (let n = 0; n < perSocket; n++) sent.push(socket.request({ type: 'user_feedback', id: `${tag}-${s}-${n}`, projectGuid, data: { content: `${tag} ${s}/${n}` } }, 'user_feedback_response', 10_000));
  }
  return Promise.all(sent);
}

/**
 * feedback_refused_total by reason, summed over worker threads: the three refusals a user sees as
 * FEEDBACK_QUEUE_FULL (the code the alerts read), told apart.
 */
async function queueFullRefusals(fx: AgentsGateway): Promise<Record<'user_quota' | 'project_quota' | 'store_full', number>> {
  const text = await (await fetch(`${fx.gateway.url}/metrics`)).text();
  const count = (reason: string) => metricSum(text, 'feedback_refused_total', { code: 'FEEDBACK_QUEUE_FULL', reason });
  const counts = { user_quota: count('user_quota'), project_quota: count('project_quota'), store_full: count('store_full') };
  // Each series is there (at 0 before the first refusal): a missing one would make every sum below NaN.
  for (const [reason, n] of Object.entries(counts)) expect(n, reason).not.toBeNaN();
  return counts;
}

const taken = (answers: Frame[]) => answers.filter((a) => a.type === 'user_feedback_response');
const refused = (answers: Frame[]) => answers.filter((a) => a.type === 'error');

/**
 * `drained`: nothing counts as pending any more. Without Redis: /metrics says no feedback waits (a
 * worker releases its counts in the same turn its queue drops the acked ones, and its metrics answer
 * travels behind that release on the same port); with Redis: the user's and project's sets are empty.
 */
async function expectQuotasHold(fx: AgentsGateway, status: 'accepted' | 'queued', drained: () => Promise<boolean>): Promise<void> {
  const { standIn } = fx;
  // The agents-server goes away: every link is refused until it is back.
  standIn.options.refuse = () => true;
  standIn.dropLinks();
  await until(() => standIn.openLinks().length === 0, 5000, 'every link down');

  const before = await queueFullRefusals(fx);
  const flooded = randomGuid();
  const mallory = await socketsOf(fx, 'mallory', 4);
  const floods = await flood(mallory, flooded, 15, 'flood');
  // Exactly her quota is taken (over every worker together); the rest is refused, to her.
  expect(taken(floods)).toHaveLength(PER_USER);
  for (const a of taken(floods)) expect(a.data.status).toBe(status);
  expect(refused(floods)).toHaveLength(60 - PER_USER);
  for (const a of refused(floods)) expect(a.data).toMatchObject({ code: 'FEEDBACK_QUEUE_FULL', message: expect.stringContaining('FEEDBACK_PENDING_PER_USER') });

  // Another user of the flooded project meets the project's quota.
  const trudy = await socketsOf(fx, 'trudy', 2);
  const trudys = await flood(trudy, flooded, 5, 'same-project');
  expect(taken(trudys)).toHaveLength(PER_PROJECT - PER_USER);
  for (const a of refused(trudys)) expect(a.data).toMatchObject({ code: 'FEEDBACK_QUEUE_FULL', message: expect.stringContaining('FEEDBACK_PENDING_PER_PROJECT') });

  // A different user in a different project is not affected.
  const alice = await socketsOf(fx, 'alice', fx.workers);
  const alices = await flood(alice, randomGuid(), 3, 'other');
  expect(refused(alices)).toEqual([]);
  expect(taken(alices)).toHaveLength(3 * fx.workers);
  // The metrics tell the two quotas apart, and neither from a full store.
  expect(await queueFullRefusals(fx)).toEqual({ user_quota: before.user_quota + 60 - PER_USER, project_quota: before.project_quota + refused(trudys).length, store_full: before.store_full });

  // The agents-server comes back and acks everything it gets: every taken feedback is delivered,
  // nothing refused ever was, and the flooder's quota has room again.
  const accepted = [...taken(floods), ...taken(trudys), ...taken(alices)].map((a) => a.data.feedbackId as string);
  standIn.options.refuse = undefined;
  await until(() => standIn.openLinks().length === fx.workers, 10_000, 'links back');
  await until(() => accepted.every((id) => standIn.processed.has(id)), 10_000, 'every accepted feedback delivered');
  expect(standIn.processed.size).toBe(accepted.length);
  // Every count released (no leak), then a whole quota's worth at once is accepted again.
  await until(drained, 10_000, 'every pending count released');
  const refill = await flood(mallory.slice(0, 2), flooded, PER_USER / 2, 'refill');
  expect(refused(refill)).toEqual([]);
  await until(() => standIn.processed.size === accepted.length + PER_USER, 10_000, 'the refill delivered');
  await until(drained, 10_000, 'every pending count released after the refill');
  await fx.closeClients();
}

/**
 * The store's own bound (FEEDBACK_MEMORY_QUEUE for the process without Redis, FEEDBACK_STREAM_MAX for
 * the one shard with it): six users, each in a project of their own and within their quotas, fill it
 * exactly once; the rest is refused naming the bound, and delivered once the agents-server is back.
 */
async function expectStoreBoundHolds(fx: AgentsGateway, bound: 'FEEDBACK_MEMORY_QUEUE' | 'FEEDBACK_STREAM_MAX'): Promise<void> {
  const { standIn } = fx;
  const counted = await queueFullRefusals(fx);
  standIn.options.refuse = () => true;
  standIn.dropLinks();
  await until(() => standIn.openLinks().length === 0, 5000, 'every link down');
  // Six users, each in a project of their own, each sending their quota's worth from every worker.
  const answers = (
    await Promise.all(Array.from({ length: 6 }, async (_, u) => flood(await socketsOf(fx, `filler-${u}`, fx.workers), randomGuid(), PER_USER / fx.workers, `fill-${u}`)))
  ).flat();
  expect(taken(answers)).toHaveLength(STORE);
  for (const a of refused(answers)) expect(a.data).toMatchObject({ code: 'FEEDBACK_QUEUE_FULL', message: expect.stringContaining(bound) });
  // Counted as the full store, not as anyone's quota.
  expect(await queueFullRefusals(fx)).toEqual({ ...counted, store_full: counted.store_full + refused(answers).length });
  const before = standIn.processed.size;
  standIn.options.refuse = undefined;
  await until(() => standIn.processed.size === before + STORE, 10_000, 'the queued feedback delivered');
  await fx.closeClients();
}

for (const workers of [1, 2]) {
  describe(`pending-feedback quotas without Redis, WORKERS=${workers}`, () => {
    let fx: AgentsGateway;
    beforeAll(async () => {
      fx = await startAgentsGateway({ workers, nodeId: `quota-m${workers}`, env: { ...QUOTAS, ...STORE_BOUND, ...DATA_LIMIT } });
    });
    afterAll(() => fx?.stop());

    it('one user flooding while the agents-server is away gets FEEDBACK_QUEUE_FULL at their quota; another user in another project is accepted; the acks release the quota', () =>
      expectQuotasHold(fx, 'queued', async () => metricValue(await (await fetch(`${fx.gateway.url}/metrics`)).text(), 'feedback_pending') === 0));

    it('holds FEEDBACK_MEMORY_QUEUE for the process, whatever the number of threads: users within their quotas fill it exactly once', () => expectStoreBoundHolds(fx, 'FEEDBACK_MEMORY_QUEUE'));
  });

  describe(`pending-feedback quotas on Redis, WORKERS=${workers}`, () => {
    let redis: RedisServer;
    let fx: AgentsGateway;
    beforeAll(async () => {
      redis = await startRedis();
      fx = await startAgentsGateway({ workers, redisUrl: redis.url, nodeId: `quota-r${workers}`, env: { ...QUOTAS, ...STORE_BOUND, ...DATA_LIMIT } });
    });
    afterAll(async () => {
      await fx?.stop();
      await redis?.stop();
    });

    it('one user flooding while the agents-server is away gets FEEDBACK_QUEUE_FULL at their quota; another user in another project is accepted; the acks release the quota', () =>
      expectQuotasHold(fx, 'accepted', async () => Number(await redis.cli('EVAL', "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('ZCARD', k) end return n", '0', 'autocode:*:feedback-pending')) === 0));

    it('holds FEEDBACK_STREAM_MAX for the shard: users within their quotas fill it exactly once', () => expectStoreBoundHolds(fx, 'FEEDBACK_STREAM_MAX'));

    it('counts feedback over the data limits as data_limits, and feedback while Redis is down as store_unavailable', async () => {
      const refusals = async () => {
        const text = await (await fetch(`${fx.gateway.url}/metrics`)).text();
        return { data: metricSum(text, 'feedback_refused_total', { code: 'PAYLOAD_TOO_LARGE', reason: 'data_limits' }), store: metricSum(text, 'feedback_refused_total', { code: 'UNAVAILABLE', reason: 'store_unavailable' }) };
      };
      const before = await refusals();
      const { client } = await fx.user('oversize');
      const guid = randomGuid();
      const big = await client.request({ type: 'user_feedback', id: 'big', projectGuid: guid, data: { content: 'x'.repeat(3000) } }, 'user_feedback_response', 10_000);
      expect(big).toMatchObject({ type: 'error', data: { code: 'PAYLOAD_TOO_LARGE' } });
      expect(await refusals()).toEqual({ ...before, data: before.data + 1 });

      await redis.kill();
      try {
        const down = await client.request({ type: 'user_feedback', id: 'down', projectGuid: guid, data: { content: 'while Redis is down' } }, 'user_feedback_response', 20_000);
        // Refused, never "accepted" without the store: the client retries it later.
        expect(down).toMatchObject({ type: 'error', data: { code: 'UNAVAILABLE' } });
        await until(async () => (await refusals()).store === before.store + 1, 5000, 'the refusal counted as store_unavailable');
      } finally {
        await redis.restart();
      }
      await until(async () => (await fetch(`${fx.gateway.url}/readyz`)).status === 200, 15_000, 'ready again once Redis is back');
      await fx.closeClients();
    }, 60_000);
  });
}

describe('pending-feedback quotas on Redis, two instances, one killed with feedback in flight', () => {
  let redis: RedisServer;
  let standIn: AgentsStandIn;
  const gateways: GatewayProcess[] = [];
  const clients: TestClient[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    // Up, but acking nothing (what is sent stays pending), and for A only until A is gone.
    standIn = await startAgentsStandIn({ autoAck: false, refuse: (node) => node === 'qb' });
    for (const node of ['qa', 'qb']) {
      gateways.push(
        await spawnGateway({
          PORT: String(await freePort()),
          HOST: '127.0.0.1',
          JWT_SECRET: SECRET,
          LOG_LEVEL: 'warn',
          NODE_ID: node,
          REDIS_URL: redis.url,
          AGENTS_URL: standIn.url,
          AGENTS_RECONNECT_MAX_MS: '200',
          FEEDBACK_CLAIM_IDLE_MS: '1000',
          RATE_LIMIT_PER_S: '1000',
          RATE_LIMIT_BURST: '1000',
          ...QUOTAS,
        }),
      );
    }
    await until(() => standIn.openLinks().length === 1, 10_000, "A's link");
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(gateways.map((g) => g.stop()));
    await standIn?.stop();
    await redis?.stop();
  });

  it('counts a user over every instance, and a SIGKILLed instance leaves no count behind: the instance that delivers its feedback releases it', async () => {
    const [a, b] = gateways as [GatewayProcess, GatewayProcess];
    const onA = await connect(a.wsUrl, userToken('*', 'mallory'));
    const onB = await connect(b.wsUrl, userToken('*', 'mallory'));
    clients.push(onA, onB);
    const guid = randomGuid();
    const floods = await flood([onA], guid, 15, 'on-a');
    expect(taken(floods)).toHaveLength(PER_USER);
    // Her quota is the same on the other instance.
    const elsewhere = await flood([onB], guid, 1, 'on-b');
    expect(elsewhere[0]).toMatchObject({ type: 'error', data: { code: 'FEEDBACK_QUEUE_FULL', message: expect.stringContaining('FEEDBACK_PENDING_PER_USER') } });
    const ids = taken(floods).map((f) => f.data.feedbackId as string);
    await until(() => ids.every((id) => standIn.processed.has(id)), 10_000, 'all sent upstream, unacked');
    expect(ids.every((id) => standIn.deliveredBy.get(id) === 'qa')).toBe(true);

    // A dies with all of them sent and unacked (pending for A's consumer); from now on the
    // agents-server takes B's link and acks. B claims A's entries after FEEDBACK_CLAIM_IDLE_MS,
    // sends them again, gets the acks and releases them: the counts A took go with the feedback, not with A.
    await a.stop('SIGKILL');
    standIn.options.autoAck = true;
    standIn.options.refuse = undefined;
    const counted = async () => Number(await redis.cli('EVAL', "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('ZCARD', k) end return n", '0', 'autocode:*:feedback-pending'));
    await until(async () => (await counted()) === 0, 15_000, 'every count released after the takeover');
    expect(Number(await redis.cli('XLEN', 'autocode:{feedback:0}:stream')) + Number(await redis.cli('XLEN', 'autocode:{feedback:1}:stream')) + Number(await redis.cli('XLEN', 'autocode:{feedback:2}:stream')) + Number(await redis.cli('XLEN', 'autocode:{feedback:3}:stream'))).toBe(0);
    const again = await flood([onB], guid, PER_USER, 'after');
    expect(refused(again)).toEqual([]);
  });
});
