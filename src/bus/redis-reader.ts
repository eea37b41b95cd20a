import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { BusErrorKind } from '../metrics.js';
import { redisRetryStrategy, type RedisClient } from '../redis/client.js';
import type { StreamEntry } from './redis-entries.js';
import { createNotifyReads } from './redis-notify.js';
import { createPollReads } from './redis-poll.js';
import { startResync } from './redis-resync.js';
import { createWatchSet } from './redis-watches.js';

export interface StreamReaderOptions {
  redis: NonNullable<Config['redis']>;
  nodeId: string;
  /** Short commands: a new watch's head, CLIENT UNBLOCK, the catch-up reads, the resync. */
  cmd: RedisClient;
  /** The reader's own connection: blocking reads never delay publishes or history reads. */
  reader: RedisClient;
  log: Logger;
  /** Counts the error by kind and logs it (throttled). */
  reportError(kind: BusErrorKind, message: string, err: unknown): void;
  /** New entries of a watched project, in id order, each once. */
  onEntries(guid: string, entries: StreamEntry[]): void;
  /** As in RedisBusOptions (with their defaults filled in). */
  readCount: number; blockMs: number; clusterPollMs: number; resyncMs: number; topologyRefreshMs: number; healthTimeoutMs: number;
}

export interface StreamReader {
  /** Reads the project's stream from its head on; resolves with that head ('0-0' if none). Rejects (Redis's error) if the head could not be read. */
  watch(guid: string): Promise<string>;
  unwatch(guid: string): void;
  /** Reads every watched stream to its end now, on the command connection (see EventBus.catchUp). */
  catchUp(timeoutMs: number): Promise<void>;
  /** The reader's share of readiness: its last read went through, and it is not stuck (the watchdog). */
  healthy(): boolean;
  close(): void;
}

/**
 * Reads the streams of the watched projects from the last id delivered, in one loop, woken by
 * keyspace notifications (redis-notify.ts) or reading in rounds (redis-poll.ts); falls back from
 * the first to the second when Redis refuses to publish notifications. docs/redis-wakeup.md.
 */
export function createStreamReader(options: StreamReaderOptions): StreamReader {
  const { cmd, reader, log, reportError } = options;
  const clustered = !!options.redis.clusterNodes;
  /** A read that has not finished in this long counts as a stuck reader. */
  const readStallMs = options.blockMs + 10000;
  const watches = createWatchSet({ prefix: options.redis.prefix, clustered, readCount: options.readCount, onEntries: options.onEntries });
  /** 'notify': woken by keyspace notifications; 'poll': read rounds. Starts as notify unless configured otherwise. */
  let mode: 'notify' | 'poll' = options.redis.wakeup === 'poll' ? 'poll' : 'notify';
  /** When a read round last completed: a reader stuck longer than a block plus slack is unhealthy (AnyCable #275). */
  let lastReadAt = Date.now();
  let running = true;
  let readerHealthy = false;
  let wake: (() => void) | null = null;

  reader.on('error', (err) => reportError('connection', 'redis reader connection error', err));
  reader.on('close', () => (readerHealthy = false));
  reader.on('ready', () => (readerHealthy = true));

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => ((wake = null), resolve()), ms);
      wake = () => (clearTimeout(t), (wake = null), resolve());
    });

  function fallBackToPolling(node: string, reason: string): void {
    if (mode === 'poll') return;
    mode = 'poll';
    // The one line an operator needs: why, and what it costs (docs/redis-wakeup.md).
    log.warn(
      { node, reason, cost: clustered ? 'one XREAD per watched slot every 5 ms while idle' : 'one XREAD carrying every watched key per read round' },
      'redis keyspace notifications cannot be enabled (CONFIG SET refused); falling back to polling every watched stream',
    );
    notify.stop();
    wake?.();
  }

  const notify = createNotifyReads({ redis: options.redis, nodeId: options.nodeId, cmd, reader, watches, subscribe: mode === 'notify', wake: () => wake?.(), onRefused: fallBackToPolling, reportError });
  const poll = createPollReads({
    watches,
    reader,
    cmd,
    clustered,
    readCount: options.readCount,
    blockMs: options.blockMs,
    clusterPollMs: options.clusterPollMs,
    sleep,
    running: () => running,
    answered: () => (readerHealthy = true),
  });
  const resync = startResync({
    cmd,
    reader,
    clustered,
    wakeup: notify.wakeup,
    watching: () => watches.size > 0,
    lastIdOf: (key) => watches.byKey(key)?.lastId,
    markDirty: (key) => notify.markDirty(watches.byKey(key)),
    fallBackToPolling,
    log,
    reportError,
    healthTimeoutMs: options.healthTimeoutMs,
    resyncMs: options.resyncMs,
    topologyRefreshMs: options.topologyRefreshMs,
  });

  /** A notify-mode pass that failed, thrown by the next step (so the loop backs off as for a poll round). */
  let passFailure: { err: unknown } | null = null;
  /** Reads that failed in a row: the back-off grows with it. */
  let failures = 0;
  function passEnded(err?: unknown): void {
    if (err === undefined) {
      readerHealthy = true;
      failures = 0;
    } else passFailure ??= { err };
    wake?.();
  }

  /**
   * One step of the loop: a read round (poll), or starting a read pass (notify: passes overlap,
   * see startPass), or a sleep until there is something to read or a pass ended.
   */
  async function step(): Promise<void> {
    if (mode === 'poll') return poll.read();
    if (passFailure) {
      const { err } = passFailure;
      passFailure = null;
      throw err;
    }
    if (notify.canStart()) return notify.startPass(passEnded);
    if (!notify.reading()) lastReadAt = Date.now();
    return sleep(60000);
  }

  async function readLoop(): Promise<void> {
    while (running) {
      if (watches.size === 0 && !notify.hasDirty()) {
        await sleep(60000);
        lastReadAt = Date.now();
        continue;
      }
      try {
        await step();
        lastReadAt = Date.now();
        // Notify mode: a started pass has not succeeded yet (passEnded says when it has).
        if (mode === 'poll') failures = 0;
      } catch (err) {
        if (!running) break;
        readerHealthy = false;
        poll.lost();
        reportError('read', 'stream read failed; retrying from the last delivered ids', err);
        await sleep(redisRetryStrategy(++failures));
      }
    }
  }
  void readLoop();

  return {
    async watch(guid) {
      const w = watches.add(guid);
      try {
        const last = (await cmd.xrevrange(w.key, '+', '-', 'COUNT', 1)) as StreamEntry[];
        if (last.length) w.lastId = last[0]![0];
      } catch (err) {
        watches.forget(w);
        throw err;
      }
      // Only now that lastId is the head: the read that follows the subscription starts there.
      if (watches.current(w)) {
        if (notify.wakeup()) notify.add(w);
        else {
          poll.kick();
          wake?.();
        }
      }
      return w.lastId;
    },
    unwatch(guid) {
      const w = watches.get(guid);
      if (!w) return;
      watches.forget(w);
      notify.remove(w);
    },
    async catchUp(timeoutMs) {
      // On the command connection: the reader may be blocked in a 2 s XREAD.
      const deadline = Date.now() + timeoutMs;
      while (running && watches.size > 0 && cmd.status === 'ready' && Date.now() < deadline) {
        if ((await notify.readEach([...watches.values()], cmd)) === 0) return;
      }
    },
    /**
     * With the watchdog (AnyCable #275: a reader that silently stops). Polling: a read round must
     * complete every block plus slack. Notifications: a read pass must not hang, and every
     * subscriber connection that has keys must be connected and subscribed.
     */
    healthy() {
      if (!readerHealthy) return false;
      if (mode === 'poll') return watches.size === 0 || Date.now() - lastReadAt < readStallMs;
      return notify.alive(readStallMs, options.healthTimeoutMs);
    },
    close() {
      running = false;
      resync.close();
      notify.stop();
      wake?.();
      watches.clear();
    },
  };
}
