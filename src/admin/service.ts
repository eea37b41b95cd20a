import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { membershipsOf } from '../connections/connection.js';
import type { ConnectionRegistry } from '../connections/registry.js';
import { GatewayError } from '../errors.js';
import type { PubSub } from '../redis/pubsub.js';
import { ALONE, createRedisFabric, type AdminAction, type AdminFabric, type AdminLocal, type AdminQuery, type NodeReport } from './fabric.js';
import { createSanctionStore, type SanctionStore } from './sanctions-redis.js';
import { blockField, revocationField, type Sanction, type Sanctions } from '../edge/sanctions.js';

/** What the server API does to this gateway's own sockets (ws/server.ts). */
export interface AdminSockets {
  /** Closes the user's sockets here with 4403 and `reason`; returns how many. */
  disconnectUser(userId: string, reason: string): number;
  /** Takes the user's sockets here out of the project (`leave_project`, reason `access_revoked`); returns how many. */
  revokeProject(userId: string, projectGuid: string): number;
}

export interface PresenceAnswer {
  readonly projectGuid: string;
  readonly users: { userId: string; connections: number }[];
  readonly connections: number;
  /** Gateways (instances, worker threads) that answered. */
  readonly nodes: number;
}

export interface InfoAnswer {
  readonly nodes: { node: string; connections: number; rooms: number }[];
  readonly connections: number;
}

export interface AdminService {
  disconnect(userId: string, reason: string): Promise<void>;
  /** Revokes now; resolves with when (tokens issued at or before it are refused) and until when it holds. */
  revoke(userId: string, projectGuid: string): Promise<{ revokedAt: number; expiresAt: number }>;
  /** Blocks until `until` (epoch ms; a time already past lifts a block). */
  block(userId: string, until: number, reason: string): Promise<void>;
  presence(projectGuid: string): Promise<PresenceAnswer>;
  info(): Promise<InfoAnswer>;
  close(): Promise<void>;
}

export interface AdminServiceDeps {
  readonly config: Config;
  readonly instanceId: string;
  readonly sanctions: Sanctions;
  readonly registry: ConnectionRegistry;
  readonly sockets: AdminSockets;
  readonly pubsub: PubSub | null;
  /** Without Redis, in a worker thread: the way to the other threads (workers/admin-hub.ts). */
  readonly hub?: ((local: AdminLocal) => AdminFabric) | undefined;
  readonly log: Logger;
}

/** How often a start that could not read the sanctions from Redis tries again. */
const RELOAD_RETRY_MS = 2000;

/**
 * The server API's actions and queries (src/http/admin.ts answers with them): each action is
 * applied here, kept in Redis when it must outlive a restart (blocks, revocations), and sent to
 * every other gateway; each query asks every gateway for its own sockets and sums the answers.
 */
export async function createAdminService(deps: AdminServiceDeps): Promise<AdminService> {
  const { config, instanceId, sanctions, registry, sockets, log } = deps;

  function apply(action: AdminAction): void {
    switch (action.op) {
      case 'disconnect':
        sockets.disconnectUser(action.userId, action.reason);
        return;
      case 'block':
        sanctions.apply({ field: blockField(action.userId), at: action.until, expiresAt: action.until });
        if (action.until > Date.now()) sockets.disconnectUser(action.userId, action.reason || 'blocked');
        return;
      case 'revoke':
        sanctions.apply({ field: revocationField(action.userId, action.projectGuid), at: action.at, expiresAt: action.expiresAt });
        sockets.revokeProject(action.userId, action.projectGuid);
        return;
    }
  }

  const local: AdminLocal = { apply, report: (query) => reportOf(instanceId, registry, query) };
  let store: SanctionStore | null = null;
  let fabric: AdminFabric = deps.hub ? deps.hub(local) : ALONE;
  let closeRedis = async () => {};
  let retry: NodeJS.Timeout | null = null;
  if (config.redis && deps.pubsub) {
    const { createRedisClient, closeRedisClient } = await import('../redis/client.js');
    const client = createRedisClient(config.redis, instanceId, 'admin', { commandTimeoutMs: 2000 });
    closeRedis = () => closeRedisClient(client);
    store = createSanctionStore(client, config.redis.prefix, log);
    const load = async () => {
      try {
        const n = await store!.loadInto(sanctions);
        if (n > 0) log.info({ sanctions: n }, 'sanctions loaded from Redis');
        return true;
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'sanctions not loaded from Redis yet; retrying');
        return false;
      }
    };
    // Pub/sub keeps nothing: what was sanctioned while this instance's subscriber was away is read again.
    deps.pubsub.onResubscribed(() => void load());
    if (!(await load())) {
      retry = setInterval(() => void load().then((ok) => ok && retry && (clearInterval(retry), (retry = null))), RELOAD_RETRY_MS);
      retry.unref();
    }
    fabric = await createRedisFabric({ publisher: client, pubsub: deps.pubsub, prefix: config.redis.prefix, instanceId, local, log });
  }

  async function keep(sanction: Sanction): Promise<void> {
    try {
      await store?.save(sanction);
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'sanction not stored in Redis');
      throw new GatewayError('UNAVAILABLE', 'Redis unavailable: nothing was applied, retry later');
    }
  }

  async function everywhere(action: AdminAction): Promise<void> {
    apply(action);
    try {
      await fabric.broadcast(action);
    } catch (err) {
      log.warn({ err: (err as Error).message, op: action.op }, 'admin action not sent to the other instances');
      throw new GatewayError('UNAVAILABLE', 'applied on this instance only: Redis unavailable, retry');
    }
  }

  async function gather(query: AdminQuery): Promise<NodeReport[]> {
    const mine = local.report(query);
    try {
      return [mine, ...(await fabric.gather(query))];
    } catch (err) {
      // A partial count presented as the whole would mislead: refuse instead.
      log.warn({ err: (err as Error).message, op: query.op }, 'admin query not sent to the other instances');
      throw new GatewayError('UNAVAILABLE', 'Redis unavailable: the other instances cannot be asked, retry');
    }
  }

  return {
    disconnect: (userId, reason) => everywhere({ op: 'disconnect', userId, reason }),
    async revoke(userId, projectGuid) {
      const revokedAt = Date.now();
      const expiresAt = revokedAt + config.revocationTtlS * 1000;
      const sanction = { field: revocationField(userId, projectGuid), at: revokedAt, expiresAt };
      await keep(sanction);
      if (!sanctions.apply(sanction)) throw new GatewayError('UNAVAILABLE', 'too many live sanctions in this process');
      await everywhere({ op: 'revoke', userId, projectGuid, at: revokedAt, expiresAt });
      return { revokedAt, expiresAt };
    },
    async block(userId, until, reason) {
      const sanction = { field: blockField(userId), at: until, expiresAt: until };
      await keep(sanction);
      if (!sanctions.apply(sanction)) throw new GatewayError('UNAVAILABLE', 'too many live sanctions in this process');
      await everywhere({ op: 'block', userId, until, reason });
    },
    async presence(projectGuid) {
      const reports = await gather({ op: 'presence', projectGuid });
      const users = new Map<string, number>();
      for (const r of reports) for (const [userId, n] of r.users ?? []) users.set(userId, (users.get(userId) ?? 0) + n);
      const list = [...users].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([userId, connections]) => ({ userId, connections }));
      return { projectGuid, users: list, connections: list.reduce((sum, u) => sum + u.connections, 0), nodes: reports.length };
    },
    async info() {
      const reports = await gather({ op: 'info' });
      const nodes = reports.map(({ node, connections, rooms }) => ({ node, connections, rooms })).sort((a, b) => (a.node < b.node ? -1 : 1));
      return { nodes, connections: nodes.reduce((sum, n) => sum + n.connections, 0) };
    },
    async close() {
      if (retry) clearInterval(retry);
      await fabric.close();
      await closeRedis();
    },
  };
}

/** This gateway's answer: its open sockets, the projects joined here, and for presence each user's joined sockets. */
function reportOf(node: string, registry: ConnectionRegistry, query: AdminQuery): NodeReport {
  const projects = new Set<string>();
  const users = new Map<string, number>();
  for (const conn of registry.all()) {
    for (const m of membershipsOf(conn)) {
      if (!m.joined) continue;
      projects.add(m.guid);
      if (query.op === 'presence' && m.guid === query.projectGuid) users.set(conn.principal.userId, (users.get(conn.principal.userId) ?? 0) + 1);
    }
  }
  return { node, connections: registry.size, rooms: projects.size, ...(query.op === 'presence' ? { users: [...users] } : {}) };
}
