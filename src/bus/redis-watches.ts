import { compareIds, ZERO_ID } from '../protocol/event-id.js';
import type { RedisClient } from '../redis/client.js';
import { eventsKey } from '../redis/keys.js';
import { groupBySlot } from '../redis/slots.js';
import type { StreamEntry, XReadReply } from './redis-entries.js';

/** One watched project's stream and the id of the last entry handed on. */
export interface Watch {
  readonly guid: string;
  readonly key: string;
  lastId: string;
}

/** What one pass of non-blocking reads got. */
export interface ReadPass {
  /** Entries Redis returned (some may have been delivered already by an overlapping read). */
  returned: number;
  /** Entries handed on. */
  read: number;
  /** Keys whose read returned a full page: more may be waiting. */
  full: string[];
}

/**
 * The watched streams, and reading them so that each entry is handed on once: two reads of one
 * stream can overlap (the reader's and a shutdown's catch-up), so entries at or before a watch's last
 * delivered id are dropped, and a read for a watch that was replaced or removed delivers nothing.
 */
export interface WatchSet {
  readonly size: number;
  values(): IterableIterator<Watch>;
  get(guid: string): Watch | undefined;
  byKey(key: string): Watch | undefined;
  /** A new watch of the project, from '0-0' until the caller sets its head; it replaces any earlier one. */
  add(guid: string): Watch;
  /** Drops `w` if it is still the project's watch (a newer one stays). */
  forget(w: Watch): void;
  /** True while `w` is its project's watch. */
  current(w: Watch): boolean;
  /** Hands on a read's new entries; returns how many. */
  deliver(reply: XReadReply, byKey: Map<string, Watch>): number;
  /** Reads each of `batch` once from its last id: one XREAD per slot in a Cluster, per 1,000 keys standalone. */
  readEach(batch: Watch[], client: RedisClient): Promise<ReadPass>;
  clear(): void;
}

export function createWatchSet(options: {
  prefix: string;
  clustered: boolean;
  /** Max entries per stream per read. */
  readCount: number;
  /** New entries of a watched project, in id order, each once. */
  onEntries(guid: string, entries: StreamEntry[]): void;
}): WatchSet {
  const { readCount } = options;
  const watches = new Map<string, Watch>();
  const watchesByKey = new Map<string, Watch>();

  function deliver(reply: XReadReply, byKey: Map<string, Watch>): number {
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
      options.onEntries(w.guid, entries);
    }
    return delivered;
  }

  async function readGroup(group: Watch[], client: RedisClient, pass: ReadPass): Promise<void> {
    const reply = (await client.xread('COUNT', readCount, 'STREAMS', ...group.map((w) => w.key), ...group.map((w) => w.lastId))) as XReadReply;
    if (reply) {
      for (const [key, entries] of reply) {
        pass.returned += entries.length;
        if (entries.length >= readCount) pass.full.push(key);
      }
    }
    pass.read += deliver(reply, new Map(group.map((w) => [w.key, w])));
  }

  return {
    get size() {
      return watches.size;
    },
    values: () => watches.values(),
    get: (guid) => watches.get(guid),
    byKey: (key) => watchesByKey.get(key),
    add(guid) {
      const w: Watch = { guid, key: eventsKey(options.prefix, guid), lastId: ZERO_ID };
      watches.set(guid, w);
      watchesByKey.set(w.key, w);
      return w;
    },
    forget(w) {
      if (watches.get(w.guid) !== w) return;
      watches.delete(w.guid);
      watchesByKey.delete(w.key);
    },
    current: (w) => watches.get(w.guid) === w,
    deliver,
    async readEach(batch, client) {
      const groups: Watch[][] = [];
      if (options.clustered) groups.push(...groupBySlot(batch, (w) => w.key));
      else for (let i = 0; i < batch.length; i += 1000) groups.push(batch.slice(i, i + 1000));
      const pass: ReadPass = { returned: 0, read: 0, full: [] };
      await Promise.all(groups.map((group) => readGroup(group, client, pass)));
      return pass;
    },
    clear() {
      watches.clear();
      watchesByKey.clear();
    },
  };
}
