// @ts-check
/**
 * Baseline (c): bare uWebSockets.js publish loop, no gateway logic: the ceiling.
 * Rooms are uWS topics. Events of one room that arrive in the same event-loop tick are packed into
 * ONE frame holding a JSON array (one `app.publish` per room per tick), as the gateway does.
 *
 * Producer paths:
 *  - HTTP: POST /v1/projects/:guid/events (same body as the gateway) -> queued -> flushed per tick.
 *  - In-process loop: POST /bench/loop {"batch":N,"durationMs":T,"maxBuffered":B} publishes N events
 *    to every room per loop iteration while sampled subscribers have < B bytes buffered;
 *    POST /bench/loop/stop stops it. No auth anywhere (ceiling).
 *
 * BENCH_UWS_JWT=1 (server kind `uws-jwt`, the floor for connections): the same server plus the work the
 * gateway cannot skip at connect and join, and nothing else:
 *  - upgrade: the `?token=` JWT verified with fast-jwt and the gateway's verifier options
 *    (src/auth/tokens.ts: HS256 only, JWT_SECRET, 5 s clock tolerance, `sub` required); 401 if it fails.
 *    The claims are kept with the socket (one user-data property, as the gateway keeps one).
 *  - join_project: the `projects` claim must allow the room; acknowledged with the gateway's ack,
 *    `{"type":"join_project","projectGuid":…,"data":{"latestId":null},"timestamp":…,"id":…}`.
 * The producer API is unchanged (no producer token check): in fan-out it is the plain uWS baseline.
 */
import uWS from 'uWebSockets.js';
import { createVerifier } from 'fast-jwt';
import { PUBLISH_RE, parseEvents, envelope, lifetime } from './common.mjs';

const port = Number(process.env.PORT ?? 8083);
const host = process.env.HOST ?? '127.0.0.1';
const dec = new TextDecoder();
const verify = process.env.BENCH_UWS_JWT === '1'
  ? createVerifier({ key: String(process.env.JWT_SECRET), algorithms: ['HS256'], clockTolerance: 5000, requiredClaims: ['sub'] })
  : null;

/**
 * `uws-jwt` only: the token verified before the upgrade (synchronously, as the gateway does).
 * @param {uWS.HttpResponse} res @param {uWS.HttpRequest} req @param {uWS.us_socket_context_t} context
 */
function upgrade(res, req, context) {
  let claims;
  try { claims = /** @type {NonNullable<typeof verify>} */ (verify)(req.getQuery('token') ?? ''); } catch {
    res.writeStatus('401 Unauthorized').writeHeader('content-type', 'application/json').end('{"error":{"code":"UNAUTHORIZED","message":"invalid token"}}');
    return;
  }
  res.upgrade({ claims }, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context);
}

/** `uws-jwt`: the gateway's check of a join against the token's `projects` claim. @param {any} ws @param {string} guid */
function mayJoin(ws, guid) {
  const p = ws.claims?.projects;
  return p === '*' || (Array.isArray(p) && (p.includes('*') || p.includes(guid)));
}

/** @type {Map<string, string[]>} */
const pending = new Map();
let flushScheduled = false;
/** room -> a few member sockets, sampled for backpressure by the in-process loop */
/** @type {Map<string, any[]>} */
const samples = new Map();

function flush() {
  flushScheduled = false;
  for (const [room, list] of pending) {
    app.publish(room, list.length === 1 ? list[0] : '[' + list.join(',') + ']', false);
  }
  pending.clear();
}

/** @param {string} room @param {string} s */
function queue(room, s) {
  let l = pending.get(room);
  if (!l) { l = []; pending.set(room, l); }
  l.push(s);
  if (!flushScheduled) { flushScheduled = true; setImmediate(flush); }
}

/**
 * @param {uWS.HttpResponse} res
 * @param {(body: string) => void} cb
 */
function readBody(res, cb) {
  /** @type {Buffer[]} */
  const chunks = [];
  res.onAborted(() => { /** @type {any} */ (res).aborted = true; });
  res.onData((ab, isLast) => {
    chunks.push(Buffer.from(ab.slice(0)));
    if (isLast) cb(Buffer.concat(chunks).toString('utf8'));
  });
}

// ---- in-process loop ----
let loop = { on: false, batch: 10, until: 0, maxBuffered: 256 * 1024, iterations: 0, published: 0, pad: '' };
/** @type {any} */
const dummy = { type: 'project_message', data: null };

function loopStep() {
  if (!loop.on) return;
  if (Date.now() > loop.until) { loop.on = false; return; }
  let did = false;
  for (const [room, socks] of samples) {
    let congested = false;
    for (const ws of socks) { if (ws.getBufferedAmount() > loop.maxBuffered) { congested = true; break; } }
    if (congested) continue;
    const parts = new Array(loop.batch);
    for (let i = 0; i < loop.batch; i++) {
      dummy.data = loop.pad ? { t: nowUs(), n: i, pad: loop.pad } : { t: nowUs(), n: i };
      parts[i] = JSON.stringify(envelope(room, dummy));
    }
    app.publish(room, loop.batch === 1 ? parts[0] : '[' + parts.join(',') + ']', false);
    loop.published += loop.batch;
    did = true;
  }
  loop.iterations++;
  if (did) setImmediate(loopStep); else setTimeout(loopStep, 0);
}

function nowUs() { const t = process.hrtime(); return t[0] * 1e6 + Math.floor(t[1] / 1e3); }

const app = uWS.App()
  .ws('/ws', {
    compression: uWS.DISABLED,
    maxPayloadLength: 64 * 1024,
    // The flood scenario's bare-uWS variant sets uWS's own slow-consumer policy (close at the limit),
    // the least any server must do; other scenarios keep the 64 MiB ceiling and uWS's skip-at-limit.
    maxBackpressure: Number(process.env.BENCH_UWS_MAX_BACKPRESSURE ?? 64 * 1024 * 1024),
    closeOnBackpressureLimit: process.env.BENCH_UWS_CLOSE_ON_LIMIT === '1' ? 1 : 0,
    idleTimeout: 0,
    ...(verify ? { upgrade } : {}),
    open: () => {},
    message: (ws, msg) => {
      let m;
      try { m = JSON.parse(dec.decode(msg)); } catch { return; }
      if (m && m.type === 'join_project' && typeof m.projectGuid === 'string') {
        const g = m.projectGuid.toLowerCase();
        if (verify && !mayJoin(ws, g)) { ws.send(JSON.stringify({ type: 'error', projectGuid: g, data: { code: 'FORBIDDEN' }, timestamp: new Date().toISOString(), id: m.id ?? null }), false); return; }
        ws.subscribe(g);
        let s = samples.get(g);
        if (!s) { s = []; samples.set(g, s); }
        if (s.length < 3) { s.push(ws); /** @type {any} */ (ws).sampled = g; }
        // uws-jwt: the gateway's ack for a join without `since` (src/rooms/resume.ts)
        ws.send(JSON.stringify({ type: 'join_project', projectGuid: g, data: verify ? { latestId: null } : { latestId: null, recovered: false, replayed: 0 }, timestamp: new Date().toISOString(), id: m.id ?? null }), false);
      }
    },
    close: (ws) => {
      const g = /** @type {any} */ (ws).sampled;
      if (g) { const s = samples.get(g); if (s) { const i = s.indexOf(ws); if (i >= 0) s.splice(i, 1); if (s.length === 0) samples.delete(g); } }
    },
  })
  .get('/healthz', (res) => { res.end('ok'); })
  .post('/bench/loop', (res) => {
    readBody(res, (body) => {
      let o = {};
      try { o = JSON.parse(body || '{}'); } catch { /* defaults */ }
      const cfg = /** @type {any} */ (o);
      loop = { on: true, batch: cfg.batch ?? 10, until: Date.now() + Math.min(cfg.durationMs ?? 10_000, 120_000), maxBuffered: cfg.maxBuffered ?? 256 * 1024, iterations: 0, published: 0,
        // same event size as the HTTP producer's padded events (bench/lib/producer.mjs dataBytes)
        pad: cfg.dataBytes > 42 ? 'x'.repeat(Math.min(cfg.dataBytes, 65536) - 42) : '' };
      setImmediate(loopStep);
      if (!(/** @type {any} */ (res).aborted)) res.cork(() => res.writeStatus('202 Accepted').end('{"ok":true}'));
    });
  })
  .post('/bench/loop/stop', (res) => {
    readBody(res, () => {
      loop.on = false;
      if (!(/** @type {any} */ (res).aborted)) res.cork(() => res.end(JSON.stringify({ published: loop.published, iterations: loop.iterations })));
    });
  })
  .post('/v1/projects/:guid/events', (res, req) => {
    const url = req.getUrl();
    const m = PUBLISH_RE.exec(url);
    if (!m) { res.writeStatus('400 Bad Request').end(); return; }
    const guid = m[1].toLowerCase();
    readBody(res, (body) => {
      if (/** @type {any} */ (res).aborted) return;
      const events = parseEvents(body);
      if (!events) { res.cork(() => res.writeStatus('400 Bad Request').end('{"error":{"code":"INVALID_FRAME","message":"bad body"}}')); return; }
      /** @type {string[]} */
      const ids = [];
      for (const e of events) {
        const env = envelope(guid, e);
        ids.push(env.id);
        queue(guid, JSON.stringify(env));
      }
      res.cork(() => res.writeStatus('202 Accepted').writeHeader('content-type', 'application/json').end(events.batch ? JSON.stringify({ ids }) : JSON.stringify({ id: ids[0] })));
    });
  })
  .any('/*', (res) => { res.writeStatus('404 Not Found').end(); });

/** @type {any} */
let listenSocket = null;
app.listen(host, port, (t) => {
  if (!t) { console.error(`uws baseline: cannot listen on ${host}:${port}`); process.exit(1); }
  listenSocket = t;
});
process.on('SIGTERM', () => { loop.on = false; if (listenSocket) uWS.us_listen_socket_close(listenSocket); process.exit(0); });
process.on('SIGINT', () => process.exit(0));
lifetime(2 * 3600 * 1000);
