import { presenceChannel, presenceNodeKey, presenceNodesKey, presenceSeqKey } from '../redis/keys.js';
import type { RedisClient } from '../redis/client.js';

// Presence in Redis (see presence.ts): one hash per node, a sorted set of nodes by last refresh, a
// global sequence number and a pub/sub channel of changes. Each change is one script, so the change,
// its number and its message are one atomic step. The keys share the {presence} hash tag.

const NOW_MS = `local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

// A node-level change: this node's first connection of a user in a project joined (online) or its
// last one left. Refused (-1) when the node is not registered (it was reaped as dead while alive, or
// has not registered yet): the caller rewrites its whole entry (RECONCILE_LUA).
// KEYS nodes, node hash, seq; ARGV node, field, '1'|'0', channel.
const CHANGE_LUA = `
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return -1 end
local changed
if ARGV[3] == '1' then changed = redis.call('HSET', KEYS[2], ARGV[2], '1') else changed = redis.call('HDEL', KEYS[2], ARGV[2]) end
if changed == 0 then return 0 end
local seq = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[4], cjson.encode({seq = seq, node = ARGV[1], field = ARGV[2], online = (ARGV[3] == '1')}))
return seq
`;

// Registers / refreshes the node (Redis's clock, so instances' clocks never matter). 1 = it was not
// registered. KEYS nodes; ARGV node.
const HEARTBEAT_LUA = `${NOW_MS}
return redis.call('ZADD', KEYS[1], now, ARGV[1])
`;

// Makes this node's entry exactly `fields` (ARGV[3..]) and registers it: a change for every field
// added or removed. Used at startup (a previous run under this NODE_ID may have left users behind),
// after this node was reaped while alive, and after a change could not be recorded.
// KEYS nodes, node hash, seq; ARGV node, channel, fields…
const RECONCILE_LUA = `${NOW_MS}
redis.call('ZADD', KEYS[1], now, ARGV[1])
local want = {}
for i = 3, #ARGV do want[ARGV[i]] = true end
for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
  if want[field] then
    want[field] = nil
  else
    redis.call('HDEL', KEYS[2], field)
    local seq = redis.call('INCR', KEYS[3])
    redis.call('PUBLISH', ARGV[2], cjson.encode({seq = seq, node = ARGV[1], field = field, online = false}))
  end
end
for i = 3, #ARGV do
  if want[ARGV[i]] then
    want[ARGV[i]] = nil
    redis.call('HSET', KEYS[2], ARGV[i], '1')
    local seq = redis.call('INCR', KEYS[3])
    redis.call('PUBLISH', ARGV[2], cjson.encode({seq = seq, node = ARGV[1], field = ARGV[i], online = true}))
  end
end
return 1
`;

// Removes nodes (each user they had goes offline, one change each): those silent for expiry ms, or
// one named node (ARGV[4], at startup: whatever a previous run under the same NODE_ID left behind).
// KEYS nodes, seq; ARGV node-hash prefix, expiry ms, channel, node ('' = by expiry).
const REMOVE_NODES_LUA = `${NOW_MS}
local dead
if ARGV[4] ~= '' then dead = {ARGV[4]} else dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2])) end
for _, node in ipairs(dead) do
  local h = ARGV[1] .. node
  for _, field in ipairs(redis.call('HKEYS', h)) do
    local seq = redis.call('INCR', KEYS[2])
    redis.call('PUBLISH', ARGV[3], cjson.encode({seq = seq, node = node, field = field, online = false}))
  end
  redis.call('DEL', h)
  redis.call('ZREM', KEYS[1], node)
end
return #dead
`;

// Everything, consistently: the sequence number and every node's fields. KEYS nodes, seq; ARGV node-hash prefix.
const SNAPSHOT_LUA = `
local out = {tonumber(redis.call('GET', KEYS[2]) or '0')}
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = node
  out[#out + 1] = redis.call('HKEYS', ARGV[1] .. node)
end
return out
`;

type Scripts = {
  autocodePresenceChange(nodes: string, hash: string, seq: string, node: string, field: string, online: string, channel: string): Promise<number>;
  autocodePresenceHeartbeat(nodes: string, node: string): Promise<number>;
  autocodePresenceReconcile(nodes: string, hash: string, seq: string, node: string, channel: string, ...fields: string[]): Promise<number>;
  autocodePresenceRemove(nodes: string, seq: string, hashPrefix: string, expiryMs: number, channel: string, node: string): Promise<number>;
  autocodePresenceSnapshot(nodes: string, seq: string, hashPrefix: string): Promise<[number, ...(string | string[])[]]>;
};

/** The presence scripts with this node's keys bound. */
export interface PresenceScripts {
  /** The pub/sub channel the changes are published on. */
  readonly channel: string;
  /** Records a node-level transition; its sequence number, 0 when nothing changed, -1 when the node is not registered. */
  change(field: string, online: boolean): Promise<number>;
  /** Refreshes this node's registration; 1 when it was not registered. */
  heartbeat(): Promise<number>;
  /** Makes this node's entry exactly `fields` and registers it. */
  reconcile(fields: string[]): Promise<number>;
  /** Removes the nodes silent for `expiryMs`, or only this node (`self`); how many were removed. */
  remove(expiryMs: number, self: boolean): Promise<number>;
  /** Everything at one sequence number. */
  snapshot(): Promise<{ seq: number; nodes: [node: string, fields: string[]][] }>;
  /** The sequence number in Redis now. */
  seq(): Promise<number>;
}

export function presenceScripts(cmd: RedisClient, prefix: string, nodeId: string): PresenceScripts {
  if (!('autocodePresenceChange' in cmd)) {
    cmd.defineCommand('autocodePresenceChange', { numberOfKeys: 3, lua: CHANGE_LUA });
    cmd.defineCommand('autocodePresenceHeartbeat', { numberOfKeys: 1, lua: HEARTBEAT_LUA });
    cmd.defineCommand('autocodePresenceRemove', { numberOfKeys: 2, lua: REMOVE_NODES_LUA });
    cmd.defineCommand('autocodePresenceReconcile', { numberOfKeys: 3, lua: RECONCILE_LUA });
    cmd.defineCommand('autocodePresenceSnapshot', { numberOfKeys: 2, lua: SNAPSHOT_LUA });
  }
  const scripts = cmd as unknown as Scripts;
  const nodes = presenceNodesKey(prefix);
  const hash = presenceNodeKey(prefix, nodeId);
  const hashPrefix = presenceNodeKey(prefix, '');
  const seq = presenceSeqKey(prefix);
  const channel = presenceChannel(prefix);
  return {
    channel,
    change: (field, online) => scripts.autocodePresenceChange(nodes, hash, seq, nodeId, field, online ? '1' : '0', channel),
    heartbeat: () => scripts.autocodePresenceHeartbeat(nodes, nodeId),
    reconcile: (fields) => scripts.autocodePresenceReconcile(nodes, hash, seq, nodeId, channel, ...fields),
    remove: (expiryMs, self) => scripts.autocodePresenceRemove(nodes, seq, hashPrefix, expiryMs, channel, self ? nodeId : ''),
    async snapshot() {
      const [snapSeq, ...rest] = await scripts.autocodePresenceSnapshot(nodes, seq, hashPrefix);
      const out: [string, string[]][] = [];
      for (let i = 0; i + 1 < rest.length; i += 2) out.push([rest[i] as string, rest[i + 1] as string[]]);
      return { seq: Number(snapSeq), nodes: out };
    },
    seq: async () => Number((await cmd.call('GET', seq)) ?? 0),
  };
}
