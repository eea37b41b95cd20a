import type { WebSocket } from 'uWebSockets.js';
import type { Logger } from 'pino';
import { canAccessProject, expiryMs, type Principal } from '../auth/principal.js';
import type { TokenVerifier } from '../auth/tokens.js';
import type { Config } from '../config.js';
import { membershipOf, membershipsOf, monotonicMs, roomCount, type Connection, type SocketData } from '../connections/connection.js';
import type { ConnectionHooks } from '../connections/hooks.js';
import type { Sanctions } from '../edge/sanctions.js';
import type { ConnectionRegistry } from '../connections/registry.js';
import { sendTo } from '../connections/send.js';
import type { EdgeState } from '../edge/admission.js';
import { takeToken } from '../edge/rate-limit.js';
import { CloseCodes, GatewayError, toGatewayError, type ErrorCode } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { dataProblem } from '../protocol/limits.js';
import { isGuid, type ClientFrame, type Envelope, type FeedbackData } from '../protocol/messages.js';
import { requestIdOf, validateClientFrame } from '../protocol/schemas.js';
import type { Rooms } from '../rooms/rooms.js';
import { compressionFilter } from '../connections/compression.js';
import { errorReply, reply } from './envelopes.js';
import { createFlooderCloser } from './flooders.js';

/**
 * Stores a user's feedback for the agents-server and resolves the `user_feedback_response` data
 * (rejects with a GatewayError when it was not stored); null when no agents-server is configured.
 */
export type FeedbackForwarder = (feedback: { projectGuid: string; userId: string; requestId: string | null; data: FeedbackData }) => Promise<object> | null;

export interface SessionDeps {
  readonly config: Config;
  readonly verifyToken: TokenVerifier;
  readonly rooms: Rooms;
  readonly registry: ConnectionRegistry;
  readonly forwardFeedback: FeedbackForwarder;
  readonly hooks?: ConnectionHooks | undefined;
  /** Penalties for flooders (process-wide; every instance with Redis). */
  readonly edgeState: EdgeState;
  /** The server API's project revocations (a join with a token issued before one is refused). */
  readonly sanctions: Sanctions;
  readonly log: Logger;
  readonly metrics: Metrics;
}

/** A uWS socket of ours: its user data is { conn } (see SocketData). */
type Socket = WebSocket<SocketData>;

/**
 * What happens on an open socket: each client frame is size-checked, rate-limited, decoded,
 * validated and routed (join, leave, feedback, ping, auth_refresh). The MessageRouter of the design
 * document; the heartbeat sweep over open sockets is heartbeat.ts.
 *
 * The frame checks and the routing are here (the hot path: nothing is allocated for a frame beyond
 * what handling it needs); each request's handling is a function below over one FrameContext, built
 * once.
 */
export function createSession(deps: SessionDeps) {
  const { config, log, metrics } = deps;
  const flooders = createFlooderCloser(deps.edgeState, config.rateLimit.penaltyS);
  const ctx = createFrameContext(deps);
  const { send, fail } = ctx;

  // prom-client resolves a label set on every inc(); the frame types are few, so each gets its child once.
  const framesReceivedByType = new Map<ClientFrame['type'], { inc(): void }>();
  const countFrame = (type: ClientFrame['type']) => {
    let child = framesReceivedByType.get(type);
    if (!child) framesReceivedByType.set(type, (child = metrics.framesReceived.labels({ type })));
    child.inc();
  };

  /** uWS's message callback: one client frame. */
  function message(ws: Socket, frameBytes: ArrayBuffer, isBinary: boolean): void {
    const conn = ws.getUserData().conn;
    const now = monotonicMs();
    conn.lastSeenAt = now;
    if (flooders.isClosing(conn)) return;
    // uWS itself cuts frames over twice the limit (without a close frame); between the two we say why.
    if (frameBytes.byteLength > config.maxPayloadBytes) return ws.end(CloseCodes.MESSAGE_TOO_BIG, `frame larger than ${config.maxPayloadBytes} bytes`);
    const decision = takeToken(conn, now, config.rateLimit.perSecond, config.rateLimit.burst);
    if (decision !== 'allow') {
      if (decision === 'limit') send(ws, conn, fail('RATE_LIMITED', undefined, null, null));
      // A flooder closed here must not be back at once: its user and address wait RATE_LIMIT_PENALTY_S.
      else if (decision === 'close') flooders.close(ws, conn);
      return;
    }
    let decoded: unknown;
    try {
      decoded = conn.codec.decode(frameBytes, isBinary);
    } catch (err) {
      return send(ws, conn, fail(toGatewayError(err).code, undefined, null, null));
    }
    let frame: ClientFrame;
    try {
      frame = validateClientFrame(decoded);
    } catch (err) {
      const e = toGatewayError(err);
      const guid = (decoded as { projectGuid?: unknown } | null)?.projectGuid;
      return send(ws, conn, fail(e.code, e.message, isGuid(guid) ? guid.toLowerCase() : null, requestIdOf(decoded)));
    }
    try {
      route(ws, conn, frame);
    } catch (err) {
      log.error({ err, conn: conn.id, type: frame.type }, 'frame handling failed');
      send(ws, conn, fail('INTERNAL', undefined, frame.projectGuid, frame.id));
    }
  }

  function route(ws: Socket, conn: Connection, frame: ClientFrame): void {
    countFrame(frame.type);
    switch (frame.type) {
      case 'ping':
        return send(ws, conn, reply('pong', frame.projectGuid, frame.id, { serverTime: Date.now() }));
      case 'join_project':
        return joinProject(ctx, ws, conn, frame);
      case 'auth_refresh':
        return refreshToken(ctx, ws, conn, frame.data.token, frame.id);
      case 'leave_project':
        return leaveProject(ctx, ws, conn, frame);
      case 'user_feedback':
        return forwardFeedback(ctx, ws, conn, frame);
    }
  }

  return {
    message,
    /** The server API's revocation (see revokeProject below): outside a uWS callback. */
    revokeProject: (conn: Connection, guid: string) => revokeProject(ctx, conn, guid, (envelope) => ctx.sendLater(conn, envelope)),
  };
}

type FrameOf<T extends ClientFrame['type']> = Extract<ClientFrame, { type: T }>;

/** What the request handlers below share: the session's deps and its ways of answering. Built once per createSession. */
interface FrameContext {
  readonly deps: SessionDeps;
  /** Sends inside a uWS callback (the socket is already corked). */
  send(ws: Socket, conn: Connection, envelope: Envelope): void;
  /** Sends later, outside uWS's callback (after an await): sendTo corks, and skips a closed socket. */
  sendLater(conn: Connection, envelope: Envelope): void;
  /** An error reply, counted in errors_total by its code. */
  fail(code: ErrorCode, message: string | undefined, projectGuid: string | null, id: string | null): Envelope;
}

function createFrameContext(deps: SessionDeps): FrameContext {
  const compress = compressionFilter(deps.config.compression);
  return {
    deps,
    send(ws, conn, envelope) {
      // Inside uWS callbacks the socket is already corked.
      const frame = conn.codec.encode(envelope);
      ws.send(frame, conn.codec.binary, compress(frame));
    },
    sendLater(conn, envelope) {
      const frame = conn.codec.encode(envelope);
      sendTo(conn, frame, compress(frame));
    },
    fail(code, message, projectGuid, id) {
      deps.metrics.errors.inc({ code });
      return errorReply(code, message, projectGuid, id);
    },
  };
}

function joinProject(ctx: FrameContext, ws: Socket, conn: Connection, frame: FrameOf<'join_project'>): void {
  const { deps, send, sendLater, fail } = ctx;
  const { config, log } = deps;
  const { projectGuid, id } = frame;
  if (!canAccessProject(conn.principal, projectGuid)) return send(ws, conn, fail('FORBIDDEN', undefined, projectGuid, id));
  if (deps.sanctions.isRevoked(conn.principal, projectGuid)) return send(ws, conn, fail('ACCESS_REVOKED', undefined, projectGuid, id));
  if (!membershipOf(conn, projectGuid) && roomCount(conn) >= config.maxRoomsPerConnection) {
    return send(ws, conn, fail('TOO_MANY_ROOMS', `at most ${config.maxRoomsPerConnection} projects per connection`, projectGuid, id));
  }
  deps.rooms.join(conn, projectGuid, frame.data?.since).then(
    (result) => {
      if (!result) return;
      sendLater(conn, reply('join_project', projectGuid, id, result));
      if (!conn.closed) deps.hooks?.joined(conn, projectGuid);
    },
    (err: unknown) => {
      const e = toGatewayError(err);
      if (e.code === 'INTERNAL') log.error({ err, projectGuid, userId: conn.principal.userId }, 'join failed');
      sendLater(conn, fail(e.code, e.code === 'INTERNAL' ? undefined : e.message, projectGuid, id));
    },
  );
}

function leaveProject(ctx: FrameContext, ws: Socket, conn: Connection, frame: FrameOf<'leave_project'>): void {
  const { deps, send, fail } = ctx;
  const { projectGuid, id } = frame;
  if (!deps.rooms.leave(conn, projectGuid)) return send(ws, conn, fail('NOT_JOINED', undefined, projectGuid, id));
  deps.hooks?.left(conn, projectGuid);
  send(ws, conn, reply('leave_project', projectGuid, id, {}));
}

function forwardFeedback(ctx: FrameContext, ws: Socket, conn: Connection, frame: FrameOf<'user_feedback'>): void {
  const { deps, send, sendLater, fail } = ctx;
  const { projectGuid, id } = frame;
  if (!canAccessProject(conn.principal, projectGuid)) return send(ws, conn, fail('FORBIDDEN', undefined, projectGuid, id));
  // The frame is already under MAX_PAYLOAD_BYTES; meta is free-form, so its shape is checked like event data.
  const metaProblem = frame.data.meta === undefined ? null : dataProblem(frame.data.meta, deps.config.dataLimits.maxDepth);
  if (metaProblem) return send(ws, conn, fail('INVALID_DATA', `data.meta: ${metaProblem}`, projectGuid, id));
  const stored = deps.forwardFeedback({ projectGuid, userId: conn.principal.userId, requestId: id, data: frame.data });
  if (!stored) return send(ws, conn, reply('user_feedback_response', projectGuid, id, { accepted: false, forwarded: false, reason: 'no agents-server configured' }));
  // The reply waits until the feedback is stored (durably with Redis): "accepted" never means "in memory".
  stored.then(
    (data) => sendLater(conn, reply('user_feedback_response', projectGuid, id, data)),
    (err: unknown) => {
      const e = toGatewayError(err);
      if (e.code === 'INTERNAL') deps.log.error({ err, projectGuid, userId: conn.principal.userId }, 'feedback not stored');
      sendLater(conn, fail(e.code, e.code === 'INTERNAL' ? undefined : e.message, projectGuid, id));
    },
  );
}

/**
 * In-band token renewal: the same checks as at upgrade, for the same user. The connection, its
 * rooms and its place in every stream stay; projects the new token no longer grants are left,
 * each with a `leave_project` frame saying so; expiry then follows the new token. A token that
 * fails (invalid, expired, another user) closes the connection with 4401.
 */
function refreshToken(ctx: FrameContext, ws: Socket, conn: Connection, token: string, id: string | null): void {
  const { send, fail } = ctx;
  let next: Principal;
  try {
    next = ctx.deps.verifyToken(token);
    if (next.userId !== conn.principal.userId) throw new GatewayError('UNAUTHORIZED', 'the new token is for another user');
  } catch (err) {
    const why = err instanceof GatewayError ? err.message : 'invalid token';
    send(ws, conn, fail('UNAUTHORIZED', why, null, id));
    ws.end(CloseCodes.TOKEN_EXPIRED, 'token refresh refused');
    return;
  }
  conn.principal = next;
  for (const { guid } of membershipsOf(conn)) {
    if (!canAccessProject(next, guid)) revokeProject(ctx, conn, guid, (envelope) => send(ws, conn, envelope));
  }
  send(ws, conn, reply('auth_refresh', null, id, { userId: next.userId, expiresAt: expiryMs(next) }));
}

/**
 * Takes the socket out of a project it may no longer see (an auth_refresh whose token lacks it, or
 * the server API's revocation), as a leave_project would (the room, and everything following the
 * socket: presence), and tells the client with a `leave_project` frame, reason `access_revoked`.
 */
function revokeProject(ctx: FrameContext, conn: Connection, guid: string, transmit: (envelope: Envelope) => void): void {
  if (ctx.deps.rooms.leave(conn, guid)) ctx.deps.hooks?.left(conn, guid);
  transmit(reply('leave_project', guid, null, { reason: 'access_revoked' }));
}
