#!/usr/bin/env node
// @ts-check
/**
 * Flood scenario (issue 9): never-reading clients in one flooded room next to readers in other rooms.
 *
 *   node bench/flood.mjs                       # full: 2,000 readers in 20 rooms + 2,000 never-reading clients
 *   node bench/flood.mjs --profile dev         # small numbers, short windows (development only)
 *   node bench/flood.mjs --variants npm-start,glibc-defaults   # glibc malloc settings compared (see VARIANTS)
 *
 * Per variant (one gateway process each, in-process bus unless the variant is redis-bus, MAX_BUFFERED_BYTES = --budget):
 *  1. baseline: readers joined, the latency producer at a fixed rate; readers' p50/p99 and gateway RSS.
 *  2. flood: the never-reading clients join the flooded room (each stops reading after its join ack),
 *     then large events are published into that room at a fixed rate while the readers' latency keeps
 *     being measured; RSS every 0.5 s, /metrics every second (ws_buffered_bytes, drops).
 *  3. after: the flood stops; the readers' traffic goes on; RSS again after --after-s seconds.
 *  4. resume: a sample of the never-reading clients read again (getting what the kernel had delivered
 *     before the cut), then reconnect as a normal client with `join_project` data.since = the last id
 *     they received; every flooded-room id the producer got back from the HTTP API must arrive exactly
 *     once across the two connections, in order.
 * Writes bench/results/flood-report.md and flood-report.json (dev profile: flood-dev-report.*).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { parseArgs } from 'node:util';
import { createSigner } from 'fast-jwt';
import WebSocket from 'ws';
import {
  BENCH_DIR, JWT_SECRET, PRODUCER_TOKEN, startServer, startRedis, roomGuid, sleep, procSample, procSampleAll, gatewayBuilt,
} from './lib/servers.mjs';
import { LoadGen } from './lib/loadgen.mjs';
import { gatewayVersion, installRunGuard } from './lib/run-guard.mjs';
import { Producer, nowUs } from './lib/producer.mjs';
import { fmt } from './lib/report.mjs';
import hdr from 'hdr-histogram-js';

const { values: args } = parseArgs({
  options: {
    profile: { type: 'string', default: 'full' },
    variants: { type: 'string', default: 'npm-start,glibc-defaults' },
    readers: { type: 'string' },
    slow: { type: 'string' },
    'after-s': { type: 'string' },
    'flood-s': { type: 'string' },
    'flood-rate': { type: 'string' },
    'event-bytes': { type: 'string' },
    budget: { type: 'string' },
    out: { type: 'string' },
    merge: { type: 'string' },
  },
});

const DEV = args.profile === 'dev';
const num = (/** @type {string | undefined} */ v, /** @type {number} */ d) => (v === undefined ? d : Number(v));
/** Scenario parameters; every loop below is bounded by these counts and durations. */
const P = {
  readers: num(args.readers, DEV ? 200 : 2000),
  readersPerRoom: 100,
  slow: num(args.slow, DEV ? 200 : 2000),
  /** readers' deliveries per second (events/s into the reader rooms × readers per room) */
  readerDeliveries: DEV ? 2000 : 10_000,
  warmMs: DEV ? 1000 : 3000,
  baselineMs: DEV ? 5000 : 20_000,
  floodMs: num(args['flood-s'], DEV ? 8 : 25) * 1000,
  afterMs: num(args['after-s'], DEV ? 15 : 60) * 1000,
  /** flooded-room events per second, sent in HTTP batches of floodBatch events */
  floodEventsPerSec: num(args['flood-rate'], 50),
  floodBatch: 5,
  eventBytes: num(args['event-bytes'], 8192),
  budgetBytes: num(args.budget, 256 * 1024 * 1024),
  resumeSample: DEV ? 20 : 50,
};
const OUT = args.out ?? (DEV ? 'flood-dev' : 'flood');
const RESULTS_DIR = path.join(BENCH_DIR, 'results');

/**
 * Gateway environments compared. glibc malloc keeps freed memory in its arenas and raises its mmap
 * threshold as large blocks are freed (up to 32 MiB on 64-bit), after which uWS's per-socket send
 * buffers (std::string, up to MAX_BACKPRESSURE_BYTES) come from the heap instead of mmap and may not
 * be returned to the OS when freed. A fixed mmap threshold keeps buffers over 128 KiB on mmap (freed
 * to the OS at once); the trim threshold releases free heap top; two arenas bound per-thread arenas.
 * @type {Record<string, Record<string, string | undefined>>}
 */
const VARIANTS = {
  // `npm start` sets the malloc-tuned values (bench/lib/servers.mjs NPM_START_ENV); undefined unsets one.
  'npm-start': {},
  'glibc-defaults': { MALLOC_ARENA_MAX: undefined, MALLOC_MMAP_THRESHOLD_: undefined, MALLOC_TRIM_THRESHOLD_: undefined },
  'malloc-tuned': { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072', MALLOC_TRIM_THRESHOLD_: '131072' },
  'arena-max-2': { MALLOC_ARENA_MAX: '2' },
  'mmap-threshold-128k': { MALLOC_MMAP_THRESHOLD_: '131072' },
  // below the size of a batched frame (5 × 8 KB events) and of uWS's first buffer growth steps
  'mmap-threshold-32k': { MALLOC_MMAP_THRESHOLD_: '32768' },
  // as npm start, with the Redis Streams bus (a private redis-server): history lives in Redis, as in production
  'redis-bus': {},
  // Not the gateway: the bare uWS baseline (bench/baselines/uws.mjs) with uWS's own slow-consumer
  // policy at the gateway's per-socket limit (close a socket whose backpressure passes 4 MiB), no
  // process budget, no history, no resume. It shows what this machine's kernel and cores cost the
  // readers when 2,000 sockets stop reading, whatever the server does.
  'bare-uws': { BENCH_UWS_MAX_BACKPRESSURE: String(4 * 1024 * 1024), BENCH_UWS_CLOSE_ON_LIMIT: '1' },
  // the same with a 64 KiB limit: a socket is closed as soon as its kernel buffers are full and
  // ~one batch waits in uWS, so what remains is the cost of filling those kernel buffers
  'bare-uws-64k': { BENCH_UWS_MAX_BACKPRESSURE: String(64 * 1024), BENCH_UWS_CLOSE_ON_LIMIT: '1' },
};
/** Variants that run the bare uWS baseline instead of the gateway (no resume phase). */
const BARE_VARIANTS = new Set(['bare-uws', 'bare-uws-64k']);
/** Variants that run the gateway on a private redis-server instead of the in-process bus. */
const REDIS_VARIANTS = new Set(['redis-bus']);
const variantNames = /** @type {string} */ (args.variants).split(',').map((s) => s.trim()).filter(Boolean);
for (const v of variantNames) if (!VARIANTS[v]) throw new Error(`unknown variant ${v}; known: ${Object.keys(VARIANTS).join(', ')}`);

// ---------------------------------------------------------------- safety: everything started here is killed on exit
/** @type {Set<import('./lib/servers.mjs').RunningServer>} */
const liveServers = new Set();
/** @type {Set<LoadGen>} */
const liveLoads = new Set();
const guardMs = variantNames.length * (DEV ? 4 : 9) * 60_000;
const hardCleanup = installRunGuard({ label: 'flood', guardMs, servers: liveServers, loads: liveLoads });

/** @param {string} s */
function log(s) { console.log(`[flood ${new Date().toISOString().slice(11, 19)}] ${s}`); }

// ---------------------------------------------------------------- measurement helpers
/** Machine-wide CPU jiffies (for the "noise" figure: CPU used outside the bench's processes). */
function cpuTimes() {
  const l = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { idle: l[3] + (l[4] ?? 0), total: l.reduce((a, b) => a + b, 0) };
}

/**
 * CPU over a window: the gateway's, the load generators', and the rest of the machine's (noise),
 * each in % of one core (200% = both cores). Same method as bench/run.mjs.
 * @param {() => number[]} gatewayPids @param {() => number[]} loadPids
 */
function cpuWindow(gatewayPids, loadPids) {
  const m0 = cpuTimes(), g0 = procSampleAll(gatewayPids()), w0 = procSampleAll(loadPids()), r0 = process.cpuUsage();
  return () => {
    const m1 = cpuTimes(), g1 = procSampleAll(gatewayPids()), w1 = procSampleAll(loadPids()), r1 = process.cpuUsage(r0);
    const dt = (g1.t - g0.t) / 1000;
    const machinePct = (m1.total - m0.total) > 0 ? 100 * os.cpus().length * (1 - (m1.idle - m0.idle) / (m1.total - m0.total)) : 0;
    const gatewayPct = (100 * (g1.cpuSec - g0.cpuSec)) / dt;
    const loadgenPct = (100 * (w1.cpuSec - w0.cpuSec)) / dt;
    const runnerPct = (r1.user + r1.system) / 1e4 / dt;
    return { seconds: dt, machinePct, gatewayPct, loadgenPct, runnerPct, otherPct: Math.max(0, machinePct - gatewayPct - loadgenPct - runnerPct) };
  };
}

/**
 * The gateway's Prometheus text as name{labels} -> value (the full text: servers.mjs's httpGet keeps 4 KB only).
 * @param {number} port
 * @returns {Promise<Map<string, number>>}
 */
async function readMetrics(port) {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(3000) });
  const text = await res.text();
  /** @type {Map<string, number>} */
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    // drop the default `node` label so keys are stable
    const key = line.slice(0, sp).replace(/node="[^"]*",?/, '').replace(/\{\}$/, '').replace(/,\}$/, '}');
    out.set(key, Number(line.slice(sp + 1)));
  }
  return out;
}

/** @param {Map<string, number>} m @param {string} name sum over every label set of `name` */
function metricSum(m, name) {
  let s = 0;
  for (const [k, v] of m) if (k === name || k.startsWith(name + '{')) s += v;
  return s;
}

/** @param {Map<string, number>} m */
function memoryMetrics(m) {
  return {
    bufferedBytes: metricSum(m, 'ws_buffered_bytes'),
    connections: metricSum(m, 'ws_connections'),
    slowDropped: metricSum(m, 'ws_slow_consumers_dropped_total'),
    heapTotalBytes: metricSum(m, 'nodejs_heap_size_total_bytes'),
    heapUsedBytes: metricSum(m, 'nodejs_heap_size_used_bytes'),
    externalBytes: metricSum(m, 'nodejs_external_memory_bytes'),
    /** @type {Record<string, number>} */
    closedByCode: Object.fromEntries([...m].filter(([k]) => k.startsWith('ws_connections_closed_total{')).map(([k, v]) => [(/code="([^"]*)"/.exec(k) ?? [])[1] ?? k, v])),
  };
}

/** Kernel TCP counters that show memory pressure (machine-wide, /proc/net/netstat TcpExt). */
const KERNEL_PRESSURE_COUNTERS = ['TCPMemoryPressures', 'TCPMemoryPressuresChrono', 'PruneCalled', 'RcvPruned', 'TCPRcvQDrop', 'TCPAbortOnMemory', 'TCPZeroWindowDrop'];
/** @returns {Record<string, number>} */
function kernelPressureCounters() {
  try {
    const lines = fs.readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((l) => l.startsWith('TcpExt:'));
    const names = lines[0].split(/\s+/), values = lines[1].split(/\s+/).map(Number);
    return Object.fromEntries(KERNEL_PRESSURE_COUNTERS.map((k) => [k, values[names.indexOf(k)] ?? 0]));
  } catch { return {}; }
}
/** @param {Record<string, number>} a @param {Record<string, number>} b */
function counterDeltas(a, b) { return Object.fromEntries(Object.keys(b).map((k) => [k, b[k] - (a[k] ?? 0)])); }

/** tcp_mem thresholds (pages -> MiB): below, under pressure, hard limit. */
function tcpMemLimitsMiB() {
  try { return fs.readFileSync('/proc/sys/net/ipv4/tcp_mem', 'utf8').trim().split(/\s+/).map((p) => (Number(p) * 4) / 1024); } catch { return []; }
}

/** @param {number} pid RSS breakdown from /proc/<pid>/status (kB) */
function rssBreakdown(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (/** @type {string} */ f) => Number((new RegExp(`${f}:\\s+(\\d+) kB`).exec(s) ?? [])[1] ?? 0);
    return { rssKb: kb('VmRSS'), anonKb: kb('RssAnon'), fileKb: kb('RssFile'), hwmKb: kb('VmHWM'), maps: smapsBreakdown(pid) };
  } catch { return { rssKb: 0, anonKb: 0, fileKb: 0, hwmKb: 0, maps: smapsBreakdown(pid) }; }
}

/** @param {number} kb */
const mib = (kb) => kb / 1024;

/**
 * Where the gateway's resident memory is, by mapping (/proc/<pid>/smaps), in kB: `brkHeapKb` is
 * glibc's main arena ([heap]); `arenaKb` the anonymous mappings starting on a 64 MiB boundary (glibc
 * allocates every thread arena as a 64 MiB-aligned heap: a heuristic, V8 pages are rarely that
 * aligned); `otherAnonKb` the rest of anonymous memory (V8's heap, malloc's mmapped chunks, stacks);
 * `fileKb` file-backed mappings (code).
 * @param {number} pid
 */
function smapsBreakdown(pid) {
  const out = { brkHeapKb: 0, arenaKb: 0, otherAnonKb: 0, fileKb: 0 };
  let text;
  try { text = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8'); } catch { return out; }
  /** @type {'brkHeapKb'|'arenaKb'|'otherAnonKb'|'fileKb'} */
  let kind = 'otherAnonKb';
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+)-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) {
      const name = head[2].trim();
      const start = BigInt('0x' + head[1]);
      kind = name === '[heap]' ? 'brkHeapKb' : name.startsWith('/') ? 'fileKb' : name === '' && start % (64n << 20n) === 0n ? 'arenaKb' : 'otherAnonKb';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) out[kind] += Number(rss[1]);
  }
  return out;
}

/**
 * Kernel memory held by TCP sockets machine-wide, in kB (/proc/net/sockstat `TCP: ... mem <pages>`):
 * a never-reading client's bytes sit in the kernel (the server's send and the client's receive
 * buffers) before uWS buffers anything, and this is shared with every other process of the machine.
 */
function kernelTcpKb() {
  try {
    const m = /TCP:.* mem (\d+)/.exec(fs.readFileSync('/proc/net/sockstat', 'utf8'));
    return m ? Number(m[1]) * 4 : 0;
  } catch { return 0; }
}

/**
 * Latency window over the readers: histogram reset at the start, read at the end, plus readers'
 * delivered/expected (every reader must get every reader event, flood or not).
 * @param {LoadGen} readers @param {Producer} producer @param {number} members @param {number} durationMs
 */
async function readerLatencyWindow(readers, producer, members, durationMs) {
  const eventsPerSec = P.readerDeliveries / members;
  await readers.reset();
  const sent0 = producer.sentEvents;
  const s0 = await readers.stats();
  // Per second: the window's cumulative histogram minus the previous second's, so a stall shows when it happened.
  /** @type {{ second: number, samples: number, p99Ms: number, maxMs: number }[]} */
  const perSecond = [];
  let previous = null, second = 0, polling = true;
  const poll = (async () => {
    while (polling && second < Math.ceil(durationMs / 1000) + 2) {
      await sleep(1000);
      const cumulative = await readers.histogram();
      const delta = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
      delta.add(cumulative);
      if (previous) delta.subtract(previous);
      previous = cumulative;
      perSecond.push({ second: ++second, samples: delta.totalCount, p99Ms: delta.getValueAtPercentile(99) / 1000, maxMs: delta.maxValue / 1000 });
    }
  })();
  await producer.runRate({ eventsPerSec, durationMs });
  polling = false;
  await poll;
  await sleep(500); // in-flight deliveries land
  const s1 = await readers.stats();
  const h = await readers.histogram();
  const expected = (producer.sentEvents - sent0) * members;
  return {
    samples: h.totalCount, p50Ms: h.getValueAtPercentile(50) / 1000, p99Ms: h.getValueAtPercentile(99) / 1000,
    p999Ms: h.getValueAtPercentile(99.9) / 1000, maxMs: h.maxValue / 1000,
    deliveriesPerSec: (s1.events - s0.events) / (durationMs / 1000),
    completenessPct: expected > 0 ? (100 * (s1.events - s0.events)) / expected : null,
    producerBehind: producer.behind ?? 0, perSecond,
  };
}

/** @param {string} a @param {string} b stream ids `<ms>-<seq>` */
function compareIds(a, b) {
  const [am, as] = a.split('-').map(Number), [bm, bs] = b.split('-').map(Number);
  return am !== bm ? am - bm : as - bs;
}

/**
 * Open loop into the flooded room: `eventsPerSec` events of ~`eventBytes` each, in batches, for
 * `durationMs`, at most `maxOutstanding` requests in flight (later ticks are skipped and counted).
 * Returns every id the HTTP API answered with, sorted.
 * @param {{ port: number, guid: string, eventsPerSec: number, batch: number, eventBytes: number, durationMs: number, maxOutstanding?: number }} o
 */
async function floodRoom(o) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const pad = 'x'.repeat(Math.max(0, o.eventBytes - 60));
  /** @type {string[]} */
  const ids = [];
  /** @type {Record<string, number>} */
  const statuses = {};
  let requests = 0, outstanding = 0, skipped = 0, seq = 0, errors = 0;
  const maxOutstanding = o.maxOutstanding ?? 16;
  const requestsPerSec = o.eventsPerSec / o.batch;
  const post = () => new Promise((resolve) => {
    const parts = [];
    const t = nowUs();
    for (let i = 0; i < o.batch; i++) parts.push(`{"type":"project_message","data":{"t":${t},"n":${seq++},"pad":"${pad}"}}`);
    const body = `{"events":[${parts.join(',')}]}`;
    const req = http.request({
      host: '127.0.0.1', port: o.port, path: `/v1/projects/${o.guid}/events`, method: 'POST', agent, timeout: 10_000,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${PRODUCER_TOKEN}` },
    }, (res) => {
      statuses[String(res.statusCode)] = (statuses[String(res.statusCode)] ?? 0) + 1;
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { b += d; });
      res.on('end', () => {
        if (res.statusCode === 202) { try { ids.push(...JSON.parse(b).ids); } catch { errors++; } }
        resolve(undefined);
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => { errors++; resolve(undefined); });
    req.end(body);
  });
  const start = performance.now();
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const elapsed = performance.now() - start;
      if (elapsed >= o.durationMs) { clearInterval(timer); resolve(undefined); return; }
      const due = Math.floor((elapsed / 1000) * requestsPerSec) - requests - skipped;
      for (let i = 0; i < due; i++) {
        if (outstanding >= maxOutstanding) { skipped += due - i; break; }
        requests++; outstanding++;
        post().then(() => { outstanding--; });
      }
    }, 5);
  });
  const deadline = Date.now() + 10_000;
  while (outstanding > 0 && Date.now() < deadline) await sleep(10);
  agent.destroy();
  ids.sort(compareIds);
  return { ids, requests, skippedRequests: skipped, statuses, errors, bytesPerEvent: o.eventBytes };
}

/**
 * One slow client back as a normal client: a fresh WebSocket with its own token, `join_project` with
 * data.since, collecting replayed ids until the ack has come and the newest expected id is in (bounded).
 * @param {number} port @param {string} sub @param {string} guid @param {string} since @param {string | undefined} lastExpected
 * @returns {Promise<{ ids: string[], ack: any, error?: string }>}
 */
function resumeAsNormalClient(port, sub, guid, since, lastExpected) {
  const token = createSigner({ key: JWT_SECRET, algorithm: 'HS256', expiresIn: 3600_000 })({ sub, projects: ['*'] });
  return new Promise((resolve) => {
    /** @type {string[]} */
    const ids = [];
    /** @type {any} */
    let ack = null;
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?token=${token}`, 'autocode.v1.json');
    const finish = (/** @type {string | undefined} */ error) => { clearTimeout(timer); clearInterval(poll); try { ws.terminate(); } catch { /* closed */ } resolve({ ids, ack, error }); };
    const timer = setTimeout(() => finish('timeout after 30 s'), 30_000);
    // done once acked and the newest published id arrived (or, if it never comes, 3 s after the ack)
    let ackedAt = 0;
    const poll = setInterval(() => {
      if (!ackedAt) return;
      const haveLast = lastExpected === undefined || (ids.length > 0 && compareIds(ids[ids.length - 1], lastExpected) >= 0);
      if (haveLast || Date.now() - ackedAt > 3000) finish(undefined);
    }, 20);
    ws.on('open', () => ws.send(JSON.stringify({ type: 'join_project', projectGuid: guid, id: 'resume', data: { since } })));
    ws.on('message', (raw) => {
      const frame = JSON.parse(raw.toString());
      for (const f of Array.isArray(frame) ? frame : [frame]) {
        if (typeof f.type === 'string' && f.type.startsWith('project_')) ids.push(f.id);
        else if (f.type === 'join_project') { ack = f.data; ackedAt = Date.now(); }
        else if (f.type === 'error') finish(`error frame ${JSON.stringify(f.data)}`);
      }
    });
    ws.on('error', (e) => finish(`socket error ${e.message}`));
    ws.on('close', (code) => { if (!ackedAt) finish(`closed ${code} before the ack`); });
  });
}

/**
 * Checks one slow client: what it read before the cut plus what the resume replayed must be exactly
 * the producer's ids after its join, in order, each once.
 * @param {import('./lib/ws-worker.mjs').TrackedReport} t @param {string[]} published sorted ids of the flooded room
 * @param {number} port @param {string} guid
 */
async function checkResume(t, published, port, guid) {
  const joinFloor = t.joinLatestId ?? '0-0';
  const expected = published.filter((id) => compareIds(id, joinFloor) > 0);
  const before = t.ids;
  const prefixOk = before.every((id, i) => id === expected[i]);
  const since = before.length ? before[before.length - 1] : joinFloor;
  const r = await resumeAsNormalClient(port, t.sub, guid, since, expected[expected.length - 1]);
  const all = [...before, ...r.ids];
  const seen = new Set(all);
  const missing = expected.filter((id) => !seen.has(id)).length;
  const duplicates = all.length - seen.size;
  const inOrder = all.every((id, i) => i === 0 || compareIds(all[i - 1], id) < 0);
  const complete = prefixOk && missing === 0 && duplicates === 0 && inOrder && all.length === expected.length && !r.error;
  return {
    sub: t.sub, cut: t.cut, receivedBeforeCut: before.length, since, replayed: r.ids.length, expected: expected.length,
    missing, duplicates, inOrder, prefixOk, recovered: r.ack?.recovered ?? null, error: r.error ?? null, complete,
  };
}

// ---------------------------------------------------------------- one variant = one gateway, four phases
/** @param {string} variant */
async function runVariant(variant) {
  const env = { MAX_BUFFERED_BYTES: String(P.budgetBytes), ...VARIANTS[variant] };
  /** @type {Record<string, any>} */
  const r = { variant, date: new Date().toISOString(), params: P, gatewayEnv: env, phases: {}, timeline: [] };
  const readerRooms = Array.from({ length: Math.ceil(P.readers / P.readersPerRoom) }, (_, i) => roomGuid(1 + i));
  const floodGuid = roomGuid(0);
  const members = P.readers / readerRooms.length;
  const redis = REDIS_VARIANTS.has(variant) ? await startRedis() : null;
  r.bus = redis ? 'redis' : 'memory';
  const bare = BARE_VARIANTS.has(variant);
  r.server = bare ? 'uws' : 'gateway';
  const srv = await startServer(bare ? 'uws' : 'gateway', { label: `${r.server} (${variant})`, env, ...(redis ? { redisUrl: redis.url } : {}) });
  liveServers.add(srv);
  const pid = srv.pids[0];
  const readers = new LoadGen({ host: '127.0.0.1', port: srv.port, path: srv.wsPath, mode: 'plain', jwtSecret: srv.jwtSecret, rooms: readerRooms, count: P.readers, rate: 3000, workers: 2, latency: true });
  const slowPerWorker = Math.ceil(P.resumeSample / 2);
  const slow = new LoadGen({ host: '127.0.0.1', port: srv.port, path: srv.wsPath, mode: 'plain', jwtSecret: srv.jwtSecret, rooms: [floodGuid], count: P.slow, rate: 3000, workers: 2,
    pauseAfterJoin: true, trackIds: slowPerWorker, indexOffset: P.readers });
  liveLoads.add(readers); liveLoads.add(slow);
  const producer = new Producer({ port: srv.port, rooms: readerRooms, concurrency: 16 });
  const loadPids = () => [...readers.workers, ...slow.workers].map((w) => /** @type {number} */ (w.pid));
  const gatewayPids = () => [pid];

  // RSS every 0.5 s for the whole run (phase-labelled), /metrics every second
  let phase = 'start';
  /** @type {{ tMs: number, phase: string, rssKb: number, bufferedBytes?: number, kernelTcpKb: number }[]} */
  const timeline = r.timeline;
  /**
   * Per-second gateway diagnostics from /metrics: event-loop lag max (prom-client resets it at every
   * scrape), GC seconds since the previous scrape, buffered bytes, drops so far.
   * @type {{ tMs: number, phase: string, loopLagMaxMs: number, gcMs: number, bufferedMiB: number, dropped: number, connections: number }[]}
   */
  const diagnostics = r.diagnostics = [];
  const t0 = performance.now();
  let lastBuffered = 0, metricsBusy = false, lastGcSec = 0;
  const sampler = setInterval(() => {
    const s = procSample(pid);
    timeline.push({ tMs: Math.round(performance.now() - t0), phase, rssKb: s.rssKb, bufferedBytes: lastBuffered, kernelTcpKb: kernelTcpKb() });
  }, 500);
  const metricsPoller = setInterval(() => {
    if (metricsBusy) return;
    metricsBusy = true;
    readMetrics(srv.port).then((m) => {
      lastBuffered = metricSum(m, 'ws_buffered_bytes');
      const gcSec = metricSum(m, 'nodejs_gc_duration_seconds_sum');
      diagnostics.push({
        tMs: Math.round(performance.now() - t0), phase, loopLagMaxMs: 1000 * metricSum(m, 'nodejs_eventloop_lag_max_seconds'), gcMs: 1000 * (gcSec - lastGcSec),
        bufferedMiB: lastBuffered / 2 ** 20, dropped: metricSum(m, 'ws_slow_consumers_dropped_total'), connections: metricSum(m, 'ws_connections'),
      });
      lastGcSec = gcSec;
    }, () => { /* busy gateway: skip a sample */ }).finally(() => { metricsBusy = false; });
  }, 1000);
  try {
    await readers.start(); await slow.start();
    // ---- 1. baseline
    phase = 'connect-readers';
    const rc = await readers.connect();
    r.readersJoined = rc.joined;
    log(`${variant}: ${rc.joined}/${P.readers} readers joined in ${readerRooms.length} rooms`);
    await producer.runRate({ eventsPerSec: P.readerDeliveries / members, durationMs: P.warmMs });
    phase = 'baseline';
    const cpuBase = cpuWindow(gatewayPids, loadPids);
    const baseStart = timeline.length;
    r.phases.baseline = { latency: await readerLatencyWindow(readers, producer, members, P.baselineMs), cpu: cpuBase() };
    const baseRss = timeline.slice(baseStart).map((s) => s.rssKb).sort((a, b) => a - b);
    r.phases.baseline.rssKb = baseRss[Math.floor(baseRss.length / 2)]; // median of the window's samples
    r.phases.baseline.rss = rssBreakdown(pid);
    r.phases.baseline.metrics = memoryMetrics(await readMetrics(srv.port));
    log(`${variant}: baseline p50 ${fmt(r.phases.baseline.latency.p50Ms)} ms p99 ${fmt(r.phases.baseline.latency.p99Ms)} ms, RSS ${fmt(mib(r.phases.baseline.rssKb))} MiB, other CPU ${fmt(r.phases.baseline.cpu.otherPct)}%`);

    // ---- 2. flood
    phase = 'connect-slow';
    const sc = await slow.connect();
    r.slowJoined = sc.joined;
    r.rssWithIdleSlowKb = procSample(pid).rssKb;
    log(`${variant}: ${sc.joined}/${P.slow} never-reading clients joined the flooded room; RSS ${fmt(mib(r.rssWithIdleSlowKb))} MiB`);
    phase = 'flood';
    const floodStart = timeline.length;
    const kernelCountersBefore = kernelPressureCounters();
    const cpuFlood = cpuWindow(gatewayPids, loadPids);
    let maxBuffered = 0;
    const bufferedPoll = setInterval(() => { if (lastBuffered > maxBuffered) maxBuffered = lastBuffered; }, 250);
    const [floodLatency, flood] = await Promise.all([
      readerLatencyWindow(readers, producer, members, P.floodMs),
      floodRoom({ port: srv.port, guid: floodGuid, eventsPerSec: P.floodEventsPerSec, batch: P.floodBatch, eventBytes: P.eventBytes, durationMs: P.floodMs }),
    ]);
    clearInterval(bufferedPoll);
    const floodSamples = timeline.slice(floodStart);
    r.phases.flood = {
      latency: floodLatency, cpu: cpuFlood(),
      peakRssKb: Math.max(...floodSamples.map((s) => s.rssKb)), maxBufferedBytesSeen: maxBuffered,
      peakKernelTcpKb: Math.max(...floodSamples.map((s) => s.kernelTcpKb)), kernelTcpKbBefore: timeline[floodStart]?.kernelTcpKb ?? 0,
      rss: rssBreakdown(pid), metrics: memoryMetrics(await readMetrics(srv.port)),
      published: { events: flood.ids.length, requests: flood.requests, skippedRequests: flood.skippedRequests, statuses: flood.statuses, errors: flood.errors, eventBytes: flood.bytesPerEvent },
    };
    log(`${variant}: flood p99 ${fmt(floodLatency.p99Ms)} ms, peak RSS ${fmt(mib(r.phases.flood.peakRssKb))} MiB, buffered max seen ${fmt(maxBuffered / 2 ** 20)} MiB, dropped ${r.phases.flood.metrics.slowDropped}, published ${flood.ids.length} events`);

    // ---- 3. after: the readers' traffic goes on, the flood does not
    phase = 'after';
    const afterStart = timeline.length;
    const floodStoppedAt = performance.now();
    const cpuAfter = cpuWindow(gatewayPids, loadPids);
    r.phases.after = { latency: await readerLatencyWindow(readers, producer, members, P.afterMs - 500), cpu: cpuAfter() };
    r.phases.after.rssKb = procSample(pid).rssKb;
    r.phases.after.secondsAfterFlood = (performance.now() - floodStoppedAt) / 1000;
    r.phases.after.peakRssKb = Math.max(0, ...timeline.slice(afterStart).map((s) => s.rssKb));
    r.phases.after.rss = rssBreakdown(pid);
    r.phases.after.metrics = memoryMetrics(await readMetrics(srv.port));
    r.kernelPressureDuringFloodAndAfter = counterDeltas(kernelCountersBefore, kernelPressureCounters());
    r.tcpMemLimitsMiB = tcpMemLimitsMiB();
    r.phases.after.kernelTcpKb = kernelTcpKb();
    log(`${variant}: +${fmt(r.phases.after.secondsAfterFlood)} s after the flood: RSS ${fmt(mib(r.phases.after.rssKb))} MiB (baseline ${fmt(mib(r.phases.baseline.rssKb))}), buffered ${r.phases.after.metrics.bufferedBytes} B, connections ${r.phases.after.metrics.connections}`);

    // ---- 4. resume: the sample reads what reached it, then reconnects with since
    phase = 'resume';
    if (bare) {
      // a baseline without history cannot resume: the target is reported as not applicable
      r.resume = { notApplicable: true, sample: 0, cut: 0, complete: 0, missingTotal: 0, duplicatesTotal: 0, receivedBeforeCut: null, replayed: null, failures: [], checks: [] };
    } else {
      const tracked = await slow.drainTracked({ idleMs: 3000, maxWaitMs: 30_000 });
      /** @type {any[]} */
      const checks = [];
      for (let i = 0; i < tracked.length; i += 5) {
        checks.push(...await Promise.all(tracked.slice(i, i + 5).map((t) => checkResume(t, flood.ids, srv.port, floodGuid))));
      }
      r.resume = {
        sample: checks.length, cut: checks.filter((c) => c.cut).length, complete: checks.filter((c) => c.complete).length,
        missingTotal: checks.reduce((a, c) => a + c.missing, 0), duplicatesTotal: checks.reduce((a, c) => a + c.duplicates, 0),
        receivedBeforeCut: summarize(checks.map((c) => c.receivedBeforeCut)), replayed: summarize(checks.map((c) => c.replayed)),
        failures: checks.filter((c) => !c.complete).slice(0, 5), checks,
      };
      log(`${variant}: resume ${r.resume.complete}/${r.resume.sample} complete (cut seen by ${r.resume.cut}), missing ${r.resume.missingTotal}, duplicates ${r.resume.duplicatesTotal}`);
    }
    const rs = await readers.stats();
    r.readersAtEnd = { joined: rs.joined, closeCodes: rs.closeCodes, errors: rs.errors };
    r.producerStatuses = producer.statuses;
    r.gatewayLog = summarizeLog(srv.logs[0]);
  } catch (e) {
    r.error = /** @type {Error} */ (e).stack ?? String(e);
    log(`${variant} FAILED: ${r.error}`);
  } finally {
    clearInterval(sampler); clearInterval(metricsPoller);
    producer.close();
    for (const lg of [readers, slow]) { await lg.close(); liveLoads.delete(lg); }
    await srv.stop(); liveServers.delete(srv);
    await redis?.stop();
  }
  return r;
}

/** @param {number[]} a */
function summarize(a) {
  if (!a.length) return null;
  const s = [...a].sort((x, y) => x - y);
  return { min: s[0], median: s[Math.floor(s.length / 2)], max: s[s.length - 1] };
}

/** Warnings the gateway logged (budget drops): count per message, first line of each. @param {string} file */
function summarizeLog(file) {
  /** @type {Record<string, number>} */
  const counts = {};
  try {
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
      if (!line) continue;
      try { const j = JSON.parse(line); counts[j.msg] = (counts[j.msg] ?? 0) + 1; } catch { counts['(non-JSON line)'] = (counts['(non-JSON line)'] ?? 0) + 1; }
    }
  } catch { /* no log */ }
  return counts;
}

// ---------------------------------------------------------------- targets and report
/** @param {Record<string, any>} r one variant */
function targetsOf(r) {
  if (r.error || !r.phases.after) return [];
  const base = r.phases.baseline.rssKb, peak = r.phases.flood.peakRssKb, after = r.phases.after.rssKb;
  const budgetKb = r.params.budgetBytes / 1024;
  const ratio = r.phases.flood.latency.p99Ms / r.phases.baseline.latency.p99Ms;
  return [
    { target: 'RSS during the flood stays under the documented budget (peak − baseline ≤ MAX_BUFFERED_BYTES)',
      measured: `peak ${fmt(mib(peak))} MiB − baseline ${fmt(mib(base))} MiB = +${fmt(mib(peak - base))} MiB vs budget ${fmt(mib(budgetKb))} MiB`, met: peak - base <= budgetKb },
    { target: 'RSS returns to within 20% of baseline a minute later',
      measured: `${fmt(mib(after))} MiB at +${fmt(r.phases.after.secondsAfterFlood, 0)} s = ${fmt(100 * (after / base - 1), 1)}% over baseline ${fmt(mib(base))} MiB (limit ${fmt(mib(base * 1.2))} MiB)`, met: after <= base * 1.2 },
    { target: "readers' p99 during the flood < 2× their p99 without it",
      measured: `${fmt(r.phases.flood.latency.p99Ms)} ms vs ${fmt(r.phases.baseline.latency.p99Ms)} ms = ${fmt(ratio, 2)}×`, met: ratio < 2 },
    r.resume.notApplicable ? { target: 'the slow clients resume with every event', measured: 'not applicable (bare uWS keeps no history)', met: null } : { target: 'the slow clients resume with every event',
      measured: `${r.resume.complete}/${r.resume.sample} sampled clients complete (missing ${r.resume.missingTotal}, duplicates ${r.resume.duplicatesTotal})`, met: r.resume.sample > 0 && r.resume.complete === r.resume.sample },
  ];
}

/** @param {Record<string, any>} res */
function buildReport(res) {
  const L = [];
  const P = res.params; // the parameters of the run(s) reported, not of this invocation
  L.push(`# Flood scenario (issue 9): never-reading clients next to readers`, '');
  L.push(`${res.mergedFrom ? `Merged from ${res.mergedFrom.join(', ')} (each variant's run date below)` : `Run ${res.date}`} (${fmt(res.durationSec, 0)} s of runs), ${res.gatewayVersion}. Machine: ${res.machine.cores} cores (${res.machine.cpu}), ${res.machine.memGiB} GiB, ${res.machine.node}, ${res.machine.platform}.`);
  L.push(`The gateway, the load generator (4 forked workers) and the producers share these cores; other engineers' processes run too (\`other CPU\` below: machine CPU not used by the bench's processes, 200% = both cores).`, '');
  L.push('## Scenario', '');
  L.push(`- Gateway: \`node --max-semi-space-size=4 dist/main.js\` (as \`npm start\`), in-process bus (the \`redis-bus\` variant: Redis Streams on a private redis-server sharing the cores), \`MAX_BUFFERED_BYTES=${P.budgetBytes}\` (${fmt(P.budgetBytes / 2 ** 20)} MiB${P.budgetBytes === 268435456 ? ', the default' : ''}), \`MAX_BACKPRESSURE_BYTES\` default (4 MiB); connection/rate caps lifted as in every bench run.`);
  L.push(`- Readers: ${P.readers} in ${Math.ceil(P.readers / P.readersPerRoom)} rooms (${P.readersPerRoom} each), latency producer at ${P.readerDeliveries} deliveries/s (${fmt(P.readerDeliveries / P.readersPerRoom)} single-event HTTP requests/s), latency = producer send → client receipt (CLOCK_MONOTONIC, HdrHistogram), as bench/run.mjs's latency scenario.`);
  L.push(`- Never-reading clients: ${P.slow} in one flooded room; each stops reading (\`socket.pause()\`) after its join ack.`);
  L.push(`- Flood: ${P.floodEventsPerSec} events/s of ~${P.eventBytes} B (HTTP batches of ${P.floodBatch}) for ${P.floodMs / 1000} s into the flooded room; RSS (VmRSS) sampled every 0.5 s, /metrics every 1 s.`);
  L.push(`- After: flood stopped, readers' traffic continues; RSS read ${P.afterMs / 1000} s later. Baseline RSS = median of the baseline window's samples.`);
  L.push(`- Resume: ${P.resumeSample} of the never-reading clients read again what reached them before the cut, then reconnect as a normal client (\`ws\`) with \`join_project\` \`data.since\` = the last id received; checked against the ids the HTTP API returned for the flooded room (every id after the join, once, in order).`, '');
  for (const r of res.variants) {
    L.push(`## Variant \`${r.variant}\` — gateway env ${Object.entries(r.gatewayEnv).map(([k, v]) => `\`${k}=${v}\``).join(' ')}`, '');
    if (r.date) L.push(`Run ${r.date}${r.gatewayVersion ? `, ${r.gatewayVersion}` : ''}.${r.params && JSON.stringify(r.params) !== JSON.stringify(P) ? ` Parameters differ from the header: ${JSON.stringify(r.params)}.` : ''}`, '');
    if (r.error) { L.push('FAILED: ```', r.error, '```', ''); continue; }
    const b = r.phases.baseline, f = r.phases.flood, a = r.phases.after;
    L.push('| phase | readers p50 ms | p99 ms | p99.9 ms | max ms | reader deliveries/s | readers complete | gateway RSS MiB | gateway CPU % | loadgen CPU % | other CPU % (noise) |', '|---|---|---|---|---|---|---|---|---|---|---|');
    const row = (/** @type {string} */ name, /** @type {any} */ p, /** @type {string} */ rss) => L.push(`| ${name} | ${fmt(p.latency.p50Ms)} | ${fmt(p.latency.p99Ms)} | ${fmt(p.latency.p999Ms)} | ${fmt(p.latency.maxMs)} | ${fmt(p.latency.deliveriesPerSec)} | ${fmt(p.latency.completenessPct, 2)}% | ${rss} | ${fmt(p.cpu.gatewayPct)} | ${fmt(p.cpu.loadgenPct)} | ${fmt(p.cpu.otherPct)} |`);
    row('baseline', b, `${fmt(mib(b.rssKb))} (median)`);
    row('flood', f, `${fmt(mib(f.peakRssKb))} (peak)`);
    row(`after (${fmt(a.secondsAfterFlood, 0)} s)`, a, `${fmt(mib(a.rssKb))} (at the end)`);
    L.push('');
    L.push(`- Readers joined ${r.readersJoined}/${P.readers}; at the end ${r.readersAtEnd?.joined} still joined${r.readersAtEnd && Object.keys(r.readersAtEnd.closeCodes).length ? ` (closed: ${JSON.stringify(r.readersAtEnd.closeCodes)})` : ' (none cut)'}. Never-reading clients joined ${r.slowJoined}/${P.slow}; RSS with them connected and idle: ${fmt(mib(r.rssWithIdleSlowKb))} MiB.`);
    L.push(`- Flood published ${f.published.events} events (${f.published.requests} requests, ${f.published.skippedRequests} skipped as the producer fell behind, statuses ${JSON.stringify(f.published.statuses)}).`);
    L.push(`- \`ws_buffered_bytes\`: max seen ${fmt(f.maxBufferedBytesSeen / 2 ** 20)} MiB (1 s polling of a gauge set every 0.5 s), ${fmt(a.metrics.bufferedBytes / 2 ** 20)} MiB after. \`ws_slow_consumers_dropped_total\`: ${f.metrics.slowDropped} by the end of the flood, ${a.metrics.slowDropped} after. Connections closed by code (end of the after window): ${JSON.stringify(a.metrics.closedByCode)}; open connections: ${a.metrics.connections} (readers: ${P.readers}).`);
    const cutByPerSocketLimit = (a.metrics.closedByCode['1006'] ?? 0) - a.metrics.slowDropped;
    L.push(`- Never-reading clients cut: ${a.metrics.slowDropped} by the process budget, ${cutByPerSocketLimit} otherwise without a close frame (1006 closes − budget drops: \`MAX_BACKPRESSURE_BYTES\` per socket).`);
    if (f.latency.perSecond) L.push(`- Readers' p99 / max per second of the flood (ms): ${f.latency.perSecond.map((/** @type {any} */ x) => `${fmt(x.p99Ms, 0)}/${fmt(x.maxMs, 0)}`).join(' ')}.`);
    if (r.diagnostics) L.push(`- Gateway event-loop lag max per second of the flood (ms, prom-client, from /metrics; a 0 follows a scrape the gateway answered late): ${r.diagnostics.filter((/** @type {any} */ d) => d.phase === 'flood').map((/** @type {any} */ d) => fmt(d.loopLagMaxMs, 0)).join(' ')}.`);
    L.push(`- Kernel TCP memory (machine-wide, /proc/net/sockstat): ${fmt(mib(f.kernelTcpKbBefore))} MiB when the flood started, peak ${fmt(mib(f.peakKernelTcpKb))} MiB during it, ${fmt(mib(a.kernelTcpKb))} MiB at the end of the after window (the never-reading clients' bytes in the gateway's send and the clients' receive buffers, and cut sockets' orphans: outside the gateway's RSS); tcp_mem thresholds (pressure / hard limit) ${fmt(r.tcpMemLimitsMiB[1])} / ${fmt(r.tcpMemLimitsMiB[2])} MiB. Kernel counters over flood + after (machine-wide): ${JSON.stringify(r.kernelPressureDuringFloodAndAfter)}.`);
    L.push(`- Memory breakdown (MiB) baseline / end of flood / after: RSS ${fmt(mib(b.rss.rssKb))} / ${fmt(mib(f.rss.rssKb))} / ${fmt(mib(a.rss.rssKb))}; RssAnon ${fmt(mib(b.rss.anonKb))} / ${fmt(mib(f.rss.anonKb))} / ${fmt(mib(a.rss.anonKb))}; V8 heap total ${fmt(b.metrics.heapTotalBytes / 2 ** 20)} / ${fmt(f.metrics.heapTotalBytes / 2 ** 20)} / ${fmt(a.metrics.heapTotalBytes / 2 ** 20)}; V8 external ${fmt(b.metrics.externalBytes / 2 ** 20)} / ${fmt(f.metrics.externalBytes / 2 ** 20)} / ${fmt(a.metrics.externalBytes / 2 ** 20)}; RSS outside the V8 heap ${fmt(mib(b.rss.rssKb) - b.metrics.heapTotalBytes / 2 ** 20)} / ${fmt(mib(f.rss.rssKb) - f.metrics.heapTotalBytes / 2 ** 20)} / ${fmt(mib(a.rss.rssKb) - a.metrics.heapTotalBytes / 2 ** 20)}.`);
    if (b.rss.maps) {
      const m = (/** @type {any} */ x, /** @type {string} */ k) => fmt(mib(x.rss.maps[k]));
      L.push(`- Resident by mapping (MiB, /proc/<pid>/smaps) baseline / end of flood / after: glibc main arena \`[heap]\` ${m(b, 'brkHeapKb')} / ${m(f, 'brkHeapKb')} / ${m(a, 'brkHeapKb')}; 64 MiB-aligned anonymous (glibc thread arenas) ${m(b, 'arenaKb')} / ${m(f, 'arenaKb')} / ${m(a, 'arenaKb')}; other anonymous (V8 heap, mmapped chunks) ${m(b, 'otherAnonKb')} / ${m(f, 'otherAnonKb')} / ${m(a, 'otherAnonKb')}; file-backed ${m(b, 'fileKb')} / ${m(f, 'fileKb')} / ${m(a, 'fileKb')}.`);
    }
    L.push(`- Resume: ${r.resume.complete}/${r.resume.sample} complete; the cut had reached ${r.resume.cut} of them; events read before the cut ${JSON.stringify(r.resume.receivedBeforeCut)}, replayed on resume ${JSON.stringify(r.resume.replayed)}, missing ${r.resume.missingTotal}, duplicates ${r.resume.duplicatesTotal}.${r.resume.failures.length ? ` Failures: ${JSON.stringify(r.resume.failures)}` : ''}`);
    L.push(`- Gateway log messages: ${JSON.stringify(r.gatewayLog)}`, '');
    L.push('| target | measured | result |', '|---|---|---|');
    for (const t of r.targets) L.push(`| ${t.target} | ${t.measured} | ${t.met === null ? 'n/a' : t.met ? 'MET' : 'NOT MET'} |`);
    L.push('');
  }
  if (res.variants.length > 1) {
    L.push('## Variants side by side', '', '| variant | baseline RSS MiB | peak RSS MiB | RSS after MiB | after ÷ baseline | p99 base ms | p99 flood ms | ratio | dropped | resume |', '|---|---|---|---|---|---|---|---|---|---|');
    for (const r of res.variants) {
      if (r.error || !r.phases.after) { L.push(`| ${r.variant} | failed |  |  |  |  |  |  |  |  |`); continue; }
      const b = r.phases.baseline, f = r.phases.flood, a = r.phases.after;
      L.push(`| ${r.variant} | ${fmt(mib(b.rssKb))} | ${fmt(mib(f.peakRssKb))} | ${fmt(mib(a.rssKb))} | ${fmt(a.rssKb / b.rssKb, 2)} | ${fmt(b.latency.p99Ms)} | ${fmt(f.latency.p99Ms)} | ${fmt(f.latency.p99Ms / b.latency.p99Ms, 2)}× | ${a.metrics.slowDropped} | ${r.resume.complete}/${r.resume.sample} |`);
    }
    L.push('');
  }
  return L.join('\n');
}


/**
 * Rebuilds one report from stored results (no run): the variants of every listed JSON file of
 * bench/results/, in order; the header's parameters and machine are the first file's.
 * @param {string} list comma-separated file names
 */
function mergeReports(list) {
  const files = list.split(',').map((f) => f.trim()).filter(Boolean);
  const stored = files.map((f) => JSON.parse(fs.readFileSync(path.join(RESULTS_DIR, f), 'utf8')));
  const res = { ...stored[0], mergedFrom: files, variants: stored.flatMap((x) => x.variants.map((/** @type {any} */ v) => ({ date: x.date, params: x.params, gatewayVersion: x.gatewayVersion, ...v }))) };
  res.durationSec = stored.reduce((a, x) => a + (x.durationSec ?? 0), 0);
  const md = buildReport(res);
  fs.writeFileSync(path.join(RESULTS_DIR, `${OUT}-report.md`), md + '\n');
  fs.writeFileSync(path.join(RESULTS_DIR, `${OUT}-report.json`), JSON.stringify(res, null, 2) + '\n');
  console.log(md);
  log(`merged ${files.join(' + ')} into bench/results/${OUT}-report.md`);
}

async function main() {
  if (args.merge) { mergeReports(args.merge); return; }
  if (!gatewayBuilt()) throw new Error('dist/main.js missing: npm run build first');
  const started = Date.now();
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  /** @type {Record<string, any>} */
  const res = {
    scenario: 'flood', profile: DEV ? 'dev' : 'full', date: new Date().toISOString(), params: P, gatewayVersion: gatewayVersion(),
    machine: { cores: os.cpus().length, cpu: os.cpus()[0]?.model ?? 'unknown', memGiB: fmt(os.totalmem() / 2 ** 30, 1), node: process.version, platform: `${os.type()} ${os.release()}` },
    variants: [],
  };
  log(`profile ${res.profile}, variants ${variantNames.join(', ')}`);
  for (const v of variantNames) {
    const r = await runVariant(v);
    r.targets = targetsOf(r);
    res.variants.push(r);
  }
  res.durationSec = (Date.now() - started) / 1000;
  const md = buildReport(res);
  fs.writeFileSync(path.join(RESULTS_DIR, `${OUT}-report.md`), md + '\n');
  fs.writeFileSync(path.join(RESULTS_DIR, `${OUT}-report.json`), JSON.stringify(res, null, 2) + '\n');
  console.log('\n' + md);
  log(`wrote bench/results/${OUT}-report.md in ${fmt(res.durationSec, 0)} s`);
}

main().then(() => { hardCleanup(); process.exit(0); }, (e) => { console.error(e); hardCleanup(); process.exit(1); });
