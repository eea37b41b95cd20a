// A room on its room topic while it has no fan-out backlog, on its shard topics while it has one
// (src/rooms/fanout.ts, placement.ts), with real sockets: the members move out when a burst is
// larger than the slice and back when it has been sent, and every member, a slow one included,
// receives every event once, in order. In both shapes (one thread; WORKERS=2, each worker its room).
import type net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { compareIds } from '../src/protocol/event-id.js';
import { SHARD_SIZE } from '../src/rooms/rooms.js';
import { connect, randomGuid, until, userToken, type TestClient } from './helpers/gateway.js';
import { SHAPES, type Served } from './helpers/topology.js';

let served: Served | null = null;
const clients: TestClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await served?.close();
  served = null;
});

/** ws_fanout_shard_moves_total by direction (a process sums its workers). */
async function moves(s: Served): Promise<{ shards: number; room: number }> {
  const text = await s.metrics();
  const value = (to: string) =>
    text
      .split('\n')
      .filter((l) => l.startsWith('ws_fanout_shard_moves_total{') && l.includes(`to="${to}"`))
      .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  return { shards: value('shards'), room: value('room') };
}

const small = (seq: number) => ({ type: 'project_message' as const, data: { seq } });
const large = (seq: number, bytes: number) => ({ type: 'project_message' as const, data: { seq, blob: 'x'.repeat(bytes) } });

describe('room topic and shard topics (real sockets)', () => {
  for (const shape of SHAPES) {
    it(`a room goes into a backlog and back (${shape.name}): one move out, one back, every member gets every event once, in order`, async () => {
      // The overload bound is not what is tested here: a loaded machine must not turn the burst into 503s.
      served = await shape.start({ MAX_PAYLOAD_BYTES: '1048576', MAX_EVENT_DATA_BYTES: '1048576', FANOUT_MAX_DELAY_MS: '60000', LOG_LEVEL: 'silent' });
      const guid = randomGuid();
      // Enough members for several shards on each thread, in both encodings.
      const members: TestClient[] = [];
      for (let i = 0; i < 4 * SHARD_SIZE + 4; i++) {
        const c = await connect(served.wsUrl, userToken(), i % 6 === 5 ? { protocol: 'autocode.v1.msgpack' } : {});
        clients.push(c);
        await c.join(guid);
        members.push(c);
      }
      const slow = members[3]!;
      const ids: string[] = [];

      // No backlog: small events go to the room topic, nobody moves.
      for (let i = 0; i < 5; i++) ids.push(await served.publish(guid, small(i)));
      for (const c of members) await c.waitForEvents(guid, ids.length);
      expect(await moves(served)).toEqual({ shards: 0, room: 0 });

      // A backlog while one member does not read. The first request is small events then one event
      // larger than a frame: one turn publishes the small ones to the room topic (queued in uWS for
      // each socket), then the large one would pass the slice, so the members move out before it.
      (slow.ws as unknown as { _socket: net.Socket })._socket.pause();
      const first = served.publishMany(guid, [...Array.from({ length: 5 }, (_, i) => small(100 + i)), large(105, 300_000)]);
      const flood = served.publishMany(guid, Array.from({ length: 60 }, (_, i) => large(200 + i, 6000)));
      const during = served.publishMany(guid, Array.from({ length: 5 }, (_, i) => small(300 + i)));
      // Three requests in flight at once (WORKERS=2: maybe on two threads): ids say the order they got.
      ids.push(...[...(await first), ...(await flood), ...(await during)].sort(compareIds));
      await new Promise((r) => setTimeout(r, 300));
      (slow.ws as unknown as { _socket: net.Socket })._socket.resume();
      // The backlog clears: every move out was followed by one back.
      await until(async () => {
        const m = await moves(served!);
        return m.shards > 0 && m.room === m.shards;
      }, 20_000, 'the members moved back to the room topic');
      for (const c of members) await c.waitForEvents(guid, ids.length, 20_000);

      // Back on the room topic: small events again, no further move.
      const before = await moves(served);
      for (let i = 0; i < 5; i++) ids.push(await served.publish(guid, small(400 + i)));
      for (const c of members) {
        const got = await c.waitForEvents(guid, ids.length, 20_000);
        expect(got.map((e) => e.id)).toEqual(ids);
      }
      expect(await moves(served)).toEqual(before);
      // Each thread's room moved out at least once (WORKERS=2: two rooms, each moved on its own).
      expect(before.shards).toBeGreaterThanOrEqual(1);
    }, 60_000);
  }
});
