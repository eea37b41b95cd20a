#!/usr/bin/env node
// @ts-check
/**
 * Issue 11 bench: the gateway against bare uWS with the server PINNED to one core and the load
 * generator (workers, producer, redis-server) to the other, so neither steals the other's core.
 *
 *   npm run build && node bench/issue11.mjs                    # every part (~20 min)
 *   node bench/issue11.mjs --only latency,fanout,profile,connections,heap --name issue11
 *
 * Parts:
 *  - latency: 30,000 deliveries/s (2,000 clients, 20 rooms, 150 B data), p50/p99/p99.9 send → receipt
 *    for bare uWS (the noise floor of this pinned setup), the gateway on the in-process bus, on Redis
 *    with the HTTP producer and on Redis with the producer XADDing directly; the gateway's event-loop
 *    delay over the measured window (prom-client's monitorEventLoopDelay, reset by each /metrics scrape),
 *    the gateway's Redis commands per delivered event (INFO commandstats), CPU per core and outside the bench.
 *  - fanout: 10,000 clients in 100 rooms, 150 B data, at 1, 10 and 1,000 events per request (the
 *    closed-loop producer's batch = events per room per tick when one request lands per tick) and the
 *    in-process uWS loop at the same events per room per iteration; events per server CPU-second.
 *  - profile: the gateway's fan-out at 1,000 and 10 per request under --cpu-prof: GC share of busy time.
 *  - connections: 19,000 idle connections (each joined to one of 100 rooms): RSS per connection and
 *    server CPU per connect + join, gateway vs bare uWS, vs bare uWS verifying the same JWT at upgrade
 *    (`uws-jwt`, the floor of the work a connect + join needs) and vs Soketi.
 * Soketi (`soketi`, a peer: Pusher protocol, its signed HTTP API) runs in latency, fan-out and connections;
 * it closes the producer's connection after every answer, so a `-close` server (`gateway-close`) gets a
 * producer that opens a new connection per request too.
 *  - saturation: the fan-out setup with latency on and a producer as fast as it can (32 lanes, 10 events a
 *    request, a 503 retried at once): delivery p50/p99 against the in-process loop's (same setup, its own
 *    buffer guard), 202s and 503s (each with Retry-After?), every 202-acked event delivered, and how long
 *    deliveries go on after the producer stops (issue 20's overload bound).
 *  - heap: heap (and external memory) per retained event: 100,000 events of 150 B data published to the
 *    in-process bus, measured after forced full GCs (bench/lib/heap-probe.mjs), against the encoded size.
 * Every load loop is bounded (fixed durations, fixed counts); loads go to 127.0.0.1 only.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  BENCH_DIR, TMP_DIR, startServer, startRedis, roomGuid, sleep, procSampleAll, httpPost,
} from './lib/servers.mjs';
import { LoadGen } from './lib/loadgen.mjs';
import { installRunGuard } from './lib/run-guard.mjs';
import { Producer, nowUs } from './lib/producer.mjs';
import { summarizeCpuProfile } from './lib/cpuprofile.mjs';
import { fmt, ratio } from './lib/report.mjs';
import { busy, cpuTimes, pin } from './lib/cpu.mjs';

const { values: args } = parseArgs({
  options: {
    only: { type: 'string' },
    name: { type: 'string', default: 'issue11' },
    repeats: { type: 'string', default: '3' },
    batches: { type: 'string', default: '1,10,1000' },
    'fanout-servers': { type: 'string', default: 'gateway,uws-loop,uws,ws,socketio,soketi,gateway-close' },
    'latency-servers': { type: 'string', default: 'uws,gateway,gateway-redis-xadd,gateway-redis,soketi,gateway-close' },
    'conn-servers': { type: 'string', default: 'gateway,uws-jwt,uws,soketi' },
    'saturation-servers': { type: 'string', default: 'gateway,uws-loop' },
    // saturation: events per request (the loop: per room per iteration) and producer lanes
    'saturation-batch': { type: 'string', default: '10' },
    'saturation-lanes': { type: 'string', default: '32' },
    'measure-s': { type: 'string', default: '8' },
    // connections: how long the idle connections are held before RSS is read (default 5 s)
    'hold-s': { type: 'string' },
    // connections: a wave of this many connect+join+close before the measured ramp (every server
    // alike), so the ramp measures a warm process and not its JIT compiling the code paths (0: cold)
    'conn-warmup': { type: 'string', default: '3000' },
    // connections: the ramp's pace (connects/s). What a server costs per connection moves with the
    // pace (more events per epoll wake when faster, its timers spread over more or fewer connects), and
    // the load generator reaches 1,000-2,200/s here depending on the server: a pace every server
    // reaches gives each the same ramp (4,000 measured whatever each allowed; the reports before
    // 2026-12-03 used that)
    'conn-rate': { type: 'string', default: '1000' },
    'fanout-repeats': { type: 'string', default: '1' },
    // profile: the per-request batches profiled (issue 20 looks at 1 and 10)
    'profile-batches': { type: 'string', default: '1000,10' },
    'server-cpu': { type: 'string', default: '1' },
    'load-cpu': { type: 'string', default: '0' },
    // where redis-server runs: with the load (default) or with the server; on 2 cores it shares one of them
    'redis-cpu': { type: 'string' },
    smoke: { type: 'boolean', default: false },
    // fan-out: also sample the server with `perf record` (native and kernel time the V8 profile cannot see)
    perf: { type: 'boolean', default: false },
    // no run: write the markdown report from stored JSON results (comma-separated, later files win per part)
    report: { type: 'string' },
  },
});
const PARTS = new Set((args.only ?? 'latency,fanout,profile,connections,heap').split(','));
const REPEATS = Number(args.repeats);
const SERVER_CPU = args['server-cpu'];
const LOAD_CPU = args['load-cpu'];
const REDIS_CPU = args['redis-cpu'] ?? LOAD_CPU;
const DATA_BYTES = 150;
const MEASURE_MS = Number(args['measure-s']) * 1000;
const RESULTS_DIR = path.join(BENCH_DIR, 'results');
const OUT = args.name;
const PROBE = fileURLToPath(new URL('./lib/heap-probe.mjs', import.meta.url));

// ------------------------------------------------------------------ safety
/** @type {Set<{ stop: () => Promise<void>, procs: import('node:child_process').ChildProcess[] }>} */
const live = new Set();
/** @type {Set<LoadGen>} */
const liveLoad = new Set();
/** @type {Awaited<ReturnType<typeof startRedis>> | null} */
let redis = null;
const hardCleanup = installRunGuard({ label: 'issue11', guardMs: 40 * 60_000, servers: live, loads: liveLoad, redis: () => redis });

/** @param {string} s */
function log(s) { console.log(`[issue11 ${new Date().toISOString().slice(11, 19)}] ${s}`); }

// ------------------------------------------------------------------ pinning and CPU accounting
/**
 * Everything measured over one window: server CPU, bench CPU (load workers, runner, redis) and what the
 * machine spent outside the bench (the noise), per core too.
 * @param {number[]} serverPids @param {() => number[]} benchPids
 */
function cpuWindow(serverPids, benchPids) {
  const s0 = procSampleAll(serverPids), b0 = procSampleAll(benchPids()), r0 = process.cpuUsage(), m0 = cpuTimes();
  return () => {
    const s1 = procSampleAll(serverPids), b1 = procSampleAll(benchPids()), r1 = process.cpuUsage(r0), m1 = cpuTimes();
    const dt = (s1.t - s0.t) / 1000;
    const server = (100 * (s1.cpuSec - s0.cpuSec)) / dt;
    const bench = (100 * (b1.cpuSec - b0.cpuSec)) / dt + (r1.user + r1.system) / 1e4 / dt;
    const m = busy(m0, m1);
    return {
      dt, serverCpuSec: s1.cpuSec - s0.cpuSec, serverCpuPct: server, benchCpuPct: bench,
      otherCpuPct: Math.max(0, m.cpu - server - bench),
      [`cpu${SERVER_CPU}BusyPct`]: m[`cpu${SERVER_CPU}`], [`cpu${LOAD_CPU}BusyPct`]: m[`cpu${LOAD_CPU}`],
      // what ran on the server's core besides the server (everything of the bench is pinned elsewhere)
      serverCoreOtherPct: Math.max(0, (m[`cpu${SERVER_CPU}`] ?? 0) - server),
    };
  };
}

/** @param {number} n */
const roomList = (n) => Array.from({ length: n }, (_, i) => roomGuid(i));

/**
 * @param {string} name gateway | gateway-redis* | uws | uws-loop | uws-jwt | ws | socketio | soketi; a `-close` suffix
 *   changes the producer only (a new connection per request, as Soketi imposes: see newConnection)
 * @param {{ cpuProfDir?: string, extraNodeArgs?: string[], env?: Record<string, string | undefined> }} [o]
 */
async function start(name, o = {}) {
  const kind = /** @type {import('./lib/servers.mjs').ServerKind} */ (name.startsWith('gateway') ? 'gateway' : name.startsWith('uws-jwt') ? 'uws-jwt'
    : name.startsWith('uws') ? 'uws' : name.startsWith('soketi') ? 'soketi' : name.replace(/-close$/, ''));
  const needRedis = name.startsWith('gateway-redis') || name === 'socketio';
  if (needRedis) {
    if (!redis) { redis = await startRedis(); pin([redis.pid], REDIS_CPU); }
    await redis.flush();
  }
  // `-poll`: the gateway's blocking-XREAD loop (REDIS_WAKEUP=poll) instead of keyspace notifications
  let env = name.endsWith('-poll') ? { ...o.env, REDIS_WAKEUP: 'poll' } : o.env;
  // `-glibc`: the gateway without `npm start`'s malloc settings (glibc's defaults), to see what they cost
  if (name.includes('-glibc')) env = { ...env, MALLOC_ARENA_MAX: undefined, MALLOC_MMAP_THRESHOLD_: undefined, MALLOC_TRIM_THRESHOLD_: undefined };
  // `-mmap<N>k`: `npm start`'s malloc settings with another mmap threshold (N KiB), to see what it costs
  const mmapK = /-mmap(\d+)k/.exec(name)?.[1];
  if (mmapK) env = { ...env, MALLOC_MMAP_THRESHOLD_: String(Number(mmapK) * 1024) };
  // `-delay<N>`: FANOUT_MAX_DELAY_MS=N (the overload bound past which the HTTP API answers 503)
  const delayMs = /-delay(\d+)/.exec(name)?.[1];
  if (delayMs) env = { ...env, FANOUT_MAX_DELAY_MS: delayMs };
  // `-alt`: the same server from another build (BENCH_GATEWAY_ALT=path/to/main.js), for an A/B in one run
  const script = name.endsWith('-alt') ? process.env.BENCH_GATEWAY_ALT : undefined;
  if (name.endsWith('-alt') && !script) throw new Error(`${name}: set BENCH_GATEWAY_ALT to the other build's main.js`);
  const srv = await startServer(kind, { label: name, redisUrl: needRedis && redis ? redis.url : undefined, cpuProfDir: o.cpuProfDir, extraNodeArgs: o.extraNodeArgs, env, script });
  live.add(srv);
  pin(srv.pids, SERVER_CPU);
  return srv;
}
/**
 * The producer for a server: its publish API (Soketi: Pusher's), and a new TCP connection per request for
 * Soketi (it closes each one) and for `-close` names (the same cost for the server compared with it).
 * @param {string} name @param {Awaited<ReturnType<typeof start>>} srv @param {Omit<ConstructorParameters<typeof Producer>[0], 'port' | 'api'>} o
 */
function producerFor(name, srv, o) {
  return new Producer({ ...o, port: srv.port, api: srv.publish, newConnection: name.includes('-close') });
}
/** @param {Awaited<ReturnType<typeof start>>} srv */
async function stop(srv) { await srv.stop(); live.delete(srv); }
/** @param {ConstructorParameters<typeof LoadGen>[0]} o */
async function loadgen(o) {
  const lg = new LoadGen(o);
  liveLoad.add(lg);
  await lg.start();
  pin(lg.workers.map((w) => /** @type {number} */ (w.pid)), LOAD_CPU);
  return lg;
}
/** @param {LoadGen} lg */
async function closeLoad(lg) { await lg.close(); liveLoad.delete(lg); }
/** @param {LoadGen} lg */
const workerPids = (lg) => lg.workers.map((w) => /** @type {number} */ (w.pid));

/** Full /metrics text (body limit of httpGet is 4 KB: read directly). @param {number} port */
async function metricsText(port) {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  return res.text();
}
/** Sum of prom-client's nodejs_gc_duration_seconds_sum (main-thread GC pauses, every kind), seconds. @param {string} text */
function gcSeconds(text) {
  let sum = 0;
  for (const line of text.split('\n')) {
    const x = /^nodejs_gc_duration_seconds_sum(?:\{[^}]*\})? ([0-9.e+-]+)/.exec(line);
    if (x) sum += Number(x[1]);
  }
  return sum;
}

/**
 * Event-loop delay over a window, from the probe preloaded into the server (bench/lib/heap-probe.mjs with
 * ELD_PROBE_OUT: perf_hooks.monitorEventLoopDelay, 1 ms resolution): each SIGUSR2 appends the histogram
 * since the previous one and resets it.
 * @param {number} pid @param {string} file
 */
async function probeSignal(pid, file) {
  const before = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).length : 0;
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 100; i++) {
    await sleep(50);
    const lines = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
    if (lines.length > before) return JSON.parse(lines[lines.length - 1]);
  }
  throw new Error('probe did not answer');
}

/** INFO commandstats calls per command. */
async function redisCommandCalls() {
  if (!redis) return {};
  const { Redis } = await import('ioredis');
  const c = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  try {
    const info = /** @type {string} */ (await c.info('commandstats'));
    /** @type {Record<string, number>} */
    const out = {};
    for (const line of info.split('\n')) {
      const x = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
      if (x) out[x[1]] = Number(x[2]);
    }
    return out;
  } finally { c.disconnect(); }
}

// ------------------------------------------------------------------ latency
const LAT = args.smoke ? { clients: 400, rooms: 4, deliveries: 10_000, warmMs: 1000, measureMs: 2000 } : { clients: 2000, rooms: 20, deliveries: 30_000, warmMs: 3000, measureMs: 10_000 };

/** @param {string} name */
async function latencyRun(name) {
  /** @type {Record<string, any>} */
  const row = { server: name };
  const eldFile = path.join(TMP_DIR, `eld-${name}-${Date.now()}.jsonl`);
  const srv = await start(name, { extraNodeArgs: ['--import', PROBE], env: { ELD_PROBE_OUT: eldFile } });
  const rooms = roomList(LAT.rooms);
  const members = LAT.clients / LAT.rooms;
  const lg = await loadgen({ host: '127.0.0.1', port: srv.port, path: srv.wsPath, mode: srv.mode, jwtSecret: srv.jwtSecret, rooms, count: LAT.clients, rate: 5000, workers: 2, latency: true });
  const producer = producerFor(name, srv, { rooms, concurrency: 32, dataBytes: DATA_BYTES, xaddRedisUrl: name.startsWith('gateway-redis-xadd') && redis ? redis.url : undefined });
  try {
    const c = await lg.connect();
    if (c.joined < LAT.clients) row.notes = `only ${c.joined}/${LAT.clients} joined`;
    const run = producer.runRate({ eventsPerSec: LAT.deliveries / members, durationMs: LAT.warmMs + LAT.measureMs });
    await sleep(LAT.warmMs);
    await lg.reset();
    await probeSignal(srv.pids[0], eldFile); // resets the event-loop-delay histogram: the next one covers the window
    const cmd0 = await redisCommandCalls();
    const s0 = await lg.stats();
    const cpu = cpuWindow(srv.pids, () => [...workerPids(lg), ...(redis ? [redis.pid] : [])]);
    await run;
    Object.assign(row, cpu());
    row.eventLoopDelayMs = await probeSignal(srv.pids[0], eldFile);
    const cmd1 = await redisCommandCalls();
    await sleep(500);
    const s1 = await lg.stats();
    const h = await lg.histogram();
    row.deliveriesPerSec = (s1.events - s0.events) / row.dt;
    row.p50 = h.getValueAtPercentile(50) / 1000;
    row.p99 = h.getValueAtPercentile(99) / 1000;
    row.p999 = h.getValueAtPercentile(99.9) / 1000;
    row.max = h.maxValue / 1000;
    // loss over the whole run (warm-up included): every accepted event × the room's members, counted at the clients
    Object.assign(row, await lg.drain(producer.sentEvents * members));
    if (!row.complete) row.notes = `${row.notes ?? ''} delivered ${row.delivered}/${row.expected}`.trim();
    if (redis && name.startsWith('gateway-redis')) {
      /** @type {Record<string, number>} */
      const d = {};
      for (const [k, v] of Object.entries(cmd1)) if (v - (cmd0[k] ?? 0) > 0) d[k] = v - (cmd0[k] ?? 0);
      row.redisCalls = d;
      const events = producer.sentEvents;
      row.readsPerEvent = events ? ((d.xread ?? 0) + (d.xreadgroup ?? 0) + (d.xrange ?? 0)) / events : null;
    }
    if (producer.behind) row.notes = `${row.notes ?? ''} producer behind by ${producer.behind}`.trim();
    log(`latency ${name}: p50 ${fmt(row.p50)} p99 ${fmt(row.p99)} p99.9 ${fmt(row.p999)} ms at ${fmt(row.deliveriesPerSec)} deliveries/s, delivered ${row.delivered}/${row.expected}; server ${fmt(row.serverCpuPct)}%, outside-bench ${fmt(row.otherCpuPct)}%, server core other ${fmt(row.serverCoreOtherPct)}%${row.eventLoopDelayMs ? `, ELD p50 ${fmt(row.eventLoopDelayMs.p50)} p99 ${fmt(row.eventLoopDelayMs.p99)} max ${fmt(row.eventLoopDelayMs.max)} ms` : ''}${row.redisCalls ? ' redis ' + JSON.stringify(row.redisCalls) : ''}`);
  } catch (e) {
    row.notes = `FAILED: ${/** @type {Error} */ (e).message}`;
    log(`latency ${name}: ${row.notes}`);
  } finally {
    producer.close();
    await closeLoad(lg);
    await stop(srv);
  }
  return row;
}

// ------------------------------------------------------------------ fan-out
const FAN = args.smoke ? { clients: 1000, rooms: 10, windowPerClient: 150, concurrency: 8, warmMs: 1000 } : { clients: 10_000, rooms: 100, windowPerClient: 150, concurrency: 8, warmMs: 3000 };

/** @param {string} name @param {number} batch @param {{ cpuProfDir?: string }} [o] */
async function fanoutRun(name, batch, o = {}) {
  /** @type {Record<string, any>} */
  const row = { server: name + (o.cpuProfDir ? ' (--cpu-prof)' : ''), batch };
  const srv = await start(name, { cpuProfDir: o.cpuProfDir });
  const rooms = roomList(FAN.rooms);
  const members = FAN.clients / FAN.rooms;
  const lg = await loadgen({ host: '127.0.0.1', port: srv.port, path: srv.wsPath, mode: srv.mode, jwtSecret: srv.jwtSecret, rooms, count: FAN.clients, rate: 5000, workers: 2 });
  const producer = producerFor(name, srv, { rooms, concurrency: FAN.concurrency, dataBytes: DATA_BYTES });
  try {
    const c = await lg.connect();
    if (c.joined < FAN.clients) row.notes = `only ${c.joined}/${FAN.clients} joined`;
    lg.stream(20);
    const totalMs = FAN.warmMs + MEASURE_MS + 500;
    /** @type {Promise<any>} */
    let run;
    if (name === 'uws-loop') {
      const r = await httpPost(srv.port, '/bench/loop', JSON.stringify({ batch, durationMs: totalMs, maxBuffered: 1024 * 1024, dataBytes: DATA_BYTES }));
      if (r.status !== 202) throw new Error(`/bench/loop ${r.status}`);
      run = sleep(totalMs);
    } else {
      run = producer.runWindow({ loadgen: lg, members, batch, window: FAN.windowPerClient * FAN.clients, durationMs: totalMs });
    }
    await sleep(FAN.warmMs);
    row.windowUs = [nowUs(), 0];
    const gc0 = name.startsWith('gateway') ? gcSeconds(await metricsText(srv.port)) : null;
    const s0 = await lg.stats();
    const cpu = cpuWindow(srv.pids, () => [...workerPids(lg), ...(redis ? [redis.pid] : [])]);
    const sampled = args.perf ? perfDuring(srv.pids[0], MEASURE_MS / 1000 - 1, `${name}-${batch}`) : null;
    await sleep(MEASURE_MS);
    if (sampled) Object.assign(row, await sampled);
    const s1 = await lg.stats();
    Object.assign(row, cpu());
    row.windowUs[1] = nowUs();
    // main-thread GC pauses (perf_hooks 'gc' entries via prom-client) ÷ server CPU time: GC share of busy time
    if (gc0 !== null) row.gcOfBusyPct = (100 * (gcSeconds(await metricsText(srv.port)) - gc0)) / row.serverCpuSec;
    producer.stop();
    const stopped = name === 'uws-loop' ? await httpPost(srv.port, '/bench/loop/stop', '{}') : null;
    await run;
    // loss over the whole run: every event accepted (HTTP) or published (the loop) × the room's members
    const published = stopped ? Number(JSON.parse(stopped.body).published) : producer.sentEvents;
    Object.assign(row, await lg.drain(published * members));
    row.eventsPerSec = (s1.events - s0.events) / row.dt;
    row.framesPerSec = (s1.frames - s0.frames) / row.dt;
    row.eventsPerFrame = row.framesPerSec > 0 ? row.eventsPerSec / row.framesPerSec : null;
    row.eventsPerCpuSec = row.serverCpuSec > 0 ? (s1.events - s0.events) / row.serverCpuSec : null;
    if (producer.stalls) row.notes = `${row.notes ?? ''} producer stalls ×${producer.stalls}`.trim();
    // anything but 202 (e.g. a 503 past the overload bound) is in the notes: a refused request cost CPU and delivered nothing
    const refusedAnswers = Object.entries(producer.statuses).filter(([k]) => k !== '200' && k !== '202' && k !== 'xadd');
    if (refusedAnswers.length) row.notes = `${row.notes ?? ''} answers ${JSON.stringify(Object.fromEntries(refusedAnswers))}`.trim();
    if (s1.joined < c.joined) row.notes = `${row.notes ?? ''} ${c.joined - s1.joined} clients dropped`.trim();
    if (!row.complete) row.notes = `${row.notes ?? ''} delivered ${row.delivered}/${row.expected}`.trim();
    log(`fanout ${row.server} batch ${batch}: ${fmt(row.eventsPerSec)} events/s, ${fmt(row.eventsPerFrame, 1)} events/frame, server ${fmt(row.serverCpuPct)}%, ${fmt(row.eventsPerCpuSec)} events/CPU-s, delivered ${row.delivered}/${row.expected}${row.gcOfBusyPct != null ? `, GC ${fmt(row.gcOfBusyPct, 1)}% of server CPU` : ''}, bench ${fmt(row.benchCpuPct)}%, outside ${fmt(row.otherCpuPct)}% ${row.notes ?? ''}`);
  } catch (e) {
    row.notes = `FAILED: ${/** @type {Error} */ (e).message}`;
    log(`fanout ${name} batch ${batch}: ${row.notes}`);
  } finally {
    producer.close();
    await closeLoad(lg);
    await stop(srv);
  }
  return row;
}


// ------------------------------------------------------------------ saturation
/** @param {string} name */
async function saturationRun(name) {
  const batch = Number(args['saturation-batch']);
  /** @type {Record<string, any>} */
  const row = { server: name, batch };
  const srv = await start(name);
  const rooms = roomList(FAN.rooms);
  const members = FAN.clients / FAN.rooms;
  const lg = await loadgen({ host: '127.0.0.1', port: srv.port, path: srv.wsPath, mode: srv.mode, jwtSecret: srv.jwtSecret, rooms, count: FAN.clients, rate: 5000, workers: 2, latency: true });
  const producer = producerFor(name, srv, { rooms, concurrency: Number(args['saturation-lanes']), dataBytes: DATA_BYTES });
  try {
    const c = await lg.connect();
    if (c.joined < FAN.clients) row.notes = `only ${c.joined}/${FAN.clients} joined`;
    const totalMs = FAN.warmMs + MEASURE_MS;
    /** @type {Promise<any>} */
    let run;
    if (name === 'uws-loop') {
      const r = await httpPost(srv.port, '/bench/loop', JSON.stringify({ batch, durationMs: totalMs + 5000, maxBuffered: 1024 * 1024, dataBytes: DATA_BYTES }));
      if (r.status !== 202) throw new Error(`/bench/loop ${r.status}`);
      run = sleep(totalMs);
    } else {
      run = producer.runFlood({ batch, durationMs: totalMs });
    }
    await sleep(FAN.warmMs);
    await lg.reset();
    const s0 = await lg.stats();
    const statuses0 = { ...producer.statuses };
    const cpu = cpuWindow(srv.pids, () => [...workerPids(lg), ...(redis ? [redis.pid] : [])]);
    // The gateway's fan-out queueing delay (fanout_queue_delay_seconds), read every 100 ms: whether
    // the overload bound (FANOUT_MAX_DELAY_MS) was ever passed, i.e. whether a 503 was due.
    let sampling = name.startsWith('gateway');
    row.maxFanoutDelayMs = 0;
    const delays = (async () => {
      while (sampling) {
        const text = await metricsText(srv.port).catch(() => '');
        for (const m of text.matchAll(/^fanout_queue_delay_seconds(?:\{[^}]*\})? (\S+)$/gm)) row.maxFanoutDelayMs = Math.max(row.maxFanoutDelayMs, Number(m[1]) * 1000);
        for (const m of text.matchAll(/^ws_buffered_bytes(?:\{[^}]*\})? (\S+)$/gm)) row.maxBufferedMb = Math.max(row.maxBufferedMb ?? 0, Number(m[1]) / 2 ** 20);
        await sleep(100);
      }
    })();
    await run;
    sampling = false;
    await delays;
    // The producer stops here: how long do deliveries go on? (the backlog the server had accepted)
    const stoppedAt = Date.now();
    const stopped = name === 'uws-loop' ? await httpPost(srv.port, '/bench/loop/stop', '{}') : null;
    Object.assign(row, cpu());
    const atStop = (await lg.stats()).eventsAll;
    const s1 = await lg.stats();
    const h = await lg.histogram();
    let last = atStop, lastChange = stoppedAt;
    if (s1.eventsAll !== atStop) { last = s1.eventsAll; lastChange = Date.now(); }
    while (Date.now() - lastChange < 1000 && Date.now() - stoppedAt < 30_000) {
      await sleep(20);
      const n = (await lg.stats()).eventsAll;
      if (n !== last) { last = n; lastChange = Date.now(); }
    }
    row.deliveringAfterStopMs = lastChange - stoppedAt;
    row.deliveriesPerSec = (s1.events - s0.events) / row.dt;
    row.eventsPerCpuSec = row.serverCpuSec > 0 ? (s1.events - s0.events) / row.serverCpuSec : null;
    row.p50 = h.getValueAtPercentile(50) / 1000;
    row.p99 = h.getValueAtPercentile(99) / 1000;
    row.max = h.maxValue / 1000;
    /** @type {Record<string, number>} */
    const answers = {};
    for (const [k, v] of Object.entries(producer.statuses)) answers[k] = v - (/** @type {Record<string, number>} */ (statuses0)[k] ?? 0);
    row.answers = answers;
    row.answersWholeRun = { ...producer.statuses };
    row.missingRetryAfter = producer.missingRetryAfter ?? 0;
    const published = stopped ? Number(JSON.parse(stopped.body).published) : producer.sentEvents;
    Object.assign(row, await lg.drain(published * members, { maxMs: 30_000 }));
    if (!row.complete) row.notes = `${row.notes ?? ''} delivered ${row.delivered}/${row.expected}`.trim();
    log(`saturation ${name} batch ${batch}: p50 ${fmt(row.p50)} p99 ${fmt(row.p99)} ms at ${fmt(row.deliveriesPerSec)} deliveries/s; answers ${JSON.stringify(answers)} (no Retry-After: ${row.missingRetryAfter}); delivered ${row.delivered}/${row.expected}; deliveries went on ${row.deliveringAfterStopMs} ms after the stop; server ${fmt(row.serverCpuPct)}%, outside ${fmt(row.otherCpuPct)}%${name.startsWith('gateway') ? `; fan-out queueing delay at most ${fmt(row.maxFanoutDelayMs)} ms, unsent in uWS at most ${fmt(row.maxBufferedMb, 1)} MiB` : ''}`);
  } catch (e) {
    row.notes = `FAILED: ${/** @type {Error} */ (e).message}`;
    log(`saturation ${name}: ${row.notes}`);
  } finally {
    producer.close();
    await closeLoad(lg);
    await stop(srv);
  }
  return row;
}

/**
 * `perf record` (call graphs off: self time by DSO and symbol) and `perf stat` of socket syscalls on
 * one server process for `seconds`, both pinned to the load core and bounded by their `sleep`.
 * @param {number} pid @param {number} seconds @param {string} tag
 */
async function perfDuring(pid, seconds, tag) {
  const dataFile = path.join(TMP_DIR, `perf-${tag}.data`);
  const statFile = path.join(TMP_DIR, `perfstat-${tag}.txt`);
  const events = ['sendto', 'sendmsg', 'write', 'writev', 'recvfrom', 'read', 'epoll_pwait', 'epoll_ctl', 'accept4', 'setsockopt', 'close', 'mmap', 'munmap', 'madvise', 'brk'].map((x) => `syscalls:sys_enter_${x}`).concat(['page-faults', 'context-switches']).join(',');
  /** @param {string[]} a */
  const run = (a) => new Promise((resolve) => { const c = spawn('taskset', ['-c', LOAD_CPU, 'perf', ...a, '-p', String(pid), '--', 'sleep', String(seconds)], { stdio: 'ignore' }); c.on('exit', resolve); c.on('error', resolve); });
  await Promise.all([run(['record', '-q', '-F', '499', '-o', dataFile]), run(['stat', '-x', ',', '-o', statFile, '-e', events])]);
  /** @type {Record<string, any>} */
  const out = {};
  try {
    /** @param {string} sort */
    const report = (sort) => execFileSync('perf', ['report', '-i', dataFile, '--no-children', '--sort', sort, '--stdio', '--percent-limit', '0.5'], { encoding: 'utf8', maxBuffer: 1 << 26 })
      .split('\n').filter((l) => /^\s+[0-9.]+%/.test(l)).map((l) => l.trim().replace(/\s+/g, ' ').slice(0, 160));
    out.perfDso = report('dso').slice(0, 8);
    out.perfTop = report('dso,sym').slice(0, 30);
    /** @type {Record<string, number>} */
    const calls = {};
    for (const l of fs.readFileSync(statFile, 'utf8').split('\n')) { const f = l.split(','); if (f[2]?.startsWith('syscalls:') || f[2] === 'page-faults' || f[2] === 'context-switches') calls[f[2].replace('syscalls:sys_enter_', '')] = Math.round((Number(f[0]) || 0) / seconds); }
    out.syscallsPerSec = calls;
    log(`perf ${tag}: ${out.perfDso.join(' | ')}; syscalls/s ${JSON.stringify(calls)}\n  ${out.perfTop.slice(0, 15).join('\n  ')}`);
  } catch (e) { out.perfError = /** @type {Error} */ (e).message.slice(0, 200); }
  return out;
}

/** @param {number} batch */
async function profileRun(batch) {
  const dir = path.join(TMP_DIR, `cpuprof-issue11-${Date.now()}`);
  const row = await fanoutRun('gateway', batch, { cpuProfDir: dir });
  /** @type {string[]} */
  let files = [];
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; await sleep(200)) {
    files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')) : [];
    if (files.length) break;
  }
  if (!files.length) return { batch, row, error: 'no .cpuprofile written' };
  const keep = path.join(RESULTS_DIR, `${OUT}-gateway-fanout-batch${batch}.cpuprofile`);
  fs.copyFileSync(path.join(dir, files[0]), keep);
  const summary = summarizeCpuProfile(keep, 15, row.windowUs?.[1] ? row.windowUs : undefined);
  const busyPct = 100 - summary.idlePct;
  const gcOfBusyPct = busyPct > 0 ? (100 * summary.gcPct) / busyPct : null;
  log(`profile batch ${batch}: busy ${fmt(busyPct, 1)}%, GC ${fmt(summary.gcPct, 1)}% of samples = ${fmt(gcOfBusyPct, 1)}% of busy; top ${summary.items.slice(0, 4).map((i) => `${i.name} ${fmt(i.pctBusy, 1)}%`).join(', ')}`);
  return { batch, row, file: path.relative(BENCH_DIR, keep), summary, gcOfBusyPct };
}

// ------------------------------------------------------------------ connections
const CONN = args.smoke ? { n: 3000, rooms: 10, rate: Number(args['conn-rate']), holdMs: 1000 } : { n: 19_000, rooms: 100, rate: Number(args['conn-rate']), holdMs: 5000 };
if (args['hold-s'] !== undefined) CONN.holdMs = Number(args['hold-s']) * 1000;

/** @param {string} name @param {{ cpuProfDir?: string }} [o] */
async function connectionsRun(name, o = {}) {
  /** @type {Record<string, any>} */
  const row = { server: name + (o.cpuProfDir ? ' (--cpu-prof)' : ''), n: CONN.n };
  // the probe (SIGUSR2: two full GCs, then memory figures) also gives RSS and JS heap per connection
  // without the garbage a GC has not collected yet, which makes the raw RSS delta noisy
  const probeFile = path.join(TMP_DIR, `conn-probe-${name}-${Date.now()}.jsonl`);
  const srv = await start(name, { cpuProfDir: o.cpuProfDir, extraNodeArgs: ['--import', PROBE], env: { HEAP_PROBE_OUT: probeFile } });
  row.warmup = Number(args['conn-warmup']);
  if (row.warmup > 0) {
    // Users after the measured ones (no token of the ramp was seen before); closed before it starts.
    const warm = await loadgen({ host: '127.0.0.1', port: srv.port, path: srv.wsPath, mode: srv.mode, jwtSecret: srv.jwtSecret, rooms: roomList(CONN.rooms), count: row.warmup, rate: CONN.rate, workers: 2, maxPending: 200, indexOffset: CONN.n });
    try {
      await warm.connect();
    } finally {
      await closeLoad(warm);
    }
  }
  const lg = await loadgen({ host: '127.0.0.1', port: srv.port, path: srv.wsPath, mode: srv.mode, jwtSecret: srv.jwtSecret, rooms: roomList(CONN.rooms), count: CONN.n, rate: CONN.rate, workers: 2, maxPending: 200 });
  try {
    await sleep(500);
    const gcBefore = await probeSignal(srv.pids[0], probeFile);
    await sleep(200);
    const before = procSampleAll(srv.pids);
    const cpu = cpuWindow(srv.pids, () => workerPids(lg));
    row.windowUs = [nowUs(), 0];
    const sampled = args.perf ? perfDuring(srv.pids[0], Math.max(1, Math.floor(CONN.n / CONN.rate) - 1), `connect-${name}`) : null;
    const c = await lg.connect();
    const w = cpu();
    if (sampled) Object.assign(row, await sampled);
    row.windowUs[1] = nowUs();
    // what holding them costs: heartbeats, sweeps, timers (server CPU % while nobody connects)
    const idle = cpuWindow(srv.pids, () => workerPids(lg));
    await sleep(CONN.holdMs);
    row.idleCpuPct = idle().serverCpuPct;
    const s = await lg.stats();
    const after = procSampleAll(srv.pids);
    row.held = s.joined;
    row.connectRate = c.rate;
    // server CPU from the first connect until every join is acknowledged, per joined connection
    row.cpuUsPerConnectJoin = c.joined > 0 ? (1e6 * w.serverCpuSec) / c.joined : null;
    row.connectServerCpuPct = w.serverCpuPct;
    row.connectOtherCpuPct = w.otherCpuPct;
    row.connectServerCoreOtherPct = w.serverCoreOtherPct;
    row.rssBeforeMb = before.rssKb / 1024;
    row.rssAfterMb = after.rssKb / 1024;
    row.rssPerConnKb = s.joined > 0 ? (after.rssKb - before.rssKb) / s.joined : null;
    const gcAfter = await probeSignal(srv.pids[0], probeFile);
    row.rssAfterGcPerConnKb = s.joined > 0 ? (gcAfter.rss - gcBefore.rss) / 1024 / s.joined : null;
    row.heapPerConnB = s.joined > 0 ? (gcAfter.heapUsed - gcBefore.heapUsed) / s.joined : null;
    // Where the raw figure's extra over the after-GC one sits: per V8 space, resident bytes (KB per
    // connection) at the raw reading (before the forced GCs) and after them, both against the start.
    if (s.joined > 0 && gcAfter.pre?.spaces && gcBefore.spaces) {
      /** @type {Record<string, { rawKb: number, afterGcKb: number }>} */
      const bySpace = {};
      for (const [k, v] of Object.entries(gcAfter.pre.spaces)) {
        const base = gcBefore.spaces[k]?.physical ?? 0;
        bySpace[k] = { rawKb: (/** @type {any} */ (v).physical - base) / 1024 / s.joined, afterGcKb: ((gcAfter.spaces[k]?.physical ?? 0) - base) / 1024 / s.joined };
      }
      row.heapSpacesPerConnKb = bySpace;
      row.rssPreGcPerConnKb = (gcAfter.pre.rss - gcBefore.rss) / 1024 / s.joined;
    }
    if (Object.keys(c.errors).length) row.notes = `errors ${JSON.stringify(c.errors)}`;
    log(`connections ${name}: held ${row.held}/${CONN.n}, ${fmt(row.connectRate)}/s, ${fmt(row.cpuUsPerConnectJoin, 1)} µs server CPU per connect+join, held idle ${fmt(row.idleCpuPct, 2)}% CPU, RSS ${fmt(row.rssPerConnKb, 3)} KB/conn (after full GCs ${fmt(row.rssAfterGcPerConnKb, 3)} KB, JS heap ${fmt(row.heapPerConnB, 0)} B), outside-bench ${fmt(w.otherCpuPct)}% ${row.notes ?? ''}`);
    if (row.heapSpacesPerConnKb) log(`connections ${name}: V8 spaces resident KB/conn raw → after GCs: ${Object.entries(row.heapSpacesPerConnKb).filter(([, v]) => Math.abs(v.rawKb) >= 0.005 || Math.abs(v.afterGcKb) >= 0.005).map(([k, v]) => `${k} ${fmt(v.rawKb, 3)} → ${fmt(v.afterGcKb, 3)}`).join(', ')}`);
  } catch (e) {
    row.notes = `FAILED: ${/** @type {Error} */ (e).message}`;
    log(`connections ${name}: ${row.notes}`);
  } finally {
    await closeLoad(lg);
    await stop(srv);
  }
  return row;
}

/** The gateway's connect + join ramp under --cpu-prof: where the per-connection CPU goes. */
async function connectionsProfileRun() {
  const dir = path.join(TMP_DIR, `cpuprof-issue11-conn-${Date.now()}`);
  const row = await connectionsRun('gateway', { cpuProfDir: dir });
  /** @type {string[]} */
  let files = [];
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; await sleep(200)) {
    files = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')) : [];
    if (files.length) break;
  }
  if (!files.length) return { row, error: 'no .cpuprofile written' };
  const keep = path.join(RESULTS_DIR, `${OUT}-gateway-connect-join.cpuprofile`);
  fs.copyFileSync(path.join(dir, files[0]), keep);
  const summary = summarizeCpuProfile(keep, 25, row.windowUs?.[1] ? row.windowUs : undefined);
  log(`connect+join profile: ${summary.items.slice(0, 12).map((i) => `${i.name} (${i.where}) ${fmt(i.pctBusy, 1)}%`).join('; ')}`);
  return { row, file: path.relative(BENCH_DIR, keep), summary };
}

// ------------------------------------------------------------------ heap per retained event
const HEAP = args.smoke ? { events: 5000, rooms: 10, batch: 1000 } : { events: 100_000, rooms: 100, batch: 1000 };

async function heapRun() {
  const out = path.join(TMP_DIR, `heap-probe-${Date.now()}.jsonl`);
  // Retention limits lifted above the test's size so every event stays in the in-process bus's history.
  const srv = await start('gateway', { extraNodeArgs: ['--import', PROBE], env: { HEAP_PROBE_OUT: out, MEMORY_BUS_MAX_EVENTS: '1000000', MEMORY_BUS_MAX_BYTES: String(2 ** 31) } });
  /** @type {Record<string, any>} */
  const row = { events: HEAP.events, dataBytes: DATA_BYTES };
  const sample = () => probeSignal(srv.pids[0], out);
  try {
    const rooms = roomList(HEAP.rooms);
    const producer = new Producer({ port: srv.port, rooms, concurrency: 1, dataBytes: DATA_BYTES });
    // warm-up: the code paths, then the baseline
    for (const g of rooms.slice(0, 2)) await producer.post(g, 10);
    await sleep(300);
    const m0 = await sample();
    for (let i = 0; i < HEAP.events / HEAP.batch; i++) await producer.post(rooms[i % rooms.length], HEAP.batch);
    const accepted = producer.sentEvents - 20;
    await sleep(300);
    const m1 = await sample();
    producer.close();
    row.accepted = accepted;
    row.heapPerEvent = (m1.heapUsed - m0.heapUsed) / accepted;
    row.externalPerEvent = (m1.external - m0.external) / accepted;
    row.rssPerEvent = (m1.rss - m0.rss) / accepted;
    row.m0 = m0; row.m1 = m1;
    // the frame a subscriber gets for one event: the envelope the gateway builds (same shape, measured from a live delivery)
    row.encodedBytes = await encodedSize(srv.port);
    log(`heap: ${accepted} events retained: heap ${fmt(row.heapPerEvent, 1)} B/event, external ${fmt(row.externalPerEvent, 1)} B/event, RSS ${fmt(row.rssPerEvent, 1)} B/event; encoded envelope ${row.encodedBytes} B`);
  } catch (e) {
    row.notes = `FAILED: ${/** @type {Error} */ (e).message}`;
    log(`heap: ${row.notes}`);
  } finally {
    await stop(srv);
  }
  return row;
}

/** Joins one client and returns the byte length of the single-event frame it receives. @param {number} port */
async function encodedSize(port) {
  const { WebSocket } = await import('ws');
  const { createSigner } = await import('fast-jwt');
  const { JWT_SECRET } = await import('./lib/servers.mjs');
  const token = createSigner({ key: JWT_SECRET, algorithm: 'HS256', expiresIn: 60_000 })({ sub: 'size-probe', projects: ['*'] });
  const guid = roomGuid(9999);
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?token=${token}`, 'autocode.v1.json');
  try {
    return await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('encodedSize timeout')), 5000);
      ws.on('error', reject);
      ws.on('open', () => ws.send(JSON.stringify({ type: 'join_project', projectGuid: guid, data: {}, id: 'j' })));
      ws.on('message', (d) => {
        const s = d.toString();
        if (s.includes('"type":"join_project"')) {
          const p = new Producer({ port, rooms: [guid], concurrency: 1, dataBytes: DATA_BYTES });
          p.post(guid, 1).then(() => p.close());
        } else if (s.includes('"type":"project_message"')) { clearTimeout(t); resolve(Buffer.byteLength(s)); }
      });
    });
  } finally { ws.close(); }
}


// ------------------------------------------------------------------ report
/** @param {Record<string, any>[]} runs @param {string} key */
function median(runs, key) {
  const ok = runs.filter((r) => typeof r[key] === 'number').sort((a, b) => a[key] - b[key]);
  return ok.length ? ok[Math.floor((ok.length - 1) / 2)] : null;
}
/** Delivered / expected events of each run (exact), from the clients' whole-run counts. @param {Record<string, any>[]} runs */
function deliveredCell(runs) {
  const done = runs.filter((r) => typeof r.expected === 'number');
  return done.length ? done.map((r) => `${r.delivered} / ${r.expected}`).join('; ') : 'n/a';
}
/** @param {boolean | null} b */
const met = (b) => (b === null ? 'not measured' : b ? '**MET**' : '**NOT MET**');

/** @param {Record<string, any>} res @param {{ sectionsOnly?: boolean }} [o] */
function buildReport(res, o = {}) {
  const out = [`# Issue 11 bench (bench/issue11.mjs): gateway vs bare uWS, server pinned`, ''];
  out.push(`Runs: ${(res.runs ?? []).map((/** @type {any} */ r) => `${r.parts} at ${r.date} (git ${r.head}${r.dirty ? " + uncommitted src" : ""}, load average ${r.loadavg?.map((/** @type {number} */ x) => x.toFixed(2)).join(' ')})`).join('; ')}  `,
    `Machine: ${res.cores} cores (${res.cpu}), Node ${res.node}. Server pinned to CPU ${res.pinning?.server} (taskset -a, every thread), load workers and producer to CPU ${res.pinning?.load}, redis-server to CPU ${res.pinning?.redis ?? res.pinning?.load}. Event data ${res.dataBytes} B. Fan-out measured ${res.measureMs / 1000} s per run.`, '',
    '`outside %` = machine CPU used by processes outside the bench (100% = one core; /proc/stat minus the server, load workers, runner and redis-server); `server core other %` = busy time of the server\'s core not used by the server (anything else the kernel put there).', '');
  /** @type {{ target: string, measured: string, met: string, conditions: string }[]} */
  const targets = [];

  if (res.latency) {
    const names = Object.keys(res.latency);
    const rows = names.map((n) => ({ name: n, med: median(res.latency[n], 'p99'), runs: res.latency[n] }));
    out.push('## Latency at 30,000 deliveries/s (2,000 clients in 20 rooms, single-event requests, send → receipt)', '',
      `Each server ran ${res.repeats}× interleaved; the run with the median p99 is shown, all p99s listed. ELD = the server's event-loop delay over the measured window (monitorEventLoopDelay, 1 ms resolution: values include the 1 ms timer period).`, '',
      '| server | p50 ms | p99 ms | p99.9 ms | max ms | all p99 ms | deliveries/s | delivered / expected (whole run, all runs) | server CPU % | ELD p50 / p99 / max ms | XREAD per event (window) | outside % | server core other % |', '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
      ...rows.map(({ name, med: m, runs }) => m ? `| ${name} | ${fmt(m.p50, 2)} | ${fmt(m.p99, 2)} | ${fmt(m.p999, 2)} | ${fmt(m.max, 1)} | ${runs.map((/** @type {any} */ r) => fmt(r.p99, 2)).join(' / ')} | ${fmt(m.deliveriesPerSec)} | ${deliveredCell(runs)} | ${fmt(m.serverCpuPct, 0)} | ${m.eventLoopDelayMs ? `${fmt(m.eventLoopDelayMs.p50, 2)} / ${fmt(m.eventLoopDelayMs.p99, 2)} / ${fmt(m.eventLoopDelayMs.max, 1)}` : 'n/a'} | ${m.redisCalls ? `${fmt((m.redisCalls.xread ?? 0) / (m.redisCalls.xadd || 1), 2)} (${m.redisCalls.xread ?? 0} XREAD / ${m.redisCalls.xadd ?? 0} XADD)` : ''} | ${fmt(m.otherCpuPct, 0)} | ${fmt(m.serverCoreOtherPct, 0)} |` : `| ${name} | failed: ${runs.map((/** @type {any} */ r) => r.notes).join('; ')} |`), '');
    const g = rows.find((r) => r.name === 'gateway')?.med, u = rows.find((r) => r.name === 'uws')?.med;
    const sk = rows.find((r) => r.name === 'soketi')?.med, gc = rows.find((r) => r.name === 'gateway-close')?.med;
    if (sk) out.push(`Soketi (a new producer connection per request, as it closes each): p99 ${fmt(sk.p99, 2)} ms; the gateway ${fmt(g?.p99, 2)} ms with a keep-alive producer (÷ Soketi ${fmt(ratio(g?.p99, sk.p99), 2)}), ${fmt(gc?.p99, 2)} ms with a new connection per request like Soketi's (\`gateway-close\`, ÷ Soketi ${fmt(ratio(gc?.p99, sk.p99), 2)}). Below 1 is better for the gateway.`, '');
    for (const rn of ['gateway-redis-xadd', 'gateway-redis']) {
      const r = rows.find((x) => x.name === rn)?.med;
      if (!g || !r) continue;
      const d = r.p99 - g.p99;
      targets.push({ target: `Redis path p99 ≤ in-process p99 + 2 ms (${rn === 'gateway-redis-xadd' ? 'producer XADDs directly' : 'HTTP producer'})`, measured: `${fmt(r.p99, 2)} − ${fmt(g.p99, 2)} = ${fmt(d, 2)} ms (median-p99 runs; per run: ${res.latency[rn].map((/** @type {any} */ x) => fmt(x.p99, 2)).join(' / ')} vs ${res.latency.gateway.map((/** @type {any} */ x) => fmt(x.p99, 2)).join(' / ')})`, met: met(d <= 2),
        conditions: `pinned; noise floor (bare uWS, same setup) p99 ${fmt(u?.p99, 2)} ms; outside-bench CPU ${fmt(r.otherCpuPct, 0)}% / ${fmt(g.otherCpuPct, 0)}%` });
    }
  }
  if (res.fanout) {
    out.push('## Fan-out (10,000 clients in 100 rooms, 150 B data, closed-loop HTTP producer; `uws-loop` publishes from an in-process loop)', '',
      '`batch` = events per HTTP request (one room per request) for the HTTP servers, events per room per loop iteration for `uws-loop`; `events/frame` is what the clients counted. Events per server CPU-second = delivered events ÷ server CPU time in the same window (the efficiency figure). With --fanout-repeats N, each cell is the run with the median events per server CPU-second of N interleaved runs (all listed).', '');
    for (const [b, byServer] of Object.entries(res.fanout)) {
      const rows = Object.values(byServer);
      const base = /** @type {Record<string, any>} */ (byServer);
      out.push(`### ${b} event(s) per request / per tick`, '',
        '| server | delivered events/s | events/frame | server CPU % | events per server CPU-s | all runs | ÷ uws-loop | ÷ uws | ÷ ws | ÷ socketio | ÷ soketi | delivered / expected (whole run) | GC % of server CPU | bench CPU % | outside % | notes |', '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
        ...rows.map((/** @type {any} */ r) => `| ${r.server} | ${fmt(r.eventsPerSec)} | ${fmt(r.eventsPerFrame, 1)} | ${fmt(r.serverCpuPct, 0)} | ${fmt(r.eventsPerCpuSec)} | ${(r.allEventsPerCpuSec ?? [r.eventsPerCpuSec]).map((/** @type {number} */ x) => fmt(x)).join(' / ')} | ${fmt(ratio(r.eventsPerCpuSec, base['uws-loop']?.eventsPerCpuSec), 2)} | ${fmt(ratio(r.eventsPerCpuSec, base.uws?.eventsPerCpuSec), 2)} | ${fmt(ratio(r.eventsPerCpuSec, base.ws?.eventsPerCpuSec), 2)} | ${fmt(ratio(r.eventsPerCpuSec, base.socketio?.eventsPerCpuSec), 2)} | ${fmt(ratio(r.eventsPerCpuSec, base.soketi?.eventsPerCpuSec), 2)} | ${deliveredCell([r])} | ${r.gcOfBusyPct != null ? fmt(r.gcOfBusyPct, 1) : ''} | ${fmt(r.benchCpuPct, 0)} | ${fmt(r.otherCpuPct, 0)} | ${r.notes ?? ''} |`), '');
      const g = base.gateway, ul = base['uws-loop'];
      if (g && ul && (b === '1000' || b === '10')) {
        const rr = ratio(g.eventsPerCpuSec, ul.eventsPerCpuSec);
        targets.push({ target: `fan-out events per server CPU-s ≥ 1.0× bare uWS loop at ${b} per tick`, measured: `${fmt(g.eventsPerCpuSec)} vs ${fmt(ul.eventsPerCpuSec)} = ${fmt(rr, 2)}×`, met: met(rr === null ? null : rr >= 1),
          conditions: `pinned; ${fmt(g.eventsPerFrame, 1)} / ${fmt(ul.eventsPerFrame, 1)} events per frame; outside-bench ${fmt(g.otherCpuPct, 0)}% / ${fmt(ul.otherCpuPct, 0)}%` });
      }
      if (g) {
        const sio = base.socketio, w = base.ws;
        if (base.soketi) out.push(`Gateway at ${b} per request against Soketi (one frame per event; its producer opens a connection per request): events per server CPU-s ${fmt(ratio(g.eventsPerCpuSec, base.soketi.eventsPerCpuSec), 2)}× with a keep-alive producer, ${fmt(ratio(base['gateway-close']?.eventsPerCpuSec, base.soketi.eventsPerCpuSec), 2)}× with a new connection per request too (\`gateway-close\`).`, '');
        out.push(`Gateway at ${b} per request: delivered events/s ${fmt(ratio(g.eventsPerSec, sio?.eventsPerSec), 2)}× Socket.IO, ${fmt(ratio(g.eventsPerSec, w?.eventsPerSec), 2)}× ws, ${fmt(ratio(g.eventsPerSec, base.uws?.eventsPerSec), 2)}× bare uWS (HTTP-fed); per server CPU-s ${fmt(ratio(g.eventsPerCpuSec, sio?.eventsPerCpuSec), 2)}× / ${fmt(ratio(g.eventsPerCpuSec, w?.eventsPerCpuSec), 2)}× / ${fmt(ratio(g.eventsPerCpuSec, base.uws?.eventsPerCpuSec), 2)}×.`, '');
      }
    }
  }
  if (res.saturation) {
    const names = Object.keys(res.saturation);
    const rows = names.map((n) => ({ name: n, med: median(res.saturation[n], 'p50'), runs: res.saturation[n] }));
    out.push(`## Saturation: a producer as fast as it can (fan-out setup, ${res.saturation[names[0]]?.[0]?.batch ?? '?'} events a request, latency on)`, '',
      `Each server ran ${res.repeats}× interleaved; the run with the median p50 is shown, every run listed. The gateway's producer: ${args['saturation-lanes']} lanes, each posting its next request as soon as the last was answered, a 503 retried at once (one that ignores Retry-After: the worst case). \`uws-loop\` publishes from an in-process loop that pauses while sampled subscribers hold over 1 MiB unsent. Answers and latency are over the measured window; delivered / expected over the whole run (every 202-acked event × members).`, '',
      '`max fan-out delay` = the highest `fanout_queue_delay_seconds` read every 100 ms during the window, per run: a 503 is due only once it passes the bound (FANOUT_MAX_DELAY_MS, 500 ms by default; `-delay<N>` rows run with N). Delay that sits in socket buffers (the clients read slower than the server writes) is not fan-out queueing: it is bounded per socket (MAX_BACKPRESSURE_BYTES, WRITE_TIMEOUT_S).', '',
      '| server | p50 ms | p99 ms | all p50 ms | deliveries/s | answers (window) | 503s without Retry-After | max fan-out delay ms | delivered / expected | deliveries after the producer stopped, ms | server CPU % | outside % | notes |', '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
      ...rows.map(({ name, med: m, runs }) => m ? `| ${name} | ${fmt(m.p50, 1)} | ${fmt(m.p99, 1)} | ${runs.map((/** @type {any} */ r) => fmt(r.p50, 1)).join(' / ')} | ${fmt(m.deliveriesPerSec)} | ${name === 'uws-loop' ? 'in-process' : Object.entries(m.answers ?? {}).map(([k, v]) => `${k}: ${v}`).join(', ')} | ${name === 'uws-loop' ? '' : m.missingRetryAfter} | ${name.startsWith('gateway') ? runs.map((/** @type {any} */ r) => fmt(r.maxFanoutDelayMs, 0)).join(' / ') : ''} | ${deliveredCell(runs)} | ${runs.map((/** @type {any} */ r) => r.deliveringAfterStopMs).join(' / ')} | ${fmt(m.serverCpuPct, 0)} | ${fmt(m.otherCpuPct, 0)} | ${m.notes ?? ''} |` : `| ${name} | failed: ${runs.map((/** @type {any} */ r) => r.notes).join('; ')} |`), '');
    const g = rows.find((r) => r.name === 'gateway')?.med, l = rows.find((r) => r.name === 'uws-loop')?.med;
    if (g && l) {
      const rr = ratio(g.p50, l.p50);
      // Every gateway row: a run whose fan-out queue passed its bound must have answered 503s (each with
      // Retry-After), and every 202-acked event must have been delivered; at least one run must show it.
      const gatewayRuns = names.filter((n) => n.startsWith('gateway')).flatMap((n) => res.saturation[n].map((/** @type {any} */ r) => ({ ...r, bound: Number(/-delay(\d+)/.exec(n)?.[1] ?? 500) })));
      const passed = gatewayRuns.filter((r) => r.maxFanoutDelayMs > r.bound);
      const answered = passed.filter((r) => (r.answers?.['503'] ?? 0) > 0);
      const all503 = gatewayRuns.reduce((/** @type {number} */ n, /** @type {any} */ r) => n + (r.answers?.['503'] ?? 0), 0);
      const missing = gatewayRuns.reduce((/** @type {number} */ n, /** @type {any} */ r) => n + (r.missingRetryAfter ?? 0), 0);
      const complete = gatewayRuns.every((r) => r.complete);
      targets.push({ target: 'saturation: delivery p50 ≤ 2× the loop\'s in the same run; 503 + Retry-After past the bound; every 202-acked event delivered', measured: `p50 ${fmt(g.p50, 1)} vs ${fmt(l.p50, 1)} ms = ${fmt(rr, 2)}× (default bound); fan-out queue past its bound in ${passed.length} of ${gatewayRuns.length} gateway runs, ${answered.length} of those answered 503; ${all503} × 503 in all, ${missing} without Retry-After; every 202-acked event delivered: ${complete ? 'yes' : 'NO'}`, met: met(rr === null ? null : rr <= 2 && passed.length > 0 && answered.length === passed.length && missing === 0 && complete), conditions: `pinned; rows: ${names.filter((n) => n.startsWith('gateway')).join(', ')}; outside-bench ${fmt(g.otherCpuPct, 0)}% / ${fmt(l.otherCpuPct, 0)}%` });
    }
  }
  if (res.profile) {
    out.push('## GC share at peak fan-out (gateway, --cpu-prof runs)', '',
      'Two measures: main-thread GC pauses (perf_hooks `gc` entries, via the gateway\'s own `nodejs_gc_duration_seconds`) ÷ server CPU time over the measured window; and the V8 CPU profile\'s `(garbage collector)` samples ÷ non-idle samples. The profile cannot see uWS\'s native socket work done outside JavaScript (it is sampled as idle), so its share overstates GC.', '',
      '| per request | events/s | server CPU % | GC pauses ÷ server CPU | profile: GC ÷ non-idle samples | top self time (% of non-idle) | profile |', '|---|---|---|---|---|---|---|',
      ...res.profile.map((/** @type {any} */ p) => `| ${p.batch} | ${fmt(p.row?.eventsPerSec)} | ${fmt(p.row?.serverCpuPct, 0)} | ${fmt(p.row?.gcOfBusyPct, 1)}% | ${fmt(p.gcOfBusyPct, 1)}% | ${(p.summary?.items ?? []).slice(0, 5).map((/** @type {any} */ i) => `${i.name} ${fmt(i.pctBusy, 1)}`).join(', ')} | \`bench/${p.file}\` |`), '');
    const worst = Math.max(...res.profile.map((/** @type {any} */ p) => p.row?.gcOfBusyPct ?? NaN));
    targets.push({ target: 'GC < 15% of busy time at peak', measured: `GC pauses ÷ server CPU: ${res.profile.map((/** @type {any} */ p) => `${fmt(p.row?.gcOfBusyPct, 1)}% at ${p.batch}/request`).join(', ')}; profile GC ÷ non-idle samples: ${res.profile.map((/** @type {any} */ p) => `${fmt(p.gcOfBusyPct, 1)}%`).join(', ')}`, met: met(Number.isFinite(worst) ? worst < 15 && res.profile.every((/** @type {any} */ p) => p.gcOfBusyPct < 15) : null),
      conditions: 'met only if both measures are under 15%' });
  }
  if (res.fanoutProfileNote) out.push(res.fanoutProfileNote, '');
  if (res.connections) {
    const names = Object.keys(res.connections);
    const med = Object.fromEntries(names.map((n) => [n, median(res.connections[n], 'cpuUsPerConnectJoin')]));
    const rssMed = Object.fromEntries(names.map((n) => [n, median(res.connections[n], 'rssPerConnKb')]));
    out.push('## Idle connections: 19,000 on one process, each joined to one of 100 rooms', '',
      `Each server ran ${res.repeats}× interleaved (medians shown, all runs listed). Server CPU per connect + join = server CPU time from the first connect to the last join acknowledged ÷ connections joined (paced at ${fmt(CONN.rate, 0)}/s, \`--conn-rate\`; every gateway connection has its own JWT; ${res.connections[names[0]]?.[0]?.warmup ? `after a warm-up wave of ${res.connections[names[0]][0].warmup} other users' connect + join + close on the same server, so the ramp measures a warm process, not its JIT compiling the paths; \`--conn-warmup 0\` measures cold` : 'cold: no warm-up wave'}). RSS per connection = (VmRSS ${fmt(CONN.holdMs / 1000, 0)} s after the last join − before) ÷ connections.`, '',
      '| server | held | CPU µs per connect+join | all runs | CPU ÷ uws-jwt | CPU ÷ uws | RSS KB/conn | all runs | RSS ÷ uws-jwt | RSS ÷ uws | RSS KB/conn after full GCs (all runs) | JS heap B/conn after full GCs (all runs) | outside % during ramp |', '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
      ...names.map((n) => `| ${n} | ${med[n]?.held ?? 'n/a'} | ${fmt(med[n]?.cpuUsPerConnectJoin, 1)} | ${res.connections[n].map((/** @type {any} */ r) => fmt(r.cpuUsPerConnectJoin, 1)).join(' / ')} | ${fmt(ratio(med[n]?.cpuUsPerConnectJoin, med['uws-jwt']?.cpuUsPerConnectJoin), 2)} | ${fmt(ratio(med[n]?.cpuUsPerConnectJoin, med.uws?.cpuUsPerConnectJoin), 2)} | ${fmt(rssMed[n]?.rssPerConnKb, 3)} | ${res.connections[n].map((/** @type {any} */ r) => fmt(r.rssPerConnKb, 3)).join(' / ')} | ${fmt(ratio(rssMed[n]?.rssPerConnKb, rssMed['uws-jwt']?.rssPerConnKb), 2)} | ${fmt(ratio(rssMed[n]?.rssPerConnKb, rssMed.uws?.rssPerConnKb), 2)} | ${res.connections[n].map((/** @type {any} */ r) => fmt(r.rssAfterGcPerConnKb, 3)).join(' / ')} | ${res.connections[n].map((/** @type {any} */ r) => fmt(r.heapPerConnB, 0)).join(' / ')} | ${res.connections[n].map((/** @type {any} */ r) => fmt(r.connectOtherCpuPct, 0)).join(' / ')} |`), '',
      'RSS after full GCs: the same delta with two full garbage collections forced in the server (bench/lib/heap-probe.mjs, SIGUSR2) right before each reading. Ratios: the median ÷ that server\'s median (below 1 = less). `uws-jwt` is bare uWS plus the work a connect + join cannot skip (the same HS256 JWT verified with fast-jwt at upgrade, the gateway\'s join ack); `uws` verifies nothing; Soketi\'s clients speak Pusher (no token on public channels: connection_established, then subscribe).', '');
    const g = med.gateway, u = med.uws, uj = med['uws-jwt'];
    if (g && u) {
      const rr = ratio(g.cpuUsPerConnectJoin, u.cpuUsPerConnectJoin);
      targets.push({ target: 'server CPU per connect + join ≤ 1.3× bare uWS', measured: `${fmt(g.cpuUsPerConnectJoin, 1)} vs ${fmt(u.cpuUsPerConnectJoin, 1)} µs = ${fmt(rr, 2)}×`, met: met(rr === null ? null : rr <= 1.3), conditions: 'pinned; 19,000 distinct tokens (no principal-cache help)' });
    }
    if (g && uj) {
      const rr = ratio(g.cpuUsPerConnectJoin, uj.cpuUsPerConnectJoin);
      targets.push({ target: 'server CPU per connect + join ≤ 1.2× bare uWS verifying the same JWT (`uws-jwt`, issue 20\'s floor)', measured: `${fmt(g.cpuUsPerConnectJoin, 1)} vs ${fmt(uj.cpuUsPerConnectJoin, 1)} µs = ${fmt(rr, 2)}×`, met: met(rr === null ? null : rr <= 1.2), conditions: 'pinned; 19,000 distinct tokens verified by both' });
    }
    const sk = med.soketi;
    if (g && sk) out.push(`Gateway against Soketi: CPU per connect + join ${fmt(ratio(g.cpuUsPerConnectJoin, sk.cpuUsPerConnectJoin), 2)}× (${fmt(g.cpuUsPerConnectJoin, 1)} vs ${fmt(sk.cpuUsPerConnectJoin, 1)} µs), RSS per connection ${fmt(ratio(rssMed.gateway?.rssPerConnKb, rssMed.soketi?.rssPerConnKb), 2)}× (${fmt(rssMed.gateway?.rssPerConnKb, 3)} vs ${fmt(rssMed.soketi?.rssPerConnKb, 3)} KB); below 1 = the gateway costs less. Soketi verifies no token (public channels) but sends connection_established and keeps a timer per socket.`, '');
    const gr = rssMed.gateway;
    const gcMed = median(res.connections.gateway ?? [], 'rssAfterGcPerConnKb');
    if (gr) targets.push({ target: 'RSS per idle connection ≤ 1.25 KB at 19,000', measured: `${fmt(gr.rssPerConnKb, 3)} KB raw (bare uWS ${fmt(rssMed.uws?.rssPerConnKb, 3)} KB)${gcMed ? `; ${fmt(gcMed.rssAfterGcPerConnKb, 3)} KB after full GCs (bare uWS ${fmt(median(res.connections.uws ?? [], 'rssAfterGcPerConnKb')?.rssAfterGcPerConnKb, 3)} KB)` : ''}; ${gr.held} held`, met: met(gr.rssPerConnKb <= 1.25 && (!gcMed || gcMed.rssAfterGcPerConnKb <= 1.25)), conditions: 'medians of the runs; met only if the raw and the after-GC figures both are' });
  }
  if (res.connectionsProfile?.summary) {
    out.push('## Where the gateway\'s connect + join CPU goes (--cpu-prof over the ramp)', '', `Profile \`bench/${res.connectionsProfile.file}\`; top self time, % of non-idle samples (uWS native work outside JavaScript is not in these samples):`, '',
      ...res.connectionsProfile.summary.items.slice(0, 12).map((/** @type {any} */ i) => `- ${i.name} (${i.where}): ${fmt(i.pctBusy, 1)}%`), '');
  }
  if (res.heap) {
    const h = res.heap;
    out.push('## Heap per retained event', '', `${h.accepted} events of ${h.dataBytes} B data published over HTTP (batches of 1,000, 100 rooms, nobody subscribed) into the in-process bus, retention limits lifted; heap measured after two forced full GCs before and after (bench/lib/heap-probe.mjs). Encoded size = the JSON frame a subscriber receives for one such event.`, '',
      `Heap ${fmt(h.heapPerEvent, 1)} B/event, external (Buffers) ${fmt(h.externalPerEvent, 1)} B/event, RSS ${fmt(h.rssPerEvent, 1)} B/event; encoded ${h.encodedBytes} B.`, '');
    targets.push({ target: 'heap per retained event ≤ encoded size + 200 B', measured: `${fmt(h.heapPerEvent + Math.max(0, h.externalPerEvent), 1)} B (heap + external) vs ${h.encodedBytes} + 200 = ${h.encodedBytes + 200} B`, met: met(h.heapPerEvent + Math.max(0, h.externalPerEvent) <= h.encodedBytes + 200), conditions: `in-process bus history, ${h.accepted} events` });
  }
  if (o.sectionsOnly) return out.slice(6).join('\n').replace(/^### /gm, '#### ').replace(/^## /gm, '### ');
  out.push('## Targets (issue 11)', '', '| target | measured | met? | conditions |', '|---|---|---|---|', ...targets.map((t) => `| ${t.target} | ${t.measured} | ${t.met} | ${t.conditions} |`), '');
  return out.join('\n');
}

// ------------------------------------------------------------------ main
/** @param {string[]} servers @param {(n: string) => Promise<Record<string, any>>} fn */
async function interleaved(servers, fn) {
  /** @type {Record<string, Record<string, any>[]>} */
  const runs = {};
  for (let r = 0; r < REPEATS; r++) for (const s of servers) (runs[s] ??= []).push(await fn(s));
  return runs;
}

async function main() {
  fs.mkdirSync(TMP_DIR, { recursive: true });
  if (args.report) {
    /** @type {Record<string, any>} */
    const merged = { runs: [] };
    // Every stored run is shown in full, in the order given; the targets table at the end is
    // computed from the last file that has each part (list the files with the most repeats last).
    const sections = [];
    for (const f of args.report.split(',')) {
      const r = JSON.parse(fs.readFileSync(path.resolve(RESULTS_DIR, f), 'utf8'));
      merged.runs.push(...(r.runs ?? []));
      for (const [k, v] of Object.entries(r)) if (k !== 'runs') merged[k] = v;
      sections.push(`## From \`bench/results/${f}\` (${(r.runs ?? []).map((/** @type {any} */ x) => `${x.parts} at ${x.date}, git ${x.head}${x.dirty ? ' + uncommitted src' : ''}`).join('; ')}; server on CPU ${r.pinning?.server}, load on CPU ${r.pinning?.load}, redis-server on CPU ${r.pinning?.redis ?? r.pinning?.load}; fan-out ${r.measureMs / 1000} s per run, ${r.repeats} repeats where interleaved)`, '', buildReport(r, { sectionsOnly: true }), '');
    }
    const full = buildReport(merged).split('\n');
    const targetsAt = full.indexOf('## Targets (issue 11)');
    const text = [...full.slice(0, 6), ...sections, ...full.slice(targetsAt)].join('\n');
    fs.writeFileSync(path.join(RESULTS_DIR, `${OUT}.md`), text + '\n');
    log(`wrote bench/results/${OUT}.md from ${args.report}`);
    return;
  }
  pin([process.pid], LOAD_CPU);
  /** @type {Record<string, any>} */
  const res = {
    date: new Date().toISOString(), node: process.version, cpu: os.cpus()[0]?.model, cores: os.cpus().length,
    pinning: { server: SERVER_CPU, load: LOAD_CPU, redis: REDIS_CPU }, dataBytes: DATA_BYTES, measureMs: MEASURE_MS, repeats: REPEATS,
  };
  const head = (() => { try { return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim(); } catch { return '?'; } })();
  res.runs = [{ parts: [...PARTS].join('+'), date: res.date, head, dirty: (() => { try { return execFileSync('git', ['status', '--porcelain', 'src'], { encoding: 'utf8' }).trim() !== ''; } catch { return null; } })(), loadavg: os.loadavg() }];
  const save = () => fs.writeFileSync(path.join(RESULTS_DIR, `${OUT}.json`), JSON.stringify(res, null, 2) + '\n');
  try {
    if (PARTS.has('latency')) { res.latency = await interleaved(args['latency-servers'].split(','), latencyRun); save(); }
    if (PARTS.has('fanout')) {
      res.fanout = {};
      // --fanout-repeats N: each batch size runs every server N times interleaved; the run with the
      // median events per server CPU-second is kept and every run's figure is listed.
      const reps = Number(args['fanout-repeats']);
      for (const b of args.batches.split(',').map(Number)) {
        res.fanout[b] = {};
        /** @type {Record<string, Record<string, any>[]>} */
        const runs = {};
        for (let r = 0; r < reps; r++) for (const s of args['fanout-servers'].split(',')) (runs[s] ??= []).push(await fanoutRun(s, b));
        for (const [s, list] of Object.entries(runs)) res.fanout[b][s] = { ...(median(list, 'eventsPerCpuSec') ?? list[list.length - 1]), allEventsPerCpuSec: list.map((x) => x.eventsPerCpuSec ?? null) };
        save();
      }
    }
    if (PARTS.has('profile')) {
      res.profile = [];
      for (const b of args['profile-batches'].split(',').map(Number)) res.profile.push(await profileRun(b));
      save();
    }
    if (PARTS.has('connections')) { res.connections = await interleaved(args['conn-servers'].split(','), connectionsRun); save(); }
    if (PARTS.has('saturation')) { res.saturation = await interleaved(args['saturation-servers'].split(','), saturationRun); save(); }
    if (PARTS.has('connprofile')) { res.connectionsProfile = await connectionsProfileRun(); save(); }
    if (PARTS.has('heap')) { res.heap = await heapRun(); save(); }
  } finally {
    if (redis) { await redis.stop(); redis = null; }
  }
  res.endedAt = new Date().toISOString();
  save();
  fs.writeFileSync(path.join(RESULTS_DIR, `${OUT}.md`), buildReport(res) + '\n');
  log(`wrote bench/results/${OUT}.json and .md`);
}

main().then(() => { hardCleanup(); process.exit(0); }, (e) => { console.error(e); hardCleanup(); process.exit(1); });
