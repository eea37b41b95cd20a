import type { Cluster, Redis } from 'ioredis';
import type { Config } from '../config.js';
import type { BusErrorKind } from '../metrics.js';
import { redisRetryStrategy, type RedisClient } from '../redis/client.js';
import { slotOf } from '../redis/slots.js';
import type { Watch, WatchSet } from './redis-watches.js';
import { createKeyspaceWakeup, type KeyspaceWakeup } from './wakeup.js';

/**
 * Notify mode (the default; docs/redis-wakeup.md): a keyspace notification marks a watched stream
 * dirty, and a read pass reads only the dirty streams. Every (re)subscribe of a key marks it too, as
 * does the resync (redis-resync.ts), so a lost notification delays an event, never loses it.
 */
export interface NotifyReads {
  /** The wake-up, while notifications drive the reads (null in poll mode, and after stop()). */
  wakeup(): KeyspaceWakeup | null;
  /** Read this stream at the next pass. */
  markDirty(w: Watch | undefined): void;
  hasDirty(): boolean;
  /** The project is watched from its head on: subscribe its key (which marks it once subscribed). */
  add(w: Watch): void;
  remove(w: Watch): void;
  /** Reads every dirty stream once; on failure they stay dirty (read again from the same ids). */
  readDirty(): Promise<void>;
  /** Reads `batch` once on `client`; full pages are marked dirty again. Returns how many entries were handed on. */
  readEach(batch: Watch[], client: RedisClient): Promise<number>;
  /** False while a read pass hangs, or a subscriber connection that has keys has been down for over `graceMs`. */
  alive(readStallMs: number, graceMs: number): boolean;
  /** Notifications are off (the reader polls from now on): the subscribers are closed. */
  stop(): void;
}

export function createNotifyReads(options: {
  redis: NonNullable<Config['redis']>;
  nodeId: string;
  /** Its database (standalone) or slot table (Cluster) says where each key's notifications come from. */
  cmd: RedisClient;
  /** The reader's own connection. */
  reader: RedisClient;
  watches: WatchSet;
  /** False: start without notifications (REDIS_WAKEUP=poll); dirty streams are still read by catch-up. */
  subscribe: boolean;
  /** Wakes the reader from its sleep. */
  wake(): void;
  /** A node refused to enable the notifications. */
  onRefused(node: string, reason: string): void;
  reportError(kind: BusErrorKind, message: string, err: unknown): void;
}): NotifyReads {
  const { cmd, watches } = options;
  const clustered = !!options.redis.clusterNodes;
  const dirty = new Set<Watch>();
  /** When the current read pass started (0: none in flight); the watchdog's clock. */
  let readStartedAt = 0;

  function markDirty(w: Watch | undefined): void {
    if (!w || !watches.current(w)) return;
    dirty.add(w);
    options.wake();
  }

  async function readEach(batch: Watch[], client: RedisClient): Promise<number> {
    const pass = await watches.readEach(batch, client);
    // A full page: more may be waiting, read in pages without starving the other streams.
    for (const key of pass.full) markDirty(watches.byKey(key));
    return pass.read;
  }

  let wakeup: KeyspaceWakeup | null = !options.subscribe
    ? null
    : createKeyspaceWakeup({
        nodeId: options.nodeId,
        db: clustered ? 0 : ((cmd as Redis).options.db ?? 0),
        ...(clustered ? { cluster: cmd as Cluster } : { url: options.redis.url! }),
        slotOf,
        retryStrategy: redisRetryStrategy,
        onChange: (key) => markDirty(watches.byKey(key)),
        onSubscribed: (keys) => {
          for (const key of keys) markDirty(watches.byKey(key));
        },
        onRefused: options.onRefused,
        // The subscriber connection's errors (one per failed connect or reconnect attempt).
        onError: (message, err) => options.reportError('connection', message, err),
      });

  return {
    wakeup: () => wakeup,
    markDirty,
    hasDirty: () => dirty.size > 0,
    add: (w) => wakeup?.add(w.key),
    remove(w) {
      dirty.delete(w);
      wakeup?.remove(w.key);
    },
    async readDirty() {
      const batch = [...dirty];
      dirty.clear();
      readStartedAt = Date.now();
      try {
        await readEach(batch, options.reader);
      } catch (err) {
        // Read them again after the back-off: from the same last ids, so nothing is lost or repeated.
        for (const w of batch) markDirty(w);
        throw err;
      } finally {
        readStartedAt = 0;
      }
    },
    readEach,
    alive(readStallMs, graceMs) {
      if (readStartedAt !== 0 && Date.now() - readStartedAt > readStallMs) return false;
      return !wakeup || wakeup.healthy(graceMs);
    },
    stop() {
      wakeup?.close();
      wakeup = null;
    },
  };
}
