import type { Logger } from 'pino';
import { throttledWarn } from '../logger.js';
import { presenceChannel, presenceNodeKey, presenceNodesKey, presenceSeqKey } from '../redis/keys.js';
import type { Connection } from '../connections/connection.js';
import type { RedisClient } from '../redis/client.js';
import type { PubSub } from '../redis/pubsub.js';

/** What the agents-server is told (docs/agents.md, `project_status_sync`). */
export type PresenceFrame =
  | { kind: 'snapshot'; seq: number; projects: { projectGuid: string; users: string[] }[] }
  | { kind: 'change'; seq: number; projectGuid: string; users: string[]; joined: string[]; left: string[] };

export interface Presence {
  /** A connection's join of a project was acknowledged. Idempotent per connection and project. */
  joined(conn: Connection, projectGuid: string): void;
  left(conn: Connection, projectGuid: string): void;
  /** The connection closed: it leaves every project it had joined. */
  closed(conn: Connection): void;
  /** Where frames go (the link); null while the link is down. Setting one sends a snapshot first. */
  setSink(sink: ((frame: PresenceFrame) => void) | null): void;
  close(): Promise<void>;
}

/** A node-level transition, numbered: what every instance applies to its aggregate. */
export interface PresenceChange {
  seq: number;
  node: string;
  /** `<projectGuid> <userId>` (a GUID has no space). */
  field: string;
  online: boolean;
}

/** Everything at one sequence number: every node and its fields. */
export interface PresenceSnapshot {
  seq: number;
  nodes: [node: string, fields: string[]][];
}

/**
 * Where presence crosses instances when there is no Redis: the worker threads of one process share
 * a hub in the main thread (src/workers/agents-hub.ts) that does what the scripts and the pub/sub
 * channel do in Redis: it numbers each node's transitions and sends every change to every node.
 */
export interface PresenceHub {
  /** Records a transition of `node`; it comes back through onChange, numbered, as to every node. */
  announce(node: string, field: string, online: boolean): void;
  /** Changes that come after it arrive after it, in order. */
  snapshot(): Promise<PresenceSnapshot>;
  onChange(handler: (change: PresenceChange) => void): void;
}

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

/**
 * Who is online in which project, across all instances, for the agents-server.
 *
 * Each instance counts its own connections per project and user, and records only node-level
 * transitions in Redis (a hash per node, plus a global sequence number and a pub/sub change, in one
 * script). Every instance keeps the aggregate (project → user → nodes) from a snapshot and the
 * changes after it; a gap in the sequence (missed pub/sub message) triggers a fresh snapshot. Each
 * instance refreshes its entry every expiry/3; one silent for PRESENCE_EXPIRY_MS is removed by
 * whichever instance notices first, which publishes its users leaving. The worker threads of a
 * process without Redis do the same through the main thread's hub (PresenceHub).
 */
export function createPresence(options: {
  /** With Redis: commands on `cmd`; changes arrive on the presence channel, registered with `pubsub`. */
  redis?: { cmd: RedisClient; pubsub: PubSub; prefix: string };
  /** Without Redis, in a worker thread: the instances of this process meet there. Ignored with Redis. */
  hub?: PresenceHub;
  nodeId: string;
  log: Logger;
  expiryMs: number;
}): Presence {
  const { log, nodeId, redis } = options;
  const hub = redis ? undefined : options.hub;
  const perConnection = new WeakMap<Connection, Set<string>>();
  /** This node's connections per project and user. */
  const local = new Map<string, Map<string, number>>();
  /** The aggregate over all nodes. */
  const projects = new Map<string, Map<string, Set<string>>>();
  let seq = 0;
  /** Alone (no Redis, no hub) this node's view is the whole view from the start. */
  let synced = !redis && !hub;
  let buffered: PresenceChange[] = [];
  let sink: ((frame: PresenceFrame) => void) | null = null;
  let closed = false;
  let chain: Promise<unknown> = Promise.resolve();
  const logError = throttledWarn(log);

  const keys = redis && {
    nodes: presenceNodesKey(redis.prefix),
    hash: presenceNodeKey(redis.prefix, nodeId),
    hashPrefix: presenceNodeKey(redis.prefix, ''),
    seq: presenceSeqKey(redis.prefix),
    channel: presenceChannel(redis.prefix),
  };
  const scripts = redis?.cmd as unknown as Scripts | undefined;
  if (redis && !('autocodePresenceChange' in redis.cmd)) {
    redis.cmd.defineCommand('autocodePresenceChange', { numberOfKeys: 3, lua: CHANGE_LUA });
    redis.cmd.defineCommand('autocodePresenceHeartbeat', { numberOfKeys: 1, lua: HEARTBEAT_LUA });
    redis.cmd.defineCommand('autocodePresenceRemove', { numberOfKeys: 2, lua: REMOVE_NODES_LUA });
    redis.cmd.defineCommand('autocodePresenceReconcile', { numberOfKeys: 3, lua: RECONCILE_LUA });
    redis.cmd.defineCommand('autocodePresenceSnapshot', { numberOfKeys: 2, lua: SNAPSHOT_LUA });
  }

  function usersOf(guid: string): string[] {
    return [...(projects.get(guid)?.keys() ?? [])].sort();
  }

  function snapshotFrame(): PresenceFrame {
    return { kind: 'snapshot', seq, projects: [...projects.keys()].sort().map((projectGuid) => ({ projectGuid, users: usersOf(projectGuid) })) };
  }

  /** Applies one change to the aggregate; emits a frame when a user appears in or disappears from a project. */
  function apply(c: PresenceChange): void {
    seq = c.seq;
    const space = c.field.indexOf(' ');
    if (space <= 0) return;
    const guid = c.field.slice(0, space);
    const userId = c.field.slice(space + 1);
    let users = projects.get(guid);
    let before = false;
    let after = false;
    if (c.online) {
      if (!users) projects.set(guid, (users = new Map()));
      let nodes = users.get(userId);
      before = !!nodes && nodes.size > 0;
      if (!nodes) users.set(userId, (nodes = new Set()));
      nodes.add(c.node);
      after = true;
    } else {
      const nodes = users?.get(userId);
      before = !!nodes && nodes.size > 0;
      nodes?.delete(c.node);
      after = !!nodes && nodes.size > 0;
      if (nodes && !after) users!.delete(userId);
      if (users && users.size === 0) projects.delete(guid);
    }
    if (before !== after) sink?.({ kind: 'change', seq, projectGuid: guid, users: usersOf(guid), joined: after ? [userId] : [], left: after ? [] : [userId] });
  }

  function receive(c: PresenceChange): void {
    if (!synced) {
      buffered.push(c);
      return;
    }
    if (c.seq <= seq) return; // already part of the snapshot
    if (c.seq !== seq + 1) {
      log.info({ expected: seq + 1, got: c.seq }, 'agents relay: presence changes missed; rebuilding from Redis');
      resync();
      return;
    }
    apply(c);
  }

  /** The whole view, consistently: from Redis (one script), or from the hub. */
  async function readSnapshot(): Promise<PresenceSnapshot> {
    if (hub) return hub.snapshot();
    const [snapSeq, ...rest] = await scripts!.autocodePresenceSnapshot(keys!.nodes, keys!.seq, keys!.hashPrefix);
    const nodes: PresenceSnapshot['nodes'] = [];
    for (let i = 0; i + 1 < rest.length; i += 2) nodes.push([rest[i] as string, rest[i + 1] as string[]]);
    return { seq: Number(snapSeq), nodes };
  }

  let resyncing = false;
  function resync(): void {
    if ((!redis && !hub) || closed || resyncing) return;
    resyncing = true;
    synced = false;
    buffered = [];
    readSnapshot().then(
      (snapshot) => {
        resyncing = false;
        projects.clear();
        for (const [node, fields] of snapshot.nodes) {
          for (const field of fields) {
            const space = field.indexOf(' ');
            if (space <= 0) continue;
            const guid = field.slice(0, space);
            const userId = field.slice(space + 1);
            let users = projects.get(guid);
            if (!users) projects.set(guid, (users = new Map()));
            let nodes = users.get(userId);
            if (!nodes) users.set(userId, (nodes = new Set()));
            nodes.add(node);
          }
        }
        seq = snapshot.seq;
        synced = true;
        sink?.(snapshotFrame());
        const pending = buffered;
        buffered = [];
        for (const c of pending) receive(c);
      },
      (err: unknown) => {
        resyncing = false;
        logError('agents relay: presence snapshot failed; retrying', err);
        setTimeout(resync, 1000).unref();
      },
    );
  }

  /** Records a node-level transition; serialized so Redis sees this node's changes in order. */
  function announce(guid: string, userId: string, online: boolean): void {
    const field = `${guid} ${userId}`;
    if (hub) return hub.announce(nodeId, field, online);
    if (!redis) {
      receive({ seq: seq + 1, node: nodeId, field, online });
      return;
    }
    chain = chain
      .then(async () => {
        const result = await scripts!.autocodePresenceChange(keys!.nodes, keys!.hash, keys!.seq, nodeId, field, online ? '1' : '0', keys!.channel);
        if (result === -1) await reconcile();
      })
      .catch((err: unknown) => {
        // Redis has a stale view of this node now: the next heartbeat rewrites it from the local counts.
        dirty = true;
        logError('agents relay: presence change not recorded (reconciled on the next heartbeat)', err);
      });
  }

  /** Rewrites this node's entry from the local counts (and registers the node). */
  async function reconcile(): Promise<void> {
    const fields: string[] = [];
    for (const [guid, users] of local) for (const userId of users.keys()) fields.push(`${guid} ${userId}`);
    dirty = true;
    await scripts!.autocodePresenceReconcile(keys!.nodes, keys!.hash, keys!.seq, nodeId, keys!.channel, ...fields);
    dirty = false;
  }

  /** Refreshes this node's entry; rewrites it if the node had been removed (reaped while alive) or a change was lost. */
  async function heartbeat(): Promise<void> {
    const added = await scripts!.autocodePresenceHeartbeat(keys!.nodes, nodeId);
    if (added === 1 || dirty) await reconcile();
  }

  /**
   * Pub/sub drops what is published while a subscriber reconnects, and a missed change is only
   * noticed when the next one arrives. So each heartbeat also reads the sequence number in Redis:
   * if what was applied is still behind what Redis had at the previous check (a whole interval ago,
   * so not a message in transit), or ahead of Redis (Redis lost its data), the view is rebuilt.
   */
  let remoteAtLastCheck = 0;
  async function checkMissed(): Promise<void> {
    if (!synced) return;
    const remote = Number((await redis!.cmd.call('GET', keys!.seq)) ?? 0);
    const missed = remote < seq || seq < remoteAtLastCheck;
    remoteAtLastCheck = remote;
    if (!missed) return;
    log.info({ applied: seq, redis: remote }, 'agents relay: presence out of step with Redis; rebuilding');
    resync();
  }

  let dirty = true;
  let timer: NodeJS.Timeout | null = null;
  if (hub) {
    // The hub's port delivers in order and loses nothing: one snapshot, then every change after it.
    hub.onChange(receive);
    resync();
  }
  if (redis) {
    redis.pubsub.subscribe(keys!.channel, onMessage).then(
      () => resync(),
      (err: unknown) => log.warn({ err: (err as Error).message }, 'agents relay: presence subscription failed (rebuilt when Redis answers)'),
    );
    // ioredis subscribes again by itself after a reconnect; changes published meanwhile are lost, so rebuild.
    redis.pubsub.onResubscribed(resync);
    // Start clean: a previous run under this NODE_ID (killed before its entry expired) may have left users behind.
    chain = reconcile().catch((err: unknown) => logError('agents relay: presence registration failed (retried every heartbeat)', err));
    timer = setInterval(() => {
      chain = chain
        .then(() => heartbeat())
        .then(() => checkMissed())
        .then(() => scripts!.autocodePresenceRemove(keys!.nodes, keys!.seq, keys!.hashPrefix, options.expiryMs, keys!.channel, ''))
        .then((removed) => {
          if (removed > 0) log.info({ removed }, 'agents relay: removed silent instances from presence');
        })
        .catch((err: unknown) => logError('agents relay: presence heartbeat failed', err));
    }, Math.max(200, Math.floor(options.expiryMs / 3)));
    timer.unref();
  }

  /** A change published on the presence channel (by any instance, this one included). */
  function onMessage(message: string): void {
    let c: PresenceChange;
    try {
      c = JSON.parse(message) as PresenceChange;
    } catch {
      return;
    }
    if (typeof c?.seq === 'number' && typeof c.node === 'string' && typeof c.field === 'string') receive(c);
  }

  function change(guid: string, userId: string, delta: 1 | -1): void {
    let users = local.get(guid);
    if (!users) local.set(guid, (users = new Map()));
    const count = (users.get(userId) ?? 0) + delta;
    if (count > 0) users.set(userId, count);
    else users.delete(userId);
    if (users.size === 0) local.delete(guid);
    if (delta === 1 && count === 1) announce(guid, userId, true);
    else if (delta === -1 && count === 0) announce(guid, userId, false);
  }

  return {
    joined(conn, guid) {
      let set = perConnection.get(conn);
      if (!set) perConnection.set(conn, (set = new Set()));
      if (set.has(guid)) return;
      set.add(guid);
      change(guid, conn.principal.userId, 1);
    },
    left(conn, guid) {
      if (!perConnection.get(conn)?.delete(guid)) return;
      change(guid, conn.principal.userId, -1);
    },
    closed(conn) {
      const set = perConnection.get(conn);
      if (!set) return;
      perConnection.delete(conn);
      for (const guid of set) change(guid, conn.principal.userId, -1);
    },
    setSink(s) {
      sink = s;
      if (s && synced) s(snapshotFrame());
    },
    async close() {
      closed = true;
      if (timer) clearInterval(timer);
      sink = null;
      if (!redis) return;
      // Leave cleanly: this node's users go offline now instead of after PRESENCE_EXPIRY_MS.
      await chain;
      await scripts!.autocodePresenceRemove(keys!.nodes, keys!.seq, keys!.hashPrefix, options.expiryMs, keys!.channel, nodeId).catch(() => {});
    },
  };
}
