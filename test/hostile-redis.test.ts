import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventsKey } from '../src/redis/keys.js';
import { compareIds } from '../src/protocol/event-id.js';
import { connect, producerToken, randomGuid, SECRET, startGateway, until, userToken } from './helpers/gateway.js';
import { spawnGatewaysOnRedis, type GatewayProcess } from './helpers/processes.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

const deepJson = (depth: number) => '{"a":'.repeat(depth) + '{}' + '}'.repeat(depth);

describe('hostile Redis entries (anyone can XADD)', () => {
  let redis: RedisServer;
  let gws: GatewayProcess[];
  beforeAll(async () => {
    redis = await startRedis();
    // A tiny history page, so a resume must page through a run of bad entries.
    gws = await spawnGatewaysOnRedis(redis.url, 2, SECRET, { HISTORY_PAGE_SIZE: '2', MAX_EVENT_DATA_BYTES: '4096' });
  });
  afterAll(async () => {
    await Promise.all((gws ?? []).map((g) => g.stop()));
    await redis?.stop();
  });

  const xadd = (guid: string, ...fields: string[]) => redis.cli('XADD', eventsKey('autocode', guid), '*', ...fields);
  const appendBad = async (guid: string) => [
    await xadd(guid, 'type', 'project_message', 'data', deepJson(5000)),
    await xadd(guid, 'type', 'project_message', 'data', '{"x":1e400}'),
    await xadd(guid, 'type', 'project_message', 'data', JSON.stringify({ text: 'x'.repeat(5000) })),
    await xadd(guid, 'type', 'project_message', 'data', '[1,2]'),
    await xadd(guid, 'type', 'no_such_type', 'data', '{}'),
    await xadd(guid, 'data', '{}'),
  ];

  it('skips deep, huge and malformed entries on every instance; JSON and MessagePack clients in the room and elsewhere keep receiving', async () => {
    const room = randomGuid();
    const other = randomGuid();
    const clients = await Promise.all(
      gws.flatMap((g) => [connect(g.wsUrl, userToken()), connect(g.wsUrl, userToken(), { protocol: 'autocode.v1.msgpack' })]),
    );
    const otherClient = await connect(gws[1]!.wsUrl, userToken());
    await Promise.all([...clients.map((c) => c.join(room)), otherClient.join(other)]);

    const first = await xadd(room, 'type', 'project_message', 'data', '{"n":1}');
    await appendBad(room);
    const last = await xadd(room, 'type', 'project_message', 'data', '{"n":2}');
    await xadd(other, 'type', 'project_message', 'data', '{"n":"other"}');
    for (const c of clients) {
      await c.waitForEvents(room, 2);
      expect(c.events(room).map((e) => e.id)).toEqual([first, last]);
    }
    expect((await otherClient.waitForEvents(other, 1))[0]!.data).toEqual({ n: 'other' });
    for (const g of gws) {
      expect((await fetch(`${g.url}/healthz`)).status).toBe(200);
      expect(await (await fetch(`${g.url}/metrics`)).text()).toMatch(/^bus_entries_skipped_total\{node="[^"]+"\} [6-9]\d*$/m);
    }
    await Promise.all([...clients, otherClient].map((c) => c.close()));
  });

  it('resumes across a run of bad entries longer than a history page, on any instance', async () => {
    const room = randomGuid();
    // Nobody watches the room yet: the resume below reads these from Redis, two entries a page.
    const before = await xadd(room, 'type', 'project_message', 'data', '{"n":0}');
    await appendBad(room);
    await appendBad(room);
    const after = await xadd(room, 'type', 'project_message', 'data', '{"n":1}');
    for (const g of gws) {
      for (const protocol of ['autocode.v1.json', 'autocode.v1.msgpack']) {
        const c = await connect(g.wsUrl, userToken(), { protocol });
        const ack = await c.join(room, before);
        expect(ack.data).toMatchObject({ recovered: true, replayed: 1 });
        expect(c.events(room).map((e) => e.id)).toEqual([after]);
        await c.close();
      }
    }
  });
});

describe('Redis frozen during keyed publishes', () => {
  it('answers 503 and reports not-ready while Redis is stopped; retries with the same keys deliver every event exactly once', async () => {
    const redis = await startRedis();
    const g = await startGateway({ REDIS_URL: redis.url });
    try {
      const room = randomGuid();
      const c = await connect(g.wsUrl, userToken());
      await c.join(room);
      const publish = async (n: number) => {
        const res = await fetch(`${g.httpUrl}/v1/projects/${room}/events`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${producerToken()}`, 'idempotency-key': `evt-${n}` },
          body: JSON.stringify({ type: 'project_message', data: { n } }),
        });
        return { status: res.status, replayed: res.headers.get('idempotent-replayed') === 'true', body: (await res.json()) as any };
      };
      const ready = async () => (await fetch(`${g.httpUrl}/readyz`)).status;
      expect(await ready()).toBe(200);

      process.kill(redis.pid!, 'SIGSTOP');
      let frozen = true;
      try {
        // Sent to a frozen Redis: they hang until the command timeout, and Redis runs them later.
        const inFlight = Promise.all([0, 1, 2, 3, 4].map(publish));
        await until(async () => (await ready()) === 503, 5000, '/readyz to report the frozen Redis');
        // Once the freeze is noticed, publishes fail at once instead of hanging.
        const fast = await Promise.all([5, 6, 7, 8, 9].map(publish));
        expect(fast.map((r) => r.status)).toEqual([503, 503, 503, 503, 503]);
        const slow = await inFlight;
        expect(slow.map((r) => r.status)).toEqual([503, 503, 503, 503, 503]);
        expect(slow[0]!.body.error.message).toMatch(/outcome is unknown/);
        expect(await ready()).toBe(503);
        process.kill(redis.pid!, 'SIGCONT');
        frozen = false;
      } finally {
        if (frozen) process.kill(redis.pid!, 'SIGCONT');
      }
      await until(async () => (await ready()) === 200, 10_000, '/readyz to recover');

      // The producer retries everything it did not get a 202 for, with the same keys.
      const retried = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map(publish));
      expect(retried.map((r) => r.status)).toEqual(new Array(10).fill(202));
      // The five that reached Redis during the freeze were appended then; their retries only replay.
      expect(retried.map((r) => r.replayed)).toEqual([true, true, true, true, true, false, false, false, false, false]);
      await c.waitForEvents(room, 10);
      await new Promise((r) => setTimeout(r, 200));
      const received = c.events(room).map((e) => e.data.n as number);
      expect(received).toHaveLength(10);
      expect([...received].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      expect(c.events(room).map((e) => e.id)).toEqual(retried.map((r) => r.body.id as string).sort(compareIds));
      await c.close();
    } finally {
      await g.close();
      await redis.stop();
    }
  });
});
