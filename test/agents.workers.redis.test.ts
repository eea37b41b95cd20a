import { afterAll, afterEach, beforeAll, describe, it } from 'vitest';
import { startAgentsGateway, type AgentsGateway } from './helpers/agents-gateway.js';
import {
  expectConfirmedPositionOnAnyLink,
  expectFeedbackOnOneLinkAtATime,
  expectOfflineReplyKept,
  expectPresenceAcrossWorkers,
  expectPromptExit,
  expectRepliesToTheUserOnly,
} from './helpers/agents-promises.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

const CLAIM_IDLE_MS = 3000;
const SHARDS = 4;

/**
 * The agents relay in one WORKERS=2 process on Redis: each worker thread is an instance of its own
 * (its own link, feedback consumer, presence entry), as two processes would be.
 */
describe('agents relay, WORKERS=2 on Redis', () => {
  let redis: RedisServer;
  let fx: AgentsGateway;
  beforeAll(async () => {
    redis = await startRedis();
    fx = await startAgentsGateway({ workers: 2, redisUrl: redis.url, env: { FEEDBACK_CLAIM_IDLE_MS: String(CLAIM_IDLE_MS), FEEDBACK_STREAM_SHARDS: String(SHARDS) } });
  });
  afterEach(() => fx?.closeClients());
  afterAll(async () => {
    await fx?.stop();
    await redis?.stop();
  });

  it('keeps each feedback on one link at a time: a worker whose link drops resends its own unacked feedback, never what the other worker holds in flight', async () => {
    const undelivered = async () => {
      let total = 0;
      for (let s = 0; s < SHARDS; s++) total += Number(await redis.cli('XLEN', `autocode:{feedback:${s}}:stream`));
      return total;
    };
    await expectFeedbackOnOneLinkAtATime(fx, { claimIdleMs: CLAIM_IDLE_MS, status: 'accepted', undelivered });
  });

  it('delivers a reply to every connection of its user on both workers, whichever link it came on, and to nobody else', () => expectRepliesToTheUserOnly(fx));

  it('keeps replies for an offline user and hands them to their next connection, whichever worker takes it', () => expectOfflineReplyKept(fx));

  it('tells every link the presence of the whole process, with the same sequence numbers', () => expectPresenceAcrossWorkers(fx));

  it('resumes a subscribe on one worker\'s link from the position confirmed on the other\'s', () => expectConfirmedPositionOnAnyLink(fx));

  it('exits 0 within 200 ms of SIGTERM with agents links and a few clients, WORKERS=2 and WORKERS=1', async () => {
    // No worker thread may outlive its gateway: the pool would terminate it only after 2 s.
    for (const workers of [2, 1]) await expectPromptExit({ workers, redisUrl: redis.url, nodeId: `exit-${workers}`, withinMs: 200, everyMs: 1000 });
  });
});
