// @ts-check
/**
 * Load-generator worker (forked by bench/lib/loadgen.mjs).
 *
 * Raw `net` sockets: the HTTP upgrade is written by hand, only WebSocket frame headers are parsed
 * (partial reads and fragmented messages handled; client->server frames are masked with a zero
 * key, which is valid and saves the XOR). Delivered events are counted per frame by counting
 * occurrences of `{"type":"project_` in the payload; the send timestamp `"t":<µs>` is parsed only
 * when the scenario asks for latency. Pusher clients (`mode: 'pusher'`, Soketi) count
 * `{"event":"project_` instead, one event per frame, and find the timestamp as `\"t\":<µs>` inside
 * the event's `data` string: both patterns are chosen once at `connect`, so counting costs the same.
 *
 * IPC (parent -> worker): {cmd:'connect', ...}, {cmd:'stats', id}, {cmd:'reset'}, {cmd:'hist', id},
 * {cmd:'stream', intervalMs}, {cmd:'drainTracked', id, idleMs, maxWaitMs}, {cmd:'close', id}.
 * Worker -> parent: {type:'ready'}, {type:'progress'}, {type:'connected'}, {type:'stats'}, {type:'hist'},
 * {type:'tracked'}, {type:'closed'}.
 *
 * Never-reading clients (bench/flood.mjs): with `pauseAfterJoin` every socket stops reading
 * (`socket.pause()`) right after its join ack, so the kernel buffers and then the server's own send
 * buffers fill, as with a client that hangs. `trackIds` keeps the event ids received by the first N
 * sockets of the worker; `drainTracked` later makes those sockets read again, until the server's cut
 * reaches them, and returns what they had received (the last id is what a real client resumes from).
 * permessage-deflate (`deflate`, bench/compression.mjs): each socket offers it; a compressed message
 * (RSV1) is inflated (zlib: at once, or through a per-socket stream for a sliding window) before it is counted, so `bytes` counts decoded payload
 * bytes, while `wire` counts every byte the socket read (what `socket.bytesRead` counts: headers,
 * frame headers, compressed payloads). `negotiated` counts sockets whose 101 accepted the offer,
 * `compressedFrames` the messages that came compressed.
 * Every loop is bounded: connection count is fixed by the parent, connect attempts time out, and
 * the worker exits by itself if the parent goes away or after `maxLifeMs`.
 */
import net from 'node:net';
import zlib from 'node:zlib';
import hdr from 'hdr-histogram-js';
import { createSigner } from 'fast-jwt';

/** What starts one delivered event in a payload, and what precedes its send time; set per mode at `connect`. */
let EVENT_PATTERN = Buffer.from('{"type":"project_');
let T_PATTERN = Buffer.from('"t":');
/** Pusher (Soketi): `{"event":"project_message","channel":"<room>","data":"{\"t\":<µs>,…}"}`, `data` a JSON string. */
const PUSHER_EVENT_PATTERN = Buffer.from('{"event":"project_');
const PUSHER_T_PATTERN = Buffer.from('\\"t\\":');
const WS_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
/** What RFC 7692 strips from the end of each compressed message; put back before inflating. */
const DEFLATE_TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/** @returns {number} CLOCK_MONOTONIC in microseconds (shared by all processes of the machine) */
function nowUs() {
  const t = process.hrtime();
  return t[0] * 1e6 + Math.floor(t[1] / 1e3);
}

/**
 * @typedef {{
 *   host: string, port: number, path: string, mode: 'plain'|'eio'|'pusher',
 *   rooms: string[], count: number, offset: number, localAddress?: string,
 *   rate: number, maxPending: number, latency: boolean, joinTimeoutMs: number,
 *   joinKind: 'gateway'|'none', jwtSecret?: string, pauseAfterJoin?: boolean, trackIds?: number, deflate?: boolean
 * }} ConnectCmd
 * jwtSecret: sign a distinct client token per connection (sub `u<index>`) and append it to `path`
 * (which then ends with `token=`), as real users would each have their own token.
 * pauseAfterJoin: stop reading each socket once joined (a never-reading client).
 * trackIds: record the event ids received by this worker's first `trackIds` sockets.
 */

/**
 * @typedef {{ sub: string, room: string, joinLatestId: string | null, ids: string[], cut: boolean, partialBytes: number }} TrackedReport
 * What a tracked socket received: its join ack's latestId, every event id in arrival order (complete
 * frames only), whether the server's cut (EOF/reset) reached it, and the bytes of an unfinished frame.
 */

/**
 * @typedef {{
 *   sock: net.Socket, room: string, state: number, chunks: Buffer[], pendLen: number, need: number,
 *   frag: Buffer[] | null, timer: NodeJS.Timeout | null, t0: number, tConn: number, tUp: number,
 *   sub?: string, tracked?: { joinLatestId: string | null, ids: string[] }, lastDataAt?: number,
 *   inflate?: { reset: boolean, stream: zlib.InflateRaw | null, out: Buffer[] }, fragCompressed?: boolean
 * }} Conn
 * inflate: set when the server accepted permessage-deflate; `reset` when it compresses each message
 * on its own (server_no_context_takeover), else one inflater keeps the window across messages.
 */

const ST_HANDSHAKE = 0, ST_OPEN = 1, ST_JOINED = 2, ST_DEAD = 3;

const stats = {
  connected: 0, // sockets that completed the upgrade and are open
  joined: 0, // sockets that got their join ack
  failed: 0,
  closedByServer: 0,
  frames: 0,
  bytes: 0,
  events: 0,
  pings: 0,
  joinErrors: 0,
  wire: 0,
  negotiated: 0,
  compressedFrames: 0,
};
/** events counted before the last `reset`: `eventsAll` in the stats counts the whole run (loss checks) at no cost per frame */
let eventsBeforeReset = 0;
/** @type {Record<string, number>} */
const errorCounts = {};
/** @type {Record<string, number>} */
const closeCodes = {};
/** @type {string[]} */
const samples = [];
let hist = newHist();
/** per-connection phase durations (ms): TCP connect, upgrade (request -> 101), total until joined */
/** @type {number[]} */ const joinTimes = [];
/** @type {number[]} */ const connTimes = [];
/** @type {number[]} */ const upTimes = [];
/** @param {number[]} a */
function pct(a) {
  if (!a.length) return null;
  const s = [...a].sort((x, y) => x - y);
  const q = (/** @type {number} */ p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { p50: q(0.5), p90: q(0.9), p99: q(0.99), max: s[s.length - 1] };
}
/** @type {Conn[]} */
const conns = [];
let latency = false;
/** @type {ConnectCmd | null} */
let cfg = null;

function newHist() {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
}

/** @param {string} s */
function sample(s) {
  if (samples.length < 8) samples.push(s.slice(0, 300));
}

/** @param {string} key */
function countError(key) {
  errorCounts[key] = (errorCounts[key] ?? 0) + 1;
}

/**
 * Build a masked (zero key) client frame.
 * @param {number} opcode
 * @param {Buffer} payload
 */
function clientFrame(opcode, payload) {
  const len = payload.length;
  let hdrLen = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(hdrLen + 4 + len);
  out[0] = 0x80 | opcode;
  if (len < 126) out[1] = 0x80 | len;
  else if (len < 65536) { out[1] = 0x80 | 126; out.writeUInt16BE(len, 2); }
  else { out[1] = 0x80 | 127; out.writeUInt32BE(0, 2); out.writeUInt32BE(len, 6); }
  out.writeUInt32BE(0, hdrLen); // zero mask key: payload stays as is
  payload.copy(out, hdrLen + 4);
  return out;
}

/** @param {Conn} c @param {string} text */
function sendText(c, text) {
  c.sock.write(clientFrame(1, Buffer.from(text)));
}

/** @param {Conn} c */
function onUpgraded(c) {
  c.state = ST_OPEN;
  stats.connected++;
  if (!cfg) return;
  if (cfg.mode === 'plain') {
    if (cfg.joinKind === 'none') { markJoined(c); return; }
    sendText(c, `{"type":"join_project","projectGuid":"${c.room}","id":"j1","data":{}}`);
  }
  // eio: wait for the engine.io open packet ("0{...}"); pusher: for pusher:connection_established
}

/** @param {Conn} c */
function markJoined(c) {
  if (c.state === ST_JOINED) return;
  c.state = ST_JOINED;
  stats.joined++;
  const now = performance.now();
  joinTimes.push(now - c.t0);
  connTimes.push(c.tConn - c.t0);
  upTimes.push(c.tUp - c.tConn);
  if (c.timer) { clearTimeout(c.timer); c.timer = null; }
  // A never-reading client: from here on nothing is read, so the kernel and then the server buffer.
  if (cfg && cfg.pauseAfterJoin) c.sock.pause();
  pendingHandshakes--;
  pump();
}

/**
 * Count events (and latency) in payload [s,e) of buf.
 * @param {Buffer} buf @param {number} s @param {number} e
 */
function countEvents(buf, s, e) {
  const view = (s === 0 && e === buf.length) ? buf : buf.subarray(s, e);
  const evLen = EVENT_PATTERN.length;
  let n = 0;
  let p = view.indexOf(EVENT_PATTERN);
  if (!latency) {
    while (p !== -1) { n++; p = view.indexOf(EVENT_PATTERN, p + evLen); }
    return n;
  }
  const now = nowUs();
  while (p !== -1) {
    n++;
    const q = view.indexOf(T_PATTERN, p + evLen);
    if (q !== -1) {
      let i = q + T_PATTERN.length, v = 0, ch = view[i];
      while (ch >= 48 && ch <= 57) { v = v * 10 + (ch - 48); ch = view[++i]; }
      if (v > 0) {
        const d = now - v;
        hist.recordValue(d > 0 ? d : 1);
      }
    }
    p = view.indexOf(EVENT_PATTERN, p + evLen);
  }
  return n;
}

/**
 * A complete message (text/binary) payload [s,e).
 * @param {Conn} c @param {Buffer} buf @param {number} s @param {number} e
 */
function onMessage(c, buf, s, e) {
  stats.frames++;
  stats.bytes += e - s;
  if (c.state === ST_JOINED) {
    if (cfg && cfg.mode === 'eio' && e - s === 1 && buf[s] === 0x32) { // "2" ping
      stats.pings++;
      sendText(c, '3');
      return;
    }
    stats.events += countEvents(buf, s, e);
    if (c.tracked) trackIds(c.tracked, buf, s, e);
    return;
  }
  const text = buf.toString('utf8', s, e);
  if (!cfg) return;
  if (cfg.mode === 'eio') {
    if (text === '2') { stats.pings++; sendText(c, '3'); return; }
    if (text.startsWith('0')) { sendText(c, '40'); return; }
    if (text.startsWith('40')) {
      if (cfg.joinKind === 'none') markJoined(c);
      else sendText(c, `42["join","${c.room}"]`);
      return;
    }
    if (text.startsWith('42["joined"')) { markJoined(c); return; }
    if (text.startsWith('44')) { stats.joinErrors++; sample('eio connect error: ' + text); return; }
    return;
  }
  if (cfg.mode === 'pusher') {
    if (text.includes('"pusher:connection_established"')) { sendText(c, `{"event":"pusher:subscribe","data":{"channel":"${c.room}"}}`); return; }
    if (text.includes('"pusher_internal:subscription_succeeded"')) { markJoined(c); return; }
    if (text.includes('"pusher:error"') || text.includes('"pusher:subscription_error"')) { stats.joinErrors++; sample('pusher error: ' + text); return; }
    return;
  }
  if (text.includes('"join_project"')) {
    if (c.tracked) { const m = /"latestId":"([0-9]+-[0-9]+)"/.exec(text); c.tracked.joinLatestId = m ? m[1] : null; }
    markJoined(c);
    return;
  }
  if (text.includes('"type":"error"')) { stats.joinErrors++; sample('join error: ' + text); return; }
}

/**
 * Ids of the events in one message (a bare envelope or a batched array), for tracked sockets only:
 * they are few, so a full JSON.parse is affordable.
 * @param {{ ids: string[] }} t @param {Buffer} buf @param {number} s @param {number} e
 */
function trackIds(t, buf, s, e) {
  let parsed;
  try { parsed = JSON.parse(buf.toString('utf8', s, e)); } catch { countError('tracked:bad-json'); return; }
  for (const env of Array.isArray(parsed) ? parsed : [parsed]) {
    if (env && typeof env.type === 'string' && env.type.startsWith('project_') && typeof env.id === 'string') t.ids.push(env.id);
  }
}

/**
 * Inflates a compressed message and hands it to onMessage: at once when the server compresses each
 * message on its own (server_no_context_takeover), else through a zlib stream kept per socket (a
 * sliding window spans messages; zlib's *Sync calls close their stream after one use), whose flush
 * callbacks run in order, so messages are still counted in arrival order.
 * @param {Conn} c @param {Buffer} payload
 */
function inflateThenCount(c, payload) {
  stats.compressedFrames++;
  const z = /** @type {NonNullable<Conn['inflate']>} */ (c.inflate);
  const input = Buffer.concat([payload, DEFLATE_TAIL]);
  if (z.reset) {
    /** @type {Buffer} */ let m;
    // The message ends at a sync flush, not at a final block: finishing with Z_FINISH would fail.
    try { m = zlib.inflateRawSync(input, { finishFlush: zlib.constants.Z_SYNC_FLUSH }); } catch (err) { countError('inflate:' + /** @type {any} */ (err).code); kill(c, 'inflate'); return; }
    onMessage(c, m, 0, m.length);
    return;
  }
  if (!z.stream) {
    const stream = zlib.createInflateRaw();
    z.stream = stream;
    stream.on('data', (d) => z.out.push(d));
    stream.on('error', (err) => { countError('inflate:' + /** @type {any} */ (err).code); kill(c, 'inflate'); });
  }
  z.stream.write(input);
  z.stream.flush(zlib.constants.Z_SYNC_FLUSH, () => {
    if (c.state === ST_DEAD) return;
    const m = Buffer.concat(z.out);
    z.out = [];
    onMessage(c, m, 0, m.length);
  });
}

/** @param {Conn} c @param {Buffer} buf @param {number} b0 @param {number} s @param {number} e */
function onFrame(c, buf, b0, s, e) {
  const opcode = b0 & 0x0f;
  const fin = (b0 & 0x80) !== 0;
  const rsv1 = (b0 & 0x40) !== 0;
  if (opcode === 0) { // continuation
    if (!c.frag) { countError('protocol:stray-continuation'); return; }
    c.frag.push(Buffer.from(buf.subarray(s, e)));
    if (fin) {
      const m = Buffer.concat(c.frag);
      c.frag = null;
      if (c.fragCompressed) inflateThenCount(c, m);
      else onMessage(c, m, 0, m.length);
    }
    return;
  }
  if (opcode === 1 || opcode === 2) {
    if (rsv1 && !c.inflate) { countError('protocol:rsv1-not-negotiated'); kill(c, 'protocol'); return; }
    if (!fin) { c.frag = [Buffer.from(buf.subarray(s, e))]; c.fragCompressed = rsv1; return; }
    if (rsv1) { inflateThenCount(c, buf.subarray(s, e)); return; }
    onMessage(c, buf, s, e);
    return;
  }
  if (opcode === 8) { // close
    const code = e - s >= 2 ? buf.readUInt16BE(s) : 1005;
    closeCodes[code] = (closeCodes[code] ?? 0) + 1;
    if (e - s > 2) sample(`close ${code}: ${buf.toString('utf8', s + 2, e)}`);
    stats.closedByServer++;
    try { c.sock.write(clientFrame(8, Buffer.from(buf.subarray(s, Math.min(e, s + 2))))); } catch { /* ignore */ }
    kill(c, null);
    return;
  }
  if (opcode === 9) { // ping -> pong
    stats.pings++;
    c.sock.write(clientFrame(10, Buffer.from(buf.subarray(s, e))));
    return;
  }
  // 10 pong: ignore
}

/**
 * Parse as many frames as possible; keeps the remainder in c.chunks.
 * @param {Conn} c @param {Buffer} chunk
 */
function onData(c, chunk) {
  if (c.state === ST_DEAD) return;
  stats.wire += chunk.length;
  if (c.tracked) c.lastDataAt = performance.now();
  if (c.pendLen > 0) {
    c.chunks.push(chunk);
    c.pendLen += chunk.length;
    if (c.pendLen < c.need) return;
    chunk = Buffer.concat(c.chunks, c.pendLen);
    c.chunks = [];
    c.pendLen = 0;
  }
  let off = 0;
  const n = chunk.length;
  if (c.state === ST_HANDSHAKE) {
    const end = chunk.indexOf('\r\n\r\n');
    if (end === -1) {
      if (n > 16384) { countError('handshake:too-long'); kill(c, 'handshake'); return; }
      c.chunks = [chunk]; c.pendLen = n; c.need = n + 1; return;
    }
    const head = chunk.toString('latin1', 0, end);
    if (!head.startsWith('HTTP/1.1 101')) {
      const status = head.slice(9, 12);
      countError('upgrade:' + status);
      sample('upgrade refused: ' + head.split('\r\n')[0] + ' ' + chunk.toString('utf8', end + 4, Math.min(n, end + 200)));
      kill(c, 'upgrade');
      return;
    }
    off = end + 4;
    const ext = /\r\nsec-websocket-extensions:([^\r]*)/i.exec(head);
    if (ext && /permessage-deflate/.test(ext[1])) {
      c.inflate = { reset: /server_no_context_takeover/.test(ext[1]), stream: null, out: [] };
      stats.negotiated++;
    }
    c.tUp = performance.now();
    onUpgraded(c);
  }
  while (true) {
    const avail = n - off;
    if (avail < 2) { c.need = 2; break; }
    const b0 = chunk[off], b1 = chunk[off + 1];
    let len = b1 & 0x7f;
    let hl = 2;
    if (len === 126) {
      if (avail < 4) { c.need = 4; break; }
      len = chunk.readUInt16BE(off + 2); hl = 4;
    } else if (len === 127) {
      if (avail < 10) { c.need = 10; break; }
      len = chunk.readUInt32BE(off + 2) * 4294967296 + chunk.readUInt32BE(off + 6); hl = 10;
    }
    if (b1 & 0x80) { countError('protocol:masked-server-frame'); kill(c, 'protocol'); return; }
    if (avail < hl + len) { c.need = hl + len; break; }
    onFrame(c, chunk, b0, off + hl, off + hl + len);
    if (c.state === ST_DEAD) return;
    off += hl + len;
  }
  if (off < n) {
    const rest = chunk.subarray(off);
    c.chunks = [rest];
    c.pendLen = rest.length;
    if (c.need <= rest.length) c.need = rest.length + 1;
  } else {
    c.need = 0;
  }
}

/** @param {Conn} c @param {string | null} reason */
function kill(c, reason) {
  if (c.state === ST_DEAD) return;
  const wasJoined = c.state === ST_JOINED;
  const wasOpen = c.state !== ST_HANDSHAKE;
  if (c.timer) { clearTimeout(c.timer); c.timer = null; }
  if (!wasJoined) { stats.failed++; pendingHandshakes--; }
  if (wasOpen) stats.connected--;
  if (wasJoined) stats.joined--;
  c.state = ST_DEAD;
  if (reason) countError('killed:' + reason);
  c.sock.destroy();
  if (!wasJoined) pump();
}

/** @type {((claims: object) => string) | null} */
let signer = null;
let opened = 0;
let pendingHandshakes = 0;
let connectStart = 0;
let lastJoinedAt = 0;
/** @type {NodeJS.Timeout | null} */
let rampTimer = null;
let doneReported = false;

function openOne() {
  if (!cfg) return;
  const i = cfg.offset + opened;
  opened++;
  pendingHandshakes++;
  const room = cfg.rooms[i % cfg.rooms.length];
  const path = signer ? cfg.path + signer({ sub: `u${i}`, projects: ['*'] }) : cfg.path;
  /** @type {net.NetConnectOpts} */
  const opts = { host: cfg.host, port: cfg.port, noDelay: true };
  if (cfg.localAddress) opts.localAddress = cfg.localAddress;
  const sock = net.connect(opts);
  /** @type {Conn} */
  const c = { sock, room, state: ST_HANDSHAKE, chunks: [], pendLen: 0, need: 0, frag: null, timer: null, t0: performance.now(), tConn: 0, tUp: 0 };
  if (opened <= (cfg.trackIds ?? 0)) { c.sub = `u${i}`; c.tracked = { joinLatestId: null, ids: [] }; }
  conns.push(c);
  c.timer = setTimeout(() => { c.timer = null; if (c.state !== ST_JOINED) { countError('timeout:join'); kill(c, null); } }, cfg.joinTimeoutMs);
  sock.on('connect', () => {
    c.tConn = performance.now();
    if (!cfg) return;
    sock.write(`GET ${path} HTTP/1.1\r\nHost: ${cfg.host}:${cfg.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${WS_KEY}\r\nSec-WebSocket-Version: 13\r\n` +
      (cfg.deflate ? 'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n' : '') + '\r\n');
  });
  sock.on('data', (d) => onData(c, d));
  sock.on('error', (err) => {
    countError('socket:' + (/** @type {any} */ (err).code ?? err.message));
    if (c.state === ST_JOINED) sample('socket error after join: ' + err.message);
    kill(c, null);
  });
  sock.on('close', () => {
    if (c.state !== ST_DEAD) {
      if (c.state === ST_JOINED) { closeCodes['tcp-close'] = (closeCodes['tcp-close'] ?? 0) + 1; stats.closedByServer++; }
      kill(c, null);
    }
  });
}

/** Open more connections while under the pacing budget and the in-flight handshake cap. */
function pump() {
  if (!cfg || doneReported) return;
  const elapsed = (Date.now() - connectStart) / 1000;
  const budget = Math.min(cfg.count, Math.floor(elapsed * cfg.rate) + 1);
  while (opened < budget && pendingHandshakes < cfg.maxPending) openOne();
  const settled = stats.joined + stats.failed;
  if (stats.joined > 0) lastJoinedAt = Date.now();
  if (opened >= cfg.count && pendingHandshakes <= 0 && settled >= cfg.count) {
    doneReported = true;
    if (rampTimer) { clearInterval(rampTimer); rampTimer = null; }
    send({ type: 'connected', joined: stats.joined, failed: stats.failed, elapsedMs: lastJoinedAt - connectStart, errors: errorCounts, samples, closeCodes,
      phases: { tcp: pct(connTimes), upgrade: pct(upTimes), total: pct(joinTimes) } });
  }
}

/** @param {any} m */
function send(m) {
  if (process.send && process.connected) process.send(m);
}

function snapshot() {
  return { ...stats, eventsAll: eventsBeforeReset + stats.events, errors: errorCounts, closeCodes, samples, histCount: hist.totalCount };
}

/**
 * Tracked sockets read again until each has seen the server's cut (EOF or reset) or nothing arrived
 * for `idleMs`; bounded by `maxWaitMs`. Returns what each received.
 * @param {number} idleMs @param {number} maxWaitMs
 * @returns {Promise<TrackedReport[]>}
 */
async function drainTracked(idleMs, maxWaitMs) {
  const tracked = conns.filter((c) => c.tracked);
  const startedAt = performance.now();
  for (const c of tracked) { c.lastDataAt = startedAt; if (c.state !== ST_DEAD) c.sock.resume(); }
  while (performance.now() - startedAt < maxWaitMs) {
    const now = performance.now();
    if (tracked.every((c) => c.state === ST_DEAD || now - (c.lastDataAt ?? 0) > idleMs)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return tracked.map((c) => ({
    sub: /** @type {string} */ (c.sub), room: c.room, joinLatestId: c.tracked?.joinLatestId ?? null, ids: c.tracked?.ids ?? [],
    cut: c.state === ST_DEAD, partialBytes: c.pendLen,
  }));
}

/** @type {NodeJS.Timeout | null} */
let streamTimer = null;
let maxLife = setTimeout(() => process.exit(3), 30 * 60 * 1000);
maxLife.unref();

process.on('message', (/** @type {any} */ m) => {
  switch (m.cmd) {
    case 'connect': {
      cfg = m;
      EVENT_PATTERN = m.mode === 'pusher' ? PUSHER_EVENT_PATTERN : Buffer.from('{"type":"project_');
      T_PATTERN = m.mode === 'pusher' ? PUSHER_T_PATTERN : Buffer.from('"t":');
      signer = m.jwtSecret ? createSigner({ key: m.jwtSecret, algorithm: 'HS256', expiresIn: 6 * 3600 * 1000 }) : null;
      latency = !!m.latency;
      connectStart = Date.now();
      doneReported = false;
      if (m.count === 0) { pump(); break; }
      rampTimer = setInterval(pump, 5);
      pump();
      break;
    }
    case 'stats':
      send({ type: 'stats', id: m.id, stats: snapshot() });
      break;
    case 'reset':
      eventsBeforeReset += stats.events;
      stats.frames = 0; stats.bytes = 0; stats.events = 0; stats.pings = 0; stats.wire = 0; stats.compressedFrames = 0;
      hist = newHist();
      send({ type: 'reset', id: m.id });
      break;
    case 'latency':
      latency = !!m.on;
      break;
    case 'stream':
      if (streamTimer) clearInterval(streamTimer);
      streamTimer = m.intervalMs > 0 ? setInterval(() => send({ type: 'tick', events: stats.events, frames: stats.frames, bytes: stats.bytes }), m.intervalMs) : null;
      break;
    case 'hist':
      send({ type: 'hist', id: m.id, hist: hdr.encodeIntoCompressedBase64(hist), count: hist.totalCount });
      break;
    case 'drainTracked':
      drainTracked(m.idleMs ?? 2000, m.maxWaitMs ?? 30_000).then((conns) => send({ type: 'tracked', id: m.id, conns }));
      break;
    case 'close':
      if (rampTimer) clearInterval(rampTimer);
      if (streamTimer) clearInterval(streamTimer);
      for (const c of conns) { if (c.timer) clearTimeout(c.timer); c.state = ST_DEAD; c.sock.destroy(); }
      send({ type: 'closed', id: m.id });
      setTimeout(() => process.exit(0), 50);
      break;
    default:
      break;
  }
});
process.on('disconnect', () => process.exit(0));
send({ type: 'ready' });
