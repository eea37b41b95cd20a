// @ts-check
/**
 * Redis Cluster idle cost (issue 20): the commands one gateway process makes a 3-master Cluster run
 * while it watches N projects and nothing is appended, counting the commands run inside scripts
 * (INFO commandstats counts a script's redis.call()s as calls of their own command).
 *
 *   npm run build && node bench/cluster-idle.mjs [--projects 1000,10000] [--idle-s 60] [--name cluster-idle]
 *
 * For each N: start the gateway (`node dist/main.js`, REDIS_WAKEUP=auto), join N projects over
 * WebSockets (10 connections, up to 1,000 projects each), settle 20 s (past the first 15 s resync,
 * which sweeps every master once since it has no marker to compare with yet), then sum INFO commandstats
 * deltas over every master for idle-s seconds (default 60 s: four 15 s resync periods). The bench's
 * own INFO calls are taken out (one per master per window: the first snapshot's call is counted by
 * the second); the gateway's own INFO calls stay in. Writes bench/results/<name>.md and .json.
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { joinAll } from './lib/join-all.mjs';
import { BENCH_DIR, freePort, roomGuid, sleep, startServer, stopProc, TMP_DIR } from './lib/servers.mjs';

const { values: args } = parseArgs({
  options: {
    projects: { type: 'string', default: '1000,10000' },
    'idle-s': { type: 'string', default: '60' },
    name: { type: 'string', default: 'cluster-idle' },
  },
});
const PROJECTS = String(args.projects).split(',').map(Number);
const IDLE_S = Number(args['idle-s']);
const ROOMS_PER_SOCKET = 1000;

/** @param {string} s */
function log(s) { console.log(`[cluster-idle ${new Date().toISOString().slice(11, 19)}] ${s}`); }

/** @param {number} port @param {string[]} a @returns {Promise<string>} */
function cli(port, ...a) {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...a], { maxBuffer: 64 * 1024 * 1024 }, (err, out) => (err ? reject(err) : resolve(out.trim())));
  });
}

/** A private cluster-mode redis-server (no persistence). */
async function startNode() {
  const port = await freePort();
  const dir = path.join(TMP_DIR, `cluster-idle-${port}`);
  fs.mkdirSync(dir, { recursive: true });
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--loglevel', 'warning',
    '--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, 'nodes.conf'), '--cluster-port', String(await freePort()), '--cluster-node-timeout', '5000'], { stdio: 'ignore' });
  for (let i = 0; i < 100 && (await cli(port, 'PING').catch(() => '')) !== 'PONG'; i++) await sleep(100);
  return { port, stop: async () => { await stopProc(child); fs.rmSync(dir, { recursive: true, force: true }); } };
}

async function startCluster() {
  const nodes = await Promise.all([0, 1, 2].map(() => startNode()));
  const ports = nodes.map((s) => s.port);
  await new Promise((resolve, reject) => execFile('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], (err) => (err ? reject(err) : resolve(null))));
  for (let i = 0; i < 100; i++) {
    const infos = await Promise.all(ports.map((p) => cli(p, 'CLUSTER', 'INFO')));
    if (infos.every((t) => t.includes('cluster_state:ok') && t.includes('cluster_known_nodes:3'))) break;
    await sleep(100);
  }
  return { ports, stop: async () => { await Promise.all(nodes.map((s) => s.stop())); } };
}

/** Calls per command summed over the masters. @param {number[]} ports */
async function commandCalls(ports) {
  /** @type {Map<string, number>} */
  const total = new Map();
  for (const port of ports) {
    for (const line of (await cli(port, 'INFO', 'commandstats')).split(/\r?\n/)) {
      const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
      if (m) total.set(m[1], (total.get(m[1]) ?? 0) + Number(m[2]));
    }
  }
  return total;
}

/** @param {{ ports: number[] }} cluster @param {number} n */
async function run(cluster, n) {
  await Promise.all(cluster.ports.map((p) => cli(p, 'FLUSHALL')));
  const srv = await startServer('gateway', {
    label: 'gateway-cluster-idle',
    env: { REDIS_CLUSTER_NODES: cluster.ports.map((p) => `127.0.0.1:${p}`).join(','), REDIS_WAKEUP: 'auto', MAX_ROOMS_PER_CONNECTION: String(ROOMS_PER_SOCKET), RATE_LIMIT_PER_S: '100000', RATE_LIMIT_BURST: '100000' },
  });
  const { close } = await joinAll(srv.port, Array.from({ length: n }, (_, i) => roomGuid(i)), ROOMS_PER_SOCKET);
  await sleep(20_000);
  const t0 = performance.now();
  const c0 = await commandCalls(cluster.ports);
  await sleep(IDLE_S * 1000);
  const c1 = await commandCalls(cluster.ports);
  const sec = (performance.now() - t0) / 1000;
  close();
  await srv.stop();
  /** @type {Record<string, number>} */
  const byCommand = {};
  for (const [k, v] of c1) {
    const d = v - (c0.get(k) ?? 0) - (k === 'info' ? cluster.ports.length : 0);
    if (d > 0) byCommand[k] = Math.round((d / sec) * 100) / 100;
  }
  const total = Object.values(byCommand).reduce((a, b) => a + b, 0);
  log(`${n} projects: ${total.toFixed(1)} commands/s ${JSON.stringify(byCommand)}`);
  return { projects: n, seconds: Math.round(sec), commandsPerSec: total, byCommand };
}

const cluster = await startCluster();
const rows = [];
try {
  for (const n of PROJECTS) rows.push(await run(cluster, n));
} finally {
  await cluster.stop();
}
const out = [
  `# Redis Cluster idle cost (${args.name}, ${new Date().toISOString()})`,
  '',
  `3 masters, one gateway (WORKERS=1, REDIS_WAKEUP=auto), ${IDLE_S} s idle window from 20 s after joining. Commands are INFO commandstats`,
  'deltas summed over every master, including commands run inside scripts; the bench\'s own INFO calls are left out.',
  '',
  '| watched projects | window s | commands/s | by command (/s) |',
  '|---|---|---|---|',
  ...rows.map((r) => `| ${r.projects.toLocaleString('en-US')} | ${r.seconds} | ${r.commandsPerSec.toFixed(1)} | ${Object.entries(r.byCommand).map(([k, v]) => `${k.replace('|', '\\|')} ${v}`).join(', ')} |`),
  '',
];
fs.mkdirSync(path.join(BENCH_DIR, 'results'), { recursive: true });
fs.writeFileSync(path.join(BENCH_DIR, 'results', `${args.name}.md`), out.join('\n'));
fs.writeFileSync(path.join(BENCH_DIR, 'results', `${args.name}.json`), JSON.stringify(rows, null, 2));
console.log(out.join('\n'));
