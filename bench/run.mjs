#!/usr/bin/env node
// @ts-check
/**
 * Benchmark runner: node bench/run.mjs --profile quick|full [--only connections,fanout,workers,latency,http,profile]
 *
 * Starts every server itself (gateway from dist/main.js and the baselines in bench/baselines/),
 * drives it with forked raw-socket load workers and an HTTP producer, and writes
 * bench/results/<profile>-report.md (+ .json and SVG charts). Every figure is also given as a
 * ratio against baselines measured in the same run, because the machine is shared and noisy.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
// @ts-ignore -- autocannon ships no type declarations
import autocannon from 'autocannon';
import {
  BENCH_DIR, TMP_DIR, PRODUCER_TOKEN, startServer, startRedis, roomGuid, sleep, procSample, procSampleAll,
  gatewayBuilt, httpPost, stopProc, tail,
} from './lib/servers.mjs';
import { LoadGen } from './lib/loadgen.mjs';
import { gatewayVersion, installRunGuard } from './lib/run-guard.mjs';
import { Producer, nowUs } from './lib/producer.mjs';
import { summarizeCpuProfile } from './lib/cpuprofile.mjs';
import { table, barChart, fmt, ratio } from './lib/report.mjs';

const { values: args } = parseArgs({
  options: {
    profile: { type: 'string', default: 'quick' },
    only: { type: 'string' },
    'no-gateway': { type: 'boolean', default: false },
    servers: { type: 'string' },
  },
});
const PROFILE = args.profile === 'full' ? 'full' : 'quick';
const ALL = ['connections', 'fanout', 'workers', 'latency', 'http', 'profile'];
const ONLY = new Set(args.only ? args.only.split(',').map((s) => s.trim()) : ALL);
const RESULTS_DIR = path.join(BENCH_DIR, 'results');

/** Scenario parameters per profile. */
const P = PROFILE === 'full' ? {
  conn: { n: 19_000, rate: 4000, holdMs: 5000, rooms: 100, servers: ['gateway', 'socketio', 'ws', 'uws'], multi: { n: 52_000, instances: 4, rate: 4000 } },
  fanout: { clients: 10_000, rooms: 100, batch: 50, windowPerClient: 150, concurrency: 8, warmMs: 3000, measureMs: 8000, profileMs: 8000, repeats: 3,
    servers: ['gateway', 'gateway-redis', 'socketio', 'ws', 'uws', 'uws-loop'] },
  latency: { clients: 2000, rooms: 20, deliveries: 30_000, warmMs: 3000, measureMs: 10_000, repeats: 3, servers: ['gateway', 'gateway-redis', 'gateway-redis-xadd', 'socketio', 'ws', 'uws'] },
  http: { conns: 64, sec: 10, servers: ['gateway', 'gateway-redis', 'socketio', 'ws', 'uws'] },
  // The fan-out above, run by one gateway process with WORKERS=1 and WORKERS=2 (-wN = WORKERS).
  workers: { repeats: 3, servers: ['gateway-w1', 'gateway-w2', 'gateway-redis-w1', 'gateway-redis-w2'] },
  guardMs: 45 * 60_000,
} : {
  conn: { n: 3000, rate: 6000, holdMs: 1500, rooms: 20, servers: ['gateway', 'socketio', 'ws', 'uws'], multi: null },
  fanout: { clients: 2000, rooms: 20, batch: 50, windowPerClient: 150, concurrency: 8, warmMs: 1000, measureMs: 3000, profileMs: 3000, repeats: 1,
    servers: ['gateway', 'socketio', 'ws', 'uws', 'uws-loop'] },
  latency: { clients: 1000, rooms: 10, deliveries: 30_000, warmMs: 1000, measureMs: 3000, repeats: 1, servers: ['gateway', 'gateway-redis', 'gateway-redis-xadd', 'socketio', 'ws', 'uws'] },
  http: { conns: 32, sec: 3, servers: ['gateway', 'gateway-redis', 'socketio', 'ws', 'uws'] },
  workers: { repeats: 1, servers: ['gateway-w1', 'gateway-w2', 'gateway-redis-w1', 'gateway-redis-w2'] },
  guardMs: 12 * 60_000,
};

// ---------------------------------------------------------------- bookkeeping / safety
/** @type {Set<import('./lib/servers.mjs').RunningServer>} */
const live = new Set();
/** @type {Set<LoadGen>} */
const liveLoad = new Set();
/** @type {Awaited<ReturnType<typeof startRedis>> | null} */
let redis = null;
const hardCleanup = installRunGuard({ label: 'bench', guardMs: P.guardMs, servers: live, loads: liveLoad, redis: () => redis });

/** @type {string[]} */
const notes = [];
/** @param {string} s */
function log(s) { console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${s}`); }

/** Machine-wide CPU busy fraction between two /proc/stat reads. */
function cpuTimes() {
  const l = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = l[3] + (l[4] ?? 0);
  const total = l.reduce((a, b) => a + b, 0);
  return { idle, total };
}
/** @param {{idle:number,total:number}} a @param {{idle:number,total:number}} b */
function busyPct(a, b) { const dt = b.total - a.total; return dt > 0 ? 100 * (1 - (b.idle - a.idle) / dt) : 0; }

/**
 * @param {string} name e.g. gateway, gateway-redis, socketio, ws, uws, uws-loop
 * @param {{ instances?: number, cpuProfDir?: string }} [o]
 */
async function start(name, o = {}) {
  const kind = /** @type {import('./lib/servers.mjs').ServerKind} */ (name.startsWith('gateway') ? 'gateway' : name.startsWith('uws') ? 'uws' : name);
  const needRedis = name.startsWith('gateway-redis') || name === 'socketio';
  if (needRedis) {
    if (!redis) redis = await startRedis();
    await redis.flush();
  }
  // `gateway-w2`, `gateway-redis-w2`: one gateway process with WORKERS=2.
  const workers = Number(/-w(\d+)$/.exec(name)?.[1] ?? 0);
  const srv = await startServer(kind, { label: name, redisUrl: needRedis && redis ? redis.url : undefined, instances: o.instances, cpuProfDir: o.cpuProfDir, ...(workers ? { env: { WORKERS: String(workers) } } : {}) });
  live.add(srv);
  if (workers > 1) {
    try { await waitForWorkers(srv.port, workers); } catch (e) { await stop(srv); throw e; }
  }
  return srv;
}

/**
 * /healthz answers as soon as the first worker thread listens: wait until every worker has
 * answered (each answer names its worker in x-gateway-worker; a fresh connection per request lets
 * the kernel pick any of them), so the load is spread over all of them from the first connection.
 * @param {number} port @param {number} workers
 */
async function waitForWorkers(port, workers) {
  const seen = new Set();
  // Time-bound, not count-bound: a worker on Redis listens only once its bus has connected.
  for (const deadline = Date.now() + 20_000; seen.size < workers && Date.now() < deadline;) {
    const worker = await new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/healthz', agent: false, timeout: 1000 }, (res) => { res.resume(); resolve(res.headers['x-gateway-worker']); });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(undefined));
    });
    if (worker !== undefined && !seen.has(worker)) seen.add(worker); else await sleep(10);
  }
  if (seen.size < workers) throw new Error(`only workers ${[...seen].join(',')} of ${workers} answered /healthz`);
}
/** @param {import('./lib/servers.mjs').RunningServer} srv */
async function stop(srv) { await srv.stop(); live.delete(srv); }

/** @param {LoadGen} lg */
async function closeLoad(lg) { await lg.close(); liveLoad.delete(lg); }

/** @param {number} n */
function roomList(n) { return Array.from({ length: n }, (_, i) => roomGuid(i)); }

function serversWanted(/** @type {string[]} */ list) {
  const gw = gatewayBuilt() && !args['no-gateway'];
  if (!gw && list.some((s) => s.startsWith('gateway'))) notes.push('dist/main.js missing or --no-gateway: gateway rows skipped');
  const pick = args.servers ? new Set(args.servers.split(',').map((x) => x.trim())) : null;
  return list.filter((s) => (gw || !s.startsWith('gateway')) && (!pick || pick.has(s)));
}


/** @param {Record<string, number>} o */
function kv(o) { return Object.entries(o).map(([k, v]) => `${k}=${v}`).join(', '); }

/**
 * @param {Record<string, any>} row @param {string} scenario @param {unknown} e
 */
function failedStart(row, scenario, e) {
  const msg = /** @type {Error} */ (e).message ?? String(e);
  row.notes = `FAILED to start: ${msg.replace(/\s+/g, ' ').slice(0, 400)}`;
  log(`${scenario} ${row.server}: ${row.notes}`);
  return row;
}

// ---------------------------------------------------------------- scenario 1: connections
/**
 * @param {string} name @param {number} n @param {number} rate @param {number} rooms @param {number} holdMs @param {number} [instances]
 */
async function connectionsRun(name, n, rate, rooms, holdMs, instances = 1) {
  /** @type {Record<string, any>} */
  const row = { server: instances > 1 ? `${name} ×${instances} procs` : name, n };
  let srv;
  try { srv = await start(name, { instances }); } catch (e) { return failedStart(row, 'connections', e); }
  const lg = new LoadGen({ host: '127.0.0.1', port: srv.port, path: srv.wsPath, mode: srv.mode, jwtSecret: srv.jwtSecret, rooms: roomList(rooms), count: n, rate,
    workers: Math.max(2, Math.ceil(n / 13_000)), maxPending: 200 });
  liveLoad.add(lg);
  try {
    await sleep(500);
    const before = procSampleAll(srv.pids);
    await lg.start();
    // sample (connections joined, server RSS) during the ramp: the least-squares slope over the upper
    // part of the ramp is the marginal RSS per connection (one-time init costs excluded)
    /** @type {[number, number][]} */
    const pts = [];
    let ramping = true;
    const sampler = (async () => {
      while (ramping) {
        await sleep(500);
        if (!ramping) break;
        try { const st = await lg.stats(); pts.push([st.joined, procSampleAll(srv.pids).rssKb]); } catch { /* worker busy */ }
      }
    })();
    const c = await lg.connect();
    ramping = false;
    await sampler;
    row.connectRate = c.rate;
    const ph = (c.phases ?? []).filter(Boolean);
    if (ph.length && ph.every((x) => x.total)) {
      row.joinP50Ms = ph.reduce((a, x) => a + x.total.p50, 0) / ph.length;
      row.joinP99Ms = Math.max(...ph.map((x) => x.total.p99));
      row.tcpP50Ms = ph.reduce((a, x) => a + (x.tcp?.p50 ?? 0), 0) / ph.length;
    }
    await sleep(holdMs);
    const s = await lg.stats();
    const after = procSampleAll(srv.pids);
    row.held = s.joined;
    row.failed = n - s.joined;
    row.rssBeforeMb = before.rssKb / 1024;
    row.rssAfterMb = after.rssKb / 1024;
    row.rssPerConnKb = s.joined > 0 ? (after.rssKb - before.rssKb) / s.joined : null;
    pts.push([s.joined, after.rssKb]);
    const fit = pts.filter(([j]) => j >= 0.2 * n);
    if (fit.length >= 3) {
      const mx = fit.reduce((a, [x]) => a + x, 0) / fit.length, my = fit.reduce((a, [, y]) => a + y, 0) / fit.length;
      const sxx = fit.reduce((a, [x]) => a + (x - mx) ** 2, 0), sxy = fit.reduce((a, [x, y]) => a + (x - mx) * (y - my), 0);
      row.rssSlopeKb = sxx > 0 ? sxy / sxx : null;
    }
    if (instances > 1) {
      row.perProcess = srv.pids.map((pid) => { try { return fs.readdirSync(`/proc/${pid}/fd`).length; } catch { return 0; } });
    }
    const errs = { ...c.errors, ...s.errors };
    if (Object.keys(errs).length) row.notes = `errors: ${kv(errs)}`;
    if (Object.keys(s.closeCodes).length) row.notes = `${row.notes ?? ''} closes: ${kv(s.closeCodes)}`.trim();
    if (s.samples.length) row.samples = s.samples;
    log(`connections ${row.server}: held ${row.held}/${n}, ${fmt(row.connectRate)} conn/s, ${fmt(row.rssPerConnKb)} KB/conn ${row.notes ?? ''}`);
  } catch (e) {
    row.notes = `FAILED: ${/** @type {Error} */ (e).message}`;
    log(`connections ${row.server} failed: ${row.notes}`);
  } finally {
    await closeLoad(lg);
    await stop(srv);
  }
  return row;
}

async function scenarioConnections() {
  const c = P.conn;
  const rows = [];
  for (const name of serversWanted(c.servers)) rows.push(await connectionsRun(name, c.n, c.rate, c.rooms, c.holdMs));
  /** @type {Record<string, any>[]} */
  const multi = [];
  if (c.multi && serversWanted(['gateway']).length) {
    multi.push(await connectionsRun('gateway', c.multi.n, c.multi.rate, c.rooms, c.holdMs, c.multi.instances));
  }
  return { params: { n: c.n, rate: c.rate, holdMs: c.holdMs, rooms: c.rooms, multi: c.multi }, rows, multi };
}

// ---------------------------------------------------------------- scenario 2: fan-out
/**
 * @param {string} name @param {{ cpuProfDir?: string, durationMs?: number }} [o]
 */
async function fanoutRun(name, o = {}) {
  const f = P.fanout;
  /** @type {Record<string, any>} */
  const row = { server: name + (o.cpuProfDir ? ' (--cpu-prof)' : ''), producer: name === 'uws-loop' ? 'in-process loop' : 'HTTP batch' };
  let srv;
  try { srv = await start(name, { cpuProfDir: o.cpuProfDir }); } catch (e) { return failedStart(row, 'fanout', e); }
  const rooms = roomList(f.rooms);
  const members = f.clients / f.rooms;
  const lg = new LoadGen({ host: '127.0.0.1', port: srv.port, path: srv.wsPath, mode: srv.mode, jwtSecret: srv.jwtSecret, rooms, count: f.clients, rate: 5000, workers: 2 });
  liveLoad.add(lg);
  const producer = new Producer({ port: srv.port, rooms, concurrency: f.concurrency });
  try {
    await lg.start();
    const c = await lg.connect();
    if (c.joined < f.clients) row.notes = `only ${c.joined}/${f.clients} joined (${kv(c.errors)})`;
    lg.stream(20);
    const totalMs = (o.durationMs ?? f.warmMs + f.measureMs) + 500;
    /** @type {Promise<any>} */
    let run;
    if (name === 'uws-loop') {
      const r = await httpPost(srv.port, '/bench/loop', JSON.stringify({ batch: f.batch, durationMs: totalMs, maxBuffered: Number(process.env.BENCH_LOOP_MAXBUF ?? 1024 * 1024) }));
      if (r.status !== 202) throw new Error(`/bench/loop: ${r.status}`);
      run = sleep(totalMs);
    } else {
      run = producer.runWindow({ loadgen: lg, members, batch: f.batch, window: f.windowPerClient * f.clients, durationMs: totalMs });
    }
    await sleep(f.warmMs);
    const workerPids = lg.workers.map((w) => /** @type {number} */ (w.pid));
    row.windowUs = [nowUs(), 0];
    const s0 = await lg.stats(); const p0 = procSampleAll(srv.pids); const w0 = procSampleAll(workerPids); const m0 = cpuTimes(); const r0 = process.cpuUsage(); const x0 = procSampleAll(redis ? [redis.pid] : []);
    await sleep(o.durationMs ? o.durationMs - f.warmMs : f.measureMs);
    const s1 = await lg.stats(); const p1 = procSampleAll(srv.pids); const w1 = procSampleAll(workerPids); const m1 = cpuTimes(); const r1 = process.cpuUsage(r0); const x1 = procSampleAll(redis ? [redis.pid] : []);
    const dt = (p1.t - p0.t) / 1000;
    row.windowUs[1] = nowUs();
    row.runnerCpuPct = (r1.user + r1.system) / 1e4 / dt;
    row.otherCpuPct = Math.max(0, busyPct(m0, m1) * os.cpus().length - (100 * (p1.cpuSec - p0.cpuSec + w1.cpuSec - w0.cpuSec + x1.cpuSec - x0.cpuSec)) / dt - row.runnerCpuPct);
    producer.stop();
    if (name === 'uws-loop') await httpPost(srv.port, '/bench/loop/stop', '{}');
    await run;
    // drain: wait (bounded) until the clients stop receiving, so delivered/expected means loss, not backlog
    let s2 = await lg.stats();
    for (let i = 0, still = 0; i < 60 && still < 2; i++) {
      await sleep(250);
      const sx = await lg.stats();
      still = sx.events === s2.events ? still + 1 : 0;
      s2 = sx;
    }
    row.eventsPerSec = (s1.events - s0.events) / dt;
    row.framesPerSec = (s1.frames - s0.frames) / dt;
    row.eventsPerFrame = row.framesPerSec > 0 ? row.eventsPerSec / row.framesPerSec : null;
    row.mbPerSec = (s1.bytes - s0.bytes) / dt / 1e6;
    row.serverCpuPct = (100 * (p1.cpuSec - p0.cpuSec)) / dt;
    if (redis && name.includes('redis')) row.redisCpuPct = (100 * (x1.cpuSec - x0.cpuSec)) / dt;
    row.loadgenCpuPct = (100 * (w1.cpuSec - w0.cpuSec)) / dt;
    row.machineBusyPct = busyPct(m0, m1);
    row.eventsPerCpuSec = row.serverCpuPct > 0 ? row.eventsPerSec / (row.serverCpuPct / 100) : null;
    row.serverRssMb = p1.rssKb / 1024;
    if (name !== 'uws-loop') {
      const exp = producer.expectedDeliveries ?? 0;
      row.completenessPct = exp > 0 ? (100 * s2.events) / exp : null;
      row.httpStatus = kv(producer.statuses);
      if (producer.samples.length) row.samples = producer.samples;
      if (producer.stalls) row.notes = `${row.notes ?? ''} producer stalls (lost deliveries) ×${producer.stalls}`.trim();
    }
    if (Object.keys(s2.closeCodes).length) row.notes = `${row.notes ?? ''} closes: ${kv(s2.closeCodes)}`.trim();
    if (s2.joined < c.joined) row.notes = `${row.notes ?? ''} ${c.joined - s2.joined} clients dropped`.trim();
    log(`fanout ${row.server}: ${fmt(row.eventsPerSec)} events/s, ${fmt(row.framesPerSec)} frames/s, server CPU ${fmt(row.serverCpuPct)}%, loadgen CPU ${fmt(row.loadgenCpuPct)}%, complete ${fmt(row.completenessPct)}% ${row.notes ?? ''}`);
  } catch (e) {
    row.notes = `FAILED: ${/** @type {Error} */ (e).message}`;
    log(`fanout ${row.server} failed: ${row.notes}`);
  } finally {
    producer.close();
    await closeLoad(lg);
    await stop(srv);
  }
  return row;
}

/**
 * Run every server `repeats` times, interleaved (A B C A B C ...) so slow drifts of the shared
 * machine hit every server alike; keep the median run by `key` and list all runs.
 * @param {string[]} servers @param {number} repeats @param {(name: string) => Promise<Record<string, any>>} fn @param {string} key
 */
async function interleaved(servers, repeats, fn, key) {
  /** @type {Map<string, Record<string, any>[]>} */
  const runs = new Map(servers.map((s) => [s, []]));
  for (let r = 0; r < repeats; r++) for (const s of servers) /** @type {Record<string, any>[]} */ (runs.get(s)).push(await fn(s));
  return servers.map((s) => {
    const list = /** @type {Record<string, any>[]} */ (runs.get(s));
    const ok = list.filter((x) => typeof x[key] === 'number');
    if (!ok.length) return list[list.length - 1];
    const sorted = [...ok].sort((a, b) => a[key] - b[key]);
    const med = sorted[Math.floor((sorted.length - 1) / 2)];
    return { ...med, runs: list.map((x) => (typeof x[key] === 'number' ? fmt(x[key], key === 'eventsPerSec' ? 0 : 2) : 'fail')).join(' / ') };
  });
}

async function scenarioFanout() {
  const rows = await interleaved(serversWanted(P.fanout.servers), P.fanout.repeats, (n) => fanoutRun(n), 'eventsPerSec');
  return { params: { clients: P.fanout.clients, rooms: P.fanout.rooms, batch: P.fanout.batch, windowPerClient: P.fanout.windowPerClient, warmMs: P.fanout.warmMs, measureMs: P.fanout.measureMs, repeats: P.fanout.repeats }, rows };
}

// ---------------------------------------------------------------- all cores: WORKERS=1 vs WORKERS=2
async function scenarioWorkers() {
  const rows = await interleaved(serversWanted(P.workers.servers), P.workers.repeats, (n) => fanoutRun(n), 'eventsPerSec');
  return { params: { clients: P.fanout.clients, rooms: P.fanout.rooms, batch: P.fanout.batch, windowPerClient: P.fanout.windowPerClient, warmMs: P.fanout.warmMs, measureMs: P.fanout.measureMs, repeats: P.workers.repeats }, rows };
}

// ---------------------------------------------------------------- CPU profile at peak fan-out
/** @param {string} name gateway | gateway-redis */
async function scenarioProfile(name = 'gateway') {
  if (!serversWanted([name]).length) return null;
  const dir = path.join(TMP_DIR, `cpuprof-${Date.now()}`);
  const row = await fanoutRun(name, { cpuProfDir: dir, durationMs: P.fanout.warmMs + P.fanout.profileMs });
  // the server was stopped with SIGTERM by fanoutRun: the profile is written on exit
  const deadline = Date.now() + 10_000;
  /** @type {string[]} */
  let files = [];
  while (Date.now() < deadline) {
    files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')) : [];
    if (files.length) break;
    await sleep(200);
  }
  if (!files.length) return { row, error: 'no .cpuprofile written (did the gateway exit cleanly on SIGTERM?)' };
  const file = path.join(dir, files[0]);
  const keep = path.join(RESULTS_DIR, `${PROFILE}-${name}-fanout.cpuprofile`);
  fs.copyFileSync(file, keep);
  const summary = summarizeCpuProfile(file, 12, row.windowUs?.[1] ? row.windowUs : undefined);
  return { name, row, file: path.relative(BENCH_DIR, keep), summary };
}

// ---------------------------------------------------------------- scenario 3: latency
/** @param {string} name */
async function latencyRun(name) {
  const L = P.latency;
  /** @type {Record<string, any>} */
  const row = { server: name, bus: name === 'gateway' ? 'in-process (HTTP producer)' : name === 'gateway-redis' ? 'Redis Streams (HTTP producer)' : name === 'gateway-redis-xadd' ? 'Redis Streams (producer XADDs directly)' : name === 'socketio' ? 'Redis Streams adapter' : 'none' };
  let srv;
  try { srv = await start(name); } catch (e) { return failedStart(row, 'latency', e); }
  const rooms = roomList(L.rooms);
  const members = L.clients / L.rooms;
  const eventsPerSec = L.deliveries / members;
  const lg = new LoadGen({ host: '127.0.0.1', port: srv.port, path: srv.wsPath, mode: srv.mode, jwtSecret: srv.jwtSecret, rooms, count: L.clients, rate: 5000, workers: 2, latency: true });
  liveLoad.add(lg);
  const producer = new Producer({ port: srv.port, rooms, concurrency: 32, xaddRedisUrl: name === 'gateway-redis-xadd' && redis ? redis.url : undefined });
  try {
    await lg.start();
    const c = await lg.connect();
    if (c.joined < L.clients) row.notes = `only ${c.joined}/${L.clients} joined (${kv(c.errors)})`;
    const run = producer.runRate({ eventsPerSec, durationMs: L.warmMs + L.measureMs });
    await sleep(L.warmMs);
    await lg.reset();
    producer.ackHist.reset();
    const s0 = await lg.stats(); const p0 = procSampleAll(srv.pids); const m0 = cpuTimes(); const w0 = procSampleAll(lg.workers.map((w) => /** @type {number} */ (w.pid))); const r0 = process.cpuUsage(); const x0 = procSampleAll(redis ? [redis.pid] : []);
    await run;
    const p1 = procSampleAll(srv.pids); const m1 = cpuTimes(); const w1 = procSampleAll(lg.workers.map((w) => /** @type {number} */ (w.pid))); const r1 = process.cpuUsage(r0); const x1 = procSampleAll(redis ? [redis.pid] : []);
    {
      const dtt = (p1.t - p0.t) / 1000;
      const runner = (r1.user + r1.system) / 1e4 / dtt;
      row.otherCpuPct = Math.max(0, busyPct(m0, m1) * os.cpus().length - (100 * (p1.cpuSec - p0.cpuSec + w1.cpuSec - w0.cpuSec + x1.cpuSec - x0.cpuSec)) / dtt - runner);
    }
    await sleep(500);
    const s1 = await lg.stats();
    const h = await lg.histogram();
    const dt = (p1.t - p0.t) / 1000;
    row.deliveriesPerSec = (s1.events - s0.events) / dt;
    row.samples = h.totalCount;
    row.p50 = h.getValueAtPercentile(50) / 1000;
    row.p99 = h.getValueAtPercentile(99) / 1000;
    row.p999 = h.getValueAtPercentile(99.9) / 1000;
    row.max = h.maxValue / 1000;
    row.ackP50 = producer.ackHist.getValueAtPercentile(50) / 1000;
    row.ackP99 = producer.ackHist.getValueAtPercentile(99) / 1000;
    row.serverCpuPct = (100 * (p1.cpuSec - p0.cpuSec)) / dt;
    if (redis && name.includes('redis')) row.redisCpuPct = (100 * (x1.cpuSec - x0.cpuSec)) / dt;
    row.httpStatus = kv(producer.statuses);
    if (producer.behind) row.notes = `${row.notes ?? ''} producer fell behind by ${producer.behind} events`.trim();
    if (producer.samples.length) row.errSamples = producer.samples;
    if (Object.keys(s1.closeCodes).length) row.notes = `${row.notes ?? ''} closes: ${kv(s1.closeCodes)}`.trim();
    log(`latency ${name}: p50 ${fmt(row.p50)} ms, p99 ${fmt(row.p99)} ms, p99.9 ${fmt(row.p999)} ms at ${fmt(row.deliveriesPerSec)} deliveries/s (${row.samples} samples) ${row.notes ?? ''}`);
  } catch (e) {
    row.notes = `FAILED: ${/** @type {Error} */ (e).message}`;
    log(`latency ${name} failed: ${row.notes}`);
  } finally {
    producer.close();
    await closeLoad(lg);
    await stop(srv);
  }
  return row;
}

async function scenarioLatency() {
  const rows = await interleaved(serversWanted(P.latency.servers), P.latency.repeats, (n) => latencyRun(n), 'p99');
  return { params: { clients: P.latency.clients, rooms: P.latency.rooms, targetDeliveriesPerSec: P.latency.deliveries, measureMs: P.latency.measureMs, repeats: P.latency.repeats }, rows };
}

// ---------------------------------------------------------------- scenario 4: HTTP publish
/** @param {string} name */
async function httpRun(name) {
  const H = P.http;
  /** @type {Record<string, any>} */
  const row = { server: name };
  let srv;
  try { srv = await start(name); } catch (e) { return failedStart(row, 'http', e); }
  try {
    const guid = roomGuid(0);
    const p0 = procSampleAll(srv.pids);
    const r = await /** @type {Promise<any>} */ (autocannon({
      url: `http://127.0.0.1:${srv.port}/v1/projects/${guid}/events`, method: 'POST', connections: H.conns, duration: H.sec, pipelining: 1,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${PRODUCER_TOKEN}` },
      body: JSON.stringify({ type: 'project_message', data: { n: 1, text: 'hello' } }),
    }));
    const p1 = procSampleAll(srv.pids);
    row.reqPerSec = r.requests.average;
    row.p50 = r.latency.p50;
    row.p99 = r.latency.p99;
    row.non2xx = r.non2xx;
    row.errors = r.errors + r.timeouts;
    row.serverCpuPct = (100 * (p1.cpuSec - p0.cpuSec)) / ((p1.t - p0.t) / 1000);
    const codes = Object.entries(r.statusCodeStats ?? {}).map(([k, v]) => `${k}=${/** @type {any} */ (v).count}`).join(', ');
    row.status = codes;
    log(`http ${name}: ${fmt(row.reqPerSec)} req/s, p50 ${row.p50} ms, p99 ${row.p99} ms, status ${codes}, errors ${row.errors}`);
  } catch (e) {
    row.notes = `FAILED: ${/** @type {Error} */ (e).message}`;
    log(`http ${name} failed: ${row.notes}`);
  } finally {
    await stop(srv);
  }
  return row;
}

async function scenarioHttp() {
  const rows = [];
  for (const name of serversWanted(P.http.servers)) rows.push(await httpRun(name));
  return { params: { connections: P.http.conns, durationSec: P.http.sec, body: 'single project_message event, no subscribers' }, rows };
}

// ---------------------------------------------------------------- report
/**
 * @param {any} res
 */
function buildReport(res) {
  const out = [];
  const m = res.machine;
  out.push(`# Gateway benchmark — ${res.profile} profile`, '');
  out.push(`Date: ${res.date}  `, `Machine: ${m.cores} cores (${m.cpu}), ${m.memGiB} GiB RAM, ${m.platform}, Node ${m.node}, fd limit ${m.fdLimit}  `,
    `Gateway: ${res.gatewayBuilt ? `dist/main.js (${res.gatewayVersion}; uncommitted src changes, if any, are whatever was built)` : 'NOT BUILT (baselines only)'}; run time ${fmt(res.durationSec)} s`, '');
  out.push('Every server runs on the same 2-core machine as its load generator (forked raw-socket workers) and producer, so',
    'absolute numbers are shared-CPU numbers; compare the ratios (÷ baseline = this row divided by the baseline row of the same run).', '');
  if (res.notes.length) out.push('Notes:', ...res.notes.map((/** @type {string} */ n) => `- ${n}`), '');

  const tables = [];
  const sc = res.scenarios;
  if (sc.fanout) {
    const f = sc.fanout;
    tables.push(`## Fan-out (${f.params.clients} clients in ${f.params.rooms} rooms, producer batches of ${f.params.batch} events per request, window ${f.params.windowPerClient} events/client outstanding, ${f.params.measureMs / 1000} s measured)`, '',
      `${f.params.repeats > 1 ? `Each server ran ${f.params.repeats}× interleaved; the median run is shown. ` : ''}Higher is better. \`other procs CPU %\` = machine CPU used by processes outside the bench (noise; 200% = both cores). \`uws\` = bare uWS ceiling fed through the same HTTP producer (the ratio used for the target); \`uws-loop\` = same server publishing from an in-process loop (no HTTP).`, '',
      table(f.rows, [
        { key: 'eventsPerSec', title: 'delivered events/s', ratio: true },
        { key: 'framesPerSec', title: 'frames/s' },
        { key: 'eventsPerFrame', title: 'events/frame', digits: 1 },
        { key: 'serverCpuPct', title: 'server CPU %', digits: 0 },
        { key: 'eventsPerCpuSec', title: 'events per server CPU-s', ratio: true },
        { key: 'loadgenCpuPct', title: 'loadgen CPU %', digits: 0 },
        { key: 'completenessPct', title: 'delivered/expected %', digits: 1 },
        { key: 'otherCpuPct', title: 'other procs CPU %', digits: 0 },
        ...(f.params.repeats > 1 ? [{ key: 'runs', title: 'all runs (events/s)' }] : []),
      ]), '');
    const extra = f.rows.filter((/** @type {any} */ r) => r.notes || r.samples);
    if (extra.length) tables.push(...extra.map((/** @type {any} */ r) => `- ${r.server}: ${r.notes ?? ''} ${r.samples ? 'samples: ' + JSON.stringify(r.samples) : ''} ${r.httpStatus ? 'HTTP: ' + r.httpStatus : ''}`), '');
  }
  if (sc.workers) {
    const wk = sc.workers;
    /** @param {any} r */
    const vs = (r) => wk.rows.find((/** @type {any} */ x) => x.server === r.server.replace(/-w\d+$/, '-w1'));
    for (const r of wk.rows) {
      const base = vs(r);
      r.speedup = base && base !== r ? ratio(r.eventsPerSec, base.eventsPerSec) : null;
      r.cpuSecSpeedup = base && base !== r ? ratio(r.eventsPerCpuSec, base.eventsPerCpuSec) : null;
    }
    tables.push(`## All cores: one gateway process with WORKERS=1 and WORKERS=2 (fan-out parameters: ${wk.params.clients} clients in ${wk.params.rooms} rooms, ${wk.params.measureMs / 1000} s measured)`, '',
      `${wk.params.repeats > 1 ? `Each ran ${wk.params.repeats}× interleaved; the median run is shown. ` : ''}\`-wN\` = WORKERS=N (worker threads on one port; in-process bus in the main thread, or one Redis reader per worker). The load generator and producer share the same 2 cores, so a second worker competes with them: events per server CPU-second is the fairer figure. \`× w1\` = this row ÷ the WORKERS=1 row of the same bus.`, '',
      table(wk.rows, [
        { key: 'eventsPerSec', title: 'delivered events/s' },
        { key: 'speedup', title: '× w1 (events/s)', digits: 2 },
        { key: 'serverCpuPct', title: 'server CPU %', digits: 0 },
        { key: 'eventsPerCpuSec', title: 'events per server CPU-s' },
        { key: 'cpuSecSpeedup', title: '× w1 (per CPU-s)', digits: 2 },
        { key: 'redisCpuPct', title: 'redis-server CPU %', digits: 0 },
        { key: 'loadgenCpuPct', title: 'loadgen CPU %', digits: 0 },
        { key: 'runnerCpuPct', title: 'producer/runner CPU %', digits: 0 },
        { key: 'completenessPct', title: 'delivered/expected %', digits: 1 },
        { key: 'otherCpuPct', title: 'other procs CPU %', digits: 0 },
        ...(wk.params.repeats > 1 ? [{ key: 'runs', title: 'all runs (events/s)' }] : []),
      ]), '');
    const extra = wk.rows.filter((/** @type {any} */ r) => r.notes);
    if (extra.length) tables.push(...extra.map((/** @type {any} */ r) => `- ${r.server}: ${r.notes}`), '');
  }
  if (sc.connections) {
    const c = sc.connections;
    tables.push(`## Idle connections (${c.params.n} connections, each joined to one of ${c.params.rooms} rooms, held ${c.params.holdMs / 1000} s)`, '',
      'Connect rate = connections joined / time from the first connect to the last join (paced, at most 200 handshakes in flight per worker; sensitive to CPU noise). RSS KB/conn = (server VmRSS after − before) / connections held; marginal KB/conn = least-squares slope of VmRSS against connections over the upper 80% of the ramp (sampled every 0.5 s; excludes one-time start-up growth, still includes V8 heap steps). Lower is better for both (ratio < 1 = less memory than the baseline).', '',
      table(c.rows, [
        { key: 'held', title: 'held', digits: 0 },
        { key: 'connectRate', title: 'connect+join/s', ratio: true },
        { key: 'joinP50Ms', title: 'connect→joined p50 ms', digits: 1 },
        { key: 'joinP99Ms', title: 'p99 ms', digits: 1 },
        { key: 'rssPerConnKb', title: 'RSS KB/conn', ratio: true, digits: 2 },
        { key: 'rssSlopeKb', title: 'marginal KB/conn (slope)', ratio: true, digits: 2 },
        { key: 'rssBeforeMb', title: 'RSS before MB', digits: 1 },
        { key: 'rssAfterMb', title: 'RSS after MB', digits: 1 },
      ]), '');
    if (c.multi?.length) {
      tables.push(`Several gateway processes on ONE port (SO_REUSEPORT). Per-connection RSS here is spread over ${c.params.multi.instances} processes whose idle heaps absorb part of the growth, so it reads lower than the single-process figure; use the single-process figure for the target.`, '',
        table(c.multi, [
          { key: 'n', title: 'opened', digits: 0 }, { key: 'held', title: 'held', digits: 0 }, { key: 'connectRate', title: 'connect+join/s' },
          { key: 'rssPerConnKb', title: 'RSS KB/conn', digits: 2 },
          { key: 'rssBeforeMb', title: 'RSS before MB (sum)', digits: 1 }, { key: 'rssAfterMb', title: 'RSS after MB (sum)', digits: 1 },
        ]), '', ...c.multi.map((/** @type {any} */ r) => `- fds per gateway process: ${JSON.stringify(r.perProcess ?? [])}`), '');
    }
    const extra = [...c.rows, ...(c.multi ?? [])].filter((/** @type {any} */ r) => r.notes);
    if (extra.length) tables.push(...extra.map((/** @type {any} */ r) => `- ${r.server}: ${r.notes} ${r.samples ? JSON.stringify(r.samples) : ''}`), '');
  }
  if (sc.latency) {
    const l = sc.latency;
    tables.push(`## Delivery latency (producer HTTP send → client receipt; ${l.params.clients} clients, ${l.params.rooms} rooms, target ${l.params.targetDeliveriesPerSec} deliveries/s, ${l.params.measureMs / 1000} s)`, '',
      `${l.params.repeats > 1 ? `Each server ran ${l.params.repeats}× interleaved; the run with the median p99 is shown. ` : ''}Milliseconds, lower is better (ratio < 1 = faster than the baseline). Single-event POSTs at a steady rate; each event carries its send time. \`publish ack\` = producer-side time from sending the request to its 202 (or XADD reply).`, '',
      table(l.rows, [
        { key: 'bus', title: 'bus' },
        { key: 'deliveriesPerSec', title: 'deliveries/s' },
        { key: 'p50', title: 'p50 ms', digits: 2 },
        { key: 'p99', title: 'p99 ms', ratio: true, digits: 2 },
        { key: 'p999', title: 'p99.9 ms', digits: 2 },
        { key: 'max', title: 'max ms', digits: 1 },
        { key: 'ackP50', title: 'publish ack p50 ms', digits: 2 },
        { key: 'ackP99', title: 'publish ack p99 ms', digits: 2 },
        { key: 'serverCpuPct', title: 'server CPU %', digits: 0 },
        { key: 'otherCpuPct', title: 'other procs CPU %', digits: 0 },
        ...(l.params.repeats > 1 ? [{ key: 'runs', title: 'all runs (p99 ms)' }] : []),
      ]), '');
    const extra = l.rows.filter((/** @type {any} */ r) => r.notes || r.errSamples);
    if (extra.length) tables.push(...extra.map((/** @type {any} */ r) => `- ${r.server}: ${r.notes ?? ''} ${r.errSamples ? JSON.stringify(r.errSamples) : ''} HTTP: ${r.httpStatus}`), '');
  }
  if (sc.http) {
    const h = sc.http;
    tables.push(`## HTTP publish (autocannon, ${h.params.connections} connections, ${h.params.durationSec} s, ${h.params.body})`, '',
      table(h.rows, [
        { key: 'reqPerSec', title: 'req/s', ratio: true },
        { key: 'p50', title: 'p50 ms', digits: 1 },
        { key: 'p99', title: 'p99 ms', digits: 1 },
        { key: 'serverCpuPct', title: 'server CPU %', digits: 0 },
        { key: 'non2xx', title: 'non-2xx', digits: 0 },
        { key: 'status', title: 'status codes' },
      ]), '');
    const extra = h.rows.filter((/** @type {any} */ r) => r.notes);
    if (extra.length) tables.push(...extra.map((/** @type {any} */ r) => `- ${r.server}: ${r.notes}`), '');
  }
  out.push(...tables);

  for (const cp of [res.cpuProfile, res.cpuProfileRedis]) {
    if (!cp) continue;
    out.push(`## CPU profile of the gateway at peak fan-out (${cp.name === 'gateway-redis' ? 'Redis Streams bus' : 'in-process bus'})`, '');
    if (cp.summary) {
      out.push(`Profile: \`bench/${cp.file}\` (open in Chrome DevTools / speedscope). Fan-out under --cpu-prof: ${fmt(cp.row?.eventsPerSec)} events/s, gateway CPU ${fmt(cp.row?.serverCpuPct)}%. ` +
        `${cp.summary.windowed ? 'Only samples from the measured peak window (connection setup excluded)' : 'Whole process lifetime'}: ${fmt(cp.summary.totalMs)} ms sampled; idle ${fmt(cp.summary.idlePct, 1)}%, GC ${fmt(cp.summary.gcPct, 1)}%.`, '',
        '| # | self time | % of total | % of busy | function | location |', '|---|---|---|---|---|---|',
        ...cp.summary.items.map((/** @type {any} */ it, /** @type {number} */ i) => `| ${i + 1} | ${fmt(it.selfMs)} ms | ${fmt(it.pct, 1)} | ${fmt(it.pctBusy, 1)} | \`${it.name}\` | ${it.where} |`), '');
    } else {
      out.push(`Not available: ${cp.error ?? 'profile not run'}`, '');
    }
  }

  out.push('## Targets', '', '| target | measured | met? | what limits it |', '|---|---|---|---|',
    ...res.targets.map((/** @type {any} */ t) => `| ${t.target} | ${t.measured} | ${t.met} | ${t.limit ?? ''} |`), '');
  out.push('Charts: ' + res.charts.map((/** @type {string} */ c) => `[${c}](${c})`).join(', '), '');
  return out.join('\n');
}

/** @param {any} res */
function evaluateTargets(res) {
  const t = [];
  const sc = res.scenarios;
  /** @param {any[]} rows @param {string} s */
  const row = (rows, s) => rows?.find((r) => r.server === s);
  const met = (/** @type {boolean | null} */ b) => (b === null ? 'not measured' : b ? 'MET' : 'NOT MET');
  if (sc.fanout) {
    const g = row(sc.fanout.rows, 'gateway');
    const sio = row(sc.fanout.rows, 'socketio'), w = row(sc.fanout.rows, 'ws'), u = row(sc.fanout.rows, 'uws'), ul = row(sc.fanout.rows, 'uws-loop');
    const lim = g ? `machine ${fmt(g.machineBusyPct)}% busy (of 2 cores): gateway ${fmt(g.serverCpuPct)}%, load generator ${fmt(g.loadgenCpuPct)}%, producer/runner ${fmt(g.runnerCpuPct)}%, processes outside the bench ${fmt(g.otherCpuPct)}% (100% = one core)` +
      (u ? `; bare uWS in the same run: ${fmt(u.serverCpuPct)}% server CPU, ${fmt(u.eventsPerCpuSec)} events/CPU-s vs gateway ${fmt(g.eventsPerCpuSec)}` : '') : '';
    const r1 = ratio(g?.eventsPerSec, sio?.eventsPerSec), r2 = ratio(g?.eventsPerSec, w?.eventsPerSec), r3 = ratio(g?.eventsPerSec, u?.eventsPerSec), r3l = ratio(g?.eventsPerSec, ul?.eventsPerSec);
    t.push({ target: 'fan-out events/s ≥ 15× Socket.IO', measured: `${fmt(g?.eventsPerSec)} vs ${fmt(sio?.eventsPerSec)} = ${fmt(r1, 2)}×`, met: met(r1 === null ? null : r1 >= 15), limit: lim });
    t.push({ target: 'fan-out events/s ≥ 3× plain ws', measured: `${fmt(g?.eventsPerSec)} vs ${fmt(w?.eventsPerSec)} = ${fmt(r2, 2)}×`, met: met(r2 === null ? null : r2 >= 3), limit: lim });
    t.push({ target: 'fan-out events/s ≥ 80% of bare uWS (same HTTP producer)', measured: `${fmt(r3 === null ? null : r3 * 100, 1)}% (vs in-process uWS loop: ${fmt(r3l === null ? null : r3l * 100, 1)}%); events/CPU-s ratio ${fmt(ratio(g?.eventsPerCpuSec, u?.eventsPerCpuSec), 2)}×`, met: met(r3 === null ? null : r3 >= 0.8), limit: lim });
  }
  if (sc.connections) {
    const g = row(sc.connections.rows, 'gateway');
    const ub = row(sc.connections.rows, 'uws');
    t.push({ target: 'gateway RSS per idle connection ≤ 2 KB', measured: g ? `${fmt(g.rssPerConnKb, 2)} KB (after−before) / ${fmt(g.rssSlopeKb, 2)} KB (marginal) at ${g.held} conns${sc.connections.multi?.[0] ? `; ${fmt(sc.connections.multi[0].rssPerConnKb, 2)} KB over ${sc.connections.multi[0].held} conns on ${sc.connections.params.multi.instances} processes` : ''}` : 'n/a', met: met(g?.rssPerConnKb == null ? null : g.rssPerConnKb <= 2),
      limit: `${ub ? `bare uWS with the same join in the same run: ${fmt(ub.rssPerConnKb, 2)} / ${fmt(ub.rssSlopeKb, 2)} KB/conn (floor of uWS socket + JS per-connection state); ` : ''}RSS deltas include V8 heap growth not yet collected${g?.notes ? '; ' + g.notes : ''}` });
    const n19 = g && sc.connections.params.n >= 19_000;
    t.push({ target: '19,000 idle connections on one gateway process', measured: g ? `${g.held} held of ${g.n} opened` : 'n/a', met: n19 ? met(g.held >= 19_000) : `not tested (profile opens ${sc.connections.params.n})`, limit: g?.notes ?? '' });
    const mm = sc.connections.multi?.[0];
    t.push({ target: '≥ 50,000 idle connections across several gateway processes (one port)', measured: mm ? `${mm.held} held of ${mm.n} over ${sc.connections.params.multi.instances} processes, per-process fds ${JSON.stringify(mm.perProcess ?? [])}` : 'n/a', met: mm ? met(mm.held >= 50_000) : 'not tested in this profile', limit: mm?.notes ?? '' });
  }
  if (sc.latency) {
    const g = row(sc.latency.rows, 'gateway'), gr = row(sc.latency.rows, 'gateway-redis');
    const ul = row(sc.latency.rows, 'uws');
    t.push({ target: 'p99 < 5 ms at 30,000 deliveries/s (in-process bus)', measured: g ? `p99 ${fmt(g.p99, 2)} ms at ${fmt(g.deliveriesPerSec)} deliveries/s` : 'n/a', met: met(g?.p99 == null ? null : g.p99 < 5),
      limit: g ? `gateway CPU ${fmt(g.serverCpuPct)}%, processes outside the bench ${fmt(g.otherCpuPct)}%${ul ? `; bare uWS under the same load in the same run: p99 ${fmt(ul.p99, 2)} ms (floor of this setup: producer, clients and server share 2 cores)` : ''}` : '' });
    const d = gr && g && gr.p99 != null && g.p99 != null ? gr.p99 - g.p99 : null;
    t.push({ target: 'Redis path adds < 3 ms at p99', measured: d === null ? 'n/a' : `${fmt(gr.p99, 2)} − ${fmt(g.p99, 2)} = ${fmt(d, 2)} ms`, met: met(d === null ? null : d < 3),
      limit: gr ? `gateway CPU ${fmt(gr.serverCpuPct)}% on Redis, processes outside the bench ${fmt(gr.otherCpuPct)}%${gr.notes ? '; ' + gr.notes : ''}` : '' });
  }
  if (res.cpuProfile !== undefined) {
    const ok = !!res.cpuProfile?.summary;
    t.push({ target: 'CPU profile at peak fan-out with top items named', measured: ok ? `top: ${res.cpuProfile.summary.items.slice(0, 3).map((/** @type {any} */ i) => `${i.name} ${fmt(i.pct, 1)}%`).join(', ')}` : (res.cpuProfile?.error ?? 'n/a'), met: ok ? 'MET' : 'NOT MET', limit: '' });
  }
  return t;
}

/** @param {any} res @param {string} suffix */
function writeCharts(res, suffix) {
  /** @type {string[]} */
  const charts = [];
  const sc = res.scenarios;
  /** @param {string} name @param {string} svg */
  const w = (name, svg) => { const f = name.replace(/\.svg$/, `${suffix}.svg`); fs.writeFileSync(path.join(RESULTS_DIR, f), svg); charts.push(f); };
  const hl = (/** @type {string} */ s) => s.startsWith('gateway');
  if (sc.fanout) w(`${res.profile}-fanout.svg`, barChart(`Fan-out: delivered events/s (${sc.fanout.params.clients} clients, ${sc.fanout.params.rooms} rooms)`, 'ev/s', sc.fanout.rows.map((/** @type {any} */ r) => ({ label: r.server, value: r.eventsPerSec, highlight: hl(r.server) }))));
  if (sc.fanout) w(`${res.profile}-fanout-efficiency.svg`, barChart('Fan-out: delivered events per server CPU-second', 'ev/CPU-s', sc.fanout.rows.map((/** @type {any} */ r) => ({ label: r.server, value: r.eventsPerCpuSec, highlight: hl(r.server) }))));
  if (sc.workers) w(`${res.profile}-workers.svg`, barChart('WORKERS=1 vs WORKERS=2: delivered events/s (same fan-out)', 'ev/s', sc.workers.rows.map((/** @type {any} */ r) => ({ label: r.server, value: r.eventsPerSec, highlight: /-w[2-9]/.test(r.server) }))));
  if (sc.connections) w(`${res.profile}-connections-rss.svg`, barChart(`Idle connection memory: server RSS KB per connection (${sc.connections.params.n} conns)`, 'KB', [...sc.connections.rows, ...(sc.connections.multi ?? [])].map((/** @type {any} */ r) => ({ label: r.server, value: r.rssPerConnKb, highlight: hl(r.server) }))));
  if (sc.latency) w(`${res.profile}-latency-p99.svg`, barChart(`Delivery latency p99 at ${sc.latency.params.targetDeliveriesPerSec} deliveries/s`, 'ms', sc.latency.rows.map((/** @type {any} */ r) => ({ label: r.server, value: r.p99, highlight: hl(r.server) }))));
  if (sc.http) w(`${res.profile}-http.svg`, barChart('HTTP publish: requests/s (autocannon)', 'req/s', sc.http.rows.map((/** @type {any} */ r) => ({ label: r.server, value: r.reqPerSec, highlight: hl(r.server) }))));
  return charts;
}

// ---------------------------------------------------------------- main
async function main() {
  const t0 = Date.now();
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  fs.mkdirSync(TMP_DIR, { recursive: true });
  let fdLimit = 'unknown';
  try { fdLimit = (/Max open files\s+(\d+)\s+(\d+)/.exec(fs.readFileSync('/proc/self/limits', 'utf8')) ?? []).slice(1).join('/'); } catch { /* ignore */ }
  /** @type {any} */
  const res = {
    profile: PROFILE, date: new Date().toISOString(),
    machine: { cores: os.cpus().length, cpu: os.cpus()[0]?.model ?? 'unknown', memGiB: fmt(os.totalmem() / 2 ** 30, 1), node: process.version, platform: `${os.type()} ${os.release()}`, fdLimit },
    gatewayBuilt: gatewayBuilt() && !args['no-gateway'], notes, scenarios: {}, targets: [], charts: [],
    gatewayVersion: gatewayVersion(),
  };
  log(`profile ${PROFILE}, scenarios: ${[...ONLY].join(',')}, gateway ${res.gatewayBuilt ? 'built' : 'NOT built'}`);
  try {
    if (ONLY.has('connections')) res.scenarios.connections = await scenarioConnections();
    if (ONLY.has('fanout')) res.scenarios.fanout = await scenarioFanout();
    if (ONLY.has('workers')) res.scenarios.workers = await scenarioWorkers();
    if (ONLY.has('profile')) {
      res.cpuProfile = await scenarioProfile('gateway');
      res.cpuProfileRedis = await scenarioProfile('gateway-redis');
    }
    if (ONLY.has('latency')) res.scenarios.latency = await scenarioLatency();
    if (ONLY.has('http')) res.scenarios.http = await scenarioHttp();
  } catch (e) {
    notes.push(`run aborted: ${/** @type {Error} */ (e).stack ?? e}`);
    log(`ERROR ${/** @type {Error} */ (e).stack ?? e}`);
  } finally {
    if (redis) { await redis.stop(); redis = null; }
  }
  res.durationSec = (Date.now() - t0) / 1000;
  res.targets = evaluateTargets(res);
  const suffix = args.only || args.servers ? `-${[...ONLY].join('+')}${args.servers ? '-' + args.servers.replace(/,/g, '+') : ''}` : '';
  res.charts = writeCharts(res, suffix);
  const md = buildReport(res);
  const mdFile = path.join(RESULTS_DIR, `${PROFILE}${suffix}-report.md`);
  fs.writeFileSync(mdFile, md + '\n');
  fs.writeFileSync(path.join(RESULTS_DIR, `${PROFILE}${suffix}-report.json`), JSON.stringify(res, null, 2) + '\n');
  console.log('\n' + md);
  log(`wrote ${path.relative(process.cwd(), mdFile)} in ${fmt(res.durationSec)} s`);
}

main().then(() => { hardCleanup(); process.exit(0); }, (e) => { console.error(e); hardCleanup(); process.exit(1); });
void stopProc; void tail; void procSample;
