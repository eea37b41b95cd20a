// @ts-check
/**
 * Start/stop the servers under test (the gateway and the baselines), a private redis-server,
 * and read per-process CPU/RSS from /proc.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSigner } from 'fast-jwt';

export const BENCH_DIR = fileURLToPath(new URL('..', import.meta.url));
export const ROOT = path.resolve(BENCH_DIR, '..');
export const TMP_DIR = path.join(BENCH_DIR, 'results', 'tmp');
export const JWT_SECRET = 'bench-secret-0123456789abcdef0123456789abcdef';
/** The environment `npm start` sets for the gateway (package.json "start"); scenarios may override it. */
export const NPM_START_ENV = { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '32768', MALLOC_TRIM_THRESHOLD_: '131072' };
/**
 * The load generator opens thousands of sockets for one user from one address: lift the edge caps
 * (README, Limits). k6/README.md names the same variables for a k6 run; keep the two lists alike.
 */
const GENEROUS_EDGE_LIMITS = {
  MAX_CONNECTIONS: '1000000', MAX_CONNECTIONS_PER_USER: '1000000', MAX_CONNECTIONS_PER_IP: '1000000',
  UPGRADES_PER_IP_PER_S: '1000000', UPGRADES_PER_IP_BURST: '1000000', HTTP_RATE_LIMIT_PER_S: '10000000', HTTP_RATE_LIMIT_BURST: '10000000',
  MAX_BUFFERED_BYTES: '8589934592',
};
const CLK_TCK = 100;

/**
 * The Soketi app of the bench (server kind `soketi`): its one app, given by SOKETI_DEFAULT_APP_* env,
 * the Pusher HTTP API signs with key and secret (bench/lib/producer.mjs), clients connect to /app/<key>.
 */
export const SOKETI_APP = { id: 'bench-app', key: 'bench-key', secret: 'bench-soketi-secret-0123456789abcdef' };
/**
 * Soketi's own limits that would refuse the bench's load, lifted as GENEROUS_EDGE_LIMITS lifts the
 * gateway's (SOKETI_* env, read by its CLI: node_modules/@soketi/soketi/dist/cli/cli.js). Its defaults
 * are already unlimited for connections (-1) and backend events per second (-1); said again here.
 * The batch endpoint takes at most 10 events by default (eventLimits.maxBatchSize): lifted to 1,000,
 * the gateway's limit per request, so the 1,000-per-request fan-out runs on it too.
 */
const SOKETI_LIMITS = {
  SOKETI_DEFAULT_APP_MAX_CONNS: '-1', SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC: '-1', SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC: '-1',
  SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC: '-1', SOKETI_EVENT_MAX_BATCH_SIZE: '1000',
};

const sign = createSigner({ key: JWT_SECRET, algorithm: 'HS256', expiresIn: 6 * 3600 * 1000 });
export const CLIENT_TOKEN = sign({ sub: 'u1', projects: ['*'] });
export const PRODUCER_TOKEN = sign({ sub: 'bench-producer', scope: 'events:publish', projects: ['*'] });

/** @param {number} i */
export function roomGuid(i) {
  const h = (0x1000000 + i).toString(16).padStart(12, '0');
  return `6a1d0c2e-0b3c-4d5e-8f70-${h}`;
}

/** @returns {Promise<number>} */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = /** @type {net.AddressInfo} */ (s.address());
      s.close(() => resolve(a.port));
    });
  });
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * @param {number} port @param {string} p @param {number} [timeoutMs]
 * @returns {Promise<{status: number, body: string}>}
 */
export function httpGet(port, p, timeoutMs = 2000) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { if (body.length < 4096) body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/**
 * @param {number} port @param {string} p @param {string} body @param {Record<string,string>} [headers]
 * @returns {Promise<{status: number, body: string}>}
 */
export function httpPost(port, p, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, method: 'POST', agent: false, timeout: 5000,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers } }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { if (b.length < 4096) b += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

/** @param {number} pid */
export function procSample(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime is field 14, stime field 15
    const ticks = Number(rest[11]) + Number(rest[12]);
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    return { cpuSec: ticks / CLK_TCK, rssKb: m ? Number(m[1]) : 0, t: performance.now() };
  } catch {
    return { cpuSec: 0, rssKb: 0, t: performance.now() };
  }
}

/** @param {number[]} pids */
export function procSampleAll(pids) {
  let cpuSec = 0, rssKb = 0;
  for (const p of pids) { const s = procSample(p); cpuSec += s.cpuSec; rssKb += s.rssKb; }
  return { cpuSec, rssKb, t: performance.now() };
}

/**
 * @typedef {'gateway'|'socketio'|'ws'|'uws'|'uws-jwt'|'soketi'} ServerKind
 * @typedef {'plain'|'eio'|'pusher'} ClientMode how the load workers speak: the gateway's JSON frames, engine.io/Socket.IO, or Pusher
 * @typedef {{ api: 'gateway' } | { api: 'pusher', appId: string, key: string, secret: string }} PublishApi
 *   gateway: POST /v1/projects/:guid/events (the gateway and every baseline); pusher: Soketi's signed HTTP API
 * @typedef {{ kind: ServerKind, label: string, port: number, pids: number[], procs: import('node:child_process').ChildProcess[], logs: string[], wsPath: string, mode: ClientMode, publish: PublishApi, jwtSecret?: string, stop: () => Promise<void> }} RunningServer
 */

const SCRIPTS = {
  gateway: path.join(ROOT, 'dist', 'main.js'),
  socketio: path.join(BENCH_DIR, 'baselines', 'socketio.mjs'),
  ws: path.join(BENCH_DIR, 'baselines', 'ws.mjs'),
  uws: path.join(BENCH_DIR, 'baselines', 'uws.mjs'),
  // the same script with BENCH_UWS_JWT=1: JWT at upgrade and the gateway's join ack (the floor for connections)
  'uws-jwt': path.join(BENCH_DIR, 'baselines', 'uws.mjs'),
  // its CLI as its Docker image starts it (`node bin/server.js start`), configured by SOKETI_* env
  soketi: path.join(ROOT, 'node_modules', '@soketi', 'soketi', 'bin', 'server.js'),
};
/** Arguments after the script. @type {Partial<Record<ServerKind, string[]>>} */
const SCRIPT_ARGS = { soketi: ['start'] };
/** Where readiness is asked (200 expected). @param {ServerKind} kind */
const healthPath = (kind) => (kind === 'soketi' ? '/' : '/healthz');

export function gatewayBuilt() { return fs.existsSync(SCRIPTS.gateway); }

let logSeq = 0;

/**
 * Start `instances` processes of a server on one port (SO_REUSEPORT for uWS-based ones).
 * @param {ServerKind} kind
 * @param {{ port?: number, redisUrl?: string, instances?: number, cpuProfDir?: string, label?: string, env?: Record<string, string | undefined>, extraNodeArgs?: string[], script?: string }} [o]
 *   extraNodeArgs: node flags added after the usual ones (bench instrumentation such as --import of a probe)
 *   script: another build of the same server (an A/B of two builds in one interleaved run)
 * @returns {Promise<RunningServer>}
 */
export async function startServer(kind, o = {}) {
  fs.mkdirSync(TMP_DIR, { recursive: true });
  const port = o.port ?? await freePort();
  const instances = o.instances ?? 1;
  const script = o.script ?? SCRIPTS[kind];
  if (!fs.existsSync(script)) throw new Error(`${script} does not exist (build the gateway first)`);
  /** @type {import('node:child_process').ChildProcess[]} */
  const procs = [];
  /** @type {string[]} */
  const logs = [];
  for (let i = 0; i < instances; i++) {
    // The gateway runs exactly as `npm start` runs it (see package.json: a 4 MB young generation and
    // glibc malloc settings, NPM_START_ENV); BENCH_GATEWAY_NODE_ARGS overrides the node flags to
    // compare V8 settings in the same scenario.
    const gatewayArgs = process.env.BENCH_GATEWAY_NODE_ARGS ?? '--max-semi-space-size=4';
    const execArgv = kind === 'gateway' ? gatewayArgs.split(' ').filter(Boolean) : [];
    if (o.extraNodeArgs) execArgv.push(...o.extraNodeArgs);
    if (o.cpuProfDir) { fs.mkdirSync(o.cpuProfDir, { recursive: true }); execArgv.push('--cpu-prof', `--cpu-prof-dir=${o.cpuProfDir}`); }
    const logFile = path.join(TMP_DIR, `${kind}-${port}-${i}-${++logSeq}.log`);
    // Soketi: its port and app from env; its /usage server on a free port of 127.0.0.1; its cluster
    // discovery (node-discover, always started, UDP hellos every 500 ms, by default BROADCAST to
    // 255.255.255.255:11002) sent to 127.0.0.1 only, on a free port; no grace period at SIGTERM.
    const soketiEnv = kind === 'soketi' ? {
      SOKETI_PORT: String(port), SOKETI_HOST: '127.0.0.1', SOKETI_METRICS_HOST: '127.0.0.1', SOKETI_METRICS_SERVER_PORT: String(await freePort()),
      SOKETI_CLUSTER_UNICAST_ADDRESSES: '127.0.0.1', SOKETI_CLUSTER_HOST: '127.0.0.1', SOKETI_CLUSTER_PORT: String(await freePort()),
      SOKETI_DEFAULT_APP_ID: SOKETI_APP.id, SOKETI_DEFAULT_APP_KEY: SOKETI_APP.key, SOKETI_DEFAULT_APP_SECRET: SOKETI_APP.secret,
      SOKETI_SHUTDOWN_GRACE_PERIOD: '0', ...SOKETI_LIMITS,
    } : {};
    const fd = fs.openSync(logFile, 'w');
    /** @type {Record<string, string | undefined>} */
    const env = {
      ...process.env, PORT: String(port), HOST: '127.0.0.1', REUSE_PORT: 'true', ...GENEROUS_EDGE_LIMITS, JWT_SECRET, LOG_LEVEL: 'warn', NODE_ENV: 'production',
      // One thread unless a scenario asks for more (the `workers` scenario): keeps every other
      // gateway row comparable with earlier reports, whatever WORKERS defaults to.
      ...(kind === 'gateway' ? { WORKERS: '1', ...NPM_START_ENV } : {}),
      ...(kind === 'uws-jwt' ? { BENCH_UWS_JWT: '1' } : {}), ...soketiEnv,
      ...(o.redisUrl ? { REDIS_URL: o.redisUrl } : {}), ...(o.env ?? {}),
    };
    if (!o.redisUrl) delete env.REDIS_URL;
    // A scenario unsets a variable by giving it undefined (e.g. the flood scenario's glibc-defaults).
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
    const child = spawn(process.execPath, [...execArgv, script, ...(SCRIPT_ARGS[kind] ?? [])], { cwd: ROOT, env, stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    procs.push(child);
    logs.push(logFile);
    try {
      await waitHealthy(port, child, logFile, healthPath(kind));
      // with SO_REUSEPORT, /healthz may be answered by an earlier instance: wait until THIS process holds a listening socket on the port
      if (i > 0) await waitListening(/** @type {number} */ (child.pid), port, child, logFile);
    } catch (e) {
      for (const p of procs) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
      throw e;
    }
  }
  const label = o.label ?? kind;
  /** @type {RunningServer} */
  const srv = {
    kind, label, port, procs, logs, pids: procs.map((p) => /** @type {number} */ (p.pid)),
    // gateway, uws-jwt: every connection gets its own token (distinct users), signed by the load workers
    wsPath: kind === 'gateway' || kind === 'uws-jwt' ? '/ws?token=' : kind === 'socketio' ? '/socket.io/?EIO=4&transport=websocket'
      : kind === 'soketi' ? `/app/${SOKETI_APP.key}?protocol=7&client=bench&version=1` : '/ws',
    jwtSecret: kind === 'gateway' || kind === 'uws-jwt' ? JWT_SECRET : undefined,
    mode: kind === 'socketio' ? 'eio' : kind === 'soketi' ? 'pusher' : 'plain',
    publish: kind === 'soketi' ? { api: 'pusher', appId: SOKETI_APP.id, key: SOKETI_APP.key, secret: SOKETI_APP.secret } : { api: 'gateway' },
    stop: async () => { await Promise.all(procs.map((p) => stopProc(p))); },
  };
  return srv;
}

/**
 * @param {number} port @param {import('node:child_process').ChildProcess} child @param {string} logFile @param {string} p
 */
async function waitHealthy(port, child, logFile, p) {
  const deadline = Date.now() + 25_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}: ${tail(logFile)}`);
    try {
      const r = await httpGet(port, p, 1000);
      if (r.status === 200) return;
    } catch { /* not yet */ }
    await sleep(100);
  }
  throw new Error(`server on :${port} not healthy after 25 s: ${tail(logFile)}`);
}

/**
 * Inodes of sockets listening on 127.0.0.1:port (from /proc/net/tcp).
 * @param {number} port
 */
function listeningInodes(port) {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const set = new Set();
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    if (f[1].endsWith(':' + hex) && f[3] === '0A') set.add(f[9]);
  }
  return set;
}

/** @param {number} pid */
function socketInodes(pid) {
  const out = new Set();
  try {
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try { const l = fs.readlinkSync(`/proc/${pid}/fd/${fd}`); const m = /^socket:\[(\d+)\]$/.exec(l); if (m) out.add(m[1]); } catch { /* closed */ }
    }
  } catch { /* gone */ }
  return out;
}

/**
 * True if process `pid` holds a socket listening on `port`.
 * @param {number} pid @param {number} port
 */
export function isListening(pid, port) {
  const l = listeningInodes(port);
  for (const i of socketInodes(pid)) if (l.has(i)) return true;
  return false;
}

/**
 * @param {number} pid @param {number} port @param {import('node:child_process').ChildProcess} child @param {string} logFile
 */
async function waitListening(pid, port, child, logFile) {
  const deadline = Date.now() + 25_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`server instance exited with ${child.exitCode} (SO_REUSEPORT bind failed?): ${tail(logFile)}`);
    if (isListening(pid, port)) return;
    await sleep(100);
  }
  throw new Error(`instance ${pid} never listened on :${port} (SO_REUSEPORT not working?): ${tail(logFile)}`);
}

/** @param {string} f */
export function tail(f) {
  try { const s = fs.readFileSync(f, 'utf8'); return s.slice(-1500); } catch { return ''; }
}

/** @param {import('node:child_process').ChildProcess} p */
export async function stopProc(p) {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  const t = await Promise.race([exited.then(() => 'ok'), sleep(15_000).then(() => 'timeout')]);
  if (t === 'timeout') { p.kill('SIGKILL'); await exited; }
}

/**
 * Start a private redis-server (no persistence) on a free port.
 * @returns {Promise<{ url: string, port: number, flush: () => Promise<void>, stop: () => Promise<void>, pid: number }>}
 */
export async function startRedis() {
  fs.mkdirSync(TMP_DIR, { recursive: true });
  const port = await freePort();
  const dir = path.join(TMP_DIR, `redis-${port}`);
  fs.mkdirSync(dir, { recursive: true });
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', dir, '--maxclients', '1000', '--loglevel', 'warning'], { stdio: 'ignore' });
  const { Redis } = await import('ioredis');
  const deadline = Date.now() + 10_000;
  /** @type {any} */
  let cli = null;
  while (Date.now() < deadline) {
    try {
      cli = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      await cli.connect();
      await cli.ping();
      break;
    } catch {
      try { cli?.disconnect(); } catch { /* ignore */ }
      cli = null;
      await sleep(100);
    }
  }
  if (!cli) { child.kill('SIGKILL'); throw new Error('redis-server did not start'); }
  return {
    url: `redis://127.0.0.1:${port}`, port, pid: /** @type {number} */ (child.pid),
    flush: async () => { await cli.flushall(); },
    stop: async () => { try { cli.disconnect(); } catch { /* ignore */ } await stopProc(child); fs.rmSync(dir, { recursive: true, force: true }); },
  };
}
