// @ts-check
/**
 * What every bench script needs so that nothing it started outlives it: the server processes, load
 * workers and Redis it started are SIGKILLed on exit, on SIGINT/SIGTERM, and when its time guard fires.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BENCH_DIR } from './servers.mjs';

/**
 * @param {{
 *   label: string, guardMs: number,
 *   servers: Iterable<{ procs: import('node:child_process').ChildProcess[] }>,
 *   loads: Iterable<{ workers: import('node:child_process').ChildProcess[] }>,
 *   redis?: () => { pid?: number | undefined } | null,
 * }} o
 * @returns {() => void} hardCleanup, to call on the script's own exit paths too
 */
export function installRunGuard(o) {
  function hardCleanup() {
    for (const s of o.servers) for (const p of s.procs) { try { p.kill('SIGKILL'); } catch { /* gone */ } }
    for (const l of o.loads) for (const w of l.workers) { try { w.kill('SIGKILL'); } catch { /* gone */ } }
    const pid = o.redis?.()?.pid;
    if (pid) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  }
  process.on('exit', hardCleanup);
  process.on('SIGINT', () => { hardCleanup(); process.exit(130); });
  process.on('SIGTERM', () => { hardCleanup(); process.exit(143); });
  setTimeout(() => { console.error(`[${o.label}] global time guard (${o.guardMs / 60000} min) hit: aborting`); hardCleanup(); process.exit(2); }, o.guardMs).unref();
  return hardCleanup;
}

/** Which gateway build is measured: git HEAD (read only) and the dist/main.js build time. */
export function gatewayVersion() {
  let head = 'unknown';
  try { head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: path.resolve(BENCH_DIR, '..'), encoding: 'utf8' }).trim(); } catch { /* no git */ }
  let built = 'not built';
  try { built = fs.statSync(path.resolve(BENCH_DIR, '..', 'dist', 'main.js')).mtime.toISOString(); } catch { /* missing */ }
  return `git HEAD ${head}, dist/main.js built ${built}`;
}
