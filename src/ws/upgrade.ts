import type { HttpRequest, HttpResponse, us_socket_context_t } from 'uWebSockets.js';
import type { Logger } from 'pino';
import { TICKET_PATTERN, type TicketStore } from '../auth/tickets.js';
import { hasExpired, type Principal } from '../auth/principal.js';
import { upgradeCredential, type TokenVerifier } from '../auth/tokens.js';
import type { Config } from '../config.js';
import { monotonicMs, type Connection, type SocketData } from '../connections/connection.js';
import type { Admission, EdgeState } from '../edge/admission.js';
import type { Sanctions } from '../edge/sanctions.js';
import { createClientAddressResolver, type ClientAddress } from '../edge/client-address.js';
import type { ErrorCode } from '../errors.js';
import { upgradeReasonLabel, type Metrics } from '../metrics.js';
import { CODECS, negotiateSubprotocol, type Negotiated } from '../protocol/codec.js';
import { statusLine } from '../uws.js';

export interface UpgradeDeps {
  readonly config: Config;
  readonly verifyToken: TokenVerifier;
  readonly tickets: TicketStore;
  /** Connection caps, upgrade buckets and penalties: one per process (shared by its worker threads). */
  readonly edgeState: EdgeState;
  /** The server API's blocks: a blocked user's upgrade is refused (403 USER_BLOCKED) until the block ends. */
  readonly sanctions: Sanctions;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly isShuttingDown: () => boolean;
}

export interface UpgradeHandler {
  /** uWS's upgrade callback: refuses with an HTTP answer, or upgrades with the socket's record. */
  upgrade(res: HttpResponse, req: HttpRequest, context: us_socket_context_t): void;
  /** A socket closed: its slot in the edge caps and its address strings go back. */
  release(conn: Connection): void;
}

const refused = (a: Admission) => (a.ok ? null : a);

/**
 * Who gets a WebSocket: origin, the address's upgrade bucket and penalty, exactly one credential
 * (token, Bearer header or one-time ticket), a subprotocol we speak, then the user's penalty and the
 * caps. Every check that needs no I/O runs before the callback returns, while `req` is valid; only a
 * ticket needs a store lookup, and then the upgrade finishes asynchronously (uWS: onAborted, cork).
 */
export function createUpgradeHandler(deps: UpgradeDeps): UpgradeHandler {
  const { config, verifyToken, edgeState, log, metrics } = deps;
  const { edge } = config;
  let nextConnectionId = 1;
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
  const originAllowed = (origin: string) => !origin || edge.allowedOrigins === 'any' || edge.allowedOrigins.includes(origin.toLowerCase());

  function reject(res: HttpResponse, status: number, code: ErrorCode, message: string, retryAfterS?: number): void {
    metrics.upgradesRejected.inc({ status: String(status), reason: upgradeReasonLabel(code) });
    res.cork(() => {
      res.writeStatus(statusLine(status)).writeHeader('content-type', 'application/json');
      if (retryAfterS !== undefined) res.writeHeader('retry-after', String(retryAfterS));
      res.end(JSON.stringify({ error: { code, message } }));
    });
  }

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

    if (deps.isShuttingDown()) return reject(res, 503, 'UNAVAILABLE', 'server is shutting down');
    if (!originAllowed(origin)) return reject(res, 403, 'FORBIDDEN', `origin ${origin.slice(0, 200)} is not allowed (ALLOWED_ORIGINS)`);
    const limited = refused(edgeState.checkUpgrade(client.key));
    if (limited) return reject(res, 429, 'RATE_LIMITED', limited.reason, limited.retryAfterS);
    if (credential.kind === 'none') return reject(res, 401, 'UNAUTHORIZED', 'missing token (?token=, Authorization: Bearer, or ?ticket=)');
    if (credential.kind === 'ambiguous') return reject(res, 401, 'UNAUTHORIZED', 'send one credential: ?token=, Authorization: Bearer, or ?ticket=, not several');
    const negotiated = negotiateSubprotocol(offered);
    if (!negotiated) return reject(res, 400, 'UNSUPPORTED_PROTOCOL', `offer one of the subprotocols autocode.v1.json, autocode.v1.msgpack`);

    if (credential.kind === 'token') {
      let principal: Principal;
      try {
        principal = verifyToken(credential.token);
      } catch (err) {
        log.info({ remoteAddress: client.address, reason: (err as Error).message }, 'upgrade rejected');
        return reject(res, 401, 'UNAUTHORIZED', (err as Error).message);
      }
      return admitAndUpgrade(res, context, principal, client, negotiated, secKey, extensions);
    }

    let aborted = false;
    res.onAborted(() => (aborted = true));
    const redeemed = TICKET_PATTERN.test(credential.ticket) ? deps.tickets.redeem(credential.ticket) : Promise.resolve(null);
    redeemed.then(
      (principal) => {
        if (aborted) return;
        if (!principal) return reject(res, 401, 'UNAUTHORIZED', 'ticket unknown, used or expired');
        if (hasExpired(principal, Date.now() - config.jwt.clockToleranceMs)) return reject(res, 401, 'UNAUTHORIZED', 'the token behind this ticket has expired');
        res.cork(() => admitAndUpgrade(res, context, principal, client, negotiated, secKey, extensions));
      },
      (err: unknown) => {
        log.warn({ err: (err as Error).message }, 'ticket lookup failed');
        if (!aborted) reject(res, 503, 'UNAVAILABLE', 'ticket store unavailable, retry later');
      },
    );
  }

  /** The per-user checks once the principal is known, then the upgrade with the socket's record. */
  function admitAndUpgrade(
    res: HttpResponse,
    context: us_socket_context_t,
    principal: Principal,
    client: ClientAddress,
    negotiated: Negotiated,
    secKey: string,
    extensions: string,
  ): void {
    const blockedUntil = deps.sanctions.blockedUntil(principal.userId);
    if (blockedUntil) {
      metrics.errors.inc({ code: 'USER_BLOCKED' });
      return reject(res, 403, 'USER_BLOCKED', `this user is blocked until ${new Date(blockedUntil).toISOString()}`, Math.ceil((blockedUntil - Date.now()) / 1000));
    }
    // Counted from here (every thread of the process sees it); given back on close, or below if uWS never opens the socket.
    const capped = refused(edgeState.admit(principal.userId, client.key));
    if (capped) {
      metrics.errors.inc({ code: 'TOO_MANY_CONNECTIONS' });
      return reject(res, 429, 'TOO_MANY_CONNECTIONS', capped.reason, capped.retryAfterS);
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
    if (conn.ws === null && !conn.closed) release(conn);
  }

  function release(conn: Connection): void {
    edgeState.release(conn.principal.userId, conn.addressKey);
    addresses.drop(conn.remoteAddress);
    if (conn.addressKey !== null) addresses.drop(conn.addressKey);
  }

  return { upgrade, release };
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
