import { Cluster, Redis, ReplyError } from 'ioredis';
import { keyspaceChannel, keyspaceChannelPrefix } from '../redis/keys.js';

/**
 * Wake-up on change: keyspace notifications for the watched streams (see docs/redis-wakeup.md).
 *
 * Redis publishes `xadd` on `__keyspace@<db>__:<key>` when `notify-keyspace-events` contains `K`
 * (keyspace channels) and `t` (stream commands). A plain `XADD` from any producer triggers it, so
 * the producer contract stays one command. In a Cluster the notification is published only on
 * the node that holds the key, so each watched key is subscribed on the master that owns its slot,
 * one subscriber connection per master, and re-homed when the slot table changes.
 *
 * Notifications are fire-and-forget: whenever a key is (re)subscribed, `onSubscribed` tells the
 * reader to read it once, so an event appended while nobody listened is delayed, never lost.
 */
export interface KeyspaceWakeupOptions {
  nodeId: string;
  db: number;
  /** Standalone: the Redis URL (the subscriber connection is opened to it). */
  url?: string;
  /** Cluster: the client whose slot table says which master owns a key ('refresh' events re-home keys). */
  cluster?: Cluster;
  slotOf: (key: string) => number;
  retryStrategy: (times: number) => number;
  /** A notification said the stream under this key got new entries. */
  onChange(key: string): void;
  /** These keys are subscribed (again) from now on: read each once, whatever happened before. */
  onSubscribed(keys: readonly string[]): void;
  /** A node refused to enable the notifications (CONFIG SET forbidden): the caller must poll instead. */
  onRefused(node: string, reason: string): void;
  onError(msg: string, err: unknown): void;
}

export interface KeyspaceWakeup {
  add(key: string): void;
  remove(key: string): void;
  /** Watched keys per master (address `host:port`, or 'standalone'), for the periodic safety re-read. */
  homes(): Map<string, string[]>;
  /**
   * False when a subscriber connection that has keys has been down (or unsubscribed) for longer
   * than `graceMs`: a reconnect or a re-home after resharding takes milliseconds, and every
   * instance does it at the same moment, so readiness must not flap for it.
   */
  healthy(graceMs: number): boolean;
  /** Checks on every subscriber that Redis still answers (PING is allowed in subscriber mode). */
  ping(timeoutMs: number): Promise<void>;
  close(): void;
}

/** K: `__keyspace@<db>__:<key>` channels; t: stream commands (XADD). */
const REQUIRED_FLAGS = ['K', 't'] as const;

/**
 * The `notify-keyspace-events` value with the flags this gateway needs added, or null when it has
 * them already. Only adds: the operator's flags stay (`A` is the alias that includes `t`).
 */
export function withRequiredFlags(current: string): string | null {
  const missing = REQUIRED_FLAGS.filter((f) => !current.includes(f) && !(f === 't' && current.includes('A')));
  return missing.length ? current + missing.join('') : null;
}

/**
 * Whether Redis answered with a refusal (ACL NOPERM, renamed or disabled CONFIG, a managed
 * service's own error), as opposed to a connection problem or a transient state worth retrying.
 */
function isRefusal(err: unknown): boolean {
  return err instanceof ReplyError && !/^(LOADING|BUSY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|MOVED|ASK)\b/.test((err as Error).message);
}

/**
 * Makes sure the node publishes the notifications; resolves with why not if Redis refuses.
 * Connection problems reject (the caller retries on reconnect).
 */
export async function ensureNotifyFlags(conn: Redis): Promise<string | null> {
  try {
    const reply = (await conn.config('GET', 'notify-keyspace-events')) as string[];
    const next = withRequiredFlags(reply[1] ?? '');
    if (next !== null) await conn.config('SET', 'notify-keyspace-events', next);
    return null;
  } catch (err) {
    if (isRefusal(err)) return (err as Error).message;
    throw err;
  }
}

/** One subscriber connection to one node, and the watched keys that node holds. */
interface NodeLink {
  readonly address: string;
  readonly sub: Redis;
  /** Watched keys this node holds: what should be subscribed. */
  readonly keys: Set<string>;
  /** What Redis confirmed as subscribed on the current connection. */
  readonly subscribed: Set<string>;
  flagsChecked: boolean;
  syncing: boolean;
  again: boolean;
  /** Since when the node's subscriptions are not in place (0: in place). */
  downSince: number;
  /** Brings the node's subscriptions in line with its keys (see openNodeLink). */
  reconcile(): Promise<void>;
}

/** Channels per SUBSCRIBE: one command per thousand keys keeps each under ~100 KB. */
const CHUNK = 1000;

/**
 * Opens the subscriber connection to one node. Its `reconcile` brings the node's subscriptions in
 * line with its keys, one run at a time; `onIdle` is told when the node has no keys left.
 */
function openNodeLink(address: string, options: KeyspaceWakeupOptions, closed: () => boolean, onIdle: () => void): NodeLink {
  const channelPrefix = keyspaceChannelPrefix(options.db);
  const common = {
    connectionName: `${options.nodeId}:wake`,
    retryStrategy: options.retryStrategy,
    // Resubscribing is ours to do: after checking the flags, and followed by a re-read.
    autoResubscribe: false,
    maxRetriesPerRequest: null,
  };
  let sub: Redis;
  if (options.url) sub = new Redis(options.url, common);
  else {
    const i = address.lastIndexOf(':');
    sub = new Redis({ ...common, host: address.slice(0, i), port: Number(address.slice(i + 1)) });
  }
  const link: NodeLink = { address, sub, keys: new Set(), subscribed: new Set(), flagsChecked: false, syncing: false, again: false, downSince: Date.now(), reconcile: () => reconcile() };
  sub.on('error', (err) => options.onError(`redis keyspace subscriber error (${address})`, err));
  sub.on('close', () => {
    // A new connection has no subscriptions, and a restarted Redis has lost runtime CONFIG SETs.
    link.subscribed.clear();
    link.flagsChecked = false;
    if (!link.downSince) link.downSince = Date.now();
  });
  sub.on('ready', () => void reconcile());
  sub.on('message', (channel: string, message: string) => {
    if (message === 'xadd' && channel.startsWith(channelPrefix)) options.onChange(channel.slice(channelPrefix.length));
  });

  /** Brings the node's subscriptions in line with its keys; one run at a time per node. */
  async function reconcile(): Promise<void> {
    if (link.syncing) {
      link.again = true;
      return;
    }
    link.syncing = true;
    try {
      do {
        link.again = false;
        if (closed() || link.sub.status !== 'ready') return;
        if (!link.flagsChecked) {
          // Before any SUBSCRIBE: a connection in subscriber mode cannot run CONFIG.
          const refusal = await ensureNotifyFlags(link.sub);
          if (refusal !== null) {
            options.onRefused(link.address, refusal);
            return;
          }
          link.flagsChecked = true;
        }
        const toAdd = [...link.keys].filter((k) => !link.subscribed.has(k));
        for (let i = 0; i < toAdd.length; i += CHUNK) {
          const chunk = toAdd.slice(i, i + CHUNK);
          await link.sub.subscribe(...chunk.map((k) => keyspaceChannel(options.db, k)));
          for (const k of chunk) link.subscribed.add(k);
          // Subscribed from here on; whatever was appended before is found by reading once now.
          options.onSubscribed(chunk.filter((k) => link.keys.has(k)));
        }
        const toRemove = [...link.subscribed].filter((k) => !link.keys.has(k));
        for (let i = 0; i < toRemove.length; i += CHUNK) {
          const chunk = toRemove.slice(i, i + CHUNK);
          await link.sub.unsubscribe(...chunk.map((k) => keyspaceChannel(options.db, k)));
          for (const k of chunk) link.subscribed.delete(k);
        }
        link.downSince = 0;
      } while (link.again);
    } catch (err) {
      // The connection dropped mid-way ('ready' runs this again on the new connection), or Redis
      // answered with a transient error (LOADING, BUSY…): try again shortly.
      if (!closed()) {
        options.onError('redis keyspace subscribe failed; retrying', err);
        setTimeout(() => void reconcile(), 1000).unref();
      }
    } finally {
      link.syncing = false;
    }
    if (link.keys.size === 0 && link.subscribed.size === 0) onIdle();
  }
  return link;
}

export function createKeyspaceWakeup(options: KeyspaceWakeupOptions): KeyspaceWakeup {
  const links = new Map<string, NodeLink>();
  /** Which link holds each watched key; keys whose owner is not known yet wait in `homeless`. */
  const home = new Map<string, NodeLink>();
  const homeless = new Set<string>();
  let closed = false;

  function openLink(address: string): NodeLink {
    const link = openNodeLink(address, options, () => closed, () => {
      // A Cluster master that no longer holds watched keys: its connection goes.
      if (!options.cluster) return;
      links.delete(link.address);
      link.sub.disconnect();
    });
    links.set(address, link);
    return link;
  }

  const reconcile = (link: NodeLink) => link.reconcile();

  function ownerOf(key: string): string | undefined {
    if (!options.cluster) return 'standalone';
    return options.cluster.slots[options.slotOf(key)]?.[0];
  }

  function place(key: string): NodeLink | null {
    const address = ownerOf(key);
    if (!address) return null;
    const link = links.get(address) ?? openLink(address);
    link.keys.add(key);
    home.set(key, link);
    return link;
  }

  /** After the slot table changed: moves keys to the master that owns them now. */
  function rehome(): void {
    if (closed) return;
    const touched = new Set<NodeLink>();
    for (const [key, link] of home) {
      const address = ownerOf(key);
      if (address === undefined || address === link.address) continue;
      link.keys.delete(key);
      touched.add(link);
      const next = place(key);
      if (next) touched.add(next);
    }
    for (const key of [...homeless]) {
      const link = place(key);
      if (link) {
        homeless.delete(key);
        touched.add(link);
      }
    }
    for (const link of touched) void reconcile(link);
  }
  options.cluster?.on('refresh', rehome);

  return {
    add(key) {
      if (closed || home.has(key)) return;
      const link = place(key);
      if (link) void reconcile(link);
      else homeless.add(key);
    },
    remove(key) {
      homeless.delete(key);
      const link = home.get(key);
      if (!link) return;
      home.delete(key);
      link.keys.delete(key);
      void reconcile(link);
    },
    homes() {
      const out = new Map<string, string[]>();
      for (const link of links.values()) if (link.keys.size) out.set(link.address, [...link.keys]);
      if (homeless.size) out.set('unknown', [...homeless]);
      return out;
    },
    healthy(graceMs) {
      const now = Date.now();
      for (const link of links.values()) {
        if (link.keys.size > 0 && link.downSince && now - link.downSince > graceMs) return false;
      }
      return true;
    },
    async ping(timeoutMs) {
      await Promise.all(
        [...links.values()].map(async (link) => {
          if (link.sub.status !== 'ready') return;
          let timer: NodeJS.Timeout | undefined;
          const answered = await Promise.race([
            link.sub.ping().then(
              () => true,
              () => true,
            ),
            new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
          ]);
          clearTimeout(timer);
          // A node that stopped answering may have dropped notifications: reconnect, which resubscribes and re-reads.
          if (!answered && !closed) {
            options.onError(`redis keyspace subscriber ${link.address} did not answer PING; reconnecting`, new Error('timeout'));
            link.sub.disconnect(true);
          }
        }),
      );
    },
    close() {
      closed = true;
      options.cluster?.off('refresh', rehome);
      for (const link of links.values()) link.sub.disconnect();
      links.clear();
      home.clear();
      homeless.clear();
    },
  };
}
