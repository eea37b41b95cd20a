import { Cluster, Redis } from 'ioredis';
import { createRequire } from 'node:module';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { GatewayError } from '../errors.js';
import { compareIds, ZERO_ID } from '../protocol/event-id.js';
import { parseRawData, type DataLimits } from '../protocol/limits.js';
import { envelopeJson, isEventType, type ProjectEvent } from '../protocol/messages.js';
import { classifyHistory, type EventBus, type EventSink, type HistoryCheck } from './bus.js';
import { eventsKey, FIELD_DATA, FIELD_TYPE } from './keys.js';
import { createProducer, type ProducerEvent } from './producer.js';

const calculateSlot = createRequire(import.meta.url)('cluster-key-slot') as (key: string) => number;

export interface RedisBusOptions {
  redis: NonNullable<Config['redis']>;
  stream: Config['stream'];
  nodeId: string;
  log: Logger;
  /** Entries whose data is over these are logged and skipped, like malformed ones. */
  dataLimits: DataLimits;
  idempotencyWindowS: number;
  /** Called for every entry read and skipped (malformed or over the limits). */
  onSkippedEntry?: () => void;
  /** Redis must answer a PING within this long for the bus to count as ready (a frozen Redis keeps its sockets open). */
  healthTimeoutMs?: number;
  /** Max entries per stream per read. */
  readCount?: number;
  /** How long one blocking XREAD waits before it is re-issued (standalone). */
  blockMs?: number;
  /** Poll interval when a Cluster read round found nothing (Cluster cannot block across slots). */
  clusterPollMs?: number;
}

type StreamEntry = [id: string, fields: string[]];
type XReadReply = [key: string, entries: StreamEntry[]][] | null;

interface Watch {
  readonly guid: string;
  readonly key: string;
  lastId: string;
}

/**
 * The Redis Streams bus: one stream per project (see keys.ts). Each instance reads only the streams
 * of projects it has local subscribers for, continuing from the last id it delivered, so a project
 * nobody here watches costs nothing, and a Redis outage loses nothing that Redis kept.
 *
 * Standalone: one blocking multi-key XREAD on its own connection, interrupted with CLIENT UNBLOCK
 * when a project is added. Cluster: XREAD cannot span slots, so each read round issues one
 * non-blocking XREAD per slot and sleeps briefly when all come back empty.
 */
export function createRedisBus(sink: EventSink, options: RedisBusOptions): EventBus {
  const { log, stream } = options;
  const prefix = options.redis.prefix;
  const readCount = options.readCount ?? 1000;
  const blockMs = options.blockMs ?? 2000;
  const clusterPollMs = options.clusterPollMs ?? 5;
  const clustered = !!options.redis.clusterNodes;

  const retryStrategy = (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000) + Math.floor(Math.random() * 100);
  const makeClient = (role: string): Redis | Cluster => {
    const common = { connectionName: `${options.nodeId}:${role}`, retryStrategy, lazyConnect: false };
    if (clustered) {
      return new Cluster([...options.redis.clusterNodes!], {
        clusterRetryStrategy: retryStrategy,
        redisOptions: { ...common, maxRetriesPerRequest: role === 'reader' ? null : 1, ...(role === 'reader' ? {} : { commandTimeout: 5000 }) },
      });
    }
    return new Redis(options.redis.url!, {
      ...common,
      // Commands issued while (re)connecting wait in the offline queue, bounded by commandTimeout;
      // publishes check readiness first so producers get an immediate 503 during an outage.
      maxRetriesPerRequest: role === 'reader' ? null : 1,
      ...(role === 'reader' ? {} : { commandTimeout: 5000 }),
    });
  };

  // Blocking reads get their own connection so they never delay publishes or history reads.
  const cmd = makeClient('cmd');
  const reader = makeClient('reader');
  const producer = createProducer(cmd, {
    prefix,
    maxLen: stream.maxLen,
    ttlS: stream.ttlS,
    maxAgeS: stream.maxAgeS,
    origin: options.nodeId,
    limits: options.dataLimits,
    idempotencyWindowS: options.idempotencyWindowS,
  });

  const watches = new Map<string, Watch>();
  let running = true;
  let readerHealthy = false;
  let readerClientId: number | null = null;
  /** Bumped whenever the watched set grows; a read issued with an older generation is stale. */
  let generation = 0;
  let inflightGeneration = -1;
  let wake: (() => void) | null = null;
  let lastErrorLog = 0;
  /** When a read round last completed: a reader stuck longer than a block plus slack is unhealthy (AnyCable #275). */
  let lastReadAt = Date.now();

  const logError = (msg: string, err: unknown) => {
    // One line per second at most: a Redis outage must not flood the logs.
    const now = Date.now();
    if (now - lastErrorLog > 1000) {
      lastErrorLog = now;
      log.warn({ err: (err as Error)?.message ?? String(err) }, msg);
    }
  };
  cmd.on('error', (err) => logError('redis command connection error', err));
  reader.on('error', (err) => logError('redis reader connection error', err));
  reader.on('close', () => {
    readerHealthy = false;
    readerClientId = null;
  });
  reader.on('ready', () => {
    readerHealthy = true;
  });

  // Readiness follows Redis answering, not only the socket being connected: a frozen Redis
  // (SIGSTOP, a stalled proxy, a long-running script) keeps every TCP connection open.
  const healthTimeoutMs = options.healthTimeoutMs ?? 2000;
  let lastAnswerAt = Date.now();
  let pinging = false;
  cmd.on('ready', () => {
    lastAnswerAt = Date.now();
  });
  const healthTimer = setInterval(() => {
    if (pinging || cmd.status !== 'ready') return;
    pinging = true;
    cmd.ping().then(
      () => ((lastAnswerAt = Date.now()), (pinging = false)),
      () => (pinging = false),
    );
  }, Math.max(100, healthTimeoutMs / 4));
  healthTimer.unref();
  const answering = () => Date.now() - lastAnswerAt < healthTimeoutMs;

  const unavailable = (err: unknown): GatewayError => {
    logError('redis operation failed', err);
    return new GatewayError('UNAVAILABLE', 'event bus unavailable, retry later');
  };
  const ensureReady = () => {
    if (cmd.status !== 'ready' || !answering()) throw new GatewayError('UNAVAILABLE', 'event bus unavailable, retry later');
  };

  /** The entry as an event, or why it is skipped. Anyone can XADD: nothing in an entry is trusted. */
  function toEvent(guid: string, [id, fields]: StreamEntry): ProjectEvent | string {
    let type: string | undefined;
    let raw: string | undefined;
    for (let i = 0; i + 1 < fields.length; i += 2) {
      if (fields[i] === FIELD_TYPE) type = fields[i + 1];
      else if (fields[i] === FIELD_DATA) raw = fields[i + 1];
    }
    if (!isEventType(type)) return 'type is missing or not an event type';
    if (raw === undefined) return 'data is missing';
    const parsed = parseRawData(raw, options.dataLimits);
    if ('problem' in parsed) return parsed.problem;
    const timestamp = new Date(Number(id.slice(0, id.indexOf('-')))).toISOString();
    // `raw` parsed as a JSON object within the limits, so it is spliced in as-is: no re-stringify,
    // and the event keeps only that one string (the parsed object was only for the check).
    const event: ProjectEvent = { id, projectGuid: guid, type, timestamp };
    event.json = envelopeJson(event, raw);
    return event;
  }

  function toEvents(guid: string, entries: StreamEntry[]): ProjectEvent[] {
    const events: ProjectEvent[] = [];
    for (const entry of entries) {
      const event = toEvent(guid, entry);
      if (typeof event !== 'string') events.push(event);
      else {
        options.onSkippedEntry?.();
        log.warn({ projectGuid: guid, id: entry[0], problem: event }, 'skipping malformed stream entry (needs fields type=<event type> and data=<JSON object within the data limits>)');
      }
    }
    return events;
  }

  function deliverReply(reply: XReadReply, byKey: Map<string, Watch>): void {
    if (!reply) return;
    for (const [key, entries] of reply) {
      const w = byKey.get(key);
      if (!w || watches.get(w.guid) !== w || entries.length === 0) continue;
      w.lastId = entries[entries.length - 1]![0];
      const events = toEvents(w.guid, entries);
      if (events.length) sink(w.guid, events);
    }
  }

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => ((wake = null), resolve()), ms);
      wake = () => (clearTimeout(t), (wake = null), resolve());
    });

  async function readStandalone(): Promise<void> {
    const r = reader as Redis;
    if (readerClientId === null) readerClientId = Number(await r.client('ID'));
    const ws = [...watches.values()];
    const byKey = new Map(ws.map((w) => [w.key, w]));
    inflightGeneration = generation;
    try {
      const reply = (await r.xread('COUNT', readCount, 'BLOCK', blockMs, 'STREAMS', ...ws.map((w) => w.key), ...ws.map((w) => w.lastId))) as XReadReply;
      readerHealthy = true;
      deliverReply(reply, byKey);
    } finally {
      inflightGeneration = -1;
    }
  }

  async function readCluster(): Promise<void> {
    const c = reader as Cluster;
    const bySlot = new Map<number, Watch[]>();
    for (const w of watches.values()) {
      const slot = calculateSlot(w.key);
      const group = bySlot.get(slot);
      if (group) group.push(w);
      else bySlot.set(slot, [w]);
    }
    const seenGeneration = generation;
    let got = 0;
    await Promise.all(
      [...bySlot.values()].map(async (group) => {
        const byKey = new Map(group.map((w) => [w.key, w]));
        const reply = (await c.xread('COUNT', readCount, 'STREAMS', ...group.map((w) => w.key), ...group.map((w) => w.lastId))) as XReadReply;
        if (reply) for (const [, entries] of reply) got += entries.length;
        deliverReply(reply, byKey);
      }),
    );
    readerHealthy = true;
    if (got === 0 && seenGeneration === generation) await sleep(clusterPollMs);
  }

  async function readLoop(): Promise<void> {
    let failures = 0;
    while (running) {
      if (watches.size === 0) {
        await sleep(60000);
        lastReadAt = Date.now();
        continue;
      }
      try {
        await (clustered ? readCluster() : readStandalone());
        lastReadAt = Date.now();
        failures = 0;
      } catch (err) {
        if (!running) break;
        readerHealthy = false;
        readerClientId = null;
        logError('stream read failed; retrying from the last delivered ids', err);
        await sleep(retryStrategy(++failures));
      }
    }
  }

  /** Makes the reader pick up a newly watched stream now instead of after its current block. */
  function kick(): void {
    generation++;
    wake?.();
    if (clustered) return;
    const target = generation;
    const unblock = () => {
      if (!running || inflightGeneration === -1 || inflightGeneration >= target || readerClientId === null) return;
      (cmd as Redis).client('UNBLOCK', readerClientId).then(
        // 0: the XREAD had not reached Redis yet; try again shortly.
        (n) => {
          if (Number(n) === 0) setTimeout(unblock, 2);
        },
        () => {},
      );
    };
    unblock();
  }

  void readLoop();

  return {
    kind: 'redis',
    async publish(guid, events, idempotencyKey) {
      ensureReady();
      try {
        return await producer.append(guid, events as ProducerEvent[], idempotencyKey === undefined ? {} : { idempotencyKey });
      } catch (err) {
        if (err instanceof GatewayError) throw err;
        logError('redis publish failed', err);
        // A timeout does not mean nothing was appended: the command may still run once Redis answers.
        throw new GatewayError('UNAVAILABLE', 'event bus did not confirm the append; the outcome is unknown: retry with the same Idempotency-Key');
      }
    },
    async watch(guid) {
      const key = eventsKey(prefix, guid);
      const w: Watch = { guid, key, lastId: ZERO_ID };
      watches.set(guid, w);
      try {
        const last = (await cmd.xrevrange(key, '+', '-', 'COUNT', 1)) as StreamEntry[];
        if (last.length) w.lastId = last[0]![0];
      } catch (err) {
        if (watches.get(guid) === w) watches.delete(guid);
        throw unavailable(err);
      }
      kick();
      return w.lastId;
    },
    unwatch(guid) {
      watches.delete(guid);
    },
    async range(guid, afterId, count) {
      try {
        const entries = (await cmd.xrange(eventsKey(prefix, guid), `(${afterId}`, '+', 'COUNT', count)) as StreamEntry[];
        return { events: toEvents(guid, entries), lastId: entries.length ? entries[entries.length - 1]![0] : afterId };
      } catch (err) {
        throw unavailable(err);
      }
    },
    async checkHistory(guid, afterId): Promise<HistoryCheck> {
      let info: unknown[];
      try {
        info = (await cmd.xinfo('STREAM', eventsKey(prefix, guid))) as unknown[];
      } catch (err) {
        if (/no such key/i.test((err as Error).message)) return afterId === ZERO_ID ? 'complete' : 'unknown';
        throw unavailable(err);
      }
      const field = (name: string) => info[info.indexOf(name) + 1];
      const firstEntry = field('first-entry') as StreamEntry | null;
      const lastGenerated = String(field('last-generated-id'));
      // Redis < 7 has no max-deleted-entry-id: the first retained entry is the best bound there is.
      if (!info.includes('max-deleted-entry-id')) {
        if (compareIds(afterId, lastGenerated) > 0) return 'unknown';
        return !firstEntry || compareIds(afterId, firstEntry[0]) >= 0 ? 'complete' : 'trimmed';
      }
      return classifyHistory(afterId, { lastGenerated, maxDeleted: String(field('max-deleted-entry-id')), firstId: firstEntry?.[0] ?? null });
    },
    async waitUntilReady(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (cmd.status !== 'ready' || reader.status !== 'ready') {
        if (Date.now() > deadline || !running) return false;
        await new Promise((r) => setTimeout(r, 10));
      }
      return true;
    },
    isReady: () =>
      running && cmd.status === 'ready' && answering() && reader.status === 'ready' && readerHealthy && (watches.size === 0 || Date.now() - lastReadAt < blockMs + 10000),
    async close() {
      running = false;
      clearInterval(healthTimer);
      wake?.();
      watches.clear();
      reader.disconnect();
      await cmd.quit().catch(() => cmd.disconnect());
    },
  };
}
