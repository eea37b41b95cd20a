import type { HttpRequest, TemplatedApp } from 'uWebSockets.js';
import type { Logger } from 'pino';
import { ADMIN_SCOPE } from '../auth/principal.js';
import type { AdminService } from '../admin/service.js';
import { CloseCodes, GatewayError, toGatewayError, type ErrorCode } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { createAjv, describeAjvErrors } from '../protocol/ajv.js';
import { isGuid } from '../protocol/messages.js';
import { holdReads, pending, readBody, sendJson, settledRead, type PendingResponse } from './respond.js';
import { admitRequest, failRequest, type HttpDeps } from './routes.js';
import { ADMIN_BODIES, type BlockBody, type DisconnectBody, type RevokeBody } from './admin-schemas.js';
import type { HistoryAnswer, HistoryQuery } from '../admin/history.js';

export interface AdminHttpDeps extends Pick<HttpDeps, 'verifyToken' | 'edgeState' | 'metrics' | 'isShuttingDown' | 'inflight'> {
  readonly admin: AdminService;
  readonly history: (guid: string, query: HistoryQuery) => Promise<HistoryAnswer>;
  readonly log: Logger;
  readonly metrics: Metrics;
}

// Compiled on the first server API request, not at import: a module every worker thread imports
// should not add its schema compiles to every start (a restart in place must serve within 2 s).
function compileAdminBodies() {
  const ajv = createAjv();
  return {
    disconnect: ajv.compile<DisconnectBody>(ADMIN_BODIES.disconnect),
    revoke: ajv.compile<RevokeBody>(ADMIN_BODIES.revoke),
    block: ajv.compile<BlockBody>(ADMIN_BODIES.block),
  };
}
/** A server API body is a few hundred bytes. */
const MAX_ADMIN_BODY = 16 * 1024;
const MAX_HISTORY_LIMIT = 1000;

/**
 * The server API (token scope `gateway:admin`, separate from `events:publish`): disconnect, revoke,
 * block (src/admin/service.ts reaches every instance and thread), presence, history, info.
 * docs/server-api.md and GET /openapi.json describe every route.
 */
export function registerAdminRoutes(app: TemplatedApp, deps: AdminHttpDeps): void {
  const { admin, log, metrics } = deps;
  let compiled: ReturnType<typeof compileAdminBodies> | null = null;
  const validators = () => (compiled ??= compileAdminBodies());
  const fail = (p: PendingResponse, code: ErrorCode, message?: string, headers?: Record<string, string>) => failRequest(metrics, p, code, message, headers);

  /** Admits an admin request (token, scope, rate); null when answered already. */
  function admitAdmin(p: PendingResponse, req: HttpRequest, needsJsonBody: boolean): boolean {
    if (deps.isShuttingDown()) return fail(p, 'UNAVAILABLE', 'server is shutting down'), false;
    const principal = admitRequest(deps, p, req, needsJsonBody);
    if (!principal) return false;
    if (!principal.scopes.has(ADMIN_SCOPE)) return fail(p, 'FORBIDDEN', `token lacks scope ${ADMIN_SCOPE}`), false;
    return true;
  }

  /**
   * Runs an answer that awaits, counting it as in flight and mapping refusals to their codes. A GET
   * holds the connection's reads until answered (pipelining, see respond.ts); a POST's body must
   * still flow in, and readBody holds the reads once it has all of it.
   */
  function answer(p: PendingResponse, work: () => Promise<{ status: number; body: unknown } | null>, readsBody = true): void {
    if (!readsBody) holdReads(p);
    deps.inflight.count++;
    work()
      .then(
        (done) => done && sendJson(p, done.status, done.body),
        (err: unknown) => {
          const e = toGatewayError(err);
          if (e.code === 'INTERNAL') log.error({ err }, 'server API request failed');
          fail(p, e.code, e.code === 'INTERNAL' ? undefined : e.message);
        },
      )
      .finally(() => deps.inflight.count--);
  }

  /** A JSON body checked against its schema; null when answered already (aborted, too large, invalid). */
  async function bodyOf<T>(p: PendingResponse, validate: ((x: unknown) => x is T) & { errors?: unknown }): Promise<T | null> {
    const body = await readBody(p, MAX_ADMIN_BODY);
    if (body === null) return null;
    if (body === 'too_large') throw new GatewayError('PAYLOAD_TOO_LARGE', `body over ${MAX_ADMIN_BODY} bytes`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw new GatewayError('BAD_JSON', 'body is not valid JSON');
    }
    if (!validate(parsed)) throw new GatewayError('INVALID_DATA', describeAjvErrors(validate.errors as never));
    // Nothing is applied for a request that can no longer be answered (a pipelined one behind it closed the connection).
    return (await settledRead(p)) ? parsed : null;
  }

  app.post('/v1/admin/disconnect', (res, req) => {
    const p = pending(res);
    if (!admitAdmin(p, req, true)) return;
    answer(p, async () => {
      const body = await bodyOf(p, validators().disconnect);
      if (!body) return null;
      await admin.disconnect(body.userId, body.reason ?? 'disconnected by the server');
      metrics.adminActions.inc({ action: 'disconnect' });
      return { status: 200, body: { userId: body.userId, closeCode: CloseCodes.DISCONNECTED } };
    });
  });

  app.post('/v1/admin/revoke', (res, req) => {
    const p = pending(res);
    if (!admitAdmin(p, req, true)) return;
    answer(p, async () => {
      const body = await bodyOf(p, validators().revoke);
      if (!body) return null;
      if (!isGuid(body.projectGuid)) throw new GatewayError('INVALID_GUID');
      const projectGuid = body.projectGuid.toLowerCase();
      const { revokedAt, expiresAt } = await admin.revoke(body.userId, projectGuid);
      metrics.adminActions.inc({ action: 'revoke' });
      return { status: 200, body: { userId: body.userId, projectGuid, revokedAt, expiresAt } };
    });
  });

  app.post('/v1/admin/block', (res, req) => {
    const p = pending(res);
    if (!admitAdmin(p, req, true)) return;
    answer(p, async () => {
      const body = await bodyOf(p, validators().block);
      if (!body) return null;
      await admin.block(body.userId, body.until, body.reason ?? 'blocked');
      // A time already past lifts a block: counted as what it did, as the answer says.
      const active = body.until > Date.now();
      metrics.adminActions.inc({ action: active ? 'block' : 'unblock' });
      return { status: 200, body: { userId: body.userId, blockedUntil: body.until, active } };
    });
  });

  app.get('/v1/admin/info', (res, req) => {
    const p = pending(res);
    if (!admitAdmin(p, req, false)) return;
    answer(p, async () => ({ status: 200, body: await admin.info() }), false);
  });

  app.get('/v1/admin/projects/:projectGuid/presence', (res, req) => {
    const guid = req.getParameter(0) ?? '';
    const p = pending(res);
    if (!admitAdmin(p, req, false)) return;
    if (!isGuid(guid)) return fail(p, 'INVALID_GUID');
    answer(p, async () => ({ status: 200, body: await admin.presence(guid.toLowerCase()) }), false);
  });

  app.get('/v1/admin/projects/:projectGuid/history', (res, req) => {
    const guid = req.getParameter(0) ?? '';
    const query = new URLSearchParams(req.getQuery() ?? '');
    const p = pending(res);
    if (!admitAdmin(p, req, false)) return;
    if (!isGuid(guid)) return fail(p, 'INVALID_GUID');
    const parsed = historyQuery(query);
    if (typeof parsed === 'string') return fail(p, 'INVALID_DATA', parsed);
    answer(p, async () => ({ status: 200, body: await deps.history(guid.toLowerCase(), parsed) }), false);
  });
}

/** `since` (an event id or absent), `limit` (1..1000, default 100), `order` (`oldest` default, or `newest`); or what is wrong. */
function historyQuery(q: URLSearchParams): HistoryQuery | string {
  const since = q.get('since') ?? undefined;
  const limitText = q.get('limit') ?? '100';
  const order = q.get('order') ?? 'oldest';
  if (!/^\d{1,4}$/.test(limitText) || Number(limitText) < 1 || Number(limitText) > MAX_HISTORY_LIMIT) return `limit must be an integer from 1 to ${MAX_HISTORY_LIMIT}`;
  if (order !== 'oldest' && order !== 'newest') return 'order must be oldest or newest';
  if (since !== undefined && !/^\d{1,15}-\d{1,15}$/.test(since)) return 'since must be an event id (<ms>-<seq>)';
  return { since, limit: Number(limitText), order };
}
