// @ts-check
/**
 * Baseline (a): Socket.IO 4 with @socket.io/redis-streams-adapter (needs REDIS_URL).
 * Rooms are Socket.IO rooms; every event is `io.to(guid).emit('event', envelope)`.
 * Same producer API as the gateway (POST /v1/projects/:guid/events, single or batch body).
 * Client: engine.io v4 over WebSocket, `40` to connect, `42["join","<guid>"]`, acked by `42["joined","<guid>"]`.
 */
import http from 'node:http';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-streams-adapter';
import { Redis } from 'ioredis';
import { PUBLISH_RE, parseEvents, envelope, lifetime } from './common.mjs';

const port = Number(process.env.PORT ?? 8082);
const host = process.env.HOST ?? '127.0.0.1';
const redisUrl = process.env.REDIS_URL;

/** @type {Server | null} */
let io = null;

const server = http.createServer((req, res) => {
  const url = req.url ?? '/';
  if (req.method === 'GET' && url === '/healthz') { res.writeHead(200).end('ok'); return; }
  const m = req.method === 'POST' ? PUBLISH_RE.exec(url) : null;
  if (!m) { res.writeHead(404).end(); return; } // socket.io intercepts /socket.io/ before this listener
  const guid = m[1].toLowerCase();
  /** @type {Buffer[]} */
  const chunks = [];
  req.on('data', (d) => chunks.push(d));
  req.on('end', () => {
    const events = parseEvents(Buffer.concat(chunks).toString('utf8'));
    if (!events || !io) { res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":{"code":"INVALID_FRAME","message":"bad body"}}'); return; }
    /** @type {string[]} */
    const ids = [];
    for (const e of events) {
      const env = envelope(guid, e);
      ids.push(env.id);
      io.to(guid).emit('event', env);
    }
    res.writeHead(202, { 'content-type': 'application/json' }).end(events.batch ? JSON.stringify({ ids }) : JSON.stringify({ id: ids[0] }));
  });
});

/** @type {any} */
let adapter = undefined;
/** @type {Redis | null} */
let redis = null;
if (redisUrl) {
  redis = new Redis(redisUrl);
  adapter = createAdapter(redis);
}
io = new Server(server, { adapter, transports: ['websocket'], perMessageDeflate: false, httpCompression: false, serveClient: false, cors: { origin: '*' } });
io.on('connection', (socket) => {
  socket.on('join', (room) => {
    if (typeof room !== 'string') return;
    const g = room.toLowerCase();
    socket.join(g);
    socket.emit('joined', g);
  });
});

server.keepAliveTimeout = 60_000;
server.listen(port, host);
process.on('SIGTERM', () => { io?.close(); redis?.disconnect(); process.exit(0); });
process.on('SIGINT', () => process.exit(0));
lifetime(2 * 3600 * 1000);
