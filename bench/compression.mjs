#!/usr/bin/env node
// @ts-check
/**
 * Issue 21 bench: permessage-deflate (WS_COMPRESSION) against none. For each mode and each number of
 * events per frame, the gateway (WORKERS=1, pinned to --server-cpu) fans an open-loop event rate out
 * to clients (the load workers, pinned to --load-cpu) and the table gives, per delivered event:
 *  - bytes on the wire: every byte the clients' sockets read (socket-level, frame headers included),
 *    next to the decoded payload bytes;
 *  - server CPU: the gateway process's user+system time over the window ÷ events delivered in it;
 * and the noise: what the machine ran outside the bench meanwhile, and on the server's core.
 *
 *   npm run build && node bench/compression.mjs
 *   node bench/compression.mjs --modes off,shared,dedicated-8kb --batches 1,10 --measure-s 8 --repeats 2
 *   node bench/compression.mjs --modes shared/no-offer     # server compresses, clients do not offer it
 *
 * Events per frame: a request of `batch` events reaches its room in one event-loop turn, and fan-out
 * sends one turn of a room as one frame, so batch 1 → ~1 event per frame, batch 10 → ~10 (measured and
 * printed). The event data is JSON made anew per event from a vocabulary (kinds, paths, agents, words,
 * random hex ids), so it compresses like real data rather than like a run of one letter.
 * A first table (no server) deflates single frames of the sizes in play with Node's zlib (level 6, the
 * level uWS uses, fresh per message as the shared compressor does): the ratio by frame size, which is
 * what WS_COMPRESSION_MIN_BYTES trades on. The fan-out table adds `deflate µs/frame`: (CPU per event
 * with compression − without) × events per frame, what one deflate for one socket costs in the
 * gateway. uWS v20 < 72 deflates once per socket (src/connections/compression.ts); a compress-once
 * publish would cost that ÷ the room's members per delivery.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { parseArgs } from 'node:util';
import { BENCH_DIR, startServer, roomGuid, sleep, procSampleAll } from './lib/servers.mjs';
import { LoadGen } from './lib/loadgen.mjs';
import { Producer } from './lib/producer.mjs';
import { installRunGuard, gatewayVersion } from './lib/run-guard.mjs';
import { fmt } from './lib/report.mjs';
import { busy, cpuTimes, pin } from './lib/cpu.mjs';

const { values: args } = parseArgs({
  options: {
    // WS_COMPRESSION values; `<mode>/no-offer`: the clients do not offer permessage-deflate
    modes: { type: 'string', default: 'off,shared,dedicated-4kb,dedicated-32kb,shared/no-offer' },
    batches: { type: 'string', default: '1,10' },
    // target size of each event's data JSON (bytes), one row set per value
    'data-bytes': { type: 'string', default: '150,600' },
    clients: { type: 'string', default: '2000' },
    rooms: { type: 'string', default: '20' },
    // events/s over all rooms; deliveries/s = this × clients/rooms
    'events-per-s': { type: 'string', default: '300' },
    'min-bytes': { type: 'string', default: '64' },
    'warm-s': { type: 'string', default: '2' },
    'measure-s': { type: 'string', default: '8' },
    repeats: { type: 'string', default: '1' },
    'server-cpu': { type: 'string', default: '1' },
    'load-cpu': { type: 'string', default: '0' },
    name: { type: 'string', default: 'compression' },
    'no-micro': { type: 'boolean', default: false },
  },
});
const MODES = args.modes.split(',').filter(Boolean); // --modes '': the frame-size table only
const BATCHES = args.batches.split(',').map(Number);
const DATA_BYTES = args['data-bytes'].split(',').map(Number);
const CLIENTS = Number(args.clients);
const ROOMS = Number(args.rooms);
const MEMBERS = CLIENTS / ROOMS;
const EVENTS_PER_S = Number(args['events-per-s']);
const SERVER_CPU = args['server-cpu'];
const LOAD_CPU = args['load-cpu'];
const RESULTS_DIR = path.join(BENCH_DIR, 'results');

/** @type {Set<{ stop: () => Promise<void>, procs: import('node:child_process').ChildProcess[] }>} */
const live = new Set();
/** @type {Set<LoadGen>} */
const liveLoad = new Set();
installRunGuard({ label: 'compression', guardMs: 60 * 60_000, servers: live, loads: liveLoad });

/** @param {string} s */
function log(s) { console.log(`[compression ${new Date().toISOString().slice(11, 19)}] ${s}`); }

/**
 * Server CPU over a window, and the noise: the machine's busy time outside the server and the bench
 * (other helpers' work), and what else ran on the server's core.
 * @param {number[]} serverPids @param {() => number[]} benchPids
 */
function cpuWindow(serverPids, benchPids) {
  const s0 = procSampleAll(serverPids), b0 = procSampleAll(benchPids()), r0 = process.cpuUsage(), m0 = cpuTimes();
  return () => {
    const s1 = procSampleAll(serverPids), b1 = procSampleAll(benchPids()), r1 = process.cpuUsage(r0), m1 = cpuTimes();
    const dt = (s1.t - s0.t) / 1000;
    const m = busy(m0, m1);
    const server = (100 * (s1.cpuSec - s0.cpuSec)) / dt;
    const bench = (100 * (b1.cpuSec - b0.cpuSec)) / dt + (r1.user + r1.system) / 1e4 / dt;
    return {
      dt, serverCpuSec: s1.cpuSec - s0.cpuSec, serverCpuPct: server, benchCpuPct: bench,
      otherCpuPct: Math.max(0, m.cpu - server - bench),
      serverCoreOtherPct: Math.max(0, (m[`cpu${SERVER_CPU}`] ?? 0) - server),
    };
  };
}

// ------------------------------------------------------------------ event data
/** A small deterministic PRNG (mulberry32), so every run publishes the same kind of data. @param {number} seed */
function prng(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const WORDS = ('the a of to and in is for on that with as it by this be are from at or an was file test build agent change update '
  + 'function component state render error fixed added removed refactor import export module type value return props style layout '
  + 'button input form list item table row column page route server client request response cache token user project event message '
  + 'stream history resume join leave socket frame batch queue delay retry timeout limit config deploy check lint format commit review '
  + 'merge branch diff patch line lines new old moved renamed created deleted passed failed skipped running done pending').split(' ');
const KINDS = ['file_changed', 'test_result', 'build_step', 'agent_note', 'lint_warning', 'preview_ready'];
const DIRS = ['src/components', 'src/pages', 'src/lib', 'src/api', 'test', 'styles'];
const EXTS = ['tsx', 'ts', 'css', 'json', 'md'];

/** `,"k":…` fields after "t" and "n", about `bytes` long in all (the producer adds ~42 bytes). @param {number} bytes */
function dataFields(bytes) {
  const rnd = prng(bytes * 7919);
  /** @param {readonly string[]} a */
  const pick = (a) => a[Math.floor(rnd() * a.length)];
  return () => {
    const hex = Math.floor(rnd() * 0xffffffff).toString(16).padStart(8, '0');
    // Under 150 bytes the fields below would not fit: a text field alone.
    let s = bytes < 150 ? ',"text":"' : `,"kind":"${pick(KINDS)}","path":"${pick(DIRS)}/${pick(WORDS)}-${pick(WORDS)}.${pick(EXTS)}","agent":"agent-${1 + Math.floor(rnd() * 8)}","sha":"${hex}","lines":${Math.floor(rnd() * 400)},"text":"`;
    const target = Math.max(0, bytes - 42 - 2);
    while (s.length < target) s += pick(WORDS) + ' ';
    return s.slice(0, Math.max(s.length, target)).trimEnd() + '"';
  };
}

// ------------------------------------------------------------------ zlib per frame (no server)
/**
 * What frames of these sizes deflate to (Node's zlib, level 6 as uWS, a fresh stream per message as
 * the shared compressor), with a 2-byte frame header either way and the 4-byte tail RFC 7692 strips.
 * Sizes only: timing a fresh zlib stream per call would mostly time its allocation, which uWS's reused
 * stream does not pay; the CPU a deflate costs is measured through the gateway below.
 */
function microRows() {
  /** @type {Record<string, any>[]} */
  const rows = [];
  /** @type {[number, number][]} data bytes × events per frame */
  const shapes = [[0, 1], [60, 1], [100, 1], [150, 1], [300, 1], [600, 1], [1000, 1], [2000, 1]];
  for (const bytes of DATA_BYTES) for (const events of [2, 5, 10]) shapes.push([bytes, events]);
  for (const [bytes, events] of shapes) {
    const gen = dataFields(bytes);
    let plain = 0, packed = 0;
    const n = 200;
    for (let f = 0; f < n; f++) {
      const parts = [];
      for (let i = 0; i < events; i++) {
        parts.push(`{"type":"project_message","projectGuid":"${roomGuid(f % 20)}","data":{"t":${1e15 + f},"n":${f * events + i}${bytes ? gen() : ''}},"timestamp":"2026-12-03T15:00:00.000Z","id":"1764774000000-${f * events + i}"}`);
      }
      const frame = Buffer.from(events === 1 ? parts[0] : `[${parts.join(',')}]`);
      plain += frame.length;
      packed += zlib.deflateRawSync(frame, { level: 6, flush: zlib.constants.Z_SYNC_FLUSH }).length - 4;
    }
    rows.push({ dataBytes: bytes, events, frameBytes: plain / n, deflatedBytes: packed / n, ratio: plain / packed });
  }
  return rows;
}

// ------------------------------------------------------------------ one run
/** @param {string} modeArg @param {number} batch @param {number} dataBytes */
async function run(modeArg, batch, dataBytes) {
  const [mode, offerFlag] = modeArg.split('/');
  const offer = offerFlag !== 'no-offer';
  /** @type {Record<string, any>} */
  const row = { mode: modeArg, batch, dataBytes };
  const srv = await startServer('gateway', { label: `gateway-${mode}`, env: { WS_COMPRESSION: mode, WS_COMPRESSION_MIN_BYTES: args['min-bytes'] } });
  live.add(srv);
  pin(srv.pids, SERVER_CPU);
  const rooms = Array.from({ length: ROOMS }, (_, i) => roomGuid(i));
  const lg = new LoadGen({ host: '127.0.0.1', port: srv.port, path: srv.wsPath, mode: srv.mode, jwtSecret: srv.jwtSecret, rooms, count: CLIENTS, rate: 3000, workers: 2, deflate: offer });
  liveLoad.add(lg);
  const producer = new Producer({ port: srv.port, rooms, concurrency: 16, dataFields: dataFields(dataBytes) });
  try {
    await lg.start();
    pin(lg.workers.map((w) => /** @type {number} */ (w.pid)), LOAD_CPU);
    const rss0 = procSampleAll(srv.pids).rssKb;
    const c = await lg.connect();
    if (c.joined < CLIENTS) row.notes = `only ${c.joined}/${CLIENTS} joined`;
    row.negotiated = (await lg.stats()).negotiated;
    const warmMs = Number(args['warm-s']) * 1000, measureMs = Number(args['measure-s']) * 1000;
    const running = producer.runRate({ eventsPerSec: EVENTS_PER_S, durationMs: warmMs + measureMs + 500, batch, maxOutstanding: 256 });
    await sleep(warmMs);
    await lg.reset();
    const s0 = await lg.stats();
    const cpu = cpuWindow(srv.pids, () => lg.workers.map((w) => /** @type {number} */ (w.pid)));
    await sleep(measureMs);
    const s1 = await lg.stats();
    Object.assign(row, cpu());
    row.rssPerConnKb = (procSampleAll(srv.pids).rssKb - rss0) / Math.max(1, c.joined);
    await running;
    const drained = await lg.drain(producer.sentEvents * MEMBERS);
    row.complete = drained.complete;
    if (!drained.complete) row.notes = `${row.notes ?? ''} delivered ${drained.delivered}/${drained.expected}`.trim();
    if (producer.behind) row.notes = `${row.notes ?? ''} producer behind by ${producer.behind} requests`.trim();
    const events = s1.events - s0.events, frames = s1.frames - s0.frames;
    row.deliveriesPerSec = events / row.dt;
    row.eventsPerFrame = frames ? events / frames : null;
    row.wirePerEvent = events ? (s1.wire - s0.wire) / events : null;
    row.decodedPerEvent = events ? (s1.bytes - s0.bytes) / events : null;
    row.compressedShare = frames ? (s1.compressedFrames - s0.compressedFrames) / frames : null;
    row.cpuUsPerEvent = events ? (row.serverCpuSec * 1e6) / events : null;
    if (s1.joined < c.joined) row.notes = `${row.notes ?? ''} ${c.joined - s1.joined} clients closed by the server ${JSON.stringify(s1.closeCodes)}`.trim();
    const errs = Object.entries(s1.errors).filter(([k]) => !k.startsWith('killed:'));
    if (errs.length) row.notes = `${row.notes ?? ''} client errors ${JSON.stringify(Object.fromEntries(errs))}`.trim();
    log(`${modeArg} batch ${batch} data ${dataBytes}: ${fmt(row.deliveriesPerSec)} deliveries/s, ${fmt(row.eventsPerFrame, 1)} events/frame, wire ${fmt(row.wirePerEvent)} B/event (decoded ${fmt(row.decodedPerEvent)}), server ${fmt(row.cpuUsPerEvent)} µs/event (${fmt(row.serverCpuPct)}%), compressed ${fmt(100 * (row.compressedShare ?? 0), 0)}% of frames, negotiated ${row.negotiated}/${c.joined}, RSS ${fmt(row.rssPerConnKb)} KB/conn; outside bench ${fmt(row.otherCpuPct)}%, server core other ${fmt(row.serverCoreOtherPct)}% ${row.notes ?? ''}`);
  } catch (e) {
    row.notes = `FAILED: ${/** @type {Error} */ (e).message}`;
    log(`${modeArg} batch ${batch}: ${row.notes}`);
  } finally {
    producer.close();
    await lg.close();
    liveLoad.delete(lg);
    await srv.stop();
    live.delete(srv);
  }
  return row;
}

/** Medians over repeats, per column. @param {Record<string, any>[]} rs */
function median(rs) {
  /** @type {Record<string, any>} */
  const out = { ...rs[0] };
  for (const k of Object.keys(rs[0])) {
    const vs = rs.map((r) => r[k]).filter((v) => typeof v === 'number').sort((a, b) => a - b);
    const mid = Math.floor(vs.length / 2);
    if (vs.length === rs.length && vs.length) out[k] = vs.length % 2 ? vs[mid] : (vs[mid - 1] + vs[mid]) / 2;
  }
  out.repeats = rs.length;
  out.runs = rs;
  const notes = rs.map((r) => r.notes).filter(Boolean);
  if (notes.length) out.notes = notes.join('; ');
  return out;
}

// ------------------------------------------------------------------ report
/** @param {Record<string, any>[]} micro @param {Record<string, any>[]} rows */
function report(micro, rows) {
  const L = [];
  L.push(`# permessage-deflate: bytes and server CPU per delivered event`, '');
  L.push(`${gatewayVersion()}; ${new Date().toISOString()}; ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), load average ${os.loadavg().map((v) => v.toFixed(2)).join(' ')} at the end.`);
  L.push(`Gateway WORKERS=1 pinned to CPU ${SERVER_CPU}, load workers to CPU ${LOAD_CPU}; ${CLIENTS} clients in ${ROOMS} rooms (${MEMBERS} per room), ${EVENTS_PER_S} events/s (open loop) = ${EVENTS_PER_S * MEMBERS} deliveries/s, WS_COMPRESSION_MIN_BYTES=${args['min-bytes']}, ${args['warm-s']} s warm-up, ${args['measure-s']} s measured, median of ${args.repeats}.`, '');
  if (micro.length) {
    L.push('## Frame sizes, deflated on their own (Node zlib, level 6, fresh per message as the shared compressor; no server)', '');
    L.push('| data B/event | events/frame | frame B | deflated B | ratio |', '|---:|---:|---:|---:|---:|');
    for (const r of micro) L.push(`| ${r.dataBytes} | ${r.events} | ${fmt(r.frameBytes, 0)} | ${fmt(r.deflatedBytes, 0)} | ${fmt(r.ratio, 2)} |`);
    L.push('');
  }
  L.push('## Fan-out through the gateway', '');
  L.push('Every `dedicated-*` mode runs as uWS\'s 3 KB compressor (512-byte window, memLevel 1) in this uWS: its negotiation (HttpResponse.h, `compression & DEDICATED_COMPRESSOR_3KB`) is true for every dedicated size; see src/connections/compression.ts.', '');
  L.push('`wire`: bytes the clients\' sockets read per delivered event; `decoded`: payload after inflate; `CPU`: gateway user+system µs per delivered event; ratios against `off` of the same batch and data size; `deflate µs/frame`: (CPU/event − off\'s) × events/frame, one deflate for one socket; `CPU µs per KB saved`: extra CPU per event ÷ wire bytes saved per event (lower: compression pays better). `other`: machine CPU % outside the bench (noise, 100 = one core); `core other`: what else ran on the gateway\'s core.', '');
  L.push('| data B | batch | mode | events/frame | deliveries/s | wire B/event | × off | decoded B/event | CPU µs/event | × off | deflate µs/frame | CPU µs per KB saved | server CPU % | compressed frames | negotiated | RSS KB/conn | other % | core other % | notes |');
  L.push('|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const r of rows) {
    const base = rows.find((b) => b.mode === 'off' && b.batch === r.batch && b.dataBytes === r.dataBytes);
    const x = (/** @type {string} */ k) => (base && base[k] ? fmt(r[k] / base[k], 2) : 'n/a');
    const deflateUs = base && r.compressedShare > 0 && r.eventsPerFrame ? (r.cpuUsPerEvent - base.cpuUsPerEvent) * r.eventsPerFrame : null;
    const saved = base && r.compressedShare > 0 ? (base.wirePerEvent - r.wirePerEvent) / 1024 : 0;
    const perKbSaved = base && saved > 0 ? (r.cpuUsPerEvent - base.cpuUsPerEvent) / saved : null;
    L.push(`| ${r.dataBytes} | ${r.batch} | ${r.mode} | ${fmt(r.eventsPerFrame, 1)} | ${fmt(r.deliveriesPerSec)} | ${fmt(r.wirePerEvent)} | ${x('wirePerEvent')} | ${fmt(r.decodedPerEvent)} | ${fmt(r.cpuUsPerEvent, 2)} | ${x('cpuUsPerEvent')} | ${fmt(deflateUs, 1)} | ${fmt(perKbSaved, 1)} | ${fmt(r.serverCpuPct)} | ${fmt(100 * (r.compressedShare ?? 0), 0)}% | ${r.negotiated ?? 'n/a'} | ${fmt(r.rssPerConnKb)} | ${fmt(r.otherCpuPct)} | ${fmt(r.serverCoreOtherPct)} | ${r.notes ?? ''} |`);
  }
  return L.join('\n') + '\n';
}

const micro = args['no-micro'] ? [] : microRows();
/** @type {Record<string, any>[]} */
const rows = [];
for (const dataBytes of DATA_BYTES) {
  for (const batch of BATCHES) {
    for (const mode of MODES) {
      const reps = [];
      for (let i = 0; i < Number(args.repeats); i++) reps.push(await run(mode, batch, dataBytes));
      rows.push(median(reps));
    }
  }
}
const md = report(micro, rows);
fs.mkdirSync(RESULTS_DIR, { recursive: true });
fs.writeFileSync(path.join(RESULTS_DIR, `${args.name}.md`), md);
fs.writeFileSync(path.join(RESULTS_DIR, `${args.name}.json`), JSON.stringify({ args, micro, rows }, null, 1));
console.log('\n' + md);
log(`written bench/results/${args.name}.md and .json`);
process.exit(0);
