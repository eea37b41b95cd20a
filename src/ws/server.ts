import type { WebSocketBehavior } from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { monotonicMs, type SocketData } from '../connections/connection.js';
import type { ConnectionHooks } from '../connections/hooks.js';
import type { ConnectionRegistry } from '../connections/registry.js';
import { membershipOf } from '../connections/connection.js';
import { releaseDrainWaiters } from '../connections/send.js';
import { CloseCodes } from '../errors.js';
import { closeCodeLabel, type Metrics } from '../metrics.js';
import type { Rooms } from '../rooms/rooms.js';
import type { UwsModule } from '../uws.js';
import { dedicatedCollapse, uwsCompression } from '../connections/compression.js';
import type { OutboundBudget } from './outbound.js';
import { sweepSockets } from './heartbeat.js';
import { createSession, type SessionDeps } from './session.js';
import { createUpgradeHandler, type UpgradeDeps } from './upgrade.js';

export type WebSocketServerDeps = UpgradeDeps &
  SessionDeps & {
    readonly config: Config;
    readonly registry: ConnectionRegistry;
    readonly rooms: Rooms;
    readonly outbound: OutboundBudget;
    readonly hooks?: ConnectionHooks | undefined;
    readonly log: Logger;
    readonly metrics: Metrics;
    /** The loaded uWS module, for its compression constants. */
    readonly uws: UwsModule;
  };

/**
 * The WebSocket endpoint: the uWS behavior made of the upgrade (who gets in), the session (what a
 * socket may do) and the outbound budget (what its unsent bytes may cost), with the socket's open
 * and close bookkeeping, and the timers that sweep the sockets. The WebSocketManager of the design
 * document (the connections themselves are in src/connections/).
 */
export function createWebSocketServer(deps: WebSocketServerDeps) {
  const { config, registry, rooms, outbound, log, metrics } = deps;
  const upgrades = createUpgradeHandler(deps);
  const session = createSession(deps);
  const collapsed = dedicatedCollapse(config.compression.mode);
  if (collapsed) log.warn({ wsCompression: config.compression.mode }, collapsed);

  const behavior: WebSocketBehavior<SocketData> = {
    // Twice the limit, so a frame just over it is answered with 1009 (session.message) instead of uWS's abrupt cut.
    maxPayloadLength: config.maxPayloadBytes * 2,
    maxBackpressure: config.maxBackpressureBytes,
    // A subscriber too slow for its buffer is closed rather than silently skipped (uWS #499):
    // it reconnects and resumes from its last id, so nothing is lost.
    closeOnBackpressureLimit: 1,
    // Liveness is ours (heartbeat.ts): uWS's own idle timer is reset by our sends, so it cannot tell
    // a dead reader in a busy room from a live one. Kept only as a backstop well past our timeout.
    idleTimeout: Math.min(960, Math.max(16, Math.ceil((config.idleTimeoutMs * 2) / 4000) * 4)),
    sendPingsAutomatically: false,
    // permessage-deflate for the clients that offer it (WS_COMPRESSION); which frames: compression.ts.
    compression: uwsCompression(config.compression.mode, deps.uws),
    upgrade: upgrades.upgrade,
    open(ws) {
      const conn = ws.getUserData().conn;
      conn.ws = ws;
      registry.add(conn);
      metrics.connections.inc();
      metrics.connectionsOpened.inc();
      if (log.isLevelEnabled('info')) log.info({ conn: conn.id, userId: conn.principal.userId, remoteAddress: conn.remoteAddress, codec: conn.codec.name }, 'connection opened');
      deps.hooks?.opened(conn);
    },
    message: session.message,
    pong(ws) {
      ws.getUserData().conn.lastSeenAt = monotonicMs();
    },
    drain: outbound.drained,
    close(ws, code, message) {
      const conn = ws.getUserData().conn;
      conn.closed = true;
      conn.ws = null;
      registry.remove(conn);
      upgrades.release(conn);
      deps.hooks?.closed(conn);
      rooms.leaveAll(conn);
      releaseDrainWaiters(conn);
      metrics.connections.dec();
      metrics.connectionsClosed.inc({ code: closeCodeLabel(code) });
      if (log.isLevelEnabled('info')) {
        log.info(
          { conn: conn.id, userId: conn.principal.userId, code, reason: Buffer.from(message).toString().slice(0, 123), durationMs: monotonicMs() - conn.connectedAt },
          'connection closed',
        );
      }
    },
  };

  let sweepTimer: NodeJS.Timeout | null = null;
  let budgetTimer: NodeJS.Timeout | null = null;

  return {
    behavior,
    /** Starts the once-a-second sweep (heartbeat, idle, expiry) and the budget check twice a second. */
    start(): void {
      sweepTimer = setInterval(() => sweepSockets(config, deps.registry), Math.min(1000, config.heartbeatIntervalMs));
      sweepTimer.unref();
      budgetTimer = setInterval(outbound.enforce, 500);
      budgetTimer.unref();
    },
    stop(): void {
      if (sweepTimer) clearInterval(sweepTimer);
      if (budgetTimer) clearInterval(budgetTimer);
    },
    /** The server API: closes a user's sockets on this thread with 4403 (the client library does not reconnect). */
    disconnectUser(userId: string, reason: string): number {
      const mine = registry.ofUser(userId);
      // A close reason is at most 123 bytes.
      const why = Buffer.from(reason || 'disconnected by the server').subarray(0, 120).toString();
      for (const conn of mine) conn.ws?.end(CloseCodes.DISCONNECTED, why);
      return mine.length;
    },
    /** The server API: takes a user's sockets on this thread out of a project (leave_project, access_revoked). */
    revokeProject(userId: string, projectGuid: string): number {
      let n = 0;
      for (const conn of registry.ofUser(userId)) {
        if (!membershipOf(conn, projectGuid)) continue;
        session.revokeProject(conn, projectGuid);
        n++;
      }
      return n;
    },
    /** Closes every socket (shutdown: 1001, so clients reconnect elsewhere and resume). */
    closeAll(code: number, reason: string): void {
      for (const conn of [...registry.all()]) conn.ws?.end(code, reason);
    },
  };
}
