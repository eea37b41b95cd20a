import type { Cluster, Redis } from 'ioredis';
import type { Config } from '../config.js';
import type { BusErrorKind } from '../metrics.js';
import { redisRetryStrategy, type RedisClient } from '../redis/client.js';
import { slotOf } from '../redis/slots.js';
import type { Watch, WatchSet } from './redis-watches.js';
import { createKeyspaceWakeup, type KeyspaceWakeup } from './wakeup.js';

/** Read passes in flight at once on the reader's connection (pipelined; Redis answers them in order). */
const MAX_PASSES = 4;

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
  /** Whether a pass can start now: a dirty stream is not being read, and fewer than MAX_PASSES are in flight. */
  canStart(): boolean;
  /** Whether a pass is in flight. */
  reading(): boolean;
  /**
   * Starts a pass over the dirty streams not being read already, without waiting for it: its XREAD
   * is pipelined behind the ones in flight on the reader's connection, so an event notified while a
   * pass is out waits for Redis to answer it, not for that pass to come back first. `ended` is told
   * when the pass is over (with Redis's error if it failed; its streams are dirty again then).
   */
  startPass(ended: (err?: unknown) => void): void;
  /** The project is watched from its head on: subscribe its key (which marks it once subscribed). */
  add(w: Watch): void;
  remove(w: Watch): void;
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
  /** Streams a pass in flight is reading: each stream is in one pass at a time (its last id moves in order). */
  const inFlight = new Set<Watch>();
  /** When each pass in flight started (the watchdog's clock). */
  const passStarts = new Set<{ readonly at: number }>();

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
    canStart() {
      if (passStarts.size >= MAX_PASSES) return false;
      for (const w of dirty) if (!inFlight.has(w)) return true;
      return false;
    },
    reading: () => passStarts.size > 0,
    startPass(ended) {
      const batch = [...dirty].filter((w) => !inFlight.has(w));
      for (const w of batch) {
        dirty.delete(w);
        inFlight.add(w);
      }
      const startedAt = { at: Date.now() };
      passStarts.add(startedAt);
      readEach(batch, options.reader).then(
        () => finish(),
        // Read them again after the back-off: from the same last ids, so nothing is lost or repeated.
        (err: unknown) => finish(err),
      );
      function finish(err?: unknown): void {
        passStarts.delete(startedAt);
        for (const w of batch) inFlight.delete(w);
        if (err !== undefined) for (const w of batch) if (watches.current(w)) dirty.add(w);
        ended(err);
      }
    },
    readEach,
    alive(readStallMs, graceMs) {
      for (const pass of passStarts) if (Date.now() - pass.at > readStallMs) return false;
      return !wakeup || wakeup.healthy(graceMs);
    },
    stop() {
      wakeup?.close();
      wakeup = null;
    },
  };
}
