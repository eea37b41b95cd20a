#!/usr/bin/env node
// @ts-check
/**
 * What a Prometheus scrape costs the gateway at N idle connections (each joined to one of 100 rooms):
 * the main thread's CPU per GET /metrics (every socket waits while it runs) and the answer's time, with
 * the server pinned to CPU 1 and the clients to CPU 0. `--alt <path/to/dist/main.js>` runs another build
 * of the gateway in the same way, interleaved, for a before/after.
 *
 *   npm run build && node bench/metrics-scrape.mjs [--n 19000] [--scrapes 15] [--rounds 2] [--alt ../old/dist/main.js]
 *
 * Writes bench/results/<name>.md (`--name`, default metrics-scrape). Bounded: N connections per round.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { BENCH_DIR, startServer, roomGuid, sleep } from './lib/servers.mjs';
import { LoadGen } from './lib/loadgen.mjs';
import { pin } from './lib/cpu.mjs';
import { fmt } from './lib/report.mjs';

const { values: args } = parseArgs({
  options: {
    n: { type: 'string', default: '19000' },
    scrapes: { type: 'string', default: '15' },
    rounds: { type: 'string', default: '2' },
    alt: { type: 'string' },
    name: { type: 'string', default: 'metrics-scrape' },
  },
});
const N = Number(args.n);
const SCRAPES = Number(args.scrapes);
const log = (/** @type {string} */ m) => console.log(`[metrics-scrape ${new Date().toISOString().slice(11, 19)}] ${m}`);
const TICKS_PER_MS = 0.1; // /proc/<pid>/task/*/stat counts CPU in 10 ms ticks

/** CPU ticks of one thread (the main thread's tid is the pid). @param {number} pid @param {number} tid */
function threadTicks(pid, tid) {
  const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

/** @param {string} label @param {string | undefined} script */
async function round(label, script) {
  const srv = await startServer('gateway', { script });
  pin(srv.pids, '1');
  const lg = new LoadGen({ host: '127.0.0.1', port: srv.port, path: srv.wsPath, mode: srv.mode, jwtSecret: srv.jwtSecret, rooms: Array.from({ length: 100 }, (_, i) => roomGuid(i)), count: N, rate: 4000, workers: 2, maxPending: 200 });
  try {
    await lg.start();
    pin(lg.workers.map((w) => /** @type {number} */ (w.pid)), '0');
    const c = await lg.connect();
    await sleep(2000);
    // What the same window costs without scrapes (heartbeat sweep, budget check), subtracted below.
    const pid = srv.pids[0];
    const windowMs = SCRAPES * 200;
    const idle0 = threadTicks(pid, pid);
    await sleep(windowMs);
    const idleTicks = threadTicks(pid, pid) - idle0;
    /** @type {number[]} */
    const times = [];
    const t0 = threadTicks(pid, pid);
    const started = performance.now();
    for (let i = 0; i < SCRAPES; i++) {
      const t = performance.now();
      const res = await fetch(`http://127.0.0.1:${srv.port}/metrics`);
      await res.text();
      times.push(performance.now() - t);
      await sleep(Math.max(0, (i + 1) * 200 - (performance.now() - started)));
    }
    const busyTicks = threadTicks(pid, pid) - t0;
    times.sort((a, b) => a - b);
    const row = { label, joined: c.joined, mainMsPerScrape: (busyTicks - idleTicks) / TICKS_PER_MS / SCRAPES, answerMedianMs: times[Math.floor(times.length / 2)], answerMaxMs: times[times.length - 1] };
    log(`${label}: ${row.joined} connections, main thread ${fmt(row.mainMsPerScrape, 1)} ms per scrape, answer median ${fmt(row.answerMedianMs, 1)} ms (max ${fmt(row.answerMaxMs, 1)})`);
    return row;
  } finally {
    await lg.close();
    await srv.stop();
  }
}

const rows = [];
for (let r = 0; r < Number(args.rounds); r++) {
  rows.push(await round('gateway', undefined));
  if (args.alt) rows.push(await round(`gateway (${args.alt})`, path.resolve(args.alt)));
}
const out = path.join(BENCH_DIR, 'results', `${args.name}.md`);
fs.writeFileSync(out, [
  `# /metrics scrape cost at ${N} idle connections`, '',
  `Run ${new Date().toISOString()}, ${SCRAPES} scrapes per round 200 ms apart, server pinned to CPU 1, clients to CPU 0. Main thread ms per scrape = the main thread's CPU over the scrapes less the same window without scrapes, ÷ scrapes (10 ms ticks: ±${fmt(10 / SCRAPES, 1)} ms).`, '',
  '| server | connections | main thread ms / scrape | answer median ms | answer max ms |', '|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.label} | ${r.joined} | ${fmt(r.mainMsPerScrape, 1)} | ${fmt(r.answerMedianMs, 1)} | ${fmt(r.answerMaxMs, 1)} |`), '',
].join('\n'));
log(`wrote ${path.relative(process.cwd(), out)}`);
process.exit(0);
