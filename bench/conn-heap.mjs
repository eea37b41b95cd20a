#!/usr/bin/env node
// @ts-check
/**
 * Where a connection's JS heap goes: the gateway (or bare uWS) with N idle connections, each joined
 * to one of R rooms, heap snapshots taken after full GCs before and after connecting (bench/lib/heap-probe.mjs,
 * HEAP_PROBE_SNAPSHOT_DIR), and the difference per connection by V8 node type and constructor name.
 * Self sizes only (no retained sizes): the rows add up to the JS heap per connection.
 *
 *   npm run build && node bench/conn-heap.mjs [--server gateway|uws] [--n 3000] [--rooms 30]
 *
 * Writes bench/results/conn-heap-<server>.md. Bounded: one server, N connections, a few seconds.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { BENCH_DIR, TMP_DIR, startServer, roomGuid, sleep } from './lib/servers.mjs';
import { LoadGen } from './lib/loadgen.mjs';
import { fmt } from './lib/report.mjs';

const { values: args } = parseArgs({
  options: {
    server: { type: 'string', default: 'gateway' },
    n: { type: 'string', default: '3000' },
    rooms: { type: 'string', default: '30' },
    top: { type: 'string', default: '40' },
    out: { type: 'string' },
  },
});
const kind = /** @type {'gateway'|'uws'} */ (args.server);
const N = Number(args.n);
const ROOMS = Number(args.rooms);
const PROBE = fileURLToPath(new URL('./lib/heap-probe.mjs', import.meta.url));
const log = (/** @type {string} */ m) => console.log(`[conn-heap ${new Date().toISOString().slice(11, 19)}] ${m}`);

/**
 * Self size by kind of every node of a .heapsnapshot file. A kind is "type:constructor" and, to tell
 * one connection's objects apart, what holds the node: "<holder kind>.<edge name>" of its first
 * retainer (e.g. `object:Object <- object:Object.principal`), and for plain objects their first
 * property names (e.g. `{id,principal,codec,…}`).
 * @param {string} file
 */
function heapByKind(file) {
  const snap = JSON.parse(fs.readFileSync(file, 'utf8'));
  const meta = snap.snapshot.meta;
  const f = meta.node_fields, ef = meta.edge_fields;
  const types = meta.node_types[0], edgeTypes = meta.edge_types[0];
  const stride = f.length, estride = ef.length;
  const iType = f.indexOf('type'), iName = f.indexOf('name'), iSize = f.indexOf('self_size'), iEdges = f.indexOf('edge_count');
  const eType = ef.indexOf('type'), eName = ef.indexOf('name_or_index'), eTo = ef.indexOf('to_node');
  const nodes = snap.nodes, edges = snap.edges, strings = snap.strings;
  const count = nodes.length / stride;
  /** @param {number} n node ordinal */
  const kindOf = (n) => {
    const type = types[nodes[n * stride + iType]];
    const named = type === 'object' || type === 'closure' || type === 'native' || type === 'hidden' || type === 'code';
    return named ? `${type}:${String(strings[nodes[n * stride + iName]]).slice(0, 40)}` : type;
  };
  // first retainer of each node (through a non-weak edge), and the property names of each node
  const holder = new Int32Array(count).fill(-1);
  const holderEdge = new Array(count);
  /** @type {string[][]} */
  const props = new Array(count);
  let e = 0;
  for (let n = 0; n < count; n++) {
    const ne = nodes[n * stride + iEdges];
    for (let k = 0; k < ne; k++, e += estride) {
      const et = edgeTypes[edges[e + eType]];
      if (et === 'weak' || et === 'shortcut') continue;
      const to = edges[e + eTo] / stride;
      const name = et === 'element' || et === 'hidden' ? `[${edges[e + eName]}]` : String(strings[edges[e + eName]]);
      if (et === 'property') (props[n] ??= []).push(name);
      if (holder[to] === -1) { holder[to] = n; holderEdge[to] = name; }
    }
  }
  /** @type {Map<string, { bytes: number, count: number }>} */
  const out = new Map();
  for (let n = 0; n < count; n++) {
    let key = kindOf(n);
    if (key === 'object:Object' && props[n]) key += ` {${props[n].filter((x) => x !== '__proto__').slice(0, 5).join(',')}}`;
    const h = holder[n];
    if (h >= 0) {
      let hk = kindOf(h);
      if (hk === 'object:Object' && props[h]) hk += ` {${props[h].filter((x) => x !== '__proto__').slice(0, 3).join(',')}}`;
      key += ` <- ${hk}.${holderEdge[n]}`.replace(/\.\[\d+\]$/, '.[i]');
    }
    const v = out.get(key) ?? { bytes: 0, count: 0 };
    v.bytes += nodes[n * stride + iSize];
    v.count++;
    out.set(key, v);
  }
  return out;
}

/** @param {number} pid @param {string} dir @param {number} have */
async function snapshot(pid, dir, have) {
  process.kill(pid, 'SIGUSR2');
  for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(200)) {
    const files = fs.readdirSync(dir).filter((x) => x.endsWith('.heapsnapshot'));
    // the probe renames the file into place once it is complete
    if (files.length > have) return path.join(dir, files.sort()[files.length - 1]);
  }
  throw new Error('no heap snapshot written');
}

async function main() {
  const dir = path.join(TMP_DIR, `conn-heap-${Date.now()}`);
  fs.mkdirSync(dir, { recursive: true });
  const srv = await startServer(kind, { extraNodeArgs: ['--import', PROBE], env: { HEAP_PROBE_SNAPSHOT_DIR: dir } });
  const rooms = Array.from({ length: ROOMS }, (_, i) => roomGuid(1 + i));
  const lg = new LoadGen({ host: '127.0.0.1', port: srv.port, path: srv.wsPath, mode: srv.mode, jwtSecret: srv.jwtSecret, rooms, count: N, rate: 4000, workers: 1, maxPending: 200 });
  try {
    await lg.start();
    await sleep(500);
    const before = await snapshot(srv.pids[0], dir, 0);
    const c = await lg.connect();
    await sleep(1000);
    const after = await snapshot(srv.pids[0], dir, 1);
    log(`${kind}: ${c.joined}/${N} joined; diffing snapshots`);
    const a = heapByKind(before), b = heapByKind(after);
    const rows = [...new Set([...a.keys(), ...b.keys()])].map((k) => ({
      k, bytes: ((b.get(k)?.bytes ?? 0) - (a.get(k)?.bytes ?? 0)) / c.joined, count: ((b.get(k)?.count ?? 0) - (a.get(k)?.count ?? 0)) / c.joined,
    })).sort((x, y) => y.bytes - x.bytes);
    const total = rows.reduce((s, r) => s + r.bytes, 0);
    const L = [`# JS heap per idle connection by kind: ${kind}`, '',
      `${c.joined} connections, each joined to one of ${ROOMS} rooms; heap snapshots after full GCs before and after (self sizes, bench/conn-heap.mjs). Total: ${fmt(total, 0)} B per connection.`, '',
      '| V8 node type:name (<- first retainer.edge) | bytes per connection | objects per connection |', '|---|---|---|',
      ...rows.filter((r) => Math.abs(r.bytes) >= 1).slice(0, Number(args.top)).map((r) => `| ${r.k} | ${fmt(r.bytes, 1)} | ${fmt(r.count, 2)} |`), ''];
    const out = path.join(BENCH_DIR, 'results', `${args.out ?? `conn-heap-${kind}`}.md`);
    fs.writeFileSync(out, L.join('\n'));
    console.log(L.join('\n'));
    log(`wrote ${path.relative(process.cwd(), out)}`);
  } finally {
    await lg.close();
    await srv.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(e); process.exitCode = 1; });
