// @ts-check
/**
 * Coordinator for the forked load-generator workers (bench/lib/ws-worker.mjs).
 * Spreads connections over several processes (each process may hold < 20,000 fds) and over
 * several loopback source addresses (127.0.0.x) so ephemeral ports never run out.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import hdr from 'hdr-histogram-js';

const WORKER = fileURLToPath(new URL('./ws-worker.mjs', import.meta.url));
/** Max sockets per worker process (hard fd limit 20,000 per process). */
export const MAX_PER_WORKER = 15_000;
/** Max sockets per source address towards one ip:port (ephemeral range ~28k). */
export const MAX_PER_SOURCE = 20_000;

/**
 * Every worker of every LoadGen gets a fresh loopback source address: the client side closes first,
 * so the previous run's ports on an address sit in TIME_WAIT for 60 s and would exhaust the ephemeral
 * range (EADDRINUSE) if the next run reused that address.
 */
let sourceSeq = Math.floor(Math.random() * 40_000); // random start: back-to-back runner invocations do not collide either
function nextSourceAddress() {
  const k = sourceSeq++;
  return `127.${10 + (Math.floor(k / 200) % 200)}.0.${10 + (k % 200)}`;
}

/**
 * @typedef {{
 *   host: string, port: number, path: string, mode: import('./servers.mjs').ClientMode, rooms: string[], count: number,
 *   workers?: number, rate?: number, latency?: boolean, joinKind?: 'gateway'|'none',
 *   joinTimeoutMs?: number, maxPending?: number, jwtSecret?: string,
 *   pauseAfterJoin?: boolean, trackIds?: number, indexOffset?: number, deflate?: boolean
 * }} LoadOpts
 * deflate: every socket offers permessage-deflate and inflates what comes compressed (ws-worker.mjs).
 * pauseAfterJoin: never-reading clients (each socket stops reading after its join ack).
 * trackIds: per worker, how many sockets record the event ids they receive (see drainTracked).
 * indexOffset: first client index (token sub `u<index>`), so two LoadGens against one server are distinct users.
 */

export class LoadGen {
  /** @param {LoadOpts} opts */
  constructor(opts) {
    this.opts = opts;
    const minWorkers = Math.max(1, Math.ceil(opts.count / MAX_PER_WORKER));
    this.nWorkers = Math.max(minWorkers, opts.workers ?? 2);
    /** @type {import('node:child_process').ChildProcess[]} */
    this.workers = [];
    this.nextId = 1;
    /** @type {Map<number, (m: any) => void>} */
    this.waiters = new Map();
    /** @type {number[]} latest streamed cumulative event counts per worker */
    this.tickEvents = [];
    /** @type {number[]} */
    this.tickFrames = [];
    /** @type {(() => void) | null} */
    this.onTick = null;
  }

  async start() {
    const ready = [];
    for (let i = 0; i < this.nWorkers; i++) {
      const w = fork(WORKER, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
      this.workers.push(w);
      this.tickEvents.push(0);
      this.tickFrames.push(0);
      const idx = i;
      ready.push(new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('worker start timeout')), 10_000);
        w.on('message', (/** @type {any} */ m) => {
          if (m.type === 'ready') { clearTimeout(t); resolve(undefined); return; }
          if (m.type === 'tick') {
            this.tickEvents[idx] = m.events; this.tickFrames[idx] = m.frames;
            if (this.onTick) this.onTick();
            return;
          }
          const key = m.id ?? -1;
          const fn = this.waiters.get(key * 1000 + idx);
          if (fn) { this.waiters.delete(key * 1000 + idx); fn(m); }
        });
        w.on('exit', (code) => { if (code && code !== 0) console.error(`[loadgen] worker ${idx} exited ${code}`); });
      }));
    }
    await Promise.all(ready);
  }

  /**
   * Send a command to every worker and wait for one reply each.
   * @param {any} msg @param {number} [timeoutMs]
   * @returns {Promise<any[]>}
   */
  all(msg, timeoutMs = 15_000) {
    const id = this.nextId++;
    return Promise.all(this.workers.map((w, idx) => new Promise((resolve, reject) => {
      const t = setTimeout(() => { this.waiters.delete(id * 1000 + idx); reject(new Error(`worker ${idx} timeout on ${msg.cmd}`)); }, timeoutMs);
      this.waiters.set(id * 1000 + idx, (m) => { clearTimeout(t); resolve(m); });
      w.send({ ...msg, id });
    })));
  }

  /**
   * Open and join all connections (paced). Resolves when every worker has settled.
   * @returns {Promise<{phases?: any[], joined: number, failed: number, elapsedMs: number, rate: number, errors: Record<string, number>, closeCodes: Record<string, number>, samples: string[]}>}
   */
  async connect() {
    const o = this.opts;
    const n = this.nWorkers;
    const per = Math.floor(o.count / n);
    const totalRate = o.rate ?? 3000;
    // generous: some servers (Socket.IO) accept only a few hundred connections/s on a busy machine
    const timeoutMs = Math.max(90_000, (o.count / 100) * 1000);
    const id = this.nextId++;
    const t0 = Date.now();
    const replies = await Promise.all(this.workers.map((w, idx) => new Promise((resolve, reject) => {
      const count = idx === n - 1 ? o.count - per * (n - 1) : per;
      const offset = (o.indexOffset ?? 0) + per * idx;
      // one fresh source address per worker (a worker holds <= MAX_PER_WORKER < MAX_PER_SOURCE sockets)
      const localAddress = nextSourceAddress();
      const t = setTimeout(() => { this.waiters.delete(-1 * 1000 + idx); resolve({ timedOut: true }); }, timeoutMs);
      this.waiters.set(-1 * 1000 + idx, (m) => { clearTimeout(t); resolve(m); });
      w.send({
        cmd: 'connect', host: o.host, port: o.port, path: o.path, mode: o.mode, rooms: o.rooms, count, offset,
        localAddress, rate: totalRate / n, maxPending: Math.max(50, o.maxPending ?? 256), latency: !!o.latency,
        joinTimeoutMs: o.joinTimeoutMs ?? 20_000, joinKind: o.joinKind ?? 'gateway', jwtSecret: o.jwtSecret, id,
        pauseAfterJoin: !!o.pauseAfterJoin, trackIds: o.trackIds ?? 0, deflate: !!o.deflate,
      });
    })));
    /** @type {Record<string, number>} */ const errors = {};
    /** @type {Record<string, number>} */ const closeCodes = {};
    /** @type {string[]} */ const samples = [];
    let joined = 0, failed = 0, elapsedMs = 0;
    if (/** @type {any[]} */ (replies).some((r) => r.timedOut)) {
      // partial result: what is connected now, after the connect phase ran out of time
      const s = await this.stats();
      errors[`timeout:connect-phase-${timeoutMs / 1000}s`] = 1;
      for (const [k, v] of Object.entries(s.errors)) errors[k] = (errors[k] ?? 0) + v;
      return { joined: s.joined, failed: o.count - s.joined, elapsedMs: Date.now() - t0, rate: s.joined / ((Date.now() - t0) / 1000), errors, closeCodes: s.closeCodes, samples: s.samples };
    }
    for (const r of /** @type {any[]} */ (replies)) {
      joined += r.joined; failed += r.failed; elapsedMs = Math.max(elapsedMs, r.elapsedMs);
      for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + /** @type {number} */ (v);
      for (const [k, v] of Object.entries(r.closeCodes)) closeCodes[k] = (closeCodes[k] ?? 0) + /** @type {number} */ (v);
      samples.push(...r.samples);
    }
    const phases = /** @type {any[]} */ (replies).map((r) => r.phases);
    return { phases, joined, failed, elapsedMs, rate: elapsedMs > 0 ? joined / (elapsedMs / 1000) : 0, errors, closeCodes, samples: samples.slice(0, 8) };
  }

  /** Aggregate counters. */
  async stats() {
    const rs = await this.all({ cmd: 'stats' });
    /** @type {{connected: number, joined: number, failed: number, closedByServer: number, frames: number, bytes: number, events: number, eventsAll: number, pings: number, joinErrors: number, wire: number, negotiated: number, compressedFrames: number, errors: Record<string, number>, closeCodes: Record<string, number>, samples: string[]}} */
    const agg = { connected: 0, joined: 0, failed: 0, closedByServer: 0, frames: 0, bytes: 0, events: 0, eventsAll: 0, pings: 0, joinErrors: 0, wire: 0, negotiated: 0, compressedFrames: 0, errors: {}, closeCodes: {}, samples: [] };
    for (const r of rs) {
      const s = r.stats;
      agg.connected += s.connected; agg.joined += s.joined; agg.failed += s.failed; agg.closedByServer += s.closedByServer;
      agg.wire += s.wire ?? 0; agg.negotiated += s.negotiated ?? 0; agg.compressedFrames += s.compressedFrames ?? 0;
      agg.frames += s.frames; agg.bytes += s.bytes; agg.events += s.events; agg.eventsAll += s.eventsAll; agg.pings += s.pings; agg.joinErrors += s.joinErrors;
      for (const [k, v] of Object.entries(s.errors)) agg.errors[k] = (agg.errors[k] ?? 0) + /** @type {number} */ (v);
      for (const [k, v] of Object.entries(s.closeCodes)) agg.closeCodes[k] = (agg.closeCodes[k] ?? 0) + /** @type {number} */ (v);
      agg.samples.push(...s.samples);
    }
    agg.samples = agg.samples.slice(0, 8);
    return agg;
  }

  /**
   * After the producer stopped: waits until the clients have counted `expected` events over the whole run
   * (`eventsAll`, not cleared by reset) or the count stops moving for `quietMs`; bounded by `maxMs`.
   * @param {number} expected @param {{ quietMs?: number, maxMs?: number }} [o]
   * @returns {Promise<{ delivered: number, expected: number, complete: boolean }>}
   */
  async drain(expected, o = {}) {
    const quietMs = o.quietMs ?? 1500, until = Date.now() + (o.maxMs ?? 10_000);
    let last = -1, lastChange = Date.now(), delivered = 0;
    while (true) {
      delivered = (await this.stats()).eventsAll;
      if (delivered >= expected) break;
      if (delivered !== last) { last = delivered; lastChange = Date.now(); }
      if (Date.now() - lastChange > quietMs || Date.now() > until) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    return { delivered, expected, complete: delivered === expected };
  }

  async reset() { await this.all({ cmd: 'reset' }); this.tickEvents.fill(0); this.tickFrames.fill(0); }

  /** @param {boolean} on */
  setLatency(on) { for (const w of this.workers) w.send({ cmd: 'latency', on }); }

  /** @param {number} intervalMs 0 stops */
  stream(intervalMs) { for (const w of this.workers) w.send({ cmd: 'stream', intervalMs }); }

  /** Sum of the latest streamed event counters. */
  streamedEvents() { let s = 0; for (const v of this.tickEvents) s += v; return s; }

  /** Merged latency histogram (µs). */
  async histogram() {
    const rs = await this.all({ cmd: 'hist' });
    const merged = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
    for (const r of rs) {
      if (!r.count) continue;
      const h = hdr.decodeFromCompressedBase64(r.hist);
      merged.add(h);
    }
    return merged;
  }

  /**
   * The tracked sockets (LoadOpts.trackIds) read again until the server's cut reaches them or they go
   * idle for `idleMs`; returns every tracked socket's received ids (see ws-worker.mjs TrackedReport).
   * @param {{ idleMs?: number, maxWaitMs?: number }} [o]
   * @returns {Promise<import('./ws-worker.mjs').TrackedReport[]>}
   */
  async drainTracked(o = {}) {
    const maxWaitMs = o.maxWaitMs ?? 30_000;
    const rs = await this.all({ cmd: 'drainTracked', idleMs: o.idleMs ?? 2000, maxWaitMs }, maxWaitMs + 15_000);
    return rs.flatMap((r) => r.conns);
  }

  async close() {
    try { await this.all({ cmd: 'close' }, 10_000); } catch { /* fallthrough */ }
    for (const w of this.workers) { if (w.exitCode === null) { try { w.kill('SIGKILL'); } catch { /* gone */ } } }
    this.workers = [];
  }
}
