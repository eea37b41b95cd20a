import { describe, expect, it } from 'vitest';
import type { Connection } from '../src/connections/connection.js';
import { CODECS, type CodecName } from '../src/protocol/codec.js';
import { forgetMember, moveMembers, subscribeMember, unsubscribeMember } from '../src/rooms/placement.js';
import type { Room, Shard } from '../src/rooms/registry.js';
import { roomTopic, shardTopic } from '../src/rooms/topics.js';

/**
 * src/rooms/placement.ts against sockets that record their topic calls (the real-socket side is
 * test/fanout-shards.test.ts): where a member subscribes, and what a move does to whom.
 */

function fakeConn(codec: CodecName, calls: string[]) {
  const topics = new Set<string>();
  const ws = {
    subscribe: (t: string) => (calls.push(`+${t}`), topics.add(t), true),
    unsubscribe: (t: string) => (calls.push(`-${t}`), topics.delete(t)),
  };
  const conn = { ws, codec: CODECS[codec], closed: false, cutPending: false } as unknown as Connection;
  return { conn, topics };
}

function room(guid: string, shards: number): Room {
  const r = { guid, topics: { json: roomTopic(guid, 'json'), msgpack: roomTopic(guid, 'msgpack') }, spread: false, shards: [] as Shard[] } as unknown as Room;
  for (let i = 0; i < shards; i++) r.shards.push({ topics: { json: shardTopic(guid, 'json', i), msgpack: shardTopic(guid, 'msgpack', i) }, sockets: [] } as unknown as Shard);
  return r;
}

describe("a member's topic (placement.ts)", () => {
  it('subscribes where its shard listens now, moves every listed socket (new topic first), and skips closed and cut sockets', () => {
    const calls: string[] = [];
    const r = room('g', 2);
    const a = fakeConn('json', calls);
    const b = fakeConn('msgpack', calls);
    const closed = fakeConn('json', calls);
    const cut = fakeConn('json', calls);
    subscribeMember(a.conn, r, r.shards[0]!);
    subscribeMember(b.conn, r, r.shards[1]!);
    subscribeMember(closed.conn, r, r.shards[1]!);
    subscribeMember(cut.conn, r, r.shards[1]!);
    expect([...a.topics]).toEqual(['project/g/json']);
    expect([...b.topics]).toEqual(['project/g/msgpack']);
    (closed.conn as { closed: boolean }).closed = true;
    // outbound.ts takes a socket chosen to be cut off every topic; a move must not put it back.
    (cut.conn as { cutPending: boolean }).cutPending = true;
    cut.topics.clear();
    calls.length = 0;

    moveMembers(r, true);
    r.spread = true;
    // Subscribe first: a uWS socket dropping its last topic loses what was queued for it this turn.
    expect(calls).toEqual(['+project/g/json/0', '-project/g/json', '+project/g/msgpack/1', '-project/g/msgpack']);
    expect([...a.topics]).toEqual(['project/g/json/0']);
    expect(cut.topics.size).toBe(0);

    // Joining while spread: the shard's topic. Leaving: off the topic it is on now.
    const late = fakeConn('json', calls);
    subscribeMember(late.conn, r, r.shards[1]!);
    expect([...late.topics]).toEqual(['project/g/json/1']);
    unsubscribeMember(b.conn, r, r.shards[1]!);
    expect(b.topics.size).toBe(0);
    forgetMember(closed.conn, r.shards[1]!);
    calls.length = 0;

    moveMembers(r, false);
    r.spread = false;
    expect(calls).toEqual(['+project/g/json', '-project/g/json/0', '+project/g/json', '-project/g/json/1']);
    expect([...a.topics]).toEqual(['project/g/json']);
    expect([...late.topics]).toEqual(['project/g/json']);
    expect(r.shards.map((s) => s.sockets.length)).toEqual([1, 2]);
  });
  it('a socket uWS throws on does not stop the rest of the room from moving', () => {
    const calls: string[] = [];
    const r = room('g', 1);
    const gone = fakeConn('json', calls);
    const live = fakeConn('json', calls);
    subscribeMember(gone.conn, r, r.shards[0]!);
    subscribeMember(live.conn, r, r.shards[0]!);
    (gone.conn.ws as unknown as { subscribe: () => never }).subscribe = () => {
      throw new Error('Invalid access of closed uWS.WebSocket/SSLWebSocket.');
    };
    moveMembers(r, true);
    expect([...live.topics]).toEqual(['project/g/json/0']);
  });
});
