import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TemplatedApp } from 'uWebSockets.js';
import { loadUws, type UwsModule } from '../src/uws.js';
import { compareIds } from '../src/protocol/event-id.js';
import { SHARD_SIZE } from '../src/rooms/rooms.js';
import { connect, randomGuid, startGateway, userToken, type StartedGateway, type TestClient } from './helpers/gateway.js';

/**
 * Rooms larger than one shard, and rooms whose fan-out is spread over several event-loop turns
 * (FANOUT_SLICE_BYTES). The real uWS app is used; its publish() is wrapped only to record the order
 * of the calls.
 */
const published: { topic: string; bytes: number }[] = [];
function recordingUws(): UwsModule {
  const real = loadUws();
  return {
    ...real,
    App: ((options?: unknown) => {
      // uWS reads an options argument that is present but undefined as an object (and aborts).
      const app = options === undefined ? real.App() : (real.App as (o: unknown) => TemplatedApp)(options);
      const publish = app.publish.bind(app);
      app.publish = ((topic: string, message: string | ArrayBuffer | Uint8Array, isBinary?: boolean, compress?: boolean) => {
        published.push({ topic: String(topic), bytes: typeof message === 'string' ? message.length : message.byteLength });
        return publish(topic, message, isBinary, compress);
      }) as TemplatedApp['publish'];
      return app;
    }) as UwsModule['App'],
  };
}

const payload = (bytes: number, seq: number) => ({ seq, blob: 'x'.repeat(bytes) });

async function deferredTurns(g: StartedGateway): Promise<number> {
  return (await g.gw.metrics.fanOutDeferred.get()).values[0]?.value ?? 0;
}

/** Every event after `after`, in order, by id. */
const idsAfter = (all: string[], after: string) => all.filter((id) => compareIds(id, after) > 0);

describe('sharded, sliced fan-out', () => {
  let g: StartedGateway;
  beforeAll(async () => {
    g = await startGateway({ MAX_PAYLOAD_BYTES: '1048576' }, { uws: recordingUws() });
  });
  afterAll(async () => {
    await g.close();
  });

  it('a room of several shards with a backlog: every socket, live, late or resuming, gets every event after its join once, in order', async () => {
    const guid = randomGuid();
    const early: { c: TestClient; latestId: string }[] = [];
    for (let i = 0; i < SHARD_SIZE + 12; i++) {
      const c = await connect(g.wsUrl, userToken());
      early.push({ c, latestId: (await c.join(guid)).data.latestId as string });
    }
    const deferredBefore = await deferredTurns(g);
    // 6 KB events: one chunk (~250 KB) to a full shard is ~30 MB of fan-out, far over the slice.
    const burst1 = g.gw.publishMany(guid, Array.from({ length: 60 }, (_, i) => ({ type: 'project_message' as const, data: payload(6000, i) })));
    // Joins while the backlog is being published: they fill shard 1 and open shard 2.
    const lateJoins = Array.from({ length: SHARD_SIZE + 10 }, async () => {
      const c = await connect(g.wsUrl, userToken());
      return { c, latestId: (await c.join(guid)).data.latestId as string };
    });
    const ids1 = await burst1;
    const late = await Promise.all(lateJoins);
    // Ten early sockets leave mid-stream and resume from the last id they saw, into whichever shard has room.
    const resumed: { first: TestClient; second: TestClient; latestId: string }[] = [];
    for (const { c, latestId } of early.slice(0, 10)) {
      await c.waitForEvents(guid, 20);
      await c.close();
      const seen = c.events(guid);
      const second = await connect(g.wsUrl, userToken());
      await second.join(guid, seen[seen.length - 1]!.id!);
      resumed.push({ first: c, second, latestId });
    }
    const ids2 = await g.gw.publishMany(guid, Array.from({ length: 60 }, (_, i) => ({ type: 'project_message' as const, data: payload(6000, 60 + i) })));
    const all = [...ids1, ...ids2];

    for (const { c, latestId } of [...early.slice(10), ...late]) {
      const want = idsAfter(all, latestId);
      const got = await c.waitForEvents(guid, want.length, 20000);
      expect(got.map((e) => e.id)).toEqual(want);
    }
    for (const { first, second, latestId } of resumed) {
      const want = idsAfter(all, latestId);
      const before = first.events(guid).map((e) => e.id);
      const after = (await second.waitForEvents(guid, want.length - before.length, 20000)).map((e) => e.id);
      expect([...before, ...after]).toEqual(want);
    }
    expect(await deferredTurns(g)).toBeGreaterThan(deferredBefore);
    await Promise.all([...early.slice(10), ...late].map(({ c }) => c.close()));
    await Promise.all(resumed.map(({ second }) => second.close()));
  }, 60_000);

  it("a small room's event goes out between the turns of a crowded room's backlog, not after all of it", async () => {
    const heavy = randomGuid();
    const light = randomGuid();
    const crowd: TestClient[] = [];
    for (let i = 0; i < SHARD_SIZE + 2; i++) {
      const c = await connect(g.wsUrl, userToken());
      await c.join(heavy);
      crowd.push(c);
    }
    const reader = await connect(g.wsUrl, userToken());
    await reader.join(light);
    published.length = 0;
    const heavyIds = g.gw.publishMany(heavy, Array.from({ length: 64 }, (_, i) => ({ type: 'project_message' as const, data: payload(8000, i) })));
    const lightIds = g.gw.publish(light, { type: 'project_message', data: { seq: 0 } });
    await Promise.all([heavyIds, lightIds]);
    await reader.waitForEvents(light, 1);
    for (const c of crowd) await c.waitForEvents(heavy, 64, 20000);

    const isHeavy = (p: { topic: string }) => p.topic.includes(heavy);
    const lightAt = published.findIndex((p) => p.topic.includes(light));
    const heavyFirst = published.findIndex(isHeavy);
    const heavyLast = published.map(isHeavy).lastIndexOf(true);
    // 64 × 8 KB is three chunks; two shards each get all three.
    expect(published.filter(isHeavy)).toHaveLength(6);
    expect(heavyFirst).toBeLessThan(lightAt);
    expect(lightAt).toBeLessThan(heavyLast);
    await Promise.all([...crowd, reader].map((c) => c.close()));
  }, 60_000);
});
