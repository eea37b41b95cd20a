import { closeRedisClient, createRedisClient, type RedisClient } from '../redis/client.js';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { GatewayError } from '../errors.js';
import { throttledWarn } from '../logger.js';
import type { BusErrorKind } from '../metrics.js';
import { compareIds, ZERO_ID } from '../protocol/event-id.js';
import type { DataLimits } from '../protocol/limits.js';
import { classifyHistory, type EventBus, type EventSink, type HistoryCheck } from './bus.js';
import { eventsKey } from '../redis/keys.js';
import { createProducer, type ProducerEvent } from './producer.js';
import { readStreamInfo, toEvents, type EntryParserOptions, type StreamEntry } from './redis-entries.js';
import { createStreamReader } from './redis-reader.js';

export interface RedisBusOptions {
  redis: NonNullable<Config['redis']>;
  stream: Config['stream'];
  nodeId: string;
  log: Logger;
  /** Entries whose data is over these are logged and skipped, like malformed ones. */
  dataLimits: DataLimits;
  idempotencyWindowS: number;
  /** Unexpired idempotency keys one producer may hold per project (IDEMPOTENCY_KEYS_PER_PRODUCER; default its default). */
  idempotencyKeysPerProducer?: number;
  /** Called for every entry read and skipped (malformed or over the limits). */
  onSkippedEntry?: () => void;
  /** Called for every error, once each (the log has one line a second at most); entries skipped are `entry_skipped`. */
  onError?: (kind: BusErrorKind) => void;
  /** Called once per stream per read with the seconds since its oldest entry's id time (Redis's clock; 0 if ahead of ours). */
  onReadLag?: (seconds: number) => void;
  /** Redis must answer a PING within this long for the bus to count as ready (a frozen Redis keeps its sockets open). */
  healthTimeoutMs?: number;
  /** Max entries per stream per read. */
  readCount?: number;
  /** How long one blocking XREAD waits before it is re-issued (standalone). */
  blockMs?: number;
  /** Poll interval when a Cluster read round found nothing (Cluster cannot block across slots). */
  clusterPollMs?: number;
  /**
   * With keyspace notifications: how often each master's write marker is compared with the one
   * of its last sweep, and its watched streams swept (one script per master per 2,000 keys) when it
   * moved, so a notification lost for any reason delays an event by at most about this long.
   */
  resyncMs?: number;
  /** Cluster with keyspace notifications: how often the slot table is refreshed to follow resharding. */
  topologyRefreshMs?: number;
}

/**
 * The Redis Streams bus: one stream per project (see redis/keys.ts). Each instance reads only the
 * streams of projects it has local subscribers for, continuing from the last id it delivered, so a
 * project nobody here watches costs nothing, and a Redis outage loses nothing that Redis kept.
 *
 * This file is the EventBus: appends (producer.ts), history, readiness, shutdown. The reading of
 * watched streams and its wake-up are redis-reader.ts (with wakeup.ts and the resync safety net,
 * redis-resync.ts); turning entries into events is redis-entries.ts. docs/redis-wakeup.md has why.
 */
export function createRedisBus(sink: EventSink, options: RedisBusOptions): EventBus {
  const { log, stream } = options;
  const prefix = options.redis.prefix;
  const healthTimeoutMs = options.healthTimeoutMs ?? 2000;
  const onSkippedEntry = () => (options.onSkippedEntry?.(), options.onError?.('entry_skipped'));
  const entries = { dataLimits: options.dataLimits, log, onSkippedEntry };
  // One line per second at most for all of the bus: a Redis outage must not flood the logs. Each
  // error is counted all the same (bus_errors_total).
  const logError = throttledWarn(log);
  const reportError = (kind: BusErrorKind, message: string, err: unknown) => {
    options.onError?.(kind);
    logError(message, err);
  };

  // Blocking reads get their own connection so they never delay publishes or history reads.
  const cmd = createRedisClient(options.redis, options.nodeId, 'cmd');
  const reader = createRedisClient(options.redis, options.nodeId, 'reader', { blocking: true });
  cmd.on('error', (err) => reportError('connection', 'redis command connection error', err));
  const producer = createProducer(cmd, {
    prefix,
    maxLen: stream.maxLen,
    ttlS: stream.ttlS,
    maxAgeS: stream.maxAgeS,
    origin: options.nodeId,
    limits: options.dataLimits,
    idempotencyWindowS: options.idempotencyWindowS,
    idempotencyKeysPerProducer: options.idempotencyKeysPerProducer,
  });
  let running = true;

  // Readiness follows Redis answering, not only the socket being connected.
  const answers = watchAnswers(cmd, healthTimeoutMs);

  const unavailable = (err: unknown): GatewayError => {
    reportError('command', 'redis operation failed', err);
    return new GatewayError('UNAVAILABLE', 'event bus unavailable, retry later');
  };
  const ensureReady = () => {
    if (cmd.status !== 'ready' || !answers.recent()) throw new GatewayError('UNAVAILABLE', 'event bus unavailable, retry later');
  };

  const history = createHistoryReads(cmd, prefix, entries, unavailable);
  const streams = createStreamReader({
    redis: options.redis,
    nodeId: options.nodeId,
    cmd,
    reader,
    log,
    reportError,
    onEntries(guid, read) {
      // The oldest entry of the read waited longest; its id's ms part is Redis's clock at XADD.
      if (options.onReadLag && read.length) options.onReadLag(Math.max(0, Date.now() - idTimeMs(read[0]![0])) / 1000);
      const events = toEvents(guid, read, entries);
      if (events.length) sink(guid, events);
    },
    readCount: options.readCount ?? 1000,
    blockMs: options.blockMs ?? 2000,
    clusterPollMs: options.clusterPollMs ?? 5,
    resyncMs: options.resyncMs ?? 15000,
    topologyRefreshMs: options.topologyRefreshMs ?? 2000,
    healthTimeoutMs,
  });

  return {
    kind: 'redis',
    appendsInline: false,
    async publish(guid, events, keyed) {
      ensureReady();
      try {
        return await producer.append(guid, events as ProducerEvent[], keyed);
      } catch (err) {
        if (err instanceof GatewayError) throw err;
        reportError('publish', 'redis publish failed', err);
        // A timeout does not mean nothing was appended: the command may still run once Redis answers.
        throw new GatewayError('UNAVAILABLE', 'event bus did not confirm the append; the outcome is unknown: retry with the same Idempotency-Key');
      }
    },
    async watch(guid) {
      try {
        return await streams.watch(guid);
      } catch (err) {
        throw unavailable(err);
      }
    },
    unwatch: (guid) => streams.unwatch(guid),
    ...history,
    // What was appended before a shutdown began reaches the sockets before they are closed, on
    // every instance and worker thread, not only on the one that appended it.
    catchUp: (timeoutMs) => streams.catchUp(timeoutMs),
    async waitUntilReady(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      // After close() the sockets may still say 'ready' until their close events arrive.
      if (!running) return false;
      while (cmd.status !== 'ready' || reader.status !== 'ready') {
        if (Date.now() > deadline || !running) return false;
        await new Promise((r) => setTimeout(r, 10));
      }
      return true;
    },
    isReady: () => running && cmd.status === 'ready' && answers.recent() && reader.status === 'ready' && streams.healthy(),
    async close() {
      running = false;
      answers.stop();
      streams.close();
      reader.disconnect();
      await closeRedisClient(cmd);
    },
  };
}

/** The ms part of a stream id (`<ms>-<seq>`). */
function idTimeMs(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}

/**
 * Whether Redis answered lately: a PING every quarter of `healthTimeoutMs` while connected, one at a
 * time. A frozen Redis (SIGSTOP, a stalled proxy, a long-running script) keeps every TCP connection
 * open, so the socket being connected is not enough for readiness.
 */
function watchAnswers(cmd: RedisClient, healthTimeoutMs: number): { recent(): boolean; stop(): void } {
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
  return {
    recent: () => Date.now() - lastAnswerAt < healthTimeoutMs,
    stop: () => clearInterval(healthTimer),
  };
}

/** The bus's history reads on the command connection: pages by id either way, and whether history still reaches back to an id. */
function createHistoryReads(
  cmd: RedisClient,
  prefix: string,
  entries: EntryParserOptions,
  unavailable: (err: unknown) => GatewayError,
): Pick<EventBus, 'range' | 'rangeBack' | 'checkHistory'> {
  return {
    async range(guid, afterId, count) {
      try {
        const read = (await cmd.xrange(eventsKey(prefix, guid), `(${afterId}`, '+', 'COUNT', count)) as StreamEntry[];
        return { events: toEvents(guid, read, entries), lastId: read.length ? read[read.length - 1]![0] : afterId };
      } catch (err) {
        throw unavailable(err);
      }
    },
    async rangeBack(guid, beforeId, count) {
      try {
        const read = (await cmd.xrevrange(eventsKey(prefix, guid), beforeId === null ? '+' : `(${beforeId}`, '-', 'COUNT', count)) as StreamEntry[];
        return { events: toEvents(guid, read, entries), lastId: read.length ? read[read.length - 1]![0] : (beforeId ?? ZERO_ID) };
      } catch (err) {
        throw unavailable(err);
      }
    },
    async checkHistory(guid, afterId): Promise<HistoryCheck> {
      let info: ReadonlyMap<string, unknown> | null;
      try {
        info = await readStreamInfo(cmd, eventsKey(prefix, guid));
      } catch (err) {
        throw unavailable(err);
      }
      if (!info) return afterId === ZERO_ID ? 'complete' : 'unknown';
      const firstEntry = info.get('first-entry') as StreamEntry | null;
      const lastGenerated = String(info.get('last-generated-id'));
      // Redis < 7 has no max-deleted-entry-id: the first retained entry is the best bound there is.
      if (!info.has('max-deleted-entry-id')) {
        if (compareIds(afterId, lastGenerated) > 0) return 'unknown';
        return !firstEntry || compareIds(afterId, firstEntry[0]) >= 0 ? 'complete' : 'trimmed';
      }
      // Dropped by XDEL or by trimming: trimming is not in max-deleted-entry-id (see classifyHistory).
      const droppedUncounted = Number(info.get('entries-added')) > Number(info.get('length'));
      return classifyHistory(afterId, { lastGenerated, maxDeleted: String(info.get('max-deleted-entry-id')), firstId: firstEntry?.[0] ?? null, droppedUncounted });
    },
  };
}
