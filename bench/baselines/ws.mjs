// @ts-check
/**
 * Baseline (b): plain `ws` server with hand-written rooms (Map<room, Set<ws>>).
 * Each event is JSON.stringify'd once (and turned into a Buffer once) and sent to every member.
 * Same producer API as the gateway: POST /v1/projects/:guid/events with a single event or a batch.
 * Client protocol: the gateway's `join_project` message, acked with a `join_project` frame.
 */
import http from 'node:http';
import { WebSocketServer } from 'ws';
import { PUBLISH_RE, parseEvents, envelope, lifetime } from './common.mjs';

const port = Number(process.env.PORT ?? 8081);
const host = process.env.HOST ?? '127.0.0.1';
/** @type {Map<string, Set<import('ws').WebSocket>>} */
const rooms = new Map();

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });

const server = http.createServer((req, res) => {
  const url = req.url ?? '/';
  if (req.method === 'GET' && url === '/healthz') { res.writeHead(200).end('ok'); return; }
  const m = req.method === 'POST' ? PUBLISH_RE.exec(url) : null;
  if (!m) { res.writeHead(404).end(); return; }
  const guid = m[1].toLowerCase();
  /** @type {Buffer[]} */
  const chunks = [];
  req.on('data', (d) => chunks.push(d));
  req.on('end', () => {
    const events = parseEvents(Buffer.concat(chunks).toString('utf8'));
    if (!events) { res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":{"code":"INVALID_FRAME","message":"bad body"}}'); return; }
    const members = rooms.get(guid);
    /** @type {string[]} */
    const ids = [];
    for (const e of events) {
      const env = envelope(guid, e);
      ids.push(env.id);
      if (!members) continue;
      const buf = Buffer.from(JSON.stringify(env));
      for (const ws of members) ws.send(buf, { binary: false });
    }
    res.writeHead(202, { 'content-type': 'application/json' }).end(events.batch ? JSON.stringify({ ids }) : JSON.stringify({ id: ids[0] }));
  });
});

server.on('upgrade', (req, socket, head) => {
  if (!(req.url ?? '').startsWith('/ws')) { socket.destroy(); return; }
  wss.handleUpgrade(req, socket, head, (ws) => {
    /** @type {Set<string>} */
    const joined = new Set();
    ws.on('message', (raw) => {
      let msg;
      try { msg = JSON.parse(raw.toString()); } catch { return; }
      if (msg && msg.type === 'join_project' && typeof msg.projectGuid === 'string') {
        const g = msg.projectGuid.toLowerCase();
        let set = rooms.get(g);
        if (!set) { set = new Set(); rooms.set(g, set); }
        set.add(ws);
        joined.add(g);
        ws.send(JSON.stringify({ type: 'join_project', projectGuid: g, data: { latestId: null, recovered: false, replayed: 0 }, timestamp: new Date().toISOString(), id: msg.id ?? null }));
      }
    });
    ws.on('close', () => {
      for (const g of joined) { const s = rooms.get(g); if (s) { s.delete(ws); if (s.size === 0) rooms.delete(g); } }
    });
    ws.on('error', () => {});
  });
});

server.keepAliveTimeout = 60_000;
server.listen(port, host);
process.on('SIGTERM', () => { server.close(); process.exit(0); });
process.on('SIGINT', () => process.exit(0));
lifetime(2 * 3600 * 1000);
