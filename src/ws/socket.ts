import type { HttpRequest, HttpResponse, WebSocket, WebSocketBehavior, us_socket_context_t } from 'uWebSockets.js';
import type { Logger } from 'pino';
import { canAccessProject, extractToken, type TokenVerifier } from '../auth/tokens.js';
import type { Config } from '../config.js';
import { CloseCodes, toGatewayError, type ErrorCode } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { statusLine } from '../http/respond.js';
import { CODECS, negotiateSubprotocol } from '../protocol/codec.js';
import { dataProblem } from '../protocol/limits.js';
import { isGuid, type ClientFrame, type Envelope, type FeedbackData } from '../protocol/messages.js';
import { requestIdOf, validateClientFrame } from '../protocol/schemas.js';
import type { Connection } from '../rooms/connection.js';
import { membershipOf, releaseDrainWaiters, sendTo } from '../rooms/connection.js';
import type { Rooms } from '../rooms/rooms.js';
import { errorReply, reply } from './frames.js';
import { takeToken } from './rate-limit.js';

/**
 * Stores a user's feedback for the agents-server and resolves the `user_feedback_response` data
 * (rejects with a GatewayError when it was not stored); null when no agents-server is configured.
 */
export type FeedbackForwarder = (feedback: { projectGuid: string; userId: string; requestId: string | null; data: FeedbackData }) => Promise<object> | null;

/** Connection lifecycle hooks for the agents relay (targeted replies, presence). Must not throw. */
export interface ConnectionHooks {
  opened(conn: Connection): void;
  /** A join_project was acknowledged. */
  joined(conn: Connection, projectGuid: string): void;
  left(conn: Connection, projectGuid: string): void;
  /** Called before the connection's memberships are released. */
  closed(conn: Connection): void;
}

export interface SocketDeps {
  readonly config: Config;
  readonly verifyToken: TokenVerifier;
  readonly rooms: Rooms;
  readonly forwardFeedback: FeedbackForwarder;
  readonly hooks?: ConnectionHooks;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly isShuttingDown: () => boolean;
}

/** The WebSocket side: upgrade (auth), frame routing, heartbeat, close bookkeeping. */
export function createSocketLayer(deps: SocketDeps) {
  const { config, verifyToken, rooms, log, metrics } = deps;
  const connections = new Set<Connection>();
  let nextConnectionId = 1;

  function rejectUpgrade(res: HttpResponse, status: number, code: ErrorCode, message: string): void {
    metrics.upgradesRejected.inc({ status: String(status) });
    res.cork(() => {
      res.writeStatus(statusLine(status)).writeHeader('content-type', 'application/json').end(JSON.stringify({ error: { code, message } }));
    });
  }

  // Synchronous by design: token verification needs no I/O, so `req` is used only before we return.
  function upgrade(res: HttpResponse, req: HttpRequest, context: us_socket_context_t): void {
    const token = extractToken(req.getQuery('token'), req.getHeader('authorization'));
    const secKey = req.getHeader('sec-websocket-key');
    const offered = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    const forwardedFor = req.getHeader('x-forwarded-for');
    const remoteAddress = forwardedFor.split(',')[0]!.trim() || Buffer.from(res.getRemoteAddressAsText()).toString();

    if (deps.isShuttingDown()) return rejectUpgrade(res, 503, 'UNAVAILABLE', 'server is shutting down');
    if (!token) return rejectUpgrade(res, 401, 'UNAUTHORIZED', 'missing token (?token= or Authorization: Bearer)');
    let principal;
    try {
      principal = verifyToken(token);
    } catch (err) {
      log.info({ remoteAddress, reason: (err as Error).message }, 'upgrade rejected');
      return rejectUpgrade(res, 401, 'UNAUTHORIZED', (err as Error).message);
    }
    const negotiated = negotiateSubprotocol(offered);
    if (!negotiated) return rejectUpgrade(res, 400, 'UNSUPPORTED_PROTOCOL', `offer one of the subprotocols autocode.v1.json, autocode.v1.msgpack`);

    const now = Date.now();
    const conn: Connection = {
      id: nextConnectionId++,
      principal,
      codec: CODECS[negotiated.codec],
      remoteAddress,
      connectedAt: now,
      ws: null,
      closed: false,
      lastSeenAt: now,
      lastPingAt: now,
      rooms: [],
      tokens: config.rateLimit.burst,
      tokensAt: now,
      limitedDrops: 0,
      drainWaiters: null,
    };
    res.upgrade(conn, secKey, negotiated.protocol, extensions, context);
  }

  function send(ws: WebSocket<Connection>, conn: Connection, envelope: Envelope): void {
    // Inside uWS callbacks the socket is already corked.
    ws.send(conn.codec.encode(envelope), conn.codec.binary, false);
  }

  function sendLater(conn: Connection, envelope: Envelope): void {
    sendTo(conn, conn.codec.encode(envelope));
  }

  function fail(conn: Connection, code: ErrorCode, message: string | undefined, projectGuid: string | null, id: string | null): Envelope {
    metrics.errors.inc({ code });
    return errorReply(code, message, projectGuid, id);
  }

  function route(ws: WebSocket<Connection>, conn: Connection, frame: ClientFrame): void {
    metrics.framesReceived.inc({ type: frame.type });
    const { projectGuid, id } = frame;
    switch (frame.type) {
      case 'ping':
        return send(ws, conn, reply('pong', projectGuid, id, { serverTime: Date.now() }));
      case 'join_project': {
        if (!canAccessProject(conn.principal, frame.projectGuid)) return send(ws, conn, fail(conn, 'FORBIDDEN', undefined, projectGuid, id));
        if (!membershipOf(conn, frame.projectGuid) && conn.rooms.length >= config.maxRoomsPerConnection) {
          return send(ws, conn, fail(conn, 'TOO_MANY_ROOMS', `at most ${config.maxRoomsPerConnection} projects per connection`, projectGuid, id));
        }
        rooms.join(conn, frame.projectGuid, frame.data?.since).then(
          (result) => {
            if (!result) return;
            sendLater(conn, reply('join_project', projectGuid, id, result));
            if (!conn.closed) deps.hooks?.joined(conn, frame.projectGuid);
          },
          (err: unknown) => {
            const e = toGatewayError(err);
            if (e.code === 'INTERNAL') log.error({ err, projectGuid, userId: conn.principal.userId }, 'join failed');
            sendLater(conn, fail(conn, e.code, e.code === 'INTERNAL' ? undefined : e.message, projectGuid, id));
          },
        );
        return;
      }
      case 'leave_project':
        if (!rooms.leave(conn, frame.projectGuid)) return send(ws, conn, fail(conn, 'NOT_JOINED', undefined, projectGuid, id));
        deps.hooks?.left(conn, frame.projectGuid);
        return send(ws, conn, reply('leave_project', projectGuid, id, {}));
      case 'user_feedback': {
        if (!canAccessProject(conn.principal, frame.projectGuid)) return send(ws, conn, fail(conn, 'FORBIDDEN', undefined, projectGuid, id));
        // The frame is already under MAX_PAYLOAD_BYTES; meta is free-form, so its shape is checked like event data.
        const metaProblem = frame.data.meta === undefined ? null : dataProblem(frame.data.meta, config.dataLimits.maxDepth);
        if (metaProblem) return send(ws, conn, fail(conn, 'INVALID_DATA', `data.meta: ${metaProblem}`, projectGuid, id));
        const stored = deps.forwardFeedback({ projectGuid: frame.projectGuid, userId: conn.principal.userId, requestId: id, data: frame.data });
        if (!stored) return send(ws, conn, reply('user_feedback_response', projectGuid, id, { accepted: false, forwarded: false, reason: 'no agents-server configured' }));
        // The reply waits until the feedback is stored (durably with Redis): "accepted" never means "in memory".
        stored.then(
          (data) => sendLater(conn, reply('user_feedback_response', projectGuid, id, data)),
          (err: unknown) => {
            const e = toGatewayError(err);
            if (e.code === 'INTERNAL') log.error({ err, projectGuid, userId: conn.principal.userId }, 'feedback not stored');
            sendLater(conn, fail(conn, e.code, e.code === 'INTERNAL' ? undefined : e.message, projectGuid, id));
          },
        );
        return;
      }
    }
  }

  const behavior: WebSocketBehavior<Connection> = {
    maxPayloadLength: config.maxPayloadBytes,
    maxBackpressure: config.maxBackpressureBytes,
    // A subscriber too slow for its buffer is closed rather than silently skipped (uWS #499):
    // it reconnects and resumes from its last id, so nothing is lost.
    closeOnBackpressureLimit: 1,
    // Liveness is ours (see sweep): uWS's own idle timer is reset by our sends, so it cannot tell a
    // dead reader in a busy room from a live one. Kept only as a backstop well past our timeout.
    idleTimeout: Math.min(960, Math.max(16, Math.ceil((config.idleTimeoutMs * 2) / 4000) * 4)),
    sendPingsAutomatically: false,
    upgrade,
    open(ws) {
      const conn = ws.getUserData();
      conn.ws = ws;
      connections.add(conn);
      metrics.connections.inc();
      metrics.connectionsOpened.inc();
      log.info({ conn: conn.id, userId: conn.principal.userId, remoteAddress: conn.remoteAddress, codec: conn.codec.name }, 'connection opened');
      deps.hooks?.opened(conn);
    },
    message(ws, message, isBinary) {
      const conn = ws.getUserData();
      const now = Date.now();
      conn.lastSeenAt = now;
      const decision = takeToken(conn, now, config.rateLimit.perSecond, config.rateLimit.burst);
      if (decision !== 'allow') {
        if (decision === 'limit') send(ws, conn, fail(conn, 'RATE_LIMITED', undefined, null, null));
        else if (decision === 'close') ws.end(CloseCodes.RATE_LIMITED, 'rate limit exceeded');
        return;
      }
      let decoded: unknown;
      try {
        decoded = conn.codec.decode(message, isBinary);
      } catch (err) {
        return send(ws, conn, fail(conn, toGatewayError(err).code, undefined, null, null));
      }
      let frame: ClientFrame;
      try {
        frame = validateClientFrame(decoded);
      } catch (err) {
        const e = toGatewayError(err);
        const guid = (decoded as { projectGuid?: unknown } | null)?.projectGuid;
        return send(ws, conn, fail(conn, e.code, e.message, isGuid(guid) ? guid.toLowerCase() : null, requestIdOf(decoded)));
      }
      try {
        route(ws, conn, frame);
      } catch (err) {
        log.error({ err, conn: conn.id, type: frame.type }, 'frame handling failed');
        send(ws, conn, fail(conn, 'INTERNAL', undefined, frame.projectGuid, frame.id));
      }
    },
    pong(ws) {
      ws.getUserData().lastSeenAt = Date.now();
    },
    drain(ws) {
      const conn = ws.getUserData();
      if (conn.drainWaiters && ws.getBufferedAmount() < config.maxBackpressureBytes / 2) releaseDrainWaiters(conn);
    },
    close(ws, code, message) {
      const conn = ws.getUserData();
      conn.closed = true;
      conn.ws = null;
      connections.delete(conn);
      deps.hooks?.closed(conn);
      rooms.leaveAll(conn);
      releaseDrainWaiters(conn);
      metrics.connections.dec();
      metrics.connectionsClosed.inc({ code: String(code) });
      log.info(
        { conn: conn.id, userId: conn.principal.userId, code, reason: Buffer.from(message).toString().slice(0, 123), durationMs: Date.now() - conn.connectedAt },
        'connection closed',
      );
    },
  };

  /**
   * One pass a second over all sockets (a few comparisons each, no timer per socket): closes a socket
   * silent (no frame, no pong) for IDLE_TIMEOUT_S with 4408, one whose token expired with 4401, and
   * pings a socket once per HEARTBEAT_INTERVAL_S since its last ping. Pings are therefore staggered
   * by connection time instead of all going out in one burst.
   */
  function sweep(): void {
    const now = Date.now();
    const expiredBefore = now - config.jwt.clockToleranceMs;
    for (const conn of connections) {
      const ws = conn.ws;
      if (!ws) continue;
      if (now - conn.lastSeenAt > config.idleTimeoutMs) ws.end(CloseCodes.HEARTBEAT_TIMEOUT, 'heartbeat timeout');
      else if (conn.principal.expiresAt !== null && expiredBefore > conn.principal.expiresAt) ws.end(CloseCodes.TOKEN_EXPIRED, 'token expired');
      else if (now - conn.lastPingAt >= config.heartbeatIntervalMs) {
        conn.lastPingAt = now;
        ws.cork(() => ws.ping());
      }
    }
  }

  /** Closes every socket with 1001 so clients reconnect elsewhere and resume. */
  function closeAll(code: number, reason: string): void {
    for (const conn of [...connections]) conn.ws?.end(code, reason);
  }

  return { behavior, sweep, closeAll };
}

