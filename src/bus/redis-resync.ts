import { ReplyError, type Cluster, type Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { BusErrorKind } from '../metrics.js';
import type { RedisClient } from '../redis/client.js';
import { ensureNotifyFlags, type KeyspaceWakeup } from './wakeup.js';
import { readWriteMarker } from './redis-write-marker.js';

/**
 * The safety net under the keyspace notifications (docs/redis-wakeup.md): the flags checked on every
 * master at startup, a slow resync that finds the watched streams that got entries nobody said (only
 * on the masters whose write marker moved since their last sweep: redis-write-marker.ts), and,
 * in a Cluster, following the slot table so that each watched key stays subscribed on the master
 * that holds it.
 */
export interface ResyncOptions {
  /** The command connection: runs the resync script on each master (Cluster: the pool's connection to it). */
  cmd: RedisClient;
  /** The reader's connection: in a Cluster it meets MOVED first when a slot moves. */
  reader: RedisClient;
  clustered: boolean;
  /** The wake-up in use; null once the reader fell back to polling (then nothing here runs). */
  wakeup(): KeyspaceWakeup | null;
  /** Whether any stream is watched (nothing to check otherwise). */
  watching(): boolean;
  /** The last delivered id of a watched key, or undefined when the key is not watched (any more). */
  lastIdOf(key: string): string | undefined;
  /** Read this watched key's stream once. */
  markDirty(key: string): void;
  /** A master refused the notification flags: the reader must poll instead. */
  fallBackToPolling(node: string, reason: string): void;
  log: Logger;
  reportError(kind: BusErrorKind, message: string, err: unknown): void;
  /** How long a subscriber has to answer the PING of each resync. */
  healthTimeoutMs: number;
  /**
   * How often each master is checked: its write marker (one INFO), and, when the marker moved since
   * the last sweep, every watched stream on it (one script per 2,000 keys).
   */
  resyncMs: number;
  /** Cluster: how often the slot table is checked for resharding. */
  topologyRefreshMs: number;
}

/** Returns the watched keys among `keys` whose stream has entries after `ids` (or that this node no longer holds). */
const CHANGED_STREAMS_SCRIPT = `#!lua flags=no-writes,allow-cross-slot-keys
local changed = {}
for i = 1, #ARGV, 2 do
  local r = redis.pcall('XREAD', 'COUNT', '1', 'STREAMS', ARGV[i], ARGV[i + 1])
  if r then changed[#changed + 1] = ARGV[i] end
end
return changed`;

/** Keys per resync script: one command stays small. */
const KEYS_PER_SCRIPT = 2000;

/**
 * With notifications: checks the flags on every master once connected, then starts the resync and
 * (Cluster) slot-table timers; close() stops them.
 */
export function startResync(options: ResyncOptions): { close(): void } {
  const { cmd, clustered } = options;
  let running = true;

  // At startup, not at the first watch: an operator sees at once which wake-up this instance uses.
  if (options.wakeup()) {
    cmd.once('ready', () => {
      const masters = clustered ? (cmd as Cluster).nodes('master') : [cmd as Redis];
      void Promise.all(
        masters.map(async (node) => {
          const refusal = await ensureNotifyFlags(node);
          if (refusal !== null) options.fallBackToPolling(`${node.options.host}:${node.options.port}`, refusal);
        }),
      ).then(
        () => options.wakeup() && options.log.info({ masters: masters.length }, 'redis wake-up: keyspace notifications (notify-keyspace-events has K and t)'),
        (err: unknown) => options.reportError('resync', 'redis keyspace notification check failed; the subscriber checks again when it connects', err),
      );
    });
  }

  /** The connection that runs commands on one master (Cluster: the pool's own connection to it). */
  function adminFor(address: string): Redis | undefined {
    if (!clustered) return cmd as Redis;
    return (cmd as Cluster).nodes('master').find((n) => `${n.options.host}:${n.options.port}` === address);
  }

  /** Marks the keys among `keys` whose stream has entries not delivered yet: one script per KEYS_PER_SCRIPT keys. */
  async function markChanged(admin: Redis, keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += KEYS_PER_SCRIPT) {
      const args: string[] = [];
      for (const key of keys.slice(i, i + KEYS_PER_SCRIPT)) {
        const lastId = options.lastIdOf(key);
        if (lastId !== undefined) args.push(key, lastId);
      }
      if (args.length === 0) continue;
      let changed: string[];
      try {
        changed = (await admin.eval(CHANGED_STREAMS_SCRIPT, 0, ...args)) as string[];
      } catch (err) {
        if (!(err instanceof ReplyError)) throw err;
        // Redis refused the script (before 7.0 there are no script flags, or scripting is
        // disabled): read these streams the plain way, one XREAD per slot. Logged, not counted in
        // bus_errors_total: on such a Redis it happens at every resync and nothing is lost.
        options.log.warn({ err: (err as Error).message }, 'redis resync script refused; re-reading the watched streams with XREAD');
        changed = args.filter((_, j) => j % 2 === 0);
      }
      for (const key of changed) options.markDirty(key);
    }
  }

  /** Per master: its write marker read just before its last complete sweep. */
  const sweptAt = new Map<string, string>();

  /**
   * Sweeps the master's watched streams unless no stream on it can have got an entry since the
   * last sweep: the marker is read before the sweep, so an entry appended during the sweep is
   * either found by it or moves the marker for the next resync.
   */
  async function sweepIfWritten(address: string, admin: Redis, keys: string[]): Promise<void> {
    const marker = await readWriteMarker(admin);
    if (marker !== null && sweptAt.get(address) === marker) return;
    await markChanged(admin, keys);
    if (marker !== null) sweptAt.set(address, marker);
  }

  /**
   * Every resyncMs, per master: re-check the flags (an operator may have reset them), PING the
   * subscribers, and find the watched streams that got entries we have not read, on the masters
   * where anything was written. Idle cost: a few commands per master, flat in the watched projects.
   */
  let resyncing = false;
  async function resync(): Promise<void> {
    const wakeup = options.wakeup();
    if (resyncing || !wakeup || !running) return;
    resyncing = true;
    try {
      await wakeup.ping(options.healthTimeoutMs);
      for (const [address, keys] of wakeup.homes()) {
        const admin = adminFor(address);
        if (!admin || admin.status !== 'ready') {
          // Owner unknown or unreachable: read through the routing client, which follows MOVED.
          for (const key of keys) options.markDirty(key);
          continue;
        }
        const refusal = await ensureNotifyFlags(admin);
        if (refusal !== null) return options.fallBackToPolling(address, refusal);
        await sweepIfWritten(address, admin, keys);
      }
    } catch (err) {
      options.reportError('resync', 'redis resync failed; retrying at the next one', err);
    } finally {
      resyncing = false;
    }
  }
  const resyncTimer = setInterval(() => {
    if (options.watching()) void resync();
  }, options.resyncMs);
  resyncTimer.unref();

  // Keyspace notifications live on the node holding the key: follow the slot table, which nobody
  // else refreshes for us (a producer's MOVED is seen by the producer, not by this instance).
  // ioredis' own refresh opens a fresh connection each time: ask CLUSTER SLOTS on a pooled
  // connection instead, and refresh only when the answer changed.
  let slotTable = '';
  let checkingSlots = false;
  const topologyTimer = setInterval(() => {
    if (!clustered || !options.wakeup() || !options.watching() || cmd.status !== 'ready' || checkingSlots) return;
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
  }, options.topologyRefreshMs);
  topologyTimer.unref();
  // The reader meets MOVED first when a slot moves: let the subscriptions follow at once.
  if (clustered) options.reader.on('refresh', () => options.wakeup() && (cmd as Cluster).refreshSlotsCache());

  return {
    close() {
      running = false;
      clearInterval(resyncTimer);
      clearInterval(topologyTimer);
    },
  };
}
