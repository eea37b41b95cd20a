// @ts-check
/**
 * The Redis path's extra latency, at the bus (issue 20): in one process, the in-process bus
 * (publish → sink) against the Redis bus woken by keyspace notifications (a producer's XADD → sink),
 * interleaved runs. For the Redis bus it splits the time at an observer subscribed to the same
 * keyspace channels: XADD → notification (Redis and the hop back) and notification → sink (the
 * reader's wake-up, its XREAD round trip, parsing). `--burn-us` keeps the event loop as busy as the
 * gateway's fan-out keeps it (each delivered event burns that long, a turn later, like the fan-out's
 * setImmediate flush): wake-ups that land while it burns wait, which is where a tail comes from.
 *
 *   npm run build && node bench/redis-tail.mjs [--rate 300] [--keys 20] [--seconds 10] [--burn-us 1000] [--runs 3] [--name redis-tail]
 *        [--compare <another dist/ build>]   (its Redis bus runs interleaved too: a paired A/B of a change)
 *
 * Defaults follow bench/issue11.mjs's latency part: 30,000 deliveries/s = 300 events/s over 20 rooms
 * of 100; ~1 ms of fan-out per event (34% of a core at 30,000 deliveries/s). Writes bench/results/<name>.md and .json.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import hdr from 'hdr-histogram-js';
import { BENCH_DIR, ROOT, roomGuid, sleep, startRedis } from './lib/servers.mjs';

const { values: args } = parseArgs({
  options: {
    rate: { type: 'string', default: '300' },
    keys: { type: 'string', default: '20' },
    seconds: { type: 'string', default: '10' },
    'burn-us': { type: 'string', default: '1000' },
    runs: { type: 'string', default: '3' },
    name: { type: 'string', default: 'redis-tail' },
    // A/B: another build of dist/ (e.g. a copy made before a change) whose Redis bus runs interleaved as `redis (B)`
    compare: { type: 'string' },
  },
});
const RATE = Number(args.rate);
const KEYS = Number(args.keys);
const SECONDS = Number(args.seconds);
const BURN_US = Number(args['burn-us']);
const RUNS = Number(args.runs);
const WARM_S = 2;

const { createMemoryBus } = await import(path.join(ROOT, 'dist/bus/memory.js'));
const { createRedisBus } = await import(path.join(ROOT, 'dist/bus/redis.js'));
const compareBus = args.compare ? (await import(path.resolve(args.compare, 'bus/redis.js'))).createRedisBus : null;
const { DEFAULT_DATA_LIMITS } = await import(path.join(ROOT, 'dist/protocol/limits.js'));

const histogram = () => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });
const burn = (/** @type {number} */ us) => { const end = performance.now() + us / 1000; while (performance.now() < end); };

/** Records send → sink (µs) from the `t` each event's data carries; burns like a fan-out a turn later. */
function recorder() {
  const total = histogram();
  let measuring = false;
  /** @type {Map<string, number>} id → sink time (for the stage split) */
  const sinkAt = new Map();
  const sink = (/** @type {string} */ _guid, /** @type {any[]} */ events) => {
    const now = performance.now();
    for (const e of events) {
      const t = Number(/"t":([\d.]+)/.exec(e.json)?.[1]);
      if (measuring) total.recordValue(Math.max(1, Math.round((now - t) * 1000)));
      sinkAt.set(e.id, now);
    }
    if (BURN_US > 0) setImmediate(() => burn(BURN_US * events.length));
  };
  return { sink, total, sinkAt, measure: () => (measuring = true) };
}

/** Sends RATE events/s round-robin over the guids for WARM_S + SECONDS; `send` appends one with its data. */
/** @param {string[]} guids @param {(guid: string, data: string) => Promise<unknown>} send @param {() => void} onMeasure */
async function produce(guids, send, onMeasure) {
  const start = performance.now();
  let sent = 0;
  let measuring = false;
  const pending = [];
  while (performance.now() - start < (WARM_S + SECONDS) * 1000) {
    if (!measuring && performance.now() - start > WARM_S * 1000) { measuring = true; onMeasure(); }
    const due = Math.floor((RATE * (performance.now() - start)) / 1000);
    for (; sent < due; sent++) pending.push(send(guids[sent % guids.length], `{"t":${performance.now().toFixed(3)}}`));
    await sleep(1);
  }
  await Promise.all(pending);
  await sleep(500);
  return sent;
}

const busOptions = { log: pino({ level: 'silent' }), dataLimits: DEFAULT_DATA_LIMITS, idempotencyWindowS: 60 };
const guids = Array.from({ length: KEYS }, (_, i) => roomGuid(i));

async function runMemory() {
  const rec = recorder();
  const bus = createMemoryBus(rec.sink, { maxLen: 10000, maxEvents: 1_000_000, maxBytes: 1e9, ...busOptions });
  for (const g of guids) await bus.watch(g);
  await produce(guids, (/** @type {string} */ g, /** @type {string} */ data) => bus.publish(g, [{ type: 'project_message', data: JSON.parse(data), dataJson: data }]), rec.measure);
  await bus.close();
  return { bus: 'in-process', ...summary(rec.total) };
}

/** @param {string} url @param {string} [label] @param {any} [create] */
async function runRedis(url, label = 'redis (XADD)', create = createRedisBus) {
  const rec = recorder();
  const bus = create(rec.sink, { redis: { url, prefix: 'autocode' }, stream: { maxLen: 10000, ttlS: 0, maxAgeS: 0, historyPageSize: 500 }, nodeId: 'tail', ...busOptions });
  await bus.waitUntilReady(5000);
  for (const g of guids) await bus.watch(g);
  const keyOf = (/** @type {string} */ g) => `autocode:{${g}}:events`;
  // The observer: notification arrival per key, in order (a stand-in for the bus's own subscriber).
  const observer = new Redis(url);
  /** @type {Map<string, number[]>} */
  const notified = new Map();
  observer.on('message', (/** @type {string} */ channel) => { const k = channel.slice(channel.indexOf(':') + 1); (notified.get(k) ?? notified.set(k, []).get(k))?.push(performance.now()); });
  await observer.subscribe(...guids.map((g) => `__keyspace@0__:${keyOf(g)}`));
  await sleep(1500); // the bus's own subscriptions
  const producer = new Redis(url);
  const toNotify = histogram();
  const toSink = histogram();
  let measuring = false;
  /** @type {{ key: string, id: string, sentAt: number }[]} */
  const sent = [];
  await produce(guids, async (g, data) => {
    const sentAt = performance.now();
    const id = /** @type {string} */ (await producer.xadd(keyOf(g), '*', 'type', 'project_message', 'data', data));
    if (measuring) sent.push({ key: keyOf(g), id, sentAt });
  }, () => { measuring = true; rec.measure(); notified.clear(); });
  // Pair each measured XADD with its key's notifications in order (notified was cleared when measuring began).
  const cursor = new Map();
  for (const s of sent.sort((a, b) => (a.id < b.id ? -1 : 1))) {
    const i = cursor.get(s.key) ?? 0;
    cursor.set(s.key, i + 1);
    const n = notified.get(s.key)?.[i];
    const sinkAt = rec.sinkAt.get(s.id);
    if (n === undefined || sinkAt === undefined) continue;
    toNotify.recordValue(Math.max(1, Math.round((n - s.sentAt) * 1000)));
    toSink.recordValue(Math.max(1, Math.round((sinkAt - n) * 1000)));
  }
  observer.disconnect();
  producer.disconnect();
  await bus.close();
  return { bus: label, ...summary(rec.total), xaddToNotify: summary(toNotify), notifyToSink: summary(toSink) };
}

/** @param {any} h */
function summary(h) {
  return { count: h.totalCount, p50: h.getValueAtPercentile(50) / 1000, p99: h.getValueAtPercentile(99) / 1000, p999: h.getValueAtPercentile(99.9) / 1000, max: h.maxValue / 1000 };
}

const redis = await startRedis();
/** @type {any[]} */
const rows = [];
try {
  for (let r = 0; r < RUNS; r++) {
    const variants = [runMemory, () => runRedis(redis.url)];
    if (compareBus) variants.push(() => runRedis(redis.url, `redis (B: ${args.compare})`, compareBus));
    for (const fn of variants) {
      const row = { run: r + 1, ...(await fn()) };
      console.log(JSON.stringify(row));
      rows.push(row);
    }
  }
} finally {
  await redis.stop();
}
const f = (/** @type {number} */ x) => x.toFixed(2);
const out = [
  `# Redis path tail at the bus (${args.name}, ${new Date().toISOString()})`,
  '',
  `${RATE} events/s over ${KEYS} streams, ${SECONDS} s measured after ${WARM_S} s, ${BURN_US} µs of simulated fan-out per event a turn later; runs interleaved. Times in ms, send → sink.`,
  '',
  '| run | bus | events | p50 | p99 | p99.9 | max | XADD → notification p50 / p99 | notification → sink p50 / p99 |',
  '|---|---|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.run} | ${r.bus} | ${r.count} | ${f(r.p50)} | ${f(r.p99)} | ${f(r.p999)} | ${f(r.max)} | ${r.xaddToNotify ? `${f(r.xaddToNotify.p50)} / ${f(r.xaddToNotify.p99)}` : ''} | ${r.notifyToSink ? `${f(r.notifyToSink.p50)} / ${f(r.notifyToSink.p99)}` : ''} |`),
  '',
];
fs.writeFileSync(path.join(BENCH_DIR, 'results', `${args.name}.md`), out.join('\n'));
fs.writeFileSync(path.join(BENCH_DIR, 'results', `${args.name}.json`), JSON.stringify(rows, null, 2));
console.log(out.join('\n'));
