import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProducer } from '../src/bus/producer.js';
import { connect, postEvent, randomGuid, SECRET, startGateway, until, userToken, type StartedGateway } from './helpers/gateway.js';
import { spawnGatewaysOnRedis, type GatewayProcess } from './helpers/processes.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

const key = (guid: string) => `autocode:{${guid}}:events`;


describe('three gateway processes on one Redis', () => {
  let redis: RedisServer;
  let gateways: GatewayProcess[];
  beforeAll(async () => {
    redis = await startRedis();
    gateways = await spawnGatewaysOnRedis(redis.url, 3, SECRET);
  });
  afterAll(async () => {
    await Promise.all((gateways ?? []).map((g) => g.stop()));
    await redis?.stop();
  });

  it('delivers an event appended with redis-cli XADD (as the README documents) to subscribers on all three', async () => {
    const guid = randomGuid();
    const clients = await Promise.all(gateways.map((g) => connect(g.wsUrl, userToken())));
    await Promise.all(clients.map((c) => c.join(guid)));
    const id = await redis.cli('XADD', key(guid), 'MAXLEN', '~', '10000', '*', 'type', 'project_message', 'data', '{"text":"from redis-cli"}');
    expect(id).toMatch(/^\d+-\d+$/);
    for (const c of clients) {
      const [event] = await c.waitForEvents(guid, 1);
      expect(event).toMatchObject({ type: 'project_message', projectGuid: guid, id, data: { text: 'from redis-cli' } });
    }
    await Promise.all(clients.map((c) => c.close()));
  });

  it('delivers an event published through the HTTP API of instance A to clients on B and C', async () => {
    const guid = randomGuid();
    const [a, b, c] = gateways as [GatewayProcess, GatewayProcess, GatewayProcess];
    const onB = await connect(b.wsUrl, userToken());
    const onC = await connect(c.wsUrl, userToken());
    await Promise.all([onB.join(guid), onC.join(guid)]);
    const res = await postEvent(a.url, guid, { type: 'project_status_change', data: { status: 'running' } });
    expect(res.status).toBe(202);
    for (const client of [onB, onC]) {
      const [event] = await client.waitForEvents(guid, 1);
      expect(event).toMatchObject({ id: res.body.id, type: 'project_status_change', data: { status: 'running' } });
    }
    await Promise.all([onB.close(), onC.close()]);
  });

  it('skips malformed stream entries without stopping the reader', async () => {
    const guid = randomGuid();
    const client = await connect(gateways[0]!.wsUrl, userToken());
    await client.join(guid);
    await redis.cli('XADD', key(guid), '*', 'type', 'project_message', 'data', 'not json');
    await redis.cli('XADD', key(guid), '*', 'type', 'unknown_type', 'data', '{}');
    await redis.cli('XADD', key(guid), '*', 'data', '{"no":"type"}');
    await redis.cli('XADD', key(guid), '*', 'type', 'project_message', 'data', '[1,2]');
    const good = await redis.cli('XADD', key(guid), '*', 'type', 'project_message', 'data', '{"ok":true}');
    const [event] = await client.waitForEvents(guid, 1);
    expect(event).toMatchObject({ id: good, data: { ok: true } });
    await new Promise((r) => setTimeout(r, 100));
    expect(client.events(guid)).toHaveLength(1);
    expect(gateways[0]!.output()).toMatch(/skipping malformed stream entry/);
    await client.close();
  });
});

describe('resume across instances', () => {
  let redis: RedisServer;
  let gws: StartedGateway[];
  beforeAll(async () => {
    redis = await startRedis();
    gws = await Promise.all([0, 1].map((i) => startGateway({ REDIS_URL: redis.url, NODE_ID: `resume-${i}`, STREAM_MAXLEN: '50', RECENT_EVENTS_PER_ROOM: '16' })));
  });
  afterAll(async () => {
    await Promise.all((gws ?? []).map((g) => g.close()));
    await redis?.stop();
  });

  it('replays exactly the missed events in order on another instance, then continues live', async () => {
    const [a, b] = gws as [StartedGateway, StartedGateway];
    const guid = randomGuid();
    const first = await connect(a.wsUrl, userToken());
    const firstAck = await first.join(guid);
    expect(firstAck.data.latestId).toBe('0-0');
    const ids = await a.gw.publishMany(guid, Array.from({ length: 5 }, (_, i) => ({ type: 'project_message' as const, data: { seq: i } })));
    await first.waitForEvents(guid, 5);
    await first.close();
    const missed = await a.gw.publishMany(guid, Array.from({ length: 30 }, (_, i) => ({ type: 'project_message' as const, data: { seq: 5 + i } })));
    const second = await connect(b.wsUrl, userToken());
    const ack = await second.join(guid, ids[4]);
    expect(ack.data).toMatchObject({ recovered: true, replayed: 30, latestId: missed[29] });
    const live = await b.gw.publish(guid, { type: 'project_message', data: { seq: 35 } });
    const events = await second.waitForEvents(guid, 31);
    expect(events.map((e) => e.id)).toEqual([...missed, live]);
    expect(events.map((e) => e.data.seq)).toEqual(Array.from({ length: 31 }, (_, i) => 5 + i));
    // A fresh client without history learns where the project stands.
    const third = await connect(a.wsUrl, userToken());
    expect((await third.join(guid)).data.latestId).toBe(live);
    await Promise.all([second.close(), third.close()]);
  });

  it('has no gap and no duplicate at the seam while events keep flowing during the reconnect', async () => {
    const [a, b] = gws as [StartedGateway, StartedGateway];
    const guid = randomGuid();
    const producerConnection = new Redis(redis.url);
    const producer = createProducer(producerConnection, { maxLen: 100000 });
    const all: string[] = [];
    const received: string[] = [];
    let lastSeen = '0-0';
    let stop = false;
    const flowing = (async () => {
      for (let i = 0; !stop; i++) {
        all.push(...(await producer.publish(guid, [{ type: 'project_message', data: { i } }])));
        if (i % 5 === 0) await new Promise((r) => setImmediate(r));
      }
    })();
    for (let round = 0; round < 6; round++) {
      const c = await connect((round % 2 ? b : a).wsUrl, userToken());
      const since = round === 0 ? undefined : lastSeen;
      const ack = await c.join(guid, since);
      if (since) expect(ack.data.recovered).toBe(true);
      await new Promise((r) => setTimeout(r, 40));
      const got = c.events(guid).map((e) => e.id!);
      received.push(...got);
      if (got.length) lastSeen = got[got.length - 1]!;
      else if (round === 0) lastSeen = ack.data.latestId;
      await c.close();
    }
    stop = true;
    await flowing;
    // Everything after the first join's position, exactly once, in order.
    const start = all.indexOf(received[0]!);
    expect(start).toBeGreaterThanOrEqual(0);
    const expected = all.slice(start, start + received.length);
    expect(received).toEqual(expected);
    expect(new Set(received).size).toBe(received.length);
    expect(received.length).toBeGreaterThan(20);
    await producerConnection.quit();
  });

  it('tells a client whose since is older than the retained history to reload', async () => {
    const [a, b] = gws as [StartedGateway, StartedGateway];
    const guid = randomGuid();
    const ids = await a.gw.publishMany(guid, Array.from({ length: 300 }, (_, i) => ({ type: 'project_message' as const, data: { i } })));
    // Retention is bounded: MAXLEN ~ 50 leaves at most one macro node (100 entries) over the bound.
    const len = Number(await redis.cli('XLEN', key(guid)));
    expect(len).toBeLessThan(300);
    expect(len).toBeGreaterThanOrEqual(50);
    const c = await connect(b.wsUrl, userToken());
    const ack = await c.join(guid, ids[0]);
    expect(ack.data).toMatchObject({ recovered: false, latestId: ids[299] });
    // It still continues live.
    const next = await a.gw.publish(guid, { type: 'project_message', data: { i: 300 } });
    const [event] = await c.waitForEvents(guid, 1);
    expect(event!.id).toBe(next);
    // An id from a wiped incarnation of the stream is not resumable either.
    const d = await connect(a.wsUrl, userToken());
    expect((await d.join(guid, '1-0')).data.recovered).toBe(false);
    await Promise.all([c.close(), d.close()]);
  });
});

describe('retention by age', () => {
  it('trims events older than STREAM_MAX_AGE_S when new ones are appended', async () => {
    const redis = await startRedis();
    const g = await startGateway({ REDIS_URL: redis.url, STREAM_MAX_AGE_S: '1', NODE_ID: 'age' });
    try {
      const guid = randomGuid();
      await g.gw.publishMany(guid, Array.from({ length: 500 }, (_, i) => ({ type: 'project_message' as const, data: { i } })));
      expect(Number(await redis.cli('XLEN', key(guid)))).toBe(500);
      await new Promise((r) => setTimeout(r, 1100));
      const fresh = await g.gw.publish(guid, { type: 'project_message', data: { fresh: true } });
      // MINID ~ trims whole macro nodes: at most one node (100 entries) of old events may remain.
      const left = Number(await redis.cli('XLEN', key(guid)));
      expect(left).toBeLessThanOrEqual(101);
      expect(await redis.cli('XREVRANGE', key(guid), '+', '-', 'COUNT', '1')).toContain(fresh);
      // The idle-expiry TTL (STREAM_TTL_S, default one day) is set on the stream.
      const ttl = Number(await redis.cli('TTL', key(guid)));
      expect(ttl).toBeGreaterThan(86000);
      expect(ttl).toBeLessThanOrEqual(86400);
    } finally {
      await g.close();
      await redis.stop();
    }
  });
});

describe('Redis faults', () => {
  it('keeps clients connected through a Redis restart and a CLIENT KILL, flips readiness, and delivers afterwards', async () => {
    const redis = await startRedis();
    const g = await startGateway({ REDIS_URL: redis.url, NODE_ID: 'faults' });
    try {
      const guid = randomGuid();
      const c = await connect(g.wsUrl, userToken());
      await c.join(guid);
      await redis.cli('XADD', key(guid), '*', 'type', 'project_message', 'data', '{"n":1}');
      await c.waitForEvents(guid, 1);
      const ready = async () => (await fetch(`${g.httpUrl}/readyz`)).status;
      expect(await ready()).toBe(200);

      await redis.kill();
      await until(async () => (await ready()) === 503, 5000, 'readyz 503 after Redis died');
      // Publishing while Redis is away fails fast with a clear 503, never hangs.
      const down = await postEvent(g.httpUrl, guid, { type: 'project_message', data: {} });
      expect(down).toMatchObject({ status: 503, body: { error: { code: 'UNAVAILABLE' } } });
      expect(c.ws.readyState).toBe(c.ws.OPEN);

      await redis.restart();
      await until(async () => (await ready()) === 200, 10000, 'readyz 200 after Redis came back');
      const after = await redis.cli('XADD', key(guid), '*', 'type', 'project_message', 'data', '{"n":2}');
      const events = await c.waitForEvents(guid, 2);
      expect(events[1]!.id).toBe(after);

      // Kill the gateway's connections from the server side.
      const killed = Number(await redis.cli('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes'));
      expect(killed).toBeGreaterThanOrEqual(2);
      const afterKill = await redis.cli('XADD', key(guid), '*', 'type', 'project_message', 'data', '{"n":3}');
      const events3 = await c.waitForEvents(guid, 3);
      expect(events3.map((e) => e.id)).toEqual([events[0]!.id, after, afterKill]);
      await until(async () => (await ready()) === 200, 10000, 'readyz 200 after CLIENT KILL');
      expect(c.ws.readyState).toBe(c.ws.OPEN);
      await c.close();
    } finally {
      await g.close();
      await redis.stop();
    }
  });

  it('answers joins with UNAVAILABLE while Redis is down, and works again after', async () => {
    const redis = await startRedis();
    const g = await startGateway({ REDIS_URL: redis.url, NODE_ID: 'faults-2' });
    try {
      const c = await connect(g.wsUrl, userToken());
      await redis.kill();
      await until(() => !g.gw.isReady(), 5000, 'not ready');
      const res = await c.request({ type: 'join_project', id: 'j-down', projectGuid: randomGuid() }, 'join_project', 10000);
      expect(res).toMatchObject({ type: 'error', data: { code: 'UNAVAILABLE' } });
      await redis.restart();
      await until(() => g.gw.isReady(), 10000, 'ready again');
      const guid = randomGuid();
      await c.join(guid);
      const id = await g.gw.publish(guid, { type: 'project_message', data: {} });
      expect((await c.waitForEvents(guid, 1))[0]!.id).toBe(id);
      await c.close();
    } finally {
      await g.close();
      await redis.stop();
    }
  });
});

