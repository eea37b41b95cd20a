import { Packr } from 'msgpackr';
import type { Logger } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { createMetrics } from '../src/metrics.js';
import { envelopeJson, retainedSize, type ProjectEvent } from '../src/protocol/events.js';
import { createFanout, FANOUT_BACKLOG_BYTES, FANOUT_SLICE_BYTES, FANOUT_UNIT_BYTES, MAX_FRAME_BYTES, queuedEnd, type FanoutRoom, type FanoutShard, type Frame } from '../src/rooms/fanout.js';
import type { CodecName } from '../src/protocol/codec.js';
import { ANY_PROJECT, type FanoutBacklog } from '../src/bus/ingress.js';
import { roomTopic, shardTopic } from '../src/rooms/topics.js';

/**
 * src/rooms/fanout.ts on its own: a fake publisher records every publish, and the test runs the
 * event-loop turns by hand (a turn runs what was scheduled before it began, as setImmediate does).
 * Members are modelled as groups (n sockets of one shard and one encoding) that listen on the room
 * topic or their shard's, as placement.ts moves real sockets, and keep what reached them.
 */

interface Published {
  readonly topic: string;
  readonly frame: Frame;
  readonly binary: boolean;
  /** The turn it was published in (1-based). */
  readonly turn: number;
}

/** A move of a room's members, in the same log as the publishes. */
interface Moved {
  readonly move: 'shards' | 'room';
  readonly guid: string;
  readonly turn: number;
}

/** `count` sockets of one shard and one encoding, listening on one topic. */
interface Group {
  readonly room: FanoutRoom;
  readonly shard: FanoutShard;
  readonly codec: CodecName;
  readonly count: number;
  topic: string;
  /** Event ids in the order they reached this group. */
  readonly received: string[];
}

function harness(onQueueDelay?: (backlogs: ReadonlyMap<string, FanoutBacklog>, longestMs: number) => void, now?: () => number) {
  const groups: Group[] = [];
  const published: Published[] = [];
  const log: (Published | Moved)[] = [];
  const scheduled: (() => void)[] = [];
  let turn = 0;
  const metrics = createMetrics('fanout-unit');
  const logger = { warn: vi.fn(), error: vi.fn() };
  const fanout = createFanout({
    port: {
      publish: (topic, frame, binary) => {
        const p = { topic, frame, binary, turn };
        published.push(p);
        log.push(p);
        for (const g of groups) if (g.topic === topic) g.received.push(...idsIn(frame));
      },
      numSubscribers: (topic) => groups.filter((g) => g.topic === topic).reduce((n, g) => n + g.count, 0),
    },
    log: logger as unknown as Pick<Logger, 'warn' | 'error'>,
    metrics,
    moveMembers: (room, toShards) => {
      for (const g of groups) if (g.room === room) g.topic = toShards ? g.shard.topics[g.codec] : room.topics[g.codec];
      log.push({ move: toShards ? 'shards' : 'room', guid: room.guid, turn });
    },
    schedule: (fn) => void scheduled.push(fn),
    onQueueDelay,
    ...(now ? { now } : {}),
  });
  return {
    fanout,
    published,
    log,
    metrics,
    logger,
    /** `count` sockets of `codec` join `shard` now: they listen where its members listen. */
    place(room: FanoutRoom, shard: FanoutShard, count: number, codec: CodecName = 'json'): Group {
      const g: Group = { room, shard, codec, count, topic: room.spread ? shard.topics[codec] : room.topics[codec], received: [] };
      groups.push(g);
      return g;
    },
    /** What the first group of that shard and encoding received. */
    received(shard: FanoutShard, codec: CodecName = 'json'): string[] {
      return groups.find((g) => g.shard === shard && g.codec === codec)!.received;
    },
    /** One event-loop turn. */
    turn(): void {
      turn++;
      for (const fn of scheduled.splice(0)) fn();
    },
    /** Turns until nothing is scheduled; how many ran. */
    drain(): number {
      let n = 0;
      while (scheduled.length) this.turn(), n++;
      return n;
    },
  };
}

function newRoom(guid: string, shards: number): FanoutRoom {
  const room: FanoutRoom = {
    guid,
    topics: { json: roomTopic(guid, 'json'), msgpack: roomTopic(guid, 'msgpack') },
    spread: false,
    shards: [],
    queuedId: '0-0',
    pending: [],
    pendingSince: 0,
    outbox: [],
    outboxBase: 0,
    outboxBytes: 0,
    releasedBytes: 0,
  };
  for (let i = 0; i < shards; i++) addShard(room);
  return room;
}

/** A shard opened now, as the registry opens one when the others are full. */
function addShard(room: FanoutRoom): FanoutShard {
  const index = room.shards.length;
  const shard: FanoutShard = { topics: { json: shardTopic(room.guid, 'json', index), msgpack: shardTopic(room.guid, 'msgpack', index) }, ...queuedEnd(room) };
  room.shards.push(shard);
  return shard;
}

let lastMs = 1;
const TIMESTAMP = '2026-01-01T00:00:00.000Z';
const emptyJsonLength = envelopeJson({ id: '1-0', projectGuid: crypto.randomUUID(), type: 'project_message', timestamp: TIMESTAMP }, '{"blob":""}').length;

/** An event whose JSON envelope is about `jsonBytes` long (exactly, while the id keeps its length). */
function event(guid: string, jsonBytes: number, overrides: Partial<ProjectEvent> = {}): ProjectEvent {
  const base = { id: `${++lastMs}-0`, projectGuid: guid, type: 'project_message' as const, timestamp: TIMESTAMP };
  const blob = 'x'.repeat(Math.max(0, jsonBytes - emptyJsonLength - (base.id.length - 3)));
  return { ...base, json: envelopeJson(base, JSON.stringify({ blob })), ...overrides };
}

const burst = (guid: string, count: number, jsonBytes: number) => Array.from({ length: count }, () => event(guid, jsonBytes));

const unpackr = new Packr({ useRecords: false, mapsAsObjects: true });
/** The envelopes' ids in a frame (a bare envelope or an array of them, JSON or MessagePack). */
function idsIn(frame: Frame): string[] {
  const decoded = (typeof frame === 'string' ? JSON.parse(frame) : unpackr.unpack(frame)) as { id: string } | { id: string }[];
  return (Array.isArray(decoded) ? decoded : [decoded]).map((e) => e.id);
}
const idsOn = (published: readonly Published[], topic: string) => published.filter((p) => p.topic === topic).flatMap((p) => idsIn(p.frame));
const ids = (events: readonly ProjectEvent[]) => events.map((e) => e.id);

describe('room fan-out (fanout.ts against a fake publisher)', () => {
  it('publishes chunk by chunk to every shard in step, so every topic gets every chunk once, in order, from where its shard started', () => {
    const h = harness();
    const guid = crypto.randomUUID();
    const room = newRoom(guid, 3);
    for (const shard of room.shards) h.place(room, shard, 8);
    h.place(room, room.shards[1]!, 2, 'msgpack');
    // 20 KB events: 13 to a chunk, and one chunk to one full shard (~2 MB) is over the slice.
    const first = burst(guid, 40, 20_000);
    h.fanout.enqueue(room, first.slice());
    h.turn();
    // A shard opened while the backlog is being published starts after everything queued.
    const late = addShard(room);
    h.place(room, late, 8);
    const second = burst(guid, 20, 20_000);
    h.fanout.enqueue(room, second.slice());
    const turns = 1 + h.drain();

    const all = [...first, ...second];
    for (const shard of room.shards.slice(0, 3)) expect(h.received(shard)).toEqual(ids(all));
    expect(h.received(room.shards[1]!, 'msgpack')).toEqual(ids(all));
    expect(h.received(late)).toEqual(ids(second));
    // In step: no shard gets a chunk before every shard that was at an earlier one has had that.
    const position = new Map(ids(all).map((id, i) => [id, i]));
    const firstEventOfEachPublish = h.published.map((p) => position.get(idsIn(p.frame)[0]!)!);
    expect(firstEventOfEachPublish).toEqual([...firstEventOfEachPublish].sort((a, b) => a - b));
    // Sliced: about one shard's chunk per turn, and everything released at the end.
    expect(turns).toBeGreaterThan(10);
    expect(room.outbox).toHaveLength(0);
    expect(room.outboxBytes).toBe(0);
    expect(room.shards.map((s) => s.flushedId)).toEqual(room.shards.map(() => all[all.length - 1]!.id));
  });

  it("slices a crowded room's backlog over turns, and a small room's frames go out between those turns", () => {
    const h = harness();
    const heavy = newRoom(crypto.randomUUID(), 2);
    const light = newRoom(crypto.randomUUID(), 1);
    for (const shard of heavy.shards) h.place(heavy, shard, 8);
    h.place(light, light.shards[0]!, 1);
    const heavyEvents = burst(heavy.guid, 64, 8200);
    h.fanout.enqueue(heavy, heavyEvents.slice());
    h.fanout.enqueue(light, [event(light.guid, 200)]);
    h.turn();
    h.fanout.enqueue(light, [event(light.guid, 200)]);
    h.drain();

    const heavyPublishes = h.published.filter((p) => p.topic.includes(heavy.guid));
    const lightPublishes = h.published.filter((p) => p.topic.includes(light.guid));
    // 64 × 8 KB is three chunks (31, 31, 2); two shards each get all three. One full chunk to one
    // shard is over the slice, so that is a turn; the small last chunk goes to both in one.
    expect(heavyPublishes).toHaveLength(6);
    expect(heavyPublishes.map((p) => p.turn)).toEqual([1, 2, 3, 4, 5, 5]);
    for (let turn = 1; turn <= 5; turn++) {
      const spent = heavyPublishes.filter((p) => p.turn === turn).map((p) => (p.frame as string).length * 8);
      // A turn stops once it has spent the slice: everything but its last publish is under it.
      expect(spent.slice(0, -1).reduce((sum, n) => sum + n, 0)).toBeLessThan(FANOUT_SLICE_BYTES);
    }
    // The light room's two frames: in the first turn and in the second, while the heavy room has four to go.
    expect(lightPublishes.map((p) => p.turn)).toEqual([1, 2]);
    expect(h.published.indexOf(lightPublishes[1]!)).toBeLessThan(h.published.indexOf(heavyPublishes[5]!));
    for (const shard of heavy.shards) expect(h.received(shard)).toEqual(ids(heavyEvents));
  });

  it('publishes a backlog that grows past FANOUT_BACKLOG_BYTES in one turn', async () => {
    const h = harness();
    const room = newRoom(crypto.randomUUID(), 1);
    h.place(room, room.shards[0]!, 8);
    // 200 KB events: a chunk each, and one chunk to the shard (1.6 MB) is over the slice.
    const first = burst(room.guid, 40, 200_000);
    h.fanout.enqueue(room, first.slice());
    h.turn();
    expect(h.published).toHaveLength(1);
    expect(h.logger.warn).not.toHaveBeenCalled();
    // 39 left plus 50 more is over the bound.
    const second = burst(room.guid, 50, 200_000);
    expect((39 + 50) * retainedSize(second[0]!)).toBeGreaterThan(FANOUT_BACKLOG_BYTES);
    h.fanout.enqueue(room, second.slice());
    h.turn();
    expect(h.published).toHaveLength(90);
    expect(h.published.filter((p) => p.turn === 2)).toHaveLength(89);
    expect(h.logger.warn).toHaveBeenCalledTimes(1);
    expect(room.outbox).toHaveLength(0);
    expect(h.received(room.shards[0]!)).toEqual(ids([...first, ...second]));
    // Only the first turn left a backlog.
    expect((await h.metrics.fanOutDeferred.get()).values[0]?.value).toBe(1);
  });

  it('skips an event an encoder cannot carry for that encoding only', async () => {
    const h = harness();
    const room = newRoom(crypto.randomUUID(), 1);
    // A small room without a backlog: everything goes to the room topic.
    const { topics } = room;
    h.place(room, room.shards[0]!, 1, 'json');
    h.place(room, room.shards[0]!, 1, 'msgpack');
    const before = event(room.guid, 300);
    // `null` records that an encoder failed (protocol/events.ts): one event each encoding cannot carry.
    const noMsgpack = event(room.guid, 300, { msgpack: null });
    const noJson = event(room.guid, 300, { json: null, data: { ok: true } });
    const after = event(room.guid, 300);
    h.fanout.enqueue(room, [before, noMsgpack, noJson, after]);
    h.drain();

    expect(idsOn(h.published, topics.json)).toEqual(ids([before, noMsgpack, after]));
    expect(idsOn(h.published, topics.msgpack)).toEqual(ids([before, noJson, after]));
    expect(h.published.map((p) => [p.topic, p.binary])).toEqual([
      [topics.json, false],
      [topics.msgpack, true],
    ]);
    const unencodable = (await h.metrics.eventsUnencodable.get()).values;
    expect(unencodable.map((v) => [v.labels.codec, v.value]).sort()).toEqual([
      ['json', 1],
      ['msgpack', 1],
    ]);
    expect(h.logger.error).toHaveBeenCalledTimes(2);
  });

  it('cuts chunks at MAX_FRAME_BYTES: a chunk may fill it exactly, and an event larger than it goes alone', () => {
    const h = harness();
    const room = newRoom(crypto.randomUUID(), 1);
    const shard = room.shards[0]!;
    h.place(room, shard, 1, 'json');
    h.place(room, shard, 1, 'msgpack');
    // Four of these are exactly MAX_FRAME_BYTES of retained size.
    const quarter = MAX_FRAME_BYTES / 4 - 64;
    const events = [...burst(room.guid, 9, quarter), event(room.guid, MAX_FRAME_BYTES + 1000), ...burst(room.guid, 2, quarter)];
    expect(retainedSize(events[0]!) * 4).toBe(MAX_FRAME_BYTES);
    h.fanout.enqueue(room, events.slice());
    h.drain();

    for (const codec of ['json', 'msgpack'] as const) {
      // Over the slice: the member moved to its shard's topic after what the room topic took.
      const frames = h.published.filter((p) => p.topic === room.topics[codec] || p.topic === shard.topics[codec]);
      expect(frames.map((p) => idsIn(p.frame).length)).toEqual([4, 4, 1, 1, 2]);
      expect(frames.flatMap((p) => idsIn(p.frame))).toEqual(ids(events));
      const sizes = frames.map((p) => p.frame.length);
      expect(sizes.filter((_, i) => i !== 3).every((n) => n <= MAX_FRAME_BYTES)).toBe(true);
      expect(sizes[3]).toBeGreaterThan(MAX_FRAME_BYTES);
    }
  });

  it('reports after each turn how long an event accepted now would wait in each room still behind, and nothing once every room caught up', () => {
    // A clock turned by hand: every turn takes 3 ms, as while uWS writes what a turn published.
    let clock = 0;
    const reports: { at: number; backlogs: Map<string, FanoutBacklog>; longest: number }[] = [];
    const h = harness((backlogs, longest) => reports.push({ at: clock, backlogs: new Map(backlogs), longest }), () => clock);
    const heavy = newRoom(crypto.randomUUID(), 2);
    const light = newRoom(crypto.randomUUID(), 1);
    for (const shard of heavy.shards) h.place(heavy, shard, 8);
    h.place(light, light.shards[0]!, 1);
    h.fanout.enqueue(heavy, burst(heavy.guid, 64, 8200));
    h.fanout.enqueue(light, [event(light.guid, 200)]);
    while (true) {
      clock += 3;
      h.turn();
      if (!reports.length || reports[reports.length - 1]!.longest === 0) break;
    }
    const drainedAt = reports[reports.length - 1]!.at;
    // The heavy room needs five turns (see the slicing test); the light one is done in the first.
    const behind = reports.filter((r) => r.longest > 0);
    // Each report also says how the thread as a whole is doing (ANY_PROJECT): with one project alone
    // behind, nothing (it holds back only itself).
    expect(behind.map((r) => [...r.backlogs.keys()])).toEqual(Array(4).fill([heavy.guid, ANY_PROJECT]));
    for (const r of behind) {
      const { ms, bytes } = r.backlogs.get(heavy.guid)!;
      expect(r.backlogs.get(ANY_PROJECT)).toEqual({ ms: 0, bytes: 0 });
      expect(r.longest).toBe(ms);
      expect(bytes).toBeGreaterThan(0);
      // Never less than the oldest waiting event has waited (it was queued at 0), nor than what
      // really was left to drain, to within a turn (measured at the rate so far), and no more than
      // the longer of the two plus a turn.
      expect(ms).toBeGreaterThanOrEqual(r.at);
      expect(ms).toBeGreaterThanOrEqual(drainedAt - r.at - 3);
      expect(ms).toBeLessThanOrEqual(Math.max(r.at, drainedAt - r.at) + 3);
    }
    // The bytes ahead shrink as the backlog drains.
    const bytes = behind.map((r) => r.backlogs.get(heavy.guid)!.bytes);
    expect(bytes).toEqual([...bytes].sort((a, b) => b - a));
    // Once caught up: one report saying so (0 for the room that was behind), then silence (no report per idle turn).
    expect(reports[reports.length - 1]!.backlogs).toEqual(new Map([[heavy.guid, { ms: 0, bytes: 0 }], [ANY_PROJECT, { ms: 0, bytes: 0 }]]));
    const count = reports.length;
    h.fanout.enqueue(light, [event(light.guid, 200)]);
    h.drain();
    expect(reports.length).toBe(count);
  });
});

describe('the fan-out about itself (ANY_PROJECT)', () => {
  it('once several rooms are behind, reports the fastest pace (ms per byte) among them', () => {
    let clock = 0;
    const reports: Map<string, FanoutBacklog>[] = [];
    const h = harness((backlogs) => reports.push(new Map(backlogs)), () => clock);
    // A room of 16 members and one of 2: the same backlog drains faster where fewer read it.
    const crowded = newRoom(crypto.randomUUID(), 2);
    const small = newRoom(crypto.randomUUID(), 1);
    for (const shard of crowded.shards) h.place(crowded, shard, 8);
    h.place(small, small.shards[0]!, 2);
    h.fanout.enqueue(crowded, burst(crowded.guid, 64, 8200));
    h.fanout.enqueue(small, burst(small.guid, 64, 8200));
    clock += 3;
    h.turn();
    clock += 3;
    h.turn();
    const report = reports[reports.length - 1]!;
    const paces = [crowded.guid, small.guid].filter((g) => report.has(g)).map((g) => report.get(g)!);
    expect(paces).toHaveLength(2);
    const fastest = paces.reduce((a, b) => (a.ms / a.bytes <= b.ms / b.bytes ? a : b));
    expect(report.get(ANY_PROJECT)).toEqual(fastest);
    h.drain();
  });
});

describe('room topic while no backlog, shard topics while one (fanout.ts against a fake publisher)', () => {
  const moves = async (h: ReturnType<typeof harness>) => Object.fromEntries((await h.metrics.shardMoves.get()).values.map((v) => [v.labels.to, v.value]));

  it('a room without a backlog publishes each frame once per encoding to the room topic, whatever its shards, and moves nobody', async () => {
    const h = harness();
    const room = newRoom(crypto.randomUUID(), 13);
    for (const shard of room.shards) h.place(room, shard, 8);
    h.place(room, room.shards[5]!, 2, 'msgpack');
    // 10 events of ~300 B to 106 sockets (the fan-out bench's rooms): over the slice, within one unit.
    const events = burst(room.guid, 10, 300);
    const frameBytes = 10 * 300;
    expect(frameBytes * 106).toBeGreaterThan(FANOUT_SLICE_BYTES);
    expect(frameBytes * 106).toBeLessThan(FANOUT_UNIT_BYTES);
    h.fanout.enqueue(room, events.slice());
    h.drain();
    const more = burst(room.guid, 3, 150);
    h.fanout.enqueue(room, more.slice());
    h.drain();

    expect(h.published.map((p) => p.topic)).toEqual([room.topics.json, room.topics.msgpack, room.topics.json, room.topics.msgpack]);
    for (const shard of room.shards) expect(h.received(shard)).toEqual(ids([...events, ...more]));
    expect(h.received(room.shards[5]!, 'msgpack')).toEqual(ids([...events, ...more]));
    // Every shard's position moved with the room topic: a resume placed in any of them sees it.
    expect(room.shards.map((s) => [s.flushedId, s.next])).toEqual(room.shards.map(() => [more[2]!.id, 2]));
    expect(room.spread).toBe(false);
    expect(await moves(h)).toEqual({});
    expect((await h.metrics.fanOutDeferred.get()).values[0]?.value ?? 0).toBe(0);
  });

  it('a backlog moves the members to their shards between two publishes and back once it is gone; every member gets every event once, in order', async () => {
    const h = harness();
    const room = newRoom(crypto.randomUUID(), 3);
    for (const shard of room.shards) h.place(room, shard, 8);
    h.place(room, room.shards[2]!, 3, 'msgpack');
    const before = burst(room.guid, 5, 200);
    h.fanout.enqueue(room, before.slice());
    h.turn();
    // 20 KB events to 27 sockets: one chunk is ~7 MB of fan-out, far over the slice.
    const flood = burst(room.guid, 40, 20_000);
    h.fanout.enqueue(room, flood.slice());
    h.turn();
    expect(room.spread).toBe(true);
    // Members joining during the backlog: a new shard starts after everything queued, on its own topic.
    const late = addShard(room);
    h.place(room, late, 8);
    const during = burst(room.guid, 4, 200);
    h.fanout.enqueue(room, during.slice());
    h.drain();
    expect(room.spread).toBe(false);
    const after = burst(room.guid, 2, 200);
    h.fanout.enqueue(room, after.slice());
    h.drain();

    const all = ids([...before, ...flood, ...during, ...after]);
    for (const shard of room.shards.slice(0, 3)) expect(h.received(shard)).toEqual(all);
    expect(h.received(room.shards[2]!, 'msgpack')).toEqual(all);
    expect(h.received(late)).toEqual(ids([...during, ...after]));
    // The log: room topic, one move out, shard topics only, one move back, room topic again.
    const shape = h.log.map((e) => ('move' in e ? e.move : e.topic.split('/').length === 3 ? 'room topic' : 'shard topic'));
    const collapsed = shape.filter((x, k) => k === 0 || shape[k - 1] !== x);
    expect(collapsed).toEqual(['room topic', 'shards', 'shard topic', 'room', 'room topic']);
    const movedAt = h.log.filter((e): e is Moved => 'move' in e).map((e) => e.turn);
    expect(movedAt[0]).toBe(2);
    expect(movedAt[1]).toBeGreaterThan(5);
    expect(await moves(h)).toEqual({ shards: 1, room: 1 });
    expect(room.outbox).toHaveLength(0);
  });

  it("a turn's fan-out goes to the room topic while it fits in the slice; the chunk that would pass it moves the members first", async () => {
    const h = harness();
    const room = newRoom(crypto.randomUUID(), 1);
    const shard = room.shards[0]!;
    h.place(room, shard, 1);
    // Two chunks of one 150 KB event each: the first fits in the slice, the two together do not.
    const events = burst(room.guid, 2, 150_000);
    h.fanout.enqueue(room, events.slice());
    h.turn();

    expect(h.log.map((e) => ('move' in e ? e.move : e.topic))).toEqual([room.topics.json, 'shards', shard.topics.json, 'room']);
    expect(h.received(shard)).toEqual(ids(events));
    expect(room.spread).toBe(false);
    expect(await moves(h)).toEqual({ shards: 1, room: 1 });
  });
  it("a room without a backlog takes a turn's first chunk whole when it costs no more than one unit; the next turn goes on from the shards", async () => {
    const h = harness();
    const room = newRoom(crypto.randomUUID(), 2);
    for (const shard of room.shards) h.place(room, shard, 4);
    // 200 KB events, a chunk each: one to the 8 sockets is 1.6 MB, over the slice, within one unit.
    const events = burst(room.guid, 3, 200_000);
    h.fanout.enqueue(room, events.slice());
    h.turn();
    expect(h.log.map((e) => ('move' in e ? e.move : e.topic))).toEqual([room.topics.json, 'shards']);
    h.drain();

    expect(h.published.map((p) => [p.topic, p.turn])).toEqual([
      [room.topics.json, 1],
      [room.shards[0]!.topics.json, 2],
      [room.shards[1]!.topics.json, 3],
      [room.shards[0]!.topics.json, 4],
      [room.shards[1]!.topics.json, 5],
    ]);
    for (const shard of room.shards) expect(h.received(shard)).toEqual(ids(events));
    expect(room.spread).toBe(false);
    expect(await moves(h)).toEqual({ shards: 1, room: 1 });
  });
});
