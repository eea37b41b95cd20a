import type { TemplatedApp } from 'uWebSockets.js';
import type { Logger } from 'pino';
import { PUBLISH_SCOPE, extractToken, type TokenVerifier } from '../auth/tokens.js';
import type { EventBus, NewEvent } from '../bus/bus.js';
import { toGatewayError } from '../errors.js';
import { isGuid } from '../protocol/messages.js';
import { validateProducerEvents } from '../protocol/schemas.js';
import type { Metrics } from './metrics.js';
import { pending, readBody, sendError, sendJson } from './respond.js';

export interface HttpDeps {
  readonly verifyToken: TokenVerifier;
  readonly publish: (projectGuid: string, events: readonly NewEvent[]) => Promise<string[]>;
  readonly bus: EventBus;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly nodeId: string;
  readonly maxBodyBytes: number;
  readonly isShuttingDown: () => boolean;
  /** Counts requests still being answered, so shutdown can wait for them. */
  readonly inflight: { count: number };
  /** Renders GET /metrics instead of this gateway's own registry (worker threads: the whole process). */
  readonly renderMetrics?: (() => Promise<string>) | undefined;
}

/** Health, readiness, metrics and the producer API. */
export function registerHttpRoutes(app: TemplatedApp, deps: HttpDeps): void {
  const { metrics, log } = deps;

  app.get('/healthz', (res) => sendJson(pending(res), 200, { status: 'ok', node: deps.nodeId }));

  app.get('/readyz', (res) => {
    const ready = deps.bus.isReady() && !deps.isShuttingDown();
    sendJson(pending(res), ready ? 200 : 503, { ready, bus: deps.bus.kind, busReady: deps.bus.isReady(), shuttingDown: deps.isShuttingDown(), node: deps.nodeId });
  });

  app.get('/metrics', (res) => {
    const p = pending(res);
    metrics.busReady.set(deps.bus.isReady() ? 1 : 0);
    (deps.renderMetrics ?? (() => metrics.registry.metrics()))().then(
      (text) => {
        if (p.aborted) return;
        res.cork(() => res.writeStatus('200 OK').writeHeader('content-type', metrics.registry.contentType).end(text));
      },
      (err: unknown) => {
        log.error({ err }, 'metrics failed');
        sendError(p, 'INTERNAL');
      },
    );
  });

  app.post('/v1/projects/:projectGuid/events', (res, req) => {
    // Copy everything out of req before the first await: uWS invalidates it when we return.
    const guid = req.getParameter(0) ?? '';
    const token = extractToken(undefined, req.getHeader('authorization'));
    const p = pending(res);
    // The in-process bus dies with the process: accept nothing new once shutdown has begun.
    if (deps.isShuttingDown()) return sendError(p, 'UNAVAILABLE', 'server is shutting down');
    deps.inflight.count++;
    handlePublish(p, guid, token).finally(() => deps.inflight.count--);
  });

  async function handlePublish(p: ReturnType<typeof pending>, rawGuid: string, token: string | null): Promise<void> {
    const fail = (code: Parameters<typeof sendError>[1], message?: string) => {
      metrics.errors.inc({ code });
      sendError(p, code, message);
    };
    const body = await readBody(p, deps.maxBodyBytes);
    if (body === null) return;
    if (body === 'too_large') return fail('PAYLOAD_TOO_LARGE', `body over ${deps.maxBodyBytes} bytes`);
    if (!token) return fail('UNAUTHORIZED', 'missing Authorization: Bearer token');
    let principal;
    try {
      principal = deps.verifyToken(token);
    } catch (err) {
      return fail('UNAUTHORIZED', (err as Error).message);
    }
    if (!principal.scopes.has(PUBLISH_SCOPE)) return fail('FORBIDDEN', `token lacks scope ${PUBLISH_SCOPE}`);
    if (!isGuid(rawGuid)) return fail('INVALID_GUID');
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      return fail('BAD_JSON');
    }
    try {
      const events = validateProducerEvents(parsed);
      const ids = await deps.publish(rawGuid.toLowerCase(), events);
      sendJson(p, 202, ids.length === 1 && !('events' in (parsed as object)) ? { id: ids[0] } : { ids });
    } catch (err) {
      const e = toGatewayError(err);
      if (e.code === 'INTERNAL') log.error({ err }, 'publish failed');
      fail(e.code, e.code === 'INTERNAL' ? undefined : e.message);
    }
  }

  app.any('/*', (res) => sendError(pending(res), 'NOT_FOUND'));
}
