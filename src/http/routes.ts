import type { TemplatedApp } from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { HttpRequest } from 'uWebSockets.js';
import type { TicketStore } from '../auth/tickets.js';
import { PUBLISH_SCOPE, canAccessProject, type Principal } from '../auth/principal.js';
import { bearerToken, type TokenVerifier } from '../auth/tokens.js';
import type { EdgeState } from '../edge/admission.js';
import type { AppendResult, EventBus, IdempotentPublish, NewEvent } from '../bus/bus.js';
import { httpProducer } from '../bus/idempotency.js';
import { GatewayError, toGatewayError, type ErrorCode } from '../errors.js';
import { isGuid } from '../protocol/messages.js';
import { validateProducerEvents } from '../protocol/schemas.js';
import type { Metrics } from '../metrics.js';
import { framingProblem, holdReads, pending, readBody, sendError, sendJson, settledRead, type PendingResponse } from './respond.js';

export interface HttpDeps {
  readonly verifyToken: TokenVerifier;
  readonly publish: (projectGuid: string, events: readonly NewEvent[], keyed?: IdempotentPublish) => Promise<AppendResult>;
  readonly bus: EventBus;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly nodeId: string;
  readonly maxBodyBytes: number;
  readonly isShuttingDown: () => boolean;
  /** Counts requests still being answered, so shutdown can wait for them. */
  readonly inflight: { count: number };
  readonly tickets: TicketStore;
  /** HTTP request buckets (per token), shared by the process's worker threads. */
  readonly edgeState: EdgeState;
  /** Browser origins that may call the ticket endpoint across origins (ALLOWED_ORIGINS), or 'any'. */
  readonly allowedOrigins: readonly string[] | 'any';
  /** False with METRICS_PORT: /metrics is not on this port. */
  readonly metricsOnThisPort: boolean;
  /** Renders GET /metrics: this gateway's registry, or in a worker thread the whole process's. */
  readonly renderMetrics: () => Promise<string>;
}

/** Health, readiness, metrics and the producer API. */
export function registerHttpRoutes(app: TemplatedApp, deps: HttpDeps): void {
  const { metrics, log } = deps;

  app.get('/healthz', (res) => sendJson(pending(res), 200, { status: 'ok', node: deps.nodeId }));

  app.get('/readyz', (res) => {
    const ready = deps.bus.isReady() && !deps.isShuttingDown();
    sendJson(pending(res), ready ? 200 : 503, { ready, bus: deps.bus.kind, busReady: deps.bus.isReady(), shuttingDown: deps.isShuttingDown(), node: deps.nodeId });
  });

  // With METRICS_PORT, /metrics is served there only (http/metrics-server.ts): the public port answers 404.
  if (deps.metricsOnThisPort) app.get('/metrics', (res) => {
    const p = pending(res);
    holdReads(p);
    deps.renderMetrics().then(
      (text) => {
        if (p.aborted) return;
        res.cork(() => {
          res.resume();
          res.writeStatus('200 OK').writeHeader('content-type', metrics.registry.contentType).end(text);
        });
      },
      (err: unknown) => {
        log.error({ err }, 'metrics failed');
        sendError(p, 'INTERNAL');
      },
    );
  });


  const admit = (p: PendingResponse, req: HttpRequest, needsJsonBody: boolean, headers: Record<string, string> = {}) => admitRequest(deps, p, req, needsJsonBody, headers);
  const fail = (p: PendingResponse, code: ErrorCode, message?: string, headers?: Record<string, string>) => failRequest(metrics, p, code, message, headers);

  app.post('/v1/projects/:projectGuid/events', (res, req) => {
    // Copy everything out of req before the first await: uWS invalidates it when we return.
    const guid = req.getParameter(0) ?? '';
    const idempotencyKey = req.getHeader('idempotency-key') || undefined;
    const p = pending(res);
    // The in-process bus dies with the process: accept nothing new once shutdown has begun.
    if (deps.isShuttingDown()) return sendError(p, 'UNAVAILABLE', 'server is shutting down');
    const principal = admit(p, req, true);
    if (!principal) return;
    if (!principal.scopes.has(PUBLISH_SCOPE)) return fail(p, 'FORBIDDEN', `token lacks scope ${PUBLISH_SCOPE}`);
    if (!isGuid(guid)) return fail(p, 'INVALID_GUID');
    // Publish tokens name their projects like any other (`"*"` for a trusted backend).
    if (!canAccessProject(principal, guid.toLowerCase())) return fail(p, 'FORBIDDEN', 'token does not grant publishing to this project');
    // A key is the principal's own (bus/idempotency.ts): the token's `sub`, as the rate limit above.
    const keyed = idempotencyKey === undefined ? undefined : { idempotencyKey, producer: httpProducer(principal.userId) };
    deps.inflight.count++;
    handlePublish(p, guid.toLowerCase(), keyed).finally(() => deps.inflight.count--);
  });

  async function handlePublish(p: PendingResponse, guid: string, keyed: IdempotentPublish | undefined): Promise<void> {
    const body = await readBody(p, deps.maxBodyBytes);
    if (body === null) return;
    if (body === 'too_large') return fail(p, 'PAYLOAD_TOO_LARGE', `body over ${deps.maxBodyBytes} bytes`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      return fail(p, 'BAD_JSON');
    }
    try {
      const events = validateProducerEvents(parsed);
      // Nothing is appended for a request that can no longer be answered (see settledRead). An
      // inline append is answered before uWS reads on, so it needs no wait (and pipelining works).
      if (!deps.bus.appendsInline && !(await settledRead(p))) return;
      const { ids, replayed } = await deps.publish(guid, events, keyed);
      // A replayed key answers exactly as the first time, and says so (as Stripe's Idempotent-Replayed).
      sendJson(p, 202, ids.length === 1 && !('events' in (parsed as object)) ? { id: ids[0] } : { ids }, replayed ? { 'idempotent-replayed': 'true' } : {});
    } catch (err) {
      const e = toGatewayError(err);
      if (e.code === 'INTERNAL') log.error({ err }, 'publish failed');
      fail(p, e.code, e.code === 'INTERNAL' ? undefined : e.message, e.retryAfterS ? { 'retry-after': String(e.retryAfterS) } : undefined);
    }
  }

  /**
   * A browser page served from another origin than the gateway gets its tickets across origins
   * (CORS). Tokens travel in a header, not in cookies, so no credentials mode is involved: the
   * origins ALLOWED_ORIGINS lets open WebSockets may also fetch tickets, and no others.
   */
  const corsFor = (origin: string): Record<string, string> => {
    if (!origin) return {};
    // Retry-After must be readable by the page (a 429 or 503 says when to come back).
    if (deps.allowedOrigins === 'any') return { 'access-control-allow-origin': '*', 'access-control-expose-headers': 'retry-after' };
    return deps.allowedOrigins.includes(origin.toLowerCase()) ? { 'access-control-allow-origin': origin, 'access-control-expose-headers': 'retry-after', vary: 'Origin' } : { vary: 'Origin' };
  };

  app.options('/v1/tickets', (res, req) => {
    const cors = corsFor(req.getHeader('origin'));
    const allowed = 'access-control-allow-origin' in cors;
    res.cork(() => {
      res.writeStatus(allowed ? '204 No Content' : '403 Forbidden');
      for (const [k, v] of Object.entries(cors)) res.writeHeader(k, v);
      if (allowed) res.writeHeader('access-control-allow-methods', 'POST').writeHeader('access-control-allow-headers', 'authorization').writeHeader('access-control-max-age', '600');
      res.end();
    });
  });

  // One-time connection tickets: the long-lived token goes in a header here, never in a URL.
  app.post('/v1/tickets', (res, req) => {
    const cors = corsFor(req.getHeader('origin'));
    const p = pending(res);
    if (deps.isShuttingDown()) return sendError(p, 'UNAVAILABLE', 'server is shutting down', cors);
    const principal = admit(p, req, false, cors);
    if (!principal) return;
    holdReads(p);
    deps.tickets.issue(principal).then(
      (ticket) => sendJson(p, 201, { ticket, expiresInS: deps.tickets.ttlS }, { 'cache-control': 'no-store', ...cors }),
      (err: unknown) => {
        // A refusal the store names (too many tickets for this user, the store full) is answered as
        // such, with when to try again; anything else is the store being unreachable.
        if (err instanceof GatewayError) return fail(p, err.code, err.message, { ...(err.retryAfterS ? { 'retry-after': String(err.retryAfterS) } : {}), ...cors });
        log.warn({ err: (err as Error).message }, 'ticket store failed');
        fail(p, 'UNAVAILABLE', 'ticket store unavailable, retry later', cors);
      },
    );
  });

  app.any('/*', (res) => sendError(pending(res), 'NOT_FOUND'));
}

/**
 * Everything a request must pass before its body is read: framing a proxy could disagree on,
 * the token (so an anonymous client cannot make us buffer a megabyte), the token's rate.
 * Runs synchronously inside the uWS handler, while `req` is valid. Also the server API's (admin.ts).
 */
export function admitRequest(
  deps: Pick<HttpDeps, 'verifyToken' | 'edgeState' | 'metrics'>,
  p: PendingResponse,
  req: HttpRequest,
  needsJsonBody: boolean,
  headers: Record<string, string> = {},
): Principal | null {
  const fail = (code: ErrorCode, message: string, extra: Record<string, string> = {}) => (failRequest(deps.metrics, p, code, message, { ...extra, ...headers }), null);
  const framing = framingProblem(req, needsJsonBody);
  if (framing) return fail(framing.code, framing.message);
  const token = bearerToken(req.getHeader('authorization'));
  if (!token) return fail('UNAUTHORIZED', 'missing Authorization: Bearer token');
  let principal: Principal;
  try {
    principal = deps.verifyToken(token);
  } catch (err) {
    return fail('UNAUTHORIZED', (err as Error).message);
  }
  // Keyed by who is asking, not by the token's text: a principal's tokens share one budget.
  const rate = deps.edgeState.takeHttp(principal.userId);
  if (!rate.ok) return fail('RATE_LIMITED', 'too many requests for this principal', { 'retry-after': String(rate.retryAfterS) });
  return principal;
}

/** An error answer, counted. */
export function failRequest(metrics: Metrics, p: PendingResponse, code: ErrorCode, message?: string, headers?: Record<string, string>): void {
  metrics.errors.inc({ code });
  sendError(p, code, message, headers);
}
