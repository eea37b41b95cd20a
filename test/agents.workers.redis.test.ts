import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomGuid, until } from './helpers/gateway.js';
import { startAgentsGateway, type AgentsGateway } from './helpers/agents-gateway.js';
import { expectPromptExit } from './helpers/agents-promises.js';
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
  const undelivered = async () => {
    let total = 0;
    for (let s = 0; s < SHARDS; s++) total += Number(await redis.cli('XLEN', `autocode:{feedback:${s}}:stream`));
    return total;
  };
  beforeAll(async () => {
    redis = await startRedis();
    fx = await startAgentsGateway({ workers: 2, redisUrl: redis.url, env: { FEEDBACK_CLAIM_IDLE_MS: String(CLAIM_IDLE_MS), FEEDBACK_STREAM_SHARDS: String(SHARDS) } });
  });
  afterAll(async () => {
    await fx?.stop();
    await redis?.stop();
  });

  it('keeps each feedback on one link at a time: a worker whose link drops resends its own unacked feedback, never what the other worker holds in flight', async () => {
    const { standIn } = fx;
    standIn.options.autoAck = false;
    try {
      // Links are told apart by their socket, not by name: the check must hold whatever the workers call themselves.
      const [linkA, linkB] = standIn.openLinks();
      expect(standIn.openLinks()).toHaveLength(2);
      const guid = randomGuid();
      const senders = [await fx.userOn(0, 'fb-w0'), await fx.userOn(1, 'fb-w1')];
      const start = Date.now();
      const ids: string[] = [];
      for (let n = 0; n < 10; n++) {
        for (const [w, c] of senders.entries()) {
          const res = await c.request({ type: 'user_feedback', id: `w${w}-${n}`, projectGuid: guid, data: { content: `from worker ${w}, ${n}` } }, 'user_feedback_response');
          expect(res.data.status).toBe('accepted');
          ids.push(res.data.feedbackId);
        }
      }
      await until(() => ids.every((id) => standIn.processed.has(id)), 5000, 'every feedback sent once');
      const carried = (link: typeof linkA) => new Set(link!.frames.filter((f) => f.type === 'user_feedback').map((f) => f.data.feedbackId as string));
      // The link holding more in flight stays; the other one is dropped (its worker reconnects).
      const [held, dropped] = carried(linkA).size >= carried(linkB).size ? [linkA!, linkB!] : [linkB!, linkA!];
      const heldIds = carried(held);
      const droppedIds = carried(dropped);
      expect(heldIds.size).toBeGreaterThan(0);
      expect(heldIds.size + droppedIds.size).toBe(ids.length); // each sent on exactly one link so far

      const linksBefore = standIn.links.length;
      dropped.ws.terminate();
      await until(() => standIn.links.length > linksBefore && standIn.openLinks().length === 2, 5000, 'the dropped worker linked again');
      const relinked = standIn.links.at(-1)!;
      // Its own unacked feedback goes out again on its new link, at once (the link it went out on is gone).
      await until(() => [...droppedIds].every((id) => carried(relinked).has(id)), 3000, 'the dropped link\'s feedback resent on the new link');
      await new Promise((r) => setTimeout(r, 300)); // a wrong resend of the held feedback would have come with it
      // Still before anything may be claimed: an entry is claimable CLAIM_IDLE_MS after its delivery.
      expect(Date.now() - start).toBeLessThan(CLAIM_IDLE_MS);
      expect(held.ws.readyState).toBe(held.ws.OPEN);
      const elsewhere = [...heldIds].filter((id) => standIn.links.some((l) => l !== held && carried(l).has(id)));
      expect(elsewhere, 'feedback in flight on the open link, sent again on another link').toEqual([]);
      for (const id of droppedIds) expect(relinked.frames.find((f) => f.type === 'user_feedback' && f.data.feedbackId === id)!.data.redelivery).toBe(true);
    } finally {
      standIn.options.autoAck = true;
      standIn.ackAll();
    }
    await until(async () => (await undelivered()) === 0, 5000, 'every feedback acked and removed');
  });

  it('exits 0 within 200 ms of SIGTERM with agents links and a few clients, WORKERS=2 and WORKERS=1', async () => {
    // No worker thread may outlive its gateway: the pool would terminate it only after 2 s.
    for (const workers of [2, 1]) await expectPromptExit({ workers, redisUrl: redis.url, nodeId: `exit-${workers}`, withinMs: 200 });
  });
});
