import { Packr } from 'msgpackr';
import type { Logger } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { createMetrics } from '../src/metrics.js';
import { envelopeJson, retainedSize, type ProjectEvent } from '../src/protocol/events.js';
import { createFanout, FANOUT_BACKLOG_BYTES, FANOUT_SLICE_BYTES, MAX_FRAME_BYTES, queuedEnd, type FanoutRoom, type FanoutShard, type Frame } from '../src/rooms/fanout.js';
import { roomTopic } from '../src/rooms/topics.js';

/**
 * src/rooms/fanout.ts on its own: a fake publisher records every publish, and the test runs the
 * event-loop turns by hand (a turn runs what was scheduled before it began, as setImmediate does).
 */

interface Published {
  readonly topic: string;
  readonly frame: Frame;
  readonly binary: boolean;
  /** The turn it was published in (1-based). */
  readonly turn: number;
}

function harness(onQueueDelay?: (roomDelays: ReadonlyMap<string, number>, longestMs: number) => void) {
  const subscribers = new Map<string, number>();
  const published: Published[] = [];
  const scheduled: (() => void)[] = [];
  let turn = 0;
  const metrics = createMetrics('fanout-unit');
  const log = { warn: vi.fn(), error: vi.fn() };
  const fanout = createFanout({
    port: {
      publish: (topic, frame, binary) => published.push({ topic, frame, binary, turn }),
      numSubscribers: (topic) => subscribers.get(topic) ?? 0,
    },
    log: log as unknown as Pick<Logger, 'warn' | 'error'>,
    metrics,
    schedule: (fn) => void scheduled.push(fn),
    onQueueDelay,
  });
  return {
    fanout,
    subscribers,
    published,
    metrics,
    log,
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
  const room: FanoutRoom = { guid, shards: [], queuedId: '0-0', pending: [], pendingSince: 0, outbox: [], outboxBase: 0, outboxBytes: 0 };
  for (let i = 0; i < shards; i++) addShard(room);
  return room;
}

/** A shard opened now, as the registry opens one when the others are full. */
function addShard(room: FanoutRoom): FanoutShard {
  const index = room.shards.length;
  const shard: FanoutShard = { topics: { json: roomTopic(room.guid, 'json', index), msgpack: roomTopic(room.guid, 'msgpack', index) }, ...queuedEnd(room) };
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
    for (const shard of room.shards) h.subscribers.set(shard.topics.json, 8);
    h.subscribers.set(room.shards[1]!.topics.msgpack, 2);
    // 20 KB events: 13 to a chunk, and one chunk to one full shard (~2 MB) is over the slice.
    const first = burst(guid, 40, 20_000);
    h.fanout.enqueue(room, first.slice());
    h.turn();
    // A shard opened while the backlog is being published starts after everything queued.
    const late = addShard(room);
    h.subscribers.set(late.topics.json, 8);
    const second = burst(guid, 20, 20_000);
    h.fanout.enqueue(room, second.slice());
    const turns = 1 + h.drain();

    const all = [...first, ...second];
    for (const shard of room.shards.slice(0, 3)) expect(idsOn(h.published, shard.topics.json)).toEqual(ids(all));
    expect(idsOn(h.published, room.shards[1]!.topics.msgpack)).toEqual(ids(all));
    expect(idsOn(h.published, late.topics.json)).toEqual(ids(second));
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
    for (const shard of heavy.shards) h.subscribers.set(shard.topics.json, 8);
    h.subscribers.set(light.shards[0]!.topics.json, 1);
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
    for (const shard of heavy.shards) expect(idsOn(h.published, shard.topics.json)).toEqual(ids(heavyEvents));
  });

  it('publishes a backlog that grows past FANOUT_BACKLOG_BYTES in one turn', async () => {
    const h = harness();
    const room = newRoom(crypto.randomUUID(), 1);
    h.subscribers.set(room.shards[0]!.topics.json, 8);
    // 200 KB events: a chunk each, and one chunk to the shard (1.6 MB) is over the slice.
    const first = burst(room.guid, 40, 200_000);
    h.fanout.enqueue(room, first.slice());
    h.turn();
    expect(h.published).toHaveLength(1);
    expect(h.log.warn).not.toHaveBeenCalled();
    // 39 left plus 50 more is over the bound.
    const second = burst(room.guid, 50, 200_000);
    expect((39 + 50) * retainedSize(second[0]!)).toBeGreaterThan(FANOUT_BACKLOG_BYTES);
    h.fanout.enqueue(room, second.slice());
    h.turn();
    expect(h.published).toHaveLength(90);
    expect(h.published.filter((p) => p.turn === 2)).toHaveLength(89);
    expect(h.log.warn).toHaveBeenCalledTimes(1);
    expect(room.outbox).toHaveLength(0);
    expect(idsOn(h.published, room.shards[0]!.topics.json)).toEqual(ids([...first, ...second]));
    // Only the first turn left a backlog.
    expect((await h.metrics.fanOutDeferred.get()).values[0]?.value).toBe(1);
  });

  it('skips an event an encoder cannot carry for that encoding only', async () => {
    const h = harness();
    const room = newRoom(crypto.randomUUID(), 1);
    const { topics } = room.shards[0]!;
    h.subscribers.set(topics.json, 1);
    h.subscribers.set(topics.msgpack, 1);
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
    expect(h.log.error).toHaveBeenCalledTimes(2);
  });

  it('cuts chunks at MAX_FRAME_BYTES: a chunk may fill it exactly, and an event larger than it goes alone', () => {
    const h = harness();
    const room = newRoom(crypto.randomUUID(), 1);
    const { topics } = room.shards[0]!;
    h.subscribers.set(topics.json, 1);
    h.subscribers.set(topics.msgpack, 1);
    // Four of these are exactly MAX_FRAME_BYTES of retained size.
    const quarter = MAX_FRAME_BYTES / 4 - 64;
    const events = [...burst(room.guid, 9, quarter), event(room.guid, MAX_FRAME_BYTES + 1000), ...burst(room.guid, 2, quarter)];
    expect(retainedSize(events[0]!) * 4).toBe(MAX_FRAME_BYTES);
    h.fanout.enqueue(room, events.slice());
    h.drain();

    for (const topic of [topics.json, topics.msgpack]) {
      const frames = h.published.filter((p) => p.topic === topic);
      expect(frames.map((p) => idsIn(p.frame).length)).toEqual([4, 4, 1, 1, 2]);
      expect(frames.flatMap((p) => idsIn(p.frame))).toEqual(ids(events));
      const sizes = frames.map((p) => p.frame.length);
      expect(sizes.filter((_, i) => i !== 3).every((n) => n <= MAX_FRAME_BYTES)).toBe(true);
      expect(sizes[3]).toBeGreaterThan(MAX_FRAME_BYTES);
    }
  });

  it('reports after each turn how long each room still behind has waited, and nothing once every room caught up', () => {
    const reports: { turn: number; delays: Map<string, number>; longest: number }[] = [];
    let turnNo = 0;
    const h = harness((delays, longest) => reports.push({ turn: turnNo, delays: new Map(delays), longest }));
    const heavy = newRoom(crypto.randomUUID(), 2);
    const light = newRoom(crypto.randomUUID(), 1);
    for (const shard of heavy.shards) h.subscribers.set(shard.topics.json, 8);
    h.subscribers.set(light.shards[0]!.topics.json, 1);
    h.fanout.enqueue(heavy, burst(heavy.guid, 64, 8200));
    h.fanout.enqueue(light, [event(light.guid, 200)]);
    const started = performance.now();
    while (true) {
      turnNo++;
      h.turn();
      if (!reports.length || reports[reports.length - 1]!.longest === 0) break;
      // Time passes between turns, as it does while uWS writes what a turn published.
      const until = performance.now() + 3;
      while (performance.now() < until);
    }
    const elapsed = performance.now() - started;
    // The heavy room needs five turns (see the slicing test); the light one is done in the first.
    const behind = reports.filter((r) => r.longest > 0);
    expect(behind.map((r) => [...r.delays.keys()])).toEqual([[heavy.guid], [heavy.guid], [heavy.guid], [heavy.guid]]);
    // Its oldest event's wait grows turn by turn, and never beyond the time that really passed.
    const waits = behind.map((r) => r.delays.get(heavy.guid)!);
    expect(waits).toEqual([...waits].sort((a, b) => a - b));
    expect(waits[3]! - waits[0]!).toBeGreaterThanOrEqual(9);
    expect(Math.max(...waits)).toBeLessThanOrEqual(elapsed);
    for (const r of behind) expect(r.longest).toBe(r.delays.get(heavy.guid));
    // Once caught up: one report that nothing waits, then silence (no report per idle turn).
    expect(reports[reports.length - 1]!.delays.size).toBe(0);
    const count = reports.length;
    h.fanout.enqueue(light, [event(light.guid, 200)]);
    h.drain();
    expect(reports.length).toBe(count);
  });
});
