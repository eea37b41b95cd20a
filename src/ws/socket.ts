import type { HttpRequest, HttpResponse, WebSocket, WebSocketBehavior, us_socket_context_t } from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { TicketStore } from '../auth/tickets.js';
import { TICKET_PATTERN } from '../auth/tickets.js';
import { canAccessProject, expiryMs, hasExpired, upgradeCredential, type Principal, type TokenVerifier } from '../auth/tokens.js';
import type { Admission, EdgeState } from '../edge/admission.js';
import { createClientAddressResolver, type ClientAddress } from '../edge/client-address.js';
import type { Config } from '../config.js';
import { CloseCodes, GatewayError, toGatewayError, type ErrorCode } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { statusLine } from '../uws.js';
import { CODECS, negotiateSubprotocol, type CodecName } from '../protocol/codec.js';
import { dataProblem } from '../protocol/limits.js';
import { isGuid, type ClientFrame, type Envelope, type FeedbackData } from '../protocol/messages.js';
import { requestIdOf, validateClientFrame } from '../protocol/schemas.js';
import { membershipOf, membershipsOf, roomCount, type Connection, type SocketData } from '../connections/connection.js';
import type { ConnectionHooks } from '../connections/hooks.js';
import { releaseDrainWaiters, replayWindowBytes, sendTo } from '../connections/send.js';
import type { Rooms } from '../rooms/rooms.js';
import { takeToken } from '../edge/rate-limit.js';
import { errorReply, reply } from './envelopes.js';

/**
 * Stores a user's feedback for the agents-server and resolves the `user_feedback_response` data
 * (rejects with a GatewayError when it was not stored); null when no agents-server is configured.
 */
export type FeedbackForwarder = (feedback: { projectGuid: string; userId: string; requestId: string | null; data: FeedbackData }) => Promise<object> | null;

export interface SocketDeps {
  readonly config: Config;
  readonly verifyToken: TokenVerifier;
  readonly rooms: Rooms;
  readonly forwardFeedback: FeedbackForwarder;
  readonly hooks?: ConnectionHooks;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly isShuttingDown: () => boolean;
  readonly tickets: TicketStore;
  /** Connection caps, upgrade buckets and penalties: one per process (shared by its worker threads). */
  readonly edgeState: EdgeState;
  /** This thread's slot in the process's outbound-bytes tally (its worker id; 0 without workers). */
  readonly threadSlot: number;
}

const refused = (a: Admission) => (a.ok ? null : a);

/** Sockets cut per event-loop turn at most, and the time one turn's cuts may take (see cut()). */
const CUTS_PER_TURN = 16;
const CUT_BATCH_MS = 1;

/** What one unsent byte may cost in memory: uWS's per-socket buffer is a std::string grown by doubling. */
export const BUFFER_FOOTPRINT_FACTOR = 2;

/** A uWS socket of ours: its user data is { conn } (see SocketData). */
type Socket = WebSocket<SocketData>;

/**
 * The clock of a connection's own timestamps (connectedAt, lastSeenAt, lastPingAt, tokensAt):
 * whole milliseconds since this process started, monotonic (a wall-clock step neither closes
 * every socket as idle nor refills rate limits). Small integers are stored inside the socket
 * object; epoch milliseconds are not, and cost a 16-byte heap number per field per socket
 * (measured: 4 per idle connection). Past 2^31 ms (24.8 days of uptime) they are stored as heap
 * numbers again; nothing else changes. Token expiry and penalties stay on the wall clock.
 */
const monotonicMs = (): number => Math.floor(performance.now());

/** The WebSocket side: upgrade (auth, edge policy), frame routing, heartbeat, close bookkeeping. */
export function createSocketLayer(deps: SocketDeps) {
  const { config, verifyToken, rooms, log, metrics } = deps;
  const { edge } = config;
  const connections = new Set<Connection>();
  let nextConnectionId = 1;
  const { edgeState } = deps;
  const resolveClient = createClientAddressResolver({
    trustedProxies: edge.trustedProxies,
    ipv6Prefix: edge.ipv6ClientPrefix,
    onUntrustedForwarder: (peer) =>
      log.warn(
        { peer },
        'X-Forwarded-For from a private address that is not in TRUSTED_PROXIES: if it is your proxy, every client behind it counts as this one address (caps, rates, penalties); add it to TRUSTED_PROXIES',
      ),
  });
  const readsForwardedFor = edge.trustedProxies.length > 0;
  const addresses = createAddressInterner();
  const dropAddresses = (conn: Connection) => {
    addresses.drop(conn.remoteAddress);
    if (conn.addressKey !== null) addresses.drop(conn.addressKey);
  };

  function rejectUpgrade(res: HttpResponse, status: number, code: ErrorCode, message: string, retryAfterS?: number): void {
    metrics.upgradesRejected.inc({ status: String(status) });
    res.cork(() => {
      res.writeStatus(statusLine(status)).writeHeader('content-type', 'application/json');
      if (retryAfterS !== undefined) res.writeHeader('retry-after', String(retryAfterS));
      res.end(JSON.stringify({ error: { code, message } }));
    });
  }

  const originAllowed = (origin: string) => !origin || edge.allowedOrigins === 'any' || edge.allowedOrigins.includes(origin.toLowerCase());

  /**
   * Every check that needs no I/O runs before we return, while `req` is valid; only a ticket needs
   * a store lookup, and then the upgrade finishes asynchronously (uWS: onAborted, then cork).
   */
  function upgrade(res: HttpResponse, req: HttpRequest, context: us_socket_context_t): void {
    const credential = upgradeCredential(req.getQuery('token') ?? '', req.getHeader('authorization'), req.getQuery('ticket') ?? '');
    const secKey = req.getHeader('sec-websocket-key');
    const offered = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    const origin = req.getHeader('origin');
    const firstForwardedFor = req.getHeader('x-forwarded-for');
    // getHeader gives the first line only; a proxy may add a line of its own (read them all when they count).
    const forwardedFor = firstForwardedFor && readsForwardedFor ? headerLines(req, 'x-forwarded-for') : firstForwardedFor;
    const client = resolveClient(Buffer.from(res.getRemoteAddressAsText()).toString(), forwardedFor);

    if (deps.isShuttingDown()) return rejectUpgrade(res, 503, 'UNAVAILABLE', 'server is shutting down');
    if (!originAllowed(origin)) return rejectUpgrade(res, 403, 'FORBIDDEN', `origin ${origin.slice(0, 200)} is not allowed (ALLOWED_ORIGINS)`);
    const limited = refused(edgeState.checkUpgrade(client.key));
    if (limited) return rejectUpgrade(res, 429, 'RATE_LIMITED', limited.reason, limited.retryAfterS);
    if (credential.kind === 'none') return rejectUpgrade(res, 401, 'UNAUTHORIZED', 'missing token (?token=, Authorization: Bearer, or ?ticket=)');
    if (credential.kind === 'ambiguous') return rejectUpgrade(res, 401, 'UNAUTHORIZED', 'send one credential: ?token=, Authorization: Bearer, or ?ticket=, not several');
    const negotiated = negotiateSubprotocol(offered);
    if (!negotiated) return rejectUpgrade(res, 400, 'UNSUPPORTED_PROTOCOL', `offer one of the subprotocols autocode.v1.json, autocode.v1.msgpack`);

    if (credential.kind === 'token') {
      let principal: Principal;
      try {
        principal = verifyToken(credential.token);
      } catch (err) {
        log.info({ remoteAddress: client.address, reason: (err as Error).message }, 'upgrade rejected');
        return rejectUpgrade(res, 401, 'UNAUTHORIZED', (err as Error).message);
      }
      return admitAndUpgrade(res, context, principal, client, negotiated, secKey, extensions);
    }

    let aborted = false;
    res.onAborted(() => (aborted = true));
    const redeemed = TICKET_PATTERN.test(credential.ticket) ? deps.tickets.redeem(credential.ticket) : Promise.resolve(null);
    redeemed.then(
      (principal) => {
        if (aborted) return;
        if (!principal) return rejectUpgrade(res, 401, 'UNAUTHORIZED', 'ticket unknown, used or expired');
        if (hasExpired(principal, Date.now() - config.jwt.clockToleranceMs)) return rejectUpgrade(res, 401, 'UNAUTHORIZED', 'the token behind this ticket has expired');
        res.cork(() => admitAndUpgrade(res, context, principal, client, negotiated, secKey, extensions));
      },
      (err: unknown) => {
        log.warn({ err: (err as Error).message }, 'ticket lookup failed');
        if (!aborted) rejectUpgrade(res, 503, 'UNAVAILABLE', 'ticket store unavailable, retry later');
      },
    );
  }

  /** The per-user checks once the principal is known, then the upgrade with the socket's state. */
  function admitAndUpgrade(
    res: HttpResponse,
    context: us_socket_context_t,
    principal: Principal,
    client: ClientAddress,
    negotiated: { codec: CodecName; protocol: string },
    secKey: string,
    extensions: string,
  ): void {
    // Counted from here (every thread of the process sees it); given back on close, or below if uWS never opens the socket.
    const capped = refused(edgeState.admit(principal.userId, client.key));
    if (capped) {
      metrics.errors.inc({ code: 'TOO_MANY_CONNECTIONS' });
      return rejectUpgrade(res, 429, 'TOO_MANY_CONNECTIONS', capped.reason, capped.retryAfterS);
    }
    const now = monotonicMs();
    const conn: Connection = {
      id: nextConnectionId++,
      principal,
      codec: CODECS[negotiated.codec],
      // One string per client address, shared by its sockets, instead of one per socket.
      remoteAddress: addresses.take(client.address),
      addressKey: client.key === null ? null : addresses.take(client.key),
      connectedAt: now,
      ws: null,
      closed: false,
      lastSeenAt: now,
      lastPingAt: now,
      rooms: null,
      tokens: config.rateLimit.burst,
      tokensAt: now,
      limitedDrops: 0,
      drainWaiters: null,
      stalledSince: 0,
      cutPending: false,
    };
    const data: SocketData = { conn };
    res.upgrade(data, secKey, negotiated.protocol, extensions, context);
    // uWS calls open() inside upgrade(); a socket that never opened holds no slot.
    if (conn.ws === null && !conn.closed) {
      edgeState.release(principal.userId, conn.addressKey);
      dropAddresses(conn);
    }
  }

  function send(ws: Socket, conn: Connection, envelope: Envelope): void {
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

  // prom-client resolves a label set on every inc(); the frame types are few, so each gets its child once.
  const framesReceivedByType = new Map<ClientFrame['type'], { inc(): void }>();
  const countFrame = (type: ClientFrame['type']) => {
    let child = framesReceivedByType.get(type);
    if (!child) framesReceivedByType.set(type, (child = metrics.framesReceived.labels({ type })));
    child.inc();
  };

  function route(ws: Socket, conn: Connection, frame: ClientFrame): void {
    countFrame(frame.type);
    const { projectGuid, id } = frame;
    switch (frame.type) {
      case 'ping':
        return send(ws, conn, reply('pong', projectGuid, id, { serverTime: Date.now() }));
      case 'join_project': {
        if (!canAccessProject(conn.principal, frame.projectGuid)) return send(ws, conn, fail(conn, 'FORBIDDEN', undefined, projectGuid, id));
        if (!membershipOf(conn, frame.projectGuid) && roomCount(conn) >= config.maxRoomsPerConnection) {
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
      case 'auth_refresh':
        return refreshToken(ws, conn, frame.data.token, id);
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

  /**
   * In-band token renewal: the same checks as at upgrade, for the same user. The connection, its
   * rooms and its place in every stream stay; projects the new token no longer grants are left,
   * each with a `leave_project` frame saying so; expiry then follows the new token. A token that
   * fails (invalid, expired, another user) closes the connection with 4401.
   */
  function refreshToken(ws: Socket, conn: Connection, token: string, id: string | null): void {
    let next: Principal;
    try {
      next = verifyToken(token);
      if (next.userId !== conn.principal.userId) throw new GatewayError('UNAUTHORIZED', 'the new token is for another user');
    } catch (err) {
      const message = err instanceof GatewayError ? err.message : 'invalid token';
      send(ws, conn, fail(conn, 'UNAUTHORIZED', message, null, id));
      ws.end(CloseCodes.TOKEN_EXPIRED, 'token refresh refused');
      return;
    }
    conn.principal = next;
    for (const { guid } of membershipsOf(conn)) {
      if (canAccessProject(next, guid)) continue;
      rooms.leave(conn, guid);
      send(ws, conn, reply('leave_project', guid, null, { reason: 'access_revoked' }));
    }
    send(ws, conn, reply('auth_refresh', null, id, { userId: next.userId, expiresAt: expiryMs(next) }));
  }

  const behavior: WebSocketBehavior<SocketData> = {
    // Twice the limit, so a frame just over it is answered with 1009 (message()) instead of uWS's abrupt cut.
    maxPayloadLength: config.maxPayloadBytes * 2,
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
      const conn = ws.getUserData().conn;
      conn.ws = ws;
      connections.add(conn);
      metrics.connections.inc();
      metrics.connectionsOpened.inc();
      if (log.isLevelEnabled('info')) log.info({ conn: conn.id, userId: conn.principal.userId, remoteAddress: conn.remoteAddress, codec: conn.codec.name }, 'connection opened');
      deps.hooks?.opened(conn);
    },
    message(ws, message, isBinary) {
      const conn = ws.getUserData().conn;
      const now = monotonicMs();
      conn.lastSeenAt = now;
      // uWS itself cuts frames over twice the limit (without a close frame); between the two we say why.
      if (message.byteLength > config.maxPayloadBytes) return ws.end(CloseCodes.MESSAGE_TOO_BIG, `frame larger than ${config.maxPayloadBytes} bytes`);
      const decision = takeToken(conn, now, config.rateLimit.perSecond, config.rateLimit.burst);
      if (decision !== 'allow') {
        if (decision === 'limit') send(ws, conn, fail(conn, 'RATE_LIMITED', undefined, null, null));
        else if (decision === 'close') {
          // A flooder closed here must not be back at once: its user and address wait RATE_LIMIT_PENALTY_S.
          if (config.rateLimit.penaltyS > 0) edgeState.penalize(conn.principal.userId, conn.addressKey, config.rateLimit.penaltyS);
          ws.end(CloseCodes.RATE_LIMITED, 'rate limit exceeded');
        }
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
      ws.getUserData().conn.lastSeenAt = monotonicMs();
    },
    drain(ws) {
      const conn = ws.getUserData().conn;
      // The kernel took bytes: the write timeout starts over.
      conn.stalledSince = monotonicMs();
      if (conn.drainWaiters && ws.getBufferedAmount() < replayWindowBytes(config.maxBackpressureBytes)) releaseDrainWaiters(conn);
    },
    close(ws, code, message) {
      const conn = ws.getUserData().conn;
      conn.closed = true;
      conn.ws = null;
      connections.delete(conn);
      edgeState.release(conn.principal.userId, conn.addressKey);
      dropAddresses(conn);
      deps.hooks?.closed(conn);
      rooms.leaveAll(conn);
      releaseDrainWaiters(conn);
      metrics.connections.dec();
      metrics.connectionsClosed.inc({ code: String(code) });
      if (log.isLevelEnabled('info')) {
        log.info(
          { conn: conn.id, userId: conn.principal.userId, code, reason: Buffer.from(message).toString().slice(0, 123), durationMs: monotonicMs() - conn.connectedAt },
          'connection closed',
        );
      }
    },
  };

  /**
   * One pass a second over all sockets (a few comparisons each, no timer per socket): closes a socket
   * silent (no frame, no pong) for IDLE_TIMEOUT_S with 4408, one whose token expired with 4401, and
   * pings a socket once per HEARTBEAT_INTERVAL_S since its last ping. Pings are therefore staggered
   * by connection time instead of all going out in one burst.
   */
  function sweep(): void {
    const now = monotonicMs();
    const expiredBefore = Date.now() - config.jwt.clockToleranceMs;
    for (const conn of connections) {
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

  /**
   * The process-wide outbound budget: the memory every socket's unsent bytes take together.
   * Per-socket MAX_BACKPRESSURE_BYTES bounds one reader; this bounds a crowd of them (2,000
   * never-reading clients × 4 MiB would be 8 GB). uWS keeps a socket's unsent bytes in a growing
   * std::string, whose capacity doubles: it can hold up to twice what it reports, so each socket
   * counts BUFFER_FOOTPRINT_FACTOR × its unsent bytes (measured without it: 268-294 MiB unsent under a
   * 256 MiB budget, RSS +358-465 MiB). Over the budget, the sockets holding the most are dropped
   * first until the total is back under 90% of it. They are cut, not sent a close frame: a close
   * frame would queue behind the very bytes they do not read. They reconnect and resume with `since`.
   */
  function enforceBufferBudget(): void {
    fannedOutSinceCheck = 0;
    const now = monotonicMs();
    let unsent = 0;
    let timedOut = 0;
    const holding: { conn: Connection; bytes: number }[] = [];
    for (const conn of connections) {
      const ws = conn.ws;
      if (!ws || conn.cutPending) continue;
      const bytes = ws.getBufferedAmount();
      if (bytes === 0) {
        conn.stalledSince = 0;
        continue;
      }
      // A write that cannot complete (as Centrifugo's websocket_write_timeout): the reader is gone or
      // stopped reading, and every second it stays it holds memory here and in the kernel.
      if (conn.stalledSince === 0) conn.stalledSince = now;
      else if (now - conn.stalledSince > config.writeTimeoutMs) {
        timedOut++;
        cut(conn);
        continue;
      }
      unsent += bytes;
      holding.push({ conn, bytes });
    }
    if (timedOut) {
      metrics.slowConsumersDropped.inc({ reason: 'write_timeout' }, timedOut);
      log.warn({ dropped: timedOut, writeTimeoutMs: config.writeTimeoutMs }, 'cut sockets whose unsent bytes made no progress (write timeout)');
    }
    metrics.bufferedBytes.set(unsent);
    // The budget is the process's: every worker thread reports its sockets' bytes, and each cuts its
    // own share of the excess (in proportion to what it holds), so together they get back under it.
    const processUnsent = edgeState.reportBuffered(deps.threadSlot, unsent);
    const processFootprint = processUnsent * BUFFER_FOOTPRINT_FACTOR;
    if (processFootprint <= config.maxBufferedBytes || unsent === 0) return;
    const share = unsent / Math.max(unsent, processUnsent);
    let footprint = unsent * BUFFER_FOOTPRINT_FACTOR;
    const target = footprint - (processFootprint - config.maxBufferedBytes * 0.9) * share;
    holding.sort((a, b) => b.bytes - a.bytes);
    let dropped = 0;
    for (const { conn, bytes } of holding) {
      if (footprint <= target) break;
      footprint -= bytes * BUFFER_FOOTPRINT_FACTOR;
      dropped++;
      cut(conn);
    }
    metrics.slowConsumersDropped.inc({ reason: 'process_budget' }, dropped);
    log.warn({ dropped, unsentBytes: unsent, processUnsentBytes: processUnsent, footprintAfter: footprint, budget: config.maxBufferedBytes }, 'outbound buffer budget exceeded; dropped the slowest consumers');
  }

  /**
   * Cuts are carried out CUTS_PER_TURN (or CUT_BATCH_MS) at a time, one batch per event-loop turn: closing a socket
   * with megabytes unsent costs the loop ~0.1-0.4 ms (measured: 862 at once blocked it 134-174 ms; batches of 64 took 5-26 ms),
   * and every other room waits while it does. A socket waiting for its cut sends nothing more.
   */
  const cutQueue: Connection[] = [];
  function cut(conn: Connection): void {
    conn.cutPending = true;
    rooms.muteAll(conn);
    cutQueue.push(conn);
    if (cutQueue.length === 1) setImmediate(cutBatch);
  }
  function cutBatch(): void {
    // What a cut costs depends on the machine (its kernel, its allocator's munmap): the batch also
    // stops after CUT_BATCH_MS, so the delay it adds to other rooms is bounded in time, not only in count.
    const started = performance.now();
    let n = 0;
    while (n < cutQueue.length && n < CUTS_PER_TURN) {
      const conn = cutQueue[n++]!;
      if (conn.ws && !conn.closed) conn.ws.close();
      if (performance.now() - started >= CUT_BATCH_MS) break;
    }
    cutQueue.splice(0, n);
    if (cutQueue.length) setImmediate(cutBatch);
  }

  /**
   * Called after every room flush. The timer alone checks twice a second, and a flood can outgrow
   * the budget many times over between two ticks (measured: 256 MiB budget, 678 MiB buffered):
   * once the bytes fanned out since the last check could have filled an eighth of the budget, check now.
   */
  let fannedOutSinceCheck = 0;
  function noteFanOut(bytes: number): void {
    fannedOutSinceCheck += bytes;
    if (fannedOutSinceCheck >= config.maxBufferedBytes / 8) enforceBufferBudget();
  }

  /** Closes every socket with 1001 so clients reconnect elsewhere and resume. */
  function closeAll(code: number, reason: string): void {
    for (const conn of [...connections]) conn.ws?.end(code, reason);
  }

  return { behavior, sweep, closeAll, enforceBufferBudget, noteFanOut };
}

/** Every line of a request header, joined as one list (RFC 9110: repeated field lines are one comma-separated value). */
function headerLines(req: HttpRequest, name: string): string {
  let joined = '';
  req.forEach((key, value) => {
    if (key === name) joined = joined ? `${joined},${value}` : value;
  });
  return joined;
}

/**
 * One string per client address held by this thread's sockets (reference-counted), so a thousand
 * sockets from one address share one string instead of holding a thousand copies.
 */
function createAddressInterner() {
  const held = new Map<string, { readonly text: string; n: number }>();
  return {
    take(text: string): string {
      const entry = held.get(text);
      if (entry) {
        entry.n++;
        return entry.text;
      }
      held.set(text, { text, n: 1 });
      return text;
    },
    drop(text: string): void {
      const entry = held.get(text);
      if (entry && --entry.n <= 0) held.delete(text);
    },
  };
}
