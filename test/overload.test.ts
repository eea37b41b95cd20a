// The overload bound end to end (issue 20): past FANOUT_MAX_DELAY_MS the HTTP API answers 503
// OVERLOADED with Retry-After and appends nothing; every event it did accept reaches every member.
import { afterEach, describe, expect, it } from 'vitest';
import { createEdgeStateMemory } from '../src/edge/admission.js';
import { openFanoutDelays } from '../src/edge/fanout-delay.js';
import { compareIds } from '../src/protocol/event-id.js';
import { connect, producerToken, startGateway, userToken, type StartedGateway, type TestClient } from './helpers/gateway.js';
import { overloadChannel } from '../src/redis/keys.js';
import { startRedis } from './helpers/redis.js';
import { metricValue, request, SHAPES, type Served } from './helpers/topology.js';

let gateway: StartedGateway | null = null;
let served: Served | null = null;
const clients: TestClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await gateway?.close();
  await served?.close();
  gateway = served = null;
});

const post = (guid: string, body: unknown) =>
  request(`${gateway!.httpUrl}/v1/projects/${guid}/events`, 'POST', body, { authorization: `Bearer ${producerToken()}` });

describe('overload bound', () => {
  it('answers 503 OVERLOADED with Retry-After while a project is behind, appends nothing, and accepts again once it caught up', async () => {
    // The process-wide table the fan-out threads report into; the test reports into it as a thread would.
    const env = { FANOUT_MAX_DELAY_MS: '200' };
    const edgeState = createEdgeStateMemory({ total: 1000 });
    gateway = await startGateway(env, { edgeState });
    const delays = openFanoutDelays(edgeState.fanoutDelays, 7);
    const behind = crypto.randomUUID();
    const other = crypto.randomUUID();
    const watcher = await connect(gateway.wsUrl, userToken());
    clients.push(watcher);
    await watcher.join(behind);

    delays.report(new Map([[behind, { ms: 250, bytes: 0 }]]));
    const refused = await post(behind, { events: [{ type: 'project_message', data: { n: 1 } }, { type: 'project_message', data: { n: 2 } }] });
    expect(refused.status).toBe(503);
    expect(refused.body.error.code).toBe('OVERLOADED');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // Another project is not held back.
    expect((await post(other, { type: 'project_message', data: { n: 0 } })).status).toBe(202);
    expect(metricValue(await gateway.gw.metrics.registry.metrics(), 'events_refused_overload_total')).toBe(2);

    // The thread reports the room caught up (0): accepted again at once.
    delays.report(new Map([[behind, { ms: 0, bytes: 0 }]]));
    const accepted = await post(behind, { type: 'project_message', data: { n: 3 } });
    expect(accepted.status).toBe(202);
    const got = await watcher.next((e) => e.projectGuid === behind && e.type === 'project_message');
    // Nothing of the refused batch was appended: the first event the room sees is the accepted one.
    expect(got.data).toEqual({ n: 3 });
    expect(got.id).toBe(accepted.body.id);
  });

  for (const shape of SHAPES) {
    it(`under a real flood (${shape.name}): some publishes are refused, and every accepted event reaches every member once, in order`, async () => {
      served = await shape.start({ FANOUT_MAX_DELAY_MS: '20', LOG_LEVEL: 'silent' });
      const guid = crypto.randomUUID();
      const members = await joinMembers(served.wsUrl, guid);
      const { acked, refusals } = await flood(served.httpUrl, guid);
      await expectEveryoneGot(members, guid, acked);
      expect(metricValue(await served.metrics(), 'events_refused_overload_total')).toBe(refusals * 100);
    }, 60_000);
  }

  it('with Redis, an instance whose fan-out is behind makes the others refuse that project too', async () => {
    const redis = await startRedis();
    try {
      const env = { REDIS_URL: redis.url, FANOUT_MAX_DELAY_MS: '20' };
      // The producer posts to A, where nobody watches; B's members fall behind, and A learns it.
      gateway = await startGateway(env);
      const b = await startGateway(env);
      try {
        const guid = crypto.randomUUID();
        // Anyone who can reach Redis can publish on the channel: what is malformed or out of bounds is skipped.
        const { Redis } = await import('ioredis');
        const writer = new Redis(redis.url);
        const channel = overloadChannel(gateway.config.redis!.prefix);
        for (const junk of ['not json', 'null', JSON.stringify({ o: 'x', g: [guid], d: [1e9] }), JSON.stringify({ o: 'x', g: [guid, guid], d: [900] }), JSON.stringify({ o: 'x', g: ['not-a-guid'], d: [900] })]) {
          await writer.publish(channel, junk);
        }
        await new Promise((r) => setTimeout(r, 50));
        expect((await request(`${gateway.httpUrl}/v1/projects/${guid}/events`, 'POST', { type: 'project_message', data: {} }, { authorization: `Bearer ${producerToken()}` })).status).toBe(202);
        await writer.quit();
        const members = await joinMembers(b.wsUrl, guid);
        const { acked, refusals } = await flood(gateway.httpUrl, guid);
        expect(refusals).toBeGreaterThan(0);
        expect(metricValue(await b.gw.metrics.registry.metrics(), 'events_refused_overload_total')).toBe(0);
        await expectEveryoneGot(members, guid, acked);
      } finally {
        for (const c of clients.splice(0)) c.close();
        await b.close();
      }
    } finally {
      await gateway?.close();
      gateway = null;
      await redis.stop();
    }
  }, 60_000);
});

/** 40 members of one room (10 users). */
async function joinMembers(wsUrl: string, guid: string): Promise<TestClient[]> {
  const members: TestClient[] = [];
  for (let i = 0; i < 40; i++) {
    const c = await connect(wsUrl, userToken('*', `member-${i % 10}`));
    clients.push(c);
    await c.join(guid);
    members.push(c);
  }
  return members;
}

/**
 * Four producers posting 100 × 4 KB events per request for 2 s: with 40 members each request is
 * 16 MB of fan-out, far more than a thread sends in a 20 ms bound, so the room falls behind within
 * a few requests. Every answer is a 202 or an OVERLOADED 503 with Retry-After.
 */
async function flood(httpUrl: string, guid: string): Promise<{ acked: string[]; refusals: number }> {
  const blob = 'x'.repeat(4000);
  const acked: string[] = [];
  let refusals = 0;
  const started = Date.now();
  let batch = 0;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (Date.now() - started < 2000) {
        const events = Array.from({ length: 100 }, (_, i) => ({ type: 'project_message', data: { blob, batch, i } }));
        batch++;
        const r = await request(`${httpUrl}/v1/projects/${guid}/events`, 'POST', { events }, { authorization: `Bearer ${producerToken()}` });
        if (r.status === 202) acked.push(...(r.body.ids as string[]));
        else if (r.status === 503 && r.body.error.code === 'OVERLOADED' && Number(r.headers['retry-after']) >= 1) refusals++;
        else throw new Error(`publish answered ${r.status} ${JSON.stringify(r.headers)}: ${r.text}`);
      }
    }),
  );
  expect(refusals).toBeGreaterThan(0);
  expect(acked.length).toBeGreaterThan(0);
  return { acked, refusals };
}

/** Every member got exactly the accepted events, once, in id order (requests interleave; the ids are the room's order). */
async function expectEveryoneGot(members: readonly TestClient[], guid: string, acked: readonly string[]): Promise<void> {
  const expected = [...acked].sort(compareIds);
  for (const m of members) {
    await m.waitForEvents(guid, expected.length, 30_000);
    expect(m.events(guid).map((e) => e.id)).toEqual(expected);
  }
}
