import type { Config } from '../config.js';
import { hasExpired } from '../auth/principal.js';
import { monotonicMs } from '../connections/connection.js';
import type { ConnectionRegistry } from '../connections/registry.js';
import { CloseCodes } from '../errors.js';

// Liveness and expiry of open sockets, checked by one timer for all of them rather than a timer per
// socket: at tens of thousands of sockets, per-socket timers cost more than a walk over a Set.

type SweepConfig = Pick<Config, 'idleTimeoutMs' | 'heartbeatIntervalMs' | 'jwt'>;

/**
 * One pass a second over all sockets (a few comparisons each, no timer per socket): closes a socket
 * silent (no frame, no pong) for IDLE_TIMEOUT_S with 4408, one whose token expired with 4401, and
 * pings a socket once per HEARTBEAT_INTERVAL_S since its last ping. Pings are therefore staggered
 * by connection time instead of all going out in one burst.
 */
export function sweepSockets(config: SweepConfig, registry: ConnectionRegistry): void {
  const now = monotonicMs();
  const expiredBefore = Date.now() - config.jwt.clockToleranceMs;
  for (const conn of registry.all()) {
    const ws = conn.ws;
    if (!ws) continue;
    if (now - conn.lastSeenAt > config.idleTimeoutMs) ws.end(CloseCodes.HEARTBEAT_TIMEOUT, 'heartbeat timeout');
    else if (hasExpired(conn.principal, expiredBefore)) ws.end(CloseCodes.TOKEN_EXPIRED, 'token expired');
    else if (now - conn.lastPingAt >= config.heartbeatIntervalMs) {
      conn.lastPingAt = now;
      ws.cork(() => ws.ping());
    }
  }
}
