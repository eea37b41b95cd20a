import type { Logger } from 'pino';
import { throttledWarn } from '../logger.js';
import type { Connection } from '../connections/connection.js';
import type { RedisClient } from '../redis/client.js';
import type { PubSub } from '../redis/pubsub.js';
import { presenceScripts, type PresenceScripts } from './presence-scripts.js';

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

type Sink = ((frame: PresenceFrame) => void) | null;

/** The aggregate over all nodes (project → user → nodes), kept from a snapshot and the changes after it. */
interface PresenceView {
  seq(): number;
  /** False while a snapshot is being read (changes wait for it). */
  synced(): boolean;
  /** A numbered change: applied in order; a gap means changes were missed, and the view is rebuilt. */
  receive(c: PresenceChange): void;
  /** Rebuilds the view from a fresh snapshot (changes received meanwhile are applied after it). */
  resync(): void;
  setSink(sink: Sink): void;
  close(): void;
}

/** `readSnapshot` null: this node is alone (no Redis, no hub), and its view is the whole view from the start. */
function createPresenceView(options: { log: Logger; logError: (msg: string, err: unknown) => void; readSnapshot: (() => Promise<PresenceSnapshot>) | null }): PresenceView {
  const { log, readSnapshot } = options;
  const projects = new Map<string, Map<string, Set<string>>>();
  let seq = 0;
  let synced = readSnapshot === null;
  let buffered: PresenceChange[] = [];
  let sink: Sink = null;
  let closed = false;
  let resyncing = false;

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

  function load(snapshot: PresenceSnapshot): void {
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
  }

  function resync(): void {
    if (!readSnapshot || closed || resyncing) return;
    resyncing = true;
    synced = false;
    buffered = [];
    readSnapshot().then(
      (snapshot) => {
        resyncing = false;
        load(snapshot);
        synced = true;
        sink?.(snapshotFrame());
        const pending = buffered;
        buffered = [];
        for (const c of pending) receive(c);
      },
      (err: unknown) => {
        resyncing = false;
        options.logError('agents relay: presence snapshot failed; retrying', err);
        setTimeout(resync, 1000).unref();
      },
    );
  }

  return {
    seq: () => seq,
    synced: () => synced,
    receive,
    resync,
    setSink(s) {
      sink = s;
      if (s && synced) s(snapshotFrame());
    },
    close() {
      closed = true;
      sink = null;
    },
  };
}

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
  const logError = throttledWarn(log);
  const scripts = redis ? presenceScripts(redis.cmd, redis.prefix, nodeId) : null;
  const view = createPresenceView({ log, logError, readSnapshot: hub ? () => hub.snapshot() : scripts ? () => scripts.snapshot() : null });
  const local = countLocalPresence(announce);

  /** Records a node-level transition: through the hub, in Redis, or (alone) straight into the view. */
  function announce(guid: string, userId: string, online: boolean): void {
    const field = `${guid} ${userId}`;
    if (hub) return hub.announce(nodeId, field, online);
    if (!entry) {
      view.receive({ seq: view.seq() + 1, node: nodeId, field, online });
      return;
    }
    entry.announce(field, online);
  }

  if (hub) {
    // The hub's port delivers in order and loses nothing: one snapshot, then every change after it.
    hub.onChange(view.receive);
    view.resync();
  }
  const entry = redis && scripts ? startRedisPresenceEntry({ redis, scripts, view, localFields: local.fields, log, logError, expiryMs: options.expiryMs }) : null;

  return {
    joined: local.joined,
    left: local.left,
    closed: local.closed,
    setSink: (s) => view.setSink(s),
    async close() {
      view.close();
      if (!entry) return;
      await entry.close();
    },
  };
}

interface LocalPresence extends Pick<Presence, 'joined' | 'left' | 'closed'> {
  /** `<projectGuid> <userId>` of every user online on this node. */
  fields(): string[];
}

/**
 * This node's connections per project and user; `announce` is told when a user's first connection
 * joins a project and when their last one leaves it (a node-level transition).
 */
function countLocalPresence(announce: (guid: string, userId: string, online: boolean) => void): LocalPresence {
  const perConnection = new WeakMap<Connection, Set<string>>();
  /** This node's connections per project and user. */
  const local = new Map<string, Map<string, number>>();

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
    fields() {
      const fields: string[] = [];
      for (const [guid, users] of local) for (const userId of users.keys()) fields.push(`${guid} ${userId}`);
      return fields;
    },
  };
}

/**
 * This node's entry in Redis: its transitions recorded in order, its heartbeat (which also removes
 * silent instances), rewriting the entry from the local counts when Redis's copy may be stale, and
 * noticing changes the view missed. Subscribes to the presence channel at once.
 */
function startRedisPresenceEntry(options: {
  redis: { pubsub: PubSub };
  scripts: PresenceScripts;
  view: PresenceView;
  /** `<projectGuid> <userId>` of every user online on this node. */
  localFields(): string[];
  log: Logger;
  logError: (msg: string, err: unknown) => void;
  expiryMs: number;
}): { announce(field: string, online: boolean): void; close(): Promise<void> } {
  const { redis, scripts, view, log, logError } = options;
  let chain: Promise<unknown> = Promise.resolve();
  /** Redis may have a stale view of this node: the next heartbeat rewrites it from the local counts. */
  let dirty = true;

  /** Records a node-level transition; serialized so Redis sees this node's changes in order. */
  function announce(field: string, online: boolean): void {
    chain = chain
      .then(async () => {
        if ((await scripts.change(field, online)) === -1) await reconcile();
      })
      .catch((err: unknown) => {
        dirty = true;
        logError('agents relay: presence change not recorded (reconciled on the next heartbeat)', err);
      });
  }

  /** Rewrites this node's entry from the local counts (and registers the node). */
  async function reconcile(): Promise<void> {
    const fields = options.localFields();
    dirty = true;
    await scripts.reconcile(fields);
    dirty = false;
  }

  /** Refreshes this node's entry; rewrites it if the node had been removed (reaped while alive) or a change was lost. */
  async function heartbeat(): Promise<void> {
    const added = await scripts.heartbeat();
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
    if (!view.synced()) return;
    const remote = await scripts.seq();
    const seq = view.seq();
    const missed = remote < seq || seq < remoteAtLastCheck;
    remoteAtLastCheck = remote;
    if (!missed) return;
    log.info({ applied: seq, redis: remote }, 'agents relay: presence out of step with Redis; rebuilding');
    view.resync();
  }

  /** A change published on the presence channel (by any instance, this one included). */
  function onMessage(message: string): void {
    let c: PresenceChange;
    try {
      c = JSON.parse(message) as PresenceChange;
    } catch {
      return;
    }
    if (typeof c?.seq === 'number' && typeof c.node === 'string' && typeof c.field === 'string') view.receive(c);
  }

  redis.pubsub.subscribe(scripts.channel, onMessage).then(
    () => view.resync(),
    (err: unknown) => log.warn({ err: (err as Error).message }, 'agents relay: presence subscription failed (rebuilt when Redis answers)'),
  );
  // ioredis subscribes again by itself after a reconnect; changes published meanwhile are lost, so rebuild.
  redis.pubsub.onResubscribed(view.resync);
  // Start clean: a previous run under this NODE_ID (killed before its entry expired) may have left users behind.
  chain = reconcile().catch((err: unknown) => logError('agents relay: presence registration failed (retried every heartbeat)', err));
  const timer = setInterval(() => {
    chain = chain
      .then(() => heartbeat())
      .then(() => checkMissed())
      .then(() => scripts.remove(options.expiryMs, false))
      .then((removed) => {
        if (removed > 0) log.info({ removed }, 'agents relay: removed silent instances from presence');
      })
      .catch((err: unknown) => logError('agents relay: presence heartbeat failed', err));
  }, Math.max(200, Math.floor(options.expiryMs / 3)));
  timer.unref();

  return {
    announce,
    async close() {
      clearInterval(timer);
      // Leave cleanly: this node's users go offline now instead of after PRESENCE_EXPIRY_MS.
      await chain;
      await scripts.remove(options.expiryMs, true).catch(() => {});
    },
  };
}
