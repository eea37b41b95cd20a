// @ts-check
/**
 * Redis scale scenario (issue 10): what one gateway process costs Redis while it watches many
 * projects, idle and busy, woken by keyspace notifications (REDIS_WAKEUP=auto) or polling
 * (REDIS_WAKEUP=poll), on a standalone Redis and on a 3-master Cluster.
 *
 *   npm run build && node bench/redis-scale.mjs [--projects 100,1000,10000] [--idle-s 10] [--busy-s 10]
 *        [--rate 1000] [--modes notify,poll] [--topologies standalone,cluster] [--name redis-scale]
 *
 * For each combination: start the gateway (`node dist/main.js`), join N projects over WebSockets
 * (10 connections, up to 1,000 projects each), let it settle, then
 *   idle: nothing is appended for idle-s seconds;
 *   busy: a producer XADDs `rate` events/s, each to a random watched project, for busy-s seconds.
 * Redis commands come from INFO commandstats deltas summed over every master (INFO itself left out;
 * the producer's XADDs are reported apart from the gateway's commands); CPU from /proc/<pid>/stat.
 * Writes bench/results/<name>.md and .json.
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Cluster, Redis } from 'ioredis';
import { joinAll } from './lib/join-all.mjs';
import { BENCH_DIR, freePort, procSample, procSampleAll, roomGuid, sleep, startServer, stopProc, TMP_DIR } from './lib/servers.mjs';

const { values: args } = parseArgs({
  options: {
    projects: { type: 'string', default: '100,1000,10000' },
    'idle-s': { type: 'string', default: '10' },
    'busy-s': { type: 'string', default: '10' },
    rate: { type: 'string', default: '1000' },
    modes: { type: 'string', default: 'notify,poll' },
    topologies: { type: 'string', default: 'standalone,cluster' },
    name: { type: 'string', default: 'redis-scale' },
  },
});
const PROJECTS = String(args.projects).split(',').map(Number);
const IDLE_S = Number(args['idle-s']);
const BUSY_S = Number(args['busy-s']);
const RATE = Number(args.rate);
const MODES = String(args.modes).split(',');
const TOPOLOGIES = String(args.topologies).split(',');
const ROOMS_PER_SOCKET = 1000;

/** @param {string} s */
function log(s) { console.log(`[redis-scale ${new Date().toISOString().slice(11, 19)}] ${s}`); }

/**
 * @param {number} port @param {string[]} a
 * @returns {Promise<string>}
 */
function cli(port, ...a) {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...a], { maxBuffer: 64 * 1024 * 1024 }, (err, out) => (err ? reject(err) : resolve(out.trim())));
  });
}

/**
 * A private redis-server (no persistence); `cluster` adds cluster mode with its own bus port.
 * @param {boolean} cluster
 */
async function startRedisServer(cluster) {
  const port = await freePort();
  const dir = path.join(TMP_DIR, `redis-scale-${port}`);
  fs.mkdirSync(dir, { recursive: true });
  const extra = cluster ? ['--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, 'nodes.conf'), '--cluster-port', String(await freePort()), '--cluster-node-timeout', '5000'] : [];
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--loglevel', 'warning', ...extra], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    if (await cli(port, 'PING').catch(() => '') === 'PONG') break;
    await sleep(100);
  }
  return { port, pid: /** @type {number} */ (child.pid), stop: async () => { await stopProc(child); fs.rmSync(dir, { recursive: true, force: true }); } };
}

/** @param {'standalone'|'cluster'} topology */
async function startTopology(topology) {
  if (topology === 'standalone') {
    const s = await startRedisServer(false);
    return { ports: [s.port], pids: [s.pid], env: { REDIS_URL: `redis://127.0.0.1:${s.port}` }, stop: s.stop };
  }
  const servers = await Promise.all([0, 1, 2].map(() => startRedisServer(true)));
  const ports = servers.map((s) => s.port);
  await new Promise((resolve, reject) => execFile('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], (err) => (err ? reject(err) : resolve(null))));
  for (let i = 0; i < 100; i++) {
    const infos = await Promise.all(ports.map((p) => cli(p, 'CLUSTER', 'INFO')));
    if (infos.every((t) => t.includes('cluster_state:ok') && t.includes('cluster_known_nodes:3'))) break;
    await sleep(100);
  }
  return { ports, pids: servers.map((s) => s.pid), env: { REDIS_CLUSTER_NODES: ports.map((p) => `127.0.0.1:${p}`).join(',') }, stop: async () => { await Promise.all(servers.map((s) => s.stop())); } };
}

/**
 * Calls per command summed over the given servers, plus bytes into and out of Redis.
 * @param {number[]} ports @returns {Promise<Map<string, number>>}
 */
async function stats(ports) {
  /** @type {Map<string, number>} */
  const total = new Map();
  const add = (/** @type {string} */ k, /** @type {number} */ n) => total.set(k, (total.get(k) ?? 0) + n);
  for (const port of ports) {
    for (const line of (await cli(port, 'INFO', 'commandstats')).split(/\r?\n/)) {
      const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line);
      if (m && m[1] !== 'info') {
        add(m[1], Number(m[2]));
        // Time Redis spent executing it (for XADD this includes publishing the notification).
        add(`usec:${m[1]}`, Number(m[3]));
      }
    }
    const s = await cli(port, 'INFO', 'stats');
    add('bytes_in', Number(/total_net_input_bytes:(\d+)/.exec(s)?.[1] ?? 0));
    add('bytes_out', Number(/total_net_output_bytes:(\d+)/.exec(s)?.[1] ?? 0));
  }
  return total;
}

/** @param {Map<string, number>} a @param {Map<string, number>} b */
function delta(a, b) {
  /** @type {Record<string, number>} */
  const d = {};
  for (const [k, v] of b) if (v !== (a.get(k) ?? 0)) d[k] = v - (a.get(k) ?? 0);
  return d;
}

/**
 * The XREADs the resync script runs inside Redis (one per watched key per resync; commandstats
 * counts commands a script calls): resyncs in the window = CONFIG GETs / masters (each resync
 * checks the flags once per master first), times the watched keys.
 * @param {Record<string, number>} d @param {number} watched @param {number} masters
 */
function resyncInnerXreads(d, watched, masters) {
  return Math.round((d['config|get'] ?? 0) / masters) * watched;
}

/** @param {Record<string, number>} d */
function gatewayCalls(d) {
  let n = 0;
  // xadd and hello are the producer's (ioredis says HELLO when it connects).
  for (const [k, v] of Object.entries(d)) if (!['xadd', 'hello', 'bytes_in', 'bytes_out'].includes(k) && !k.startsWith('usec:')) n += v;
  return n;
}

/**
 * @param {'standalone'|'cluster'} topology @param {any} redis @param {string} mode @param {number} n
 */
async function run(topology, redis, mode, n) {
  const flushes = redis.ports.map((/** @type {number} */ p) => cli(p, 'FLUSHALL'));
  await Promise.all(flushes);
  // Polling runs as a Redis without notifications would; the notify run enables them itself.
  await Promise.all(redis.ports.map((/** @type {number} */ p) => cli(p, 'CONFIG', 'SET', 'notify-keyspace-events', '')));
  await Promise.all(redis.ports.map((/** @type {number} */ p) => cli(p, 'CONFIG', 'RESETSTAT')));
  const guids = Array.from({ length: n }, (_, i) => roomGuid(i));
  const srv = await startServer('gateway', {
    label: `gateway-${mode}`,
    ...(redis.env.REDIS_URL ? { redisUrl: redis.env.REDIS_URL } : {}),
    env: { ...redis.env, REDIS_WAKEUP: mode === 'poll' ? 'poll' : 'auto', MAX_ROOMS_PER_CONNECTION: String(ROOMS_PER_SOCKET), RATE_LIMIT_PER_S: '100000', RATE_LIMIT_BURST: '100000', LOG_LEVEL: 'info' },
  });
  const pid = srv.pids[0];
  const t0 = Date.now();
  const clients = await joinAll(srv.port, guids, ROOMS_PER_SOCKET);
  const joinMs = Date.now() - t0;
  await sleep(3000); // subscriptions, the first slot-table check
  const rssKb = procSample(pid).rssKb;

  // Idle.
  let s0 = await stats(redis.ports); let c0 = procSample(pid); let r0 = procSampleAll(redis.pids);
  await sleep(IDLE_S * 1000);
  let s1 = await stats(redis.ports); let c1 = procSample(pid); let r1 = procSampleAll(redis.pids);
  const idle = delta(s0, s1);
  const idleSec = (c1.t - c0.t) / 1000;
  const idleRow = {
    gatewayCmdsPerSec: (gatewayCalls(idle) - resyncInnerXreads(idle, n, redis.ports.length)) / idleSec,
    resyncInnerXreadsPerSec: resyncInnerXreads(idle, n, redis.ports.length) / idleSec,
    bytesInPerSec: (idle.bytes_in ?? 0) / idleSec,
    gatewayCpuPct: (100 * (c1.cpuSec - c0.cpuSec)) / idleSec,
    redisCpuPct: (100 * (r1.cpuSec - r0.cpuSec)) / idleSec,
    byCommand: Object.fromEntries(Object.entries(idle).filter(([k]) => !k.startsWith('bytes') && !k.startsWith('usec:')).map(([k, v]) => [k, Math.round(v / idleSec)])),
  };

  // Busy: `RATE` events/s, each to a random watched project, paced every 10 ms.
  const producer = topology === 'cluster' ? new Cluster(redis.ports.map((/** @type {number} */ port) => ({ host: '127.0.0.1', port }))) : new Redis(redis.env.REDIS_URL);
  await producer.ping();
  const delivered0 = clients.counter.events;
  let appended = 0;
  s0 = await stats(redis.ports); c0 = procSample(pid); r0 = procSampleAll(redis.pids);
  const start = performance.now();
  /** @type {Promise<unknown>[]} */
  const pending = [];
  for (let tick = 1; performance.now() - start < BUSY_S * 1000; tick++) {
    const due = Math.floor((RATE * (performance.now() - start)) / 1000) - appended;
    for (let i = 0; i < due; i++) {
      const g = guids[Math.floor(Math.random() * n)];
      pending.push(producer.xadd(`autocode:{${g}}:events`, '*', 'type', 'project_message', 'data', `{"n":${appended}}`));
      appended++;
    }
    if (pending.length > 5000) await Promise.all(pending.splice(0));
    await sleep(Math.max(0, start + tick * 10 - performance.now()));
  }
  await Promise.all(pending);
  s1 = await stats(redis.ports); c1 = procSample(pid); r1 = procSampleAll(redis.pids);
  const busy = delta(s0, s1);
  const busySec = (c1.t - c0.t) / 1000;
  const deadline = Date.now() + 15_000;
  while (clients.counter.events - delivered0 < appended && Date.now() < deadline) await sleep(50);
  const delivered = clients.counter.events - delivered0;
  const busyRow = {
    eventsPerSec: appended / busySec,
    xaddPerSec: (busy.xadd ?? 0) / busySec,
    gatewayCmdsPerSec: (gatewayCalls(busy) - resyncInnerXreads(busy, n, redis.ports.length)) / busySec,
    gatewayCmdsPerEvent: (gatewayCalls(busy) - resyncInnerXreads(busy, n, redis.ports.length)) / Math.max(1, appended),
    resyncInnerXreadsPerSec: resyncInnerXreads(busy, n, redis.ports.length) / busySec,
    bytesInPerSec: (busy.bytes_in ?? 0) / busySec,
    bytesOutPerEvent: (busy.bytes_out ?? 0) / Math.max(1, appended),
    gatewayCpuPct: (100 * (c1.cpuSec - c0.cpuSec)) / busySec,
    redisCpuPct: (100 * (r1.cpuSec - r0.cpuSec)) / busySec,
    delivered,
    appended,
    byCommand: Object.fromEntries(Object.entries(busy).filter(([k]) => !k.startsWith('bytes') && !k.startsWith('usec:')).map(([k, v]) => [k, Math.round(v / busySec)])),
    /** Redis execution time per appended event (commandstats usec), split into the producer's XADD and the gateway's commands. */
    redisUsecPerEventXadd: (busy['usec:xadd'] ?? 0) / Math.max(1, appended),
    redisUsecPerEventGateway: Object.entries(busy).filter(([k]) => k.startsWith('usec:') && k !== 'usec:xadd' && k !== 'usec:hello').reduce((a, [, v]) => a + v, 0) / Math.max(1, appended),
  };
  await producer.quit();
  clients.close();
  const logText = fs.readFileSync(srv.logs[0], 'utf8');
  const wakeup = /falling back to polling/.test(logText) ? 'poll (fallback)' : /keyspace notifications/.test(logText) ? 'notify' : 'poll';
  await srv.stop();
  return { topology, mode, wakeup, projects: n, joinMs, rssMb: rssKb / 1024, idle: idleRow, busy: busyRow };
}

/** @param {number} x @param {number} [d] */
const f = (x, d = 0) => (Number.isFinite(x) ? x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : 'n/a');

/** @param {any[]} rows @param {any} meta */
function report(rows, meta) {
  const out = [
    `# Redis scale: one gateway watching many projects (${meta.date})`,
    '',
    `Conditions: ${meta.conditions}`,
    '',
    `Idle ${IDLE_S} s, then ${RATE} events/s for ${BUSY_S} s, each XADDed to a random watched project by a separate producer.`,
    'Commands are `INFO commandstats` deltas summed over every master, INFO itself left out; "gateway cmds" are the commands',
    "the gateway sent (the producer's XADDs excluded). commandstats also counts the XREADs the resync script runs inside Redis",
    '(one per watched key per resync, every 15 s): they are taken out of "gateway cmds" and shown apart ("resync XREADs in',
    'Redis/s", as measured in that window: 0 when no resync fell in it; amortized: watched projects / 15 per second).',
    "CPU: /proc/<pid>/stat utime+stime, 100% = one core. `notify` = REDIS_WAKEUP=auto (keyspace notifications),",
    '`poll` = REDIS_WAKEUP=poll (the previous read loop).',
    '',
    '| Redis | wake-up | projects | idle gateway cmds/s | idle resync XREADs in Redis/s | idle KB/s into Redis | idle gateway CPU | idle Redis CPU | busy events/s | busy gateway cmds/s | busy resync XREADs in Redis/s | gateway cmds per event | busy KB/s into Redis | Redis bytes out per event | Redis µs per event: XADD / gateway cmds | busy gateway CPU | busy Redis CPU | delivered / appended | gateway RSS MB |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    out.push(`| ${r.topology} | ${r.wakeup} | ${f(r.projects)} | ${f(r.idle.gatewayCmdsPerSec, 1)} | ${f(r.idle.resyncInnerXreadsPerSec)} | ${f(r.idle.bytesInPerSec / 1024, 1)} | ${f(r.idle.gatewayCpuPct, 1)}% | ${f(r.idle.redisCpuPct, 1)}% | ${f(r.busy.eventsPerSec)} | ${f(r.busy.gatewayCmdsPerSec)} | ${f(r.busy.resyncInnerXreadsPerSec)} | ${f(r.busy.gatewayCmdsPerEvent, 2)} | ${f(r.busy.bytesInPerSec / 1024, 1)} | ${f(r.busy.bytesOutPerEvent)} | ${f(r.busy.redisUsecPerEventXadd, 1)} / ${f(r.busy.redisUsecPerEventGateway, 1)} | ${f(r.busy.gatewayCpuPct, 1)}% | ${f(r.busy.redisCpuPct, 1)}% | ${f(r.busy.delivered)} / ${f(r.busy.appended)} | ${f(r.rssMb)} |`);
  }
  out.push('', 'Commands per second by name (idle → busy), per run:', '');
  for (const r of rows) out.push(`- ${r.topology} ${r.wakeup} ${r.projects}: idle ${JSON.stringify(r.idle.byCommand)}; busy ${JSON.stringify(r.busy.byCommand)}`);
  return out.join('\n') + '\n';
}

async function main() {
  const loadBefore = os.loadavg();
  /** @type {any[]} */
  const rows = [];
  for (const topology of /** @type {('standalone'|'cluster')[]} */ (TOPOLOGIES)) {
    const redis = await startTopology(topology);
    try {
      for (const n of PROJECTS) {
        for (const mode of MODES) {
          log(`${topology} ${mode} ${n} projects`);
          const row = await run(topology, redis, mode, n);
          log(`  idle ${f(row.idle.gatewayCmdsPerSec, 1)} cmds/s, cpu ${f(row.idle.gatewayCpuPct, 1)}%; busy ${f(row.busy.gatewayCmdsPerSec)} cmds/s (${f(row.busy.gatewayCmdsPerEvent, 2)}/event), cpu ${f(row.busy.gatewayCpuPct, 1)}%, delivered ${row.busy.delivered}/${row.busy.appended}`);
          rows.push(row);
        }
      }
    } finally {
      await redis.stop();
    }
  }
  const meta = {
    date: new Date().toISOString(),
    conditions: `${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), shared with other engineers' processes (load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} at the end, ${loadBefore.map((x) => x.toFixed(2)).join(' ')} at the start); Redis ${(await new Promise((r) => execFile('redis-server', ['--version'], (_e, o) => r(String(o).trim()))))}; Node ${process.version}; gateway, Redis, producer and clients on the same machine.`,
    idleS: IDLE_S, busyS: BUSY_S, rate: RATE,
  };
  const dir = path.join(BENCH_DIR, 'results');
  fs.writeFileSync(path.join(dir, `${args.name}.json`), JSON.stringify({ meta, rows }, null, 2) + '\n');
  const md = report(rows, meta);
  fs.writeFileSync(path.join(dir, `${args.name}.md`), md);
  console.log(md);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
