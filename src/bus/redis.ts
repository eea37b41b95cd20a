import { Cluster, Redis, ReplyError } from 'ioredis';
import { closeRedisClient, createRedisClient, redisRetryStrategy } from '../redis/client.js';
import { createRequire } from 'node:module';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { GatewayError } from '../errors.js';
import { compareIds, ZERO_ID } from '../protocol/event-id.js';
import { parseRawData, type DataLimits } from '../protocol/limits.js';
import { isEventType } from '../protocol/messages.js';
import { envelopeJsonOf, type ProjectEvent } from '../protocol/events.js';
import { classifyHistory, type EventBus, type EventSink, type HistoryCheck } from './bus.js';
import { eventsKey, FIELD_DATA, FIELD_ORIGIN, FIELD_TYPE } from '../redis/keys.js';
import { createProducer, type ProducerEvent } from './producer.js';
import { createKeyspaceWakeup, ensureNotifyFlags, type KeyspaceWakeup } from './wakeup.js';

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
  /**
   * With keyspace notifications: how often every watched stream is checked once anyway (one script
   * per master), so a notification lost for any reason delays an event by at most this long.
   */
  resyncMs?: number;
  /** Cluster with keyspace notifications: how often the slot table is refreshed to follow resharding. */
  topologyRefreshMs?: number;
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
 * Wake-up (docs/redis-wakeup.md): by default the reader sleeps until a keyspace notification says a
 * watched stream got new entries, then reads only the streams that changed (non-blocking XREAD,
 * one per slot in a Cluster): the cost follows events, not watched projects. Every (re)subscribe
 * and a slow resync timer read once anyway, so a lost notification delays but never loses.
 *
 * Polling (REDIS_WAKEUP=poll, or when Redis refuses CONFIG SET): standalone, one blocking
 * multi-key XREAD on its own connection, interrupted with CLIENT UNBLOCK when a project is added;
 * Cluster, one non-blocking XREAD per watched slot per round, sleeping briefly when all are empty.
 */
export function createRedisBus(sink: EventSink, options: RedisBusOptions): EventBus {
  const { log, stream } = options;
  const prefix = options.redis.prefix;
  const readCount = options.readCount ?? 1000;
  const blockMs = options.blockMs ?? 2000;
  const clusterPollMs = options.clusterPollMs ?? 5;
  const resyncMs = options.resyncMs ?? 15000;
  const topologyRefreshMs = options.topologyRefreshMs ?? 2000;
  const clustered = !!options.redis.clusterNodes;
  /** A non-blocking read pass that has not finished in this long counts as a stuck reader. */
  const readStallMs = blockMs + 10000;

  const retryStrategy = redisRetryStrategy;
  const makeClient = (role: 'cmd' | 'reader'): Redis | Cluster => createRedisClient(options.redis, options.nodeId, role, { blocking: role === 'reader' });

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
  const watchesByKey = new Map<string, Watch>();
  /** 'notify': woken by keyspace notifications; 'poll': today's read rounds. Starts as notify unless configured otherwise. */
  let mode: 'notify' | 'poll' = options.redis.wakeup === 'poll' ? 'poll' : 'notify';
  /** Watched streams a notification (or a resubscribe, or the resync) says to read. */
  const dirty = new Set<Watch>();
  /** When the current notify-mode read pass started (0: none in flight); the watchdog's clock. */
  let readStartedAt = 0;
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
    let origin: string | undefined;
    for (let i = 0; i + 1 < fields.length; i += 2) {
      if (fields[i] === FIELD_TYPE) type = fields[i + 1];
      else if (fields[i] === FIELD_DATA) raw = fields[i + 1];
      else if (fields[i] === FIELD_ORIGIN) origin = fields[i + 1];
    }
    if (!isEventType(type)) return 'type is missing or not an event type';
    if (raw === undefined) return 'data is missing';
    const parsed = parseRawData(raw, options.dataLimits);
    if ('problem' in parsed) return parsed.problem;
    const timestamp = new Date(Number(id.slice(0, id.indexOf('-')))).toISOString();
    // `raw` parsed as a JSON object within the limits, so it is spliced in as-is: no re-stringify,
    // and the event keeps only that one string (the parsed object was only for the check).
    // `json` in the literal: one allocation, no property array added later (see envelopeJsonOf).
    const json = envelopeJsonOf(type, guid, timestamp, id, raw);
    // One object shape for every event read (origin may be undefined): the fan-out code stays monomorphic.
    return { id, projectGuid: guid, type, timestamp, origin: origin !== undefined && origin.length <= 64 ? origin : undefined, json };
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

  /**
   * Hands a read's entries to the sink, each once: two reads of one stream can overlap (the reader's
   * and a shutdown's catch-up), so entries at or before the watch's last delivered id are dropped.
   */
  function deliverReply(reply: XReadReply, byKey: Map<string, Watch>): number {
    if (!reply) return 0;
    let delivered = 0;
    for (const [key, all] of reply) {
      const w = byKey.get(key);
      if (!w || watches.get(w.guid) !== w || all.length === 0) continue;
      let first = 0;
      while (first < all.length && compareIds(all[first]![0], w.lastId) <= 0) first++;
      if (first === all.length) continue;
      const entries = first === 0 ? all : all.slice(first);
      w.lastId = entries[entries.length - 1]![0];
      delivered += entries.length;
      const events = toEvents(w.guid, entries);
      if (events.length) sink(w.guid, events);
    }
    return delivered;
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
      if (watches.size === 0 && dirty.size === 0) {
        await sleep(60000);
        lastReadAt = Date.now();
        continue;
      }
      try {
        if (mode === 'notify') await readChanged();
        else await (clustered ? readCluster() : readStandalone());
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

  // ---- wake-up on change ------------------------------------------------------------------

  function markDirty(w: Watch | undefined): void {
    if (!w || watches.get(w.guid) !== w) return;
    dirty.add(w);
    wake?.();
  }

  let wakeup: KeyspaceWakeup | null = null;
  function fallBackToPolling(node: string, reason: string): void {
    if (mode === 'poll') return;
    mode = 'poll';
    // The one line an operator needs: why, and what it costs (docs/redis-wakeup.md).
    log.warn(
      { node, reason, cost: clustered ? 'one XREAD per watched slot every 5 ms while idle' : 'one XREAD carrying every watched key per read round' },
      'redis keyspace notifications cannot be enabled (CONFIG SET refused); falling back to polling every watched stream',
    );
    wakeup?.close();
    wakeup = null;
    wake?.();
  }

  if (mode === 'notify') {
    wakeup = createKeyspaceWakeup({
      nodeId: options.nodeId,
      db: clustered ? 0 : ((cmd as Redis).options.db ?? 0),
      ...(clustered ? { cluster: cmd as Cluster } : { url: options.redis.url! }),
      slotOf: calculateSlot,
      retryStrategy,
      onChange: (key) => markDirty(watchesByKey.get(key)),
      onSubscribed: (keys) => {
        for (const key of keys) markDirty(watchesByKey.get(key));
      },
      onRefused: fallBackToPolling,
      onError: logError,
    });
  }

  // At startup, not at the first watch: an operator sees at once which wake-up this instance uses.
  if (wakeup) {
    cmd.once('ready', () => {
      const masters = clustered ? (cmd as Cluster).nodes('master') : [cmd as Redis];
      void Promise.all(
        masters.map(async (node) => {
          const refusal = await ensureNotifyFlags(node);
          if (refusal !== null) fallBackToPolling(`${node.options.host}:${node.options.port}`, refusal);
        }),
      ).then(
        () => mode === 'notify' && log.info({ masters: masters.length }, 'redis wake-up: keyspace notifications (notify-keyspace-events has K and t)'),
        (err: unknown) => logError('redis keyspace notification check failed; the subscriber checks again when it connects', err),
      );
    });
  }

  /**
   * Reads every stream marked dirty once, from its last delivered id: non-blocking XREAD, many keys
   * per command standalone, one command per slot in a Cluster. A stream that returned a full
   * page is marked again, so a burst is read in pages without starving the others.
   */
  async function readDirty(batch: Watch[], client: Redis | Cluster = reader): Promise<number> {
    const groups: Watch[][] = [];
    if (clustered) {
      const bySlot = new Map<number, Watch[]>();
      for (const w of batch) {
        const slot = calculateSlot(w.key);
        const group = bySlot.get(slot);
        if (group) group.push(w);
        else bySlot.set(slot, [w]);
      }
      groups.push(...bySlot.values());
    } else {
      for (let i = 0; i < batch.length; i += 1000) groups.push(batch.slice(i, i + 1000));
    }
    let read = 0;
    await Promise.all(
      groups.map(async (group) => {
        const reply = (await client.xread('COUNT', readCount, 'STREAMS', ...group.map((w) => w.key), ...group.map((w) => w.lastId))) as XReadReply;
        read += deliverReply(reply, new Map(group.map((w) => [w.key, w])));
        if (reply) for (const [key, entries] of reply) if (entries.length >= readCount) markDirty(watchesByKey.get(key));
      }),
    );
    return read;
  }

  async function readChanged(): Promise<void> {
    if (dirty.size === 0) {
      lastReadAt = Date.now();
      await sleep(60000);
      return;
    }
    const batch = [...dirty];
    dirty.clear();
    readStartedAt = Date.now();
    try {
      await readDirty(batch);
      readerHealthy = true;
    } catch (err) {
      // Read them again after the back-off: from the same last ids, so nothing is lost or repeated.
      for (const w of batch) markDirty(w);
      throw err;
    } finally {
      readStartedAt = 0;
    }
  }

  /** Returns the watched keys among `keys` whose stream has entries after `ids` (or that this node no longer holds). */
  const CHANGED_STREAMS_SCRIPT = `#!lua flags=no-writes,allow-cross-slot-keys
local changed = {}
for i = 1, #ARGV, 2 do
  local r = redis.pcall('XREAD', 'COUNT', '1', 'STREAMS', ARGV[i], ARGV[i + 1])
  if r then changed[#changed + 1] = ARGV[i] end
end
return changed`;

  /** The connection that runs commands on one master (Cluster: the pool's own connection to it). */
  function adminFor(address: string): Redis | undefined {
    if (!clustered) return cmd as Redis;
    return (cmd as Cluster).nodes('master').find((n) => `${n.options.host}:${n.options.port}` === address);
  }

  /**
   * The safety net under the notifications: every resyncMs, per master, re-check the flags (an
   * operator may have reset them), PING the subscribers, and find with one script per 2,000 keys
   * the watched streams that got entries we have not read. Cost: flat in the watched projects.
   */
  let resyncing = false;
  async function resync(): Promise<void> {
    if (resyncing || !wakeup || !running) return;
    resyncing = true;
    try {
      await wakeup.ping(healthTimeoutMs);
      for (const [address, keys] of wakeup.homes()) {
        const admin = adminFor(address);
        if (!admin || admin.status !== 'ready') {
          // Owner unknown or unreachable: read through the routing client, which follows MOVED.
          for (const key of keys) markDirty(watchesByKey.get(key));
          continue;
        }
        const refusal = await ensureNotifyFlags(admin);
        if (refusal !== null) return fallBackToPolling(address, refusal);
        for (let i = 0; i < keys.length; i += 2000) {
          const args: string[] = [];
          for (const key of keys.slice(i, i + 2000)) {
            const w = watchesByKey.get(key);
            if (w) args.push(key, w.lastId);
          }
          if (args.length === 0) continue;
          let changed: string[];
          try {
            changed = (await admin.eval(CHANGED_STREAMS_SCRIPT, 0, ...args)) as string[];
          } catch (err) {
            if (!(err instanceof ReplyError)) throw err;
            // Redis refused the script (before 7.0 there are no script flags, or scripting is
            // disabled): read these streams the plain way, one XREAD per slot.
            logError('redis resync script refused; re-reading the watched streams with XREAD', err);
            changed = args.filter((_, j) => j % 2 === 0);
          }
          for (const key of changed) markDirty(watchesByKey.get(key));
        }
      }
    } catch (err) {
      logError('redis resync failed; retrying at the next one', err);
    } finally {
      resyncing = false;
    }
  }
  const resyncTimer = setInterval(() => {
    if (watches.size) void resync();
  }, resyncMs);
  resyncTimer.unref();
  // Keyspace notifications live on the node holding the key: follow the slot table, which nobody
  // else refreshes for us (a producer's MOVED is seen by the producer, not by this instance).
  // ioredis' own refresh opens a fresh connection each time: ask CLUSTER SLOTS on a pooled
  // connection instead, and refresh only when the answer changed.
  let slotTable = '';
  let checkingSlots = false;
  const topologyTimer = setInterval(() => {
    if (!clustered || !wakeup || !watches.size || cmd.status !== 'ready' || checkingSlots) return;
    checkingSlots = true;
    (cmd as Cluster).cluster('SLOTS').then(
      (slots) => {
        checkingSlots = false;
        const table = JSON.stringify(slots);
        if (table !== slotTable) (cmd as Cluster).refreshSlotsCache();
        slotTable = table;
      },
      () => (checkingSlots = false),
    );
  }, topologyRefreshMs);
  topologyTimer.unref();
  // The reader meets MOVED first when a slot moves: let the subscriptions follow at once.
  if (clustered) reader.on('refresh', () => wakeup && (cmd as Cluster).refreshSlotsCache());

  void readLoop();

  /**
   * The reader watchdog (AnyCable #275: a reader that silently stops). Polling: a read round must
   * complete every block plus slack. Notifications: a read pass must not hang, and every
   * subscriber connection that has keys must be connected and subscribed.
   */
  function readerAlive(): boolean {
    if (mode === 'poll') return watches.size === 0 || Date.now() - lastReadAt < readStallMs;
    if (readStartedAt !== 0 && Date.now() - readStartedAt > readStallMs) return false;
    return !wakeup || wakeup.healthy(healthTimeoutMs);
  }

  return {
    kind: 'redis',
    appendsInline: false,
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
      watchesByKey.set(key, w);
      try {
        const last = (await cmd.xrevrange(key, '+', '-', 'COUNT', 1)) as StreamEntry[];
        if (last.length) w.lastId = last[0]![0];
      } catch (err) {
        if (watches.get(guid) === w) {
          watches.delete(guid);
          watchesByKey.delete(key);
        }
        throw unavailable(err);
      }
      // Only now that lastId is the head: the read that follows the subscription starts there.
      if (watches.get(guid) === w) {
        if (wakeup) wakeup.add(key);
        else kick();
      }
      return w.lastId;
    },
    unwatch(guid) {
      const w = watches.get(guid);
      if (!w) return;
      watches.delete(guid);
      watchesByKey.delete(w.key);
      dirty.delete(w);
      wakeup?.remove(w.key);
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
    async catchUp(timeoutMs) {
      // Reads every watched stream to its end now, on the command connection (the reader may be
      // blocked in a 2 s XREAD): what was appended before a shutdown began reaches the sockets before
      // they are closed, on every instance and worker thread, not only on the one that appended it.
      const deadline = Date.now() + timeoutMs;
      while (running && watches.size > 0 && cmd.status === 'ready' && Date.now() < deadline) {
        if ((await readDirty([...watches.values()], cmd)) === 0) return;
      }
    },
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
    isReady: () => running && cmd.status === 'ready' && answering() && reader.status === 'ready' && readerHealthy && readerAlive(),
    async close() {
      running = false;
      clearInterval(healthTimer);
      clearInterval(resyncTimer);
      clearInterval(topologyTimer);
      wakeup?.close();
      wake?.();
      watches.clear();
      watchesByKey.clear();
      reader.disconnect();
      await closeRedisClient(cmd);
    },
  };
}
