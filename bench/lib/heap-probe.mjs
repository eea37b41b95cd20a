// @ts-check
/**
 * Bench instrumentation preloaded into a server with `node --import <this file>` (never in
 * production). On SIGUSR2 it appends one JSON line to a file:
 *  - HEAP_PROBE_OUT set: two full garbage collections, then the process's memory figures, so the
 *    bench measures retained heap without garbage not yet collected; the V8 heap spaces are recorded
 *    before and after those GCs (`pre` and `spaces`). gc() is exposed here (instead of
 *    --expose-gc on the command line) so the server's own flags stay exactly as `npm start` sets them.
 *  - HEAP_PROBE_SNAPSHOT_DIR set: two full garbage collections, then a heap snapshot written there
 *    (bench/conn-heap.mjs compares two of them), renamed into place once complete.
 *  - ELD_PROBE_OUT set: the event-loop delay histogram (perf_hooks.monitorEventLoopDelay, 1 ms
 *    resolution) since the previous signal, in ms, then resets it. Node records each timer interval,
 *    so values include the 1 ms resolution itself (an idle loop reads ~1.0–1.1 ms).
 */
import fs from 'node:fs';
import v8 from 'node:v8';
import vm from 'node:vm';
import { monitorEventLoopDelay } from 'node:perf_hooks';

const heapOut = process.env.HEAP_PROBE_OUT;
const eldOut = process.env.ELD_PROBE_OUT;
const snapshotDir = process.env.HEAP_PROBE_SNAPSHOT_DIR;

if (heapOut) {
  v8.setFlagsFromString('--expose-gc');
  const gc = /** @type {() => void} */ (vm.runInNewContext('gc'));
  // Per V8 heap space: bytes committed (size), resident (physical) and used, read before and after the
  // forced GCs, so what the GCs gave back can be told apart (young-generation growth, old-space garbage).
  const spaces = () => Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, { size: s.space_size, physical: s.physical_space_size, used: s.space_used_size }]));
  process.on('SIGUSR2', () => {
    const pre = { rss: process.memoryUsage.rss(), spaces: spaces() };
    gc();
    gc();
    const m = process.memoryUsage();
    fs.appendFileSync(heapOut, JSON.stringify({ t: Date.now(), heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, rss: m.rss, spaces: spaces(), pre }) + '\n');
  });
}

if (snapshotDir) {
  v8.setFlagsFromString('--expose-gc');
  const gc = /** @type {() => void} */ (vm.runInNewContext('gc'));
  let seq = 0;
  process.on('SIGUSR2', () => {
    gc();
    gc();
    const name = `${String(++seq).padStart(3, '0')}.heapsnapshot`;
    const tmp = v8.writeHeapSnapshot(`${snapshotDir}/${name}.partial`);
    fs.renameSync(tmp, `${snapshotDir}/${name}`);
  });
}

if (eldOut) {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  process.on('SIGUSR2', () => {
    const ms = (/** @type {number} */ ns) => ns / 1e6;
    fs.appendFileSync(eldOut, JSON.stringify({ t: Date.now(), count: h.count, p50: ms(h.percentile(50)), p90: ms(h.percentile(90)), p99: ms(h.percentile(99)), p999: ms(h.percentile(99.9)), max: ms(h.max), mean: ms(h.mean) }) + '\n');
    h.reset();
  });
}
