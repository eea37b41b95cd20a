// @ts-check
/**
 * HTTP producer used for every server (gateway and baselines get the identical request stream).
 * - `runWindow`: closed loop, "as fast as the server delivers": keeps at most `window` expected
 *   deliveries outstanding (published events x members, minus events counted by the clients).
 * - `runRate`: open loop at a fixed event rate (single-event requests), for latency.
 * Every event carries `data.t` = send time in µs of CLOCK_MONOTONIC (same clock in all processes).
 *
 * Two publish APIs (`api`, from the RunningServer): the gateway's `POST /v1/projects/:guid/events`
 * (every server but Soketi; 202 = accepted), and Pusher's signed HTTP API for Soketi: `POST
 * /apps/<id>/events` with `{"name","channel","data"}` (`data` a JSON string, as Pusher's libraries
 * send it) or `/apps/<id>/batch_events` with `{"batch":[…]}` for more than one event, signed with
 * `auth_key`, `auth_timestamp`, `auth_version=1.0`, `body_md5` and `auth_signature` = HMAC-SHA256 hex
 * of "POST\n<path>\n<those parameters sorted>". Soketi answers its errors with 200 and a body
 * `{"error":…}` (uWS sends the status line with the first header, and its CORS headers go first), so a
 * Pusher request counts as accepted only with the body `{"ok":true}`.
 * Soketi closes the connection after every answer; `newConnection` gives any server the same: a new
 * TCP connection per request (`Connection: close`, no keep-alive agent).
 */
import http from 'node:http';
import crypto from 'node:crypto';
import hdr from 'hdr-histogram-js';
import { PRODUCER_TOKEN } from './servers.mjs';

/** @returns {number} */
export function nowUs() { const t = process.hrtime(); return t[0] * 1e6 + Math.floor(t[1] / 1e3); }

export class Producer {
  /**
   * @param {{ port: number, rooms: string[], concurrency?: number, xaddRedisUrl?: string, redisPrefix?: string, dataBytes?: number, api?: import('./servers.mjs').PublishApi, newConnection?: boolean, dataFields?: () => string }} o
   *   xaddRedisUrl: publish with XADD straight into the gateway's Redis streams instead of HTTP
   *   dataBytes: pad each event's `data` JSON to about this many bytes (a `pad` string field); default: no pad (~30 B)
   *   api: which HTTP API (default the gateway's); newConnection: one TCP connection per request (always for Pusher: Soketi closes it)
   *   dataFields: made anew for each event (gateway API only), appended after "n" instead of the pad: `,"k":…` (bench/compression.mjs: data that compresses like real data, not a run of x)
   */
  constructor(o) {
    /** @type {import('./servers.mjs').PublishApi} */
    this.api = o.api ?? { api: 'gateway' };
    this.newConnection = !!o.newConnection || this.api.api === 'pusher';
    // `{"t":<16 digits>,"n":<~6 digits>,"pad":"…"}` is ~42 bytes without the pad itself
    this.padField = o.dataBytes && o.dataBytes > 42 ? `,"pad":"${'x'.repeat(o.dataBytes - 42)}"` : '';
    this.dataFields = o.dataFields ?? (() => this.padField);
    /** @type {any} */
    this.redis = null;
    this.redisPrefix = o.redisPrefix ?? 'autocode';
    this.xaddRedisUrl = o.xaddRedisUrl;
    this.port = o.port;
    this.rooms = o.rooms;
    this.agent = new http.Agent({ keepAlive: !this.newConnection, maxSockets: o.concurrency ?? 8 });
    this.concurrency = o.concurrency ?? 8;
    this.sentEvents = 0;
    this.requests = 0;
    /** @type {Record<string, number>} */
    this.statuses = {};
    /** @type {string[]} */
    this.samples = [];
    this.errors = 0;
    this.seq = 0;
    /** publish acknowledgement latency (request sent -> 202 / XADD reply), µs */
    this.ackHist = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
  }

  /**
   * @param {string} guid @param {number} n events in this request (n === 1: single body)
   * @returns {Promise<void>}
   */
  post(guid, n) {
    if (this.xaddRedisUrl) return this.xadd(guid);
    if (this.api.api === 'pusher') return this.postPusher(guid, n, this.api);
    let body;
    if (n === 1) {
      body = `{"type":"project_message","data":{"t":${nowUs()},"n":${this.seq++}${this.dataFields()}}}`;
    } else {
      const parts = new Array(n);
      const t = nowUs();
      for (let i = 0; i < n; i++) parts[i] = `{"type":"project_message","data":{"t":${t},"n":${this.seq++}${this.dataFields()}}}`;
      body = `{"events":[${parts.join(',')}]}`;
    }
    this.requests++;
    const t0 = nowUs();
    return new Promise((resolve) => {
      const req = http.request({
        host: '127.0.0.1', port: this.port, path: `/v1/projects/${guid}/events`, method: 'POST', agent: this.agent, timeout: 10_000,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${PRODUCER_TOKEN}`, ...(this.newConnection ? { connection: 'close' } : {}) },
      }, (res) => {
        const code = String(res.statusCode);
        this.statuses[code] = (this.statuses[code] ?? 0) + 1;
        // An overloaded gateway answers 503 with Retry-After (issue 20): count the ones without it.
        if (res.statusCode === 503 && !res.headers['retry-after']) this.missingRetryAfter = (this.missingRetryAfter ?? 0) + 1;
        if (res.statusCode === 202) { this.sentEvents += n; this.ackHist.recordValue(Math.max(1, nowUs() - t0)); }
        let b = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { if (res.statusCode !== 202 && b.length < 500) b += d; });
        res.on('end', () => {
          if (res.statusCode !== 202 && this.samples.length < 5) this.samples.push(`${code} ${b}`);
          resolve();
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => { this.errors++; if (this.samples.length < 5) this.samples.push('error ' + e.message); resolve(); });
      req.end(body);
    });
  }

  /**
   * One request to Soketi's Pusher HTTP API: `n` events of one channel (the room), the same event
   * data as the gateway gets, as a JSON string. Accepted = 200 with `{"ok":true}` (see the top).
   * @param {string} guid @param {number} n @param {{ appId: string, key: string, secret: string }} app
   * @returns {Promise<void>}
   */
  postPusher(guid, n, app) {
    const t = nowUs();
    /** @param {number} seq */
    const event = (seq) => `{"name":"project_message","channel":"${guid}","data":${JSON.stringify(`{"t":${t},"n":${seq}${this.padField}}`)}}`;
    let body, path;
    if (n === 1) {
      body = event(this.seq++);
      path = `/apps/${app.appId}/events`;
    } else {
      const parts = new Array(n);
      for (let i = 0; i < n; i++) parts[i] = event(this.seq++);
      body = `{"batch":[${parts.join(',')}]}`;
      path = `/apps/${app.appId}/batch_events`;
    }
    const md5 = crypto.createHash('md5').update(body).digest('hex');
    const query = `auth_key=${app.key}&auth_timestamp=${Math.floor(Date.now() / 1000)}&auth_version=1.0&body_md5=${md5}`;
    const signature = crypto.createHmac('sha256', app.secret).update(`POST\n${path}\n${query}`).digest('hex');
    this.requests++;
    const t0 = nowUs();
    return new Promise((resolve) => {
      const req = http.request({
        host: '127.0.0.1', port: this.port, path: `${path}?${query}&auth_signature=${signature}`, method: 'POST', agent: this.agent, timeout: 10_000,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' },
      }, (res) => {
        let b = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { if (b.length < 500) b += d; });
        res.on('end', () => {
          const ok = res.statusCode === 200 && b === '{"ok":true}';
          const code = ok ? '200' : `${res.statusCode} ${b.slice(0, 60)}`;
          this.statuses[code] = (this.statuses[code] ?? 0) + 1;
          if (ok) { this.sentEvents += n; this.ackHist.recordValue(Math.max(1, nowUs() - t0)); }
          else if (this.samples.length < 5) this.samples.push(`${res.statusCode} ${b}`);
          resolve();
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => { this.errors++; if (this.samples.length < 5) this.samples.push('error ' + e.message); resolve(); });
      req.end(body);
    });
  }

  /**
   * Closed loop. Stops after `durationMs` or when `stop()` is called.
   * @param {{ loadgen: import('./loadgen.mjs').LoadGen, members: number, batch: number, window: number, durationMs: number }} o
   */
  async runWindow(o) {
    this.stopped = false;
    const until = Date.now() + o.durationMs;
    let expected = 0; // deliveries expected (events accepted x members)
    let forgiven = 0; // deliveries given up on after a stall (lost/dropped)
    let lastDelivered = 0, lastProgress = Date.now();
    this.stalls = 0;
    let roomIdx = 0;
    /** @type {(() => void)[]} */
    let wakers = [];
    o.loadgen.onTick = () => { const w = wakers; wakers = []; for (const f of w) f(); };
    const waitTick = () => new Promise((r) => { wakers.push(/** @type {() => void} */ (r)); setTimeout(r, 5); });
    const lane = async () => {
      while (!this.stopped && Date.now() < until) {
        const delivered = o.loadgen.streamedEvents();
        if (delivered !== lastDelivered) { lastDelivered = delivered; lastProgress = Date.now(); }
        if (expected - delivered - forgiven > o.window) {
          if (Date.now() - lastProgress > 3000) { forgiven = expected - delivered; this.stalls = (this.stalls ?? 0) + 1; lastProgress = Date.now(); }
          await waitTick();
          continue;
        }
        const guid = this.rooms[roomIdx++ % this.rooms.length];
        expected += o.batch * o.members;
        const before = this.sentEvents;
        await this.post(guid, o.batch);
        if (this.sentEvents === before) expected -= o.batch * o.members; // rejected: nothing to deliver
      }
    };
    await Promise.all(Array.from({ length: this.concurrency }, lane));
    o.loadgen.onTick = null;
    this.expectedDeliveries = expected;
    this.forgiven = forgiven;
  }

  /**
   * One event appended directly to the project's stream (producer contract of src/bus/keys.ts:
   * XADD <prefix>:{<guid>}:events MAXLEN ~ n * type <type> data <JSON>).
   * @param {string} guid
   */
  async xadd(guid) {
    if (!this.redis) {
      const { Redis } = await import('ioredis');
      this.redis = new Redis(/** @type {string} */ (this.xaddRedisUrl), { maxRetriesPerRequest: 1 });
    }
    this.requests++;
    const t0 = nowUs();
    try {
      await this.redis.xadd(`${this.redisPrefix}:{${guid}}:events`, 'MAXLEN', '~', '10000', '*', 'type', 'project_message', 'data', `{"t":${nowUs()},"n":${this.seq++}${this.padField}}`);
      this.statuses.xadd = (this.statuses.xadd ?? 0) + 1;
      this.ackHist.recordValue(Math.max(1, nowUs() - t0));
      this.sentEvents++;
    } catch (e) {
      this.errors++;
      if (this.samples.length < 5) this.samples.push('xadd ' + /** @type {Error} */ (e).message);
    }
  }

  /**
   * Open loop "as fast as it can": `concurrency` lanes, each posting `batch` events to the next room
   * as soon as its previous request was answered, whatever the answer (a 503 is retried at once: the
   * worst producer, one that ignores Retry-After). Stops after `durationMs` or at `stop()`.
   * @param {{ batch: number, durationMs: number }} o
   */
  async runFlood(o) {
    this.stopped = false;
    const until = Date.now() + o.durationMs;
    let roomIdx = 0;
    const lane = async () => {
      while (!this.stopped && Date.now() < until) await this.post(this.rooms[roomIdx++ % this.rooms.length], o.batch);
    };
    await Promise.all(Array.from({ length: this.concurrency }, lane));
  }

  stop() { this.stopped = true; }

  /**
   * Open loop at `eventsPerSec`, in requests of `batch` events (default 1), rooms round-robin.
   * @param {{ eventsPerSec: number, durationMs: number, maxOutstanding?: number, batch?: number }} o
   */
  async runRate(o) {
    const batch = o.batch ?? 1;
    const requestsPerSec = o.eventsPerSec / batch;
    const start = performance.now();
    const maxOut = o.maxOutstanding ?? 512;
    let sent = 0, outstanding = 0, roomIdx = 0;
    this.behind = 0;
    await new Promise((resolve) => {
      const timer = setInterval(() => {
        const el = performance.now() - start;
        if (el >= o.durationMs) { clearInterval(timer); resolve(undefined); return; }
        const due = Math.floor((el / 1000) * requestsPerSec) - sent;
        for (let i = 0; i < due; i++) {
          if (outstanding >= maxOut) { this.behind = (this.behind ?? 0) + (due - i); sent += due - i; break; }
          sent++;
          outstanding++;
          this.post(this.rooms[roomIdx++ % this.rooms.length], batch).then(() => { outstanding--; });
        }
      }, 2);
    });
    const deadline = Date.now() + 5000;
    while (outstanding > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }

  close() { this.agent.destroy(); if (this.redis) this.redis.disconnect(); }
}
