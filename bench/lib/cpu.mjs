// Pinning processes to cores and reading the machine's CPU time, shared by the benches that pin
// the server and the load generator to separate cores (issue11.mjs, compression.mjs).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';

/**
 * Pins every thread of each process (taskset -a) to `cpu`. Threads created later inherit the
 * affinity of their creator, so V8's GC helpers and libuv's pool stay on the same core.
 * @param {number[]} pids @param {string} cpu
 */
export function pin(pids, cpu) {
  for (const pid of pids) execFileSync('taskset', ['-a', '-p', '-c', cpu, String(pid)], { stdio: 'ignore' });
}

/** Per-core and total jiffies from /proc/stat. */
export function cpuTimes() {
  /** @type {Record<string, {idle: number, total: number}>} */
  const out = {};
  for (const line of fs.readFileSync('/proc/stat', 'utf8').split('\n')) {
    if (!line.startsWith('cpu')) continue;
    const f = line.trim().split(/\s+/);
    const v = f.slice(1).map(Number);
    out[f[0]] = { idle: v[3] + (v[4] ?? 0), total: v.reduce((a, b) => a + b, 0) };
  }
  return out;
}
/** Busy % (100 = one core) per key between two cpuTimes() reads. @param {ReturnType<typeof cpuTimes>} a @param {ReturnType<typeof cpuTimes>} b */
export function busy(a, b) {
  /** @type {Record<string, number>} */
  const out = {};
  for (const k of Object.keys(b)) {
    const dt = b[k].total - (a[k]?.total ?? 0);
    const pct = dt > 0 ? 100 * (1 - (b[k].idle - a[k].idle) / dt) : 0;
    out[k] = k === 'cpu' ? pct * os.cpus().length : pct;
  }
  return out;
}

