// @ts-check
/** Summarize a V8 .cpuprofile: top self-time functions (name, url:line, %). */
import fs from 'node:fs';
import path from 'node:path';

/**
 * @param {string} file
 * @param {number} [top]
 * @param {[number, number]} [windowUs] only samples taken in this CLOCK_MONOTONIC window (µs; V8 profile
 *   timestamps use the same clock as process.hrtime on Linux); the whole profile if it does not overlap
 * @returns {{ totalMs: number, idlePct: number, gcPct: number, windowed: boolean, items: {name: string, where: string, selfMs: number, pct: number, pctBusy: number}[] }}
 */
export function summarizeCpuProfile(file, top = 12, windowUs) {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8'));
  /** @type {Map<number, any>} */
  const byId = new Map();
  for (const n of prof.nodes) byId.set(n.id, n);
  /** @type {Map<number, number>} */
  const selfUs = new Map();
  const samples = prof.samples ?? [];
  const deltas = prof.timeDeltas ?? [];
  let total = 0;
  /** @type {number[]} */
  const ts = new Array(samples.length);
  let t = prof.startTime;
  for (let i = 0; i < samples.length; i++) { t += deltas[i] ?? 0; ts[i] = t; }
  let windowed = false;
  let lo = 0, hi = samples.length;
  if (windowUs && samples.length && ts[0] < windowUs[1] && ts[samples.length - 1] > windowUs[0]) {
    windowed = true;
    lo = ts.findIndex((x) => x >= windowUs[0]);
    const h = ts.findIndex((x) => x > windowUs[1]);
    hi = h === -1 ? samples.length : h;
  }
  for (let i = lo; i < hi; i++) {
    // timeDeltas[i] is the time before sample i; attribute the NEXT delta to sample i
    const d = i + 1 < deltas.length ? deltas[i + 1] : 0;
    const dd = d > 0 ? d : 0;
    selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + dd);
    total += dd;
  }
  /** @type {Map<string, {name: string, where: string, us: number}>} */
  const agg = new Map();
  let idle = 0, gc = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    const cf = n.callFrame;
    const name = cf.functionName || '(anonymous)';
    if (name === '(idle)') { idle += us; continue; }
    if (name === '(garbage collector)') gc += us;
    const url = cf.url ? shortUrl(cf.url) : '';
    const where = url ? `${url}:${cf.lineNumber + 1}` : '(native)';
    const key = `${name}|${where}`;
    const a = agg.get(key) ?? { name, where, us: 0 };
    a.us += us;
    agg.set(key, a);
  }
  const busy = total - idle;
  const items = [...agg.values()].sort((a, b) => b.us - a.us).slice(0, top).map((a) => ({
    name: a.name, where: a.where, selfMs: a.us / 1000, pct: total ? (100 * a.us) / total : 0, pctBusy: busy ? (100 * a.us) / busy : 0,
  }));
  return { windowed, totalMs: total / 1000, idlePct: total ? (100 * idle) / total : 0, gcPct: total ? (100 * gc) / total : 0, items };
}

/** @param {string} url */
function shortUrl(url) {
  const u = url.replace(/^file:\/\//, '');
  const i = u.indexOf('/node_modules/');
  if (i >= 0) return u.slice(i + 1);
  const j = u.indexOf('/dist/');
  if (j >= 0) return u.slice(j + 1);
  return u.startsWith('node:') ? u : path.basename(u);
}
