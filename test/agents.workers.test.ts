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

const CLAIM_IDLE_MS = 3000;

/**
 * The agents relay in one WORKERS=2 process without Redis: the in-process bus lives in the main
 * thread, each worker thread has its own agents link, and the promises of docs/agents.md hold for
 * the process as a whole, as they do for a single-thread gateway.
 */
describe('agents relay, WORKERS=2 without Redis', () => {
  let fx: AgentsGateway;
  beforeAll(async () => {
    fx = await startAgentsGateway({ workers: 2, env: { FEEDBACK_CLAIM_IDLE_MS: String(CLAIM_IDLE_MS) } });
  });
  afterEach(() => fx?.closeClients());
  afterAll(() => fx?.stop());

  it('queues each feedback in its worker and keeps it on one link at a time: a worker whose link drops resends its own, never the other worker\'s', async () => {
    // Stored and not acked, summed over the workers by /metrics.
    const undelivered = async () => {
      const text = await (await fetch(`${fx.gateway.url}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith('feedback_pending'));
      if (!line) throw new Error('no feedback_pending in /metrics');
      return Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    await expectFeedbackOnOneLinkAtATime(fx, { claimIdleMs: CLAIM_IDLE_MS, status: 'queued', undelivered });
  });

  it('delivers a reply to every connection of its user on both workers, whichever link it came on, and to nobody else', () => expectRepliesToTheUserOnly(fx));

  it('keeps replies for an offline user and hands them to their next connection, whichever worker takes it', () => expectOfflineReplyKept(fx));

  it('tells every link the presence of the whole process, with the same sequence numbers', () => expectPresenceAcrossWorkers(fx));

  it('resumes a subscribe on one worker\'s link from the position confirmed on the other\'s', () => expectConfirmedPositionOnAnyLink(fx));

  it('exits 0 within 200 ms of SIGTERM with agents links and a few clients, WORKERS=2 and WORKERS=1; within 1 s when the agents-server hangs', async () => {
    for (const workers of [2, 1]) await expectPromptExit({ workers, nodeId: `exit-${workers}`, withinMs: 200, everyMs: 1000 });
    // A hung agents-server answers no close: the link gives it 500 ms, then cuts the connection.
    await expectPromptExit({ workers: 2, nodeId: 'exit-stalled', withinMs: 1000, everyMs: 1500, stall: true });
  });
});
