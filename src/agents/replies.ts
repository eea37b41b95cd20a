import type { Logger } from 'pino';
import { throttledWarn } from '../logger.js';
import { userInboxKey, userRepliesChannel } from '../redis/keys.js';
import type { Metrics } from '../metrics.js';
import type { Envelope } from '../protocol/messages.js';
import type { Connection } from '../connections/connection.js';
import { sendTo } from '../connections/send.js';
import type { RedisClient } from '../redis/client.js';
import type { PubSub } from '../redis/pubsub.js';

/** At most this many replies are kept per offline user (the oldest go first). */
export const OFFLINE_REPLIES_PER_USER = 100;
/** Without Redis: offline users with kept replies, at most. */
const MEMORY_INBOX_USERS = 10_000;

export type ReplyOutcome = 'live' | 'stored' | 'dropped';

/**
 * Where targeted replies cross instances when there is no Redis: the worker threads of one process
 * share a hub in the main thread (src/workers/agents-hub.ts), which plays the part of the user
 * channels and inboxes in Redis.
 */
export interface RepliesHub {
  /** This instance holds a connection of the user now (its first one): send it their replies, kept ones first. */
  online(userId: string): void;
  /** This instance's last connection of the user closed. */
  offline(userId: string): void;
  /** Delivers to every instance holding a connection of the user, or keeps the reply (or drops it: AGENT_REPLY_OFFLINE_S=0). */
  send(userId: string, envelope: Envelope): Promise<ReplyOutcome>;
  /** Replies for users this instance said it holds. */
  onDeliver(handler: (userId: string, envelope: Envelope) => void): void;
}

/** Replies kept in memory for users with no connection: at most OFFLINE_REPLIES_PER_USER each, for `offlineWindowS`. */
export interface MemoryInbox {
  keep(userId: string, envelope: Envelope): 'stored' | 'dropped';
  /** The user's kept replies that have not expired, oldest first; they leave the inbox. */
  take(userId: string): Envelope[];
  clear(): void;
}

export function createMemoryInbox(offlineWindowS: number): MemoryInbox {
  const kept = new Map<string, { envelope: Envelope; expiresAt: number }[]>();
  return {
    keep(userId, envelope) {
      if (offlineWindowS <= 0) return 'dropped';
      if (kept.size >= MEMORY_INBOX_USERS && !kept.has(userId)) {
        // Bounded however many user ids an agents-server invents: expired first, then the oldest user.
        const now = Date.now();
        for (const [u, replies] of kept) if (replies.every((r) => r.expiresAt <= now)) kept.delete(u);
        if (kept.size >= MEMORY_INBOX_USERS) kept.delete(kept.keys().next().value as string);
      }
      const replies = kept.get(userId) ?? [];
      replies.push({ envelope, expiresAt: Date.now() + offlineWindowS * 1000 });
      if (replies.length > OFFLINE_REPLIES_PER_USER) replies.shift();
      kept.set(userId, replies);
      return 'stored';
    },
    take(userId) {
      const replies = kept.get(userId);
      kept.delete(userId);
      const now = Date.now();
      return (replies ?? []).filter((r) => r.expiresAt > now).map((r) => r.envelope);
    },
    clear: () => kept.clear(),
  };
}

export interface Replies {
  /** A connection opened: it receives this user's targeted replies from now on (and any kept while they were offline). */
  track(conn: Connection): void;
  untrack(conn: Connection): void;
  /** Delivers to every live connection of `userId` on every instance, or keeps it for AGENT_REPLY_OFFLINE_S. */
  send(userId: string, envelope: Envelope): Promise<ReplyOutcome>;
  close(): void;
}

// Publish to the user's channel; if no instance holds a connection of the user (0 receivers), keep
// the reply in their inbox instead. One script, so a connection that subscribes concurrently either
// receives the publish or finds the reply in the inbox it reads right after subscribing.
// KEYS[1] inbox; ARGV channel, message, window seconds, max kept.
const PUBLISH_OR_KEEP_LUA = `
local receivers = redis.call('PUBLISH', ARGV[1], ARGV[2])
if receivers > 0 then return 'live' end
if tonumber(ARGV[3]) <= 0 then return 'dropped' end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'reply', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 'stored'
`;

interface RelayedReply {
  /** NODE_ID of the instance whose link received the reply. */
  origin: string;
  userId: string;
  envelope: Envelope;
}

/**
 * Targeted delivery: a reply from the agents-server for one user reaches every live connection of
 * that user, whichever instance it is on, and nobody else. With Redis each instance subscribes to a
 * user's channel while it holds a connection of that user, so a reply costs one PUBLISH and reaches
 * only the instances concerned. The worker threads of a process without Redis tell the main
 * thread's hub which users they hold instead. A user with no connection anywhere gets the reply on
 * their next connection, if it comes within `offlineWindowS`.
 */
export function createReplies(options: {
  /** With Redis: commands on `cmd`; each user's channel is registered with `pubsub` while the user has a connection here. */
  redis?: { cmd: RedisClient; pubsub: PubSub; prefix: string };
  /** Without Redis, in a worker thread: the instances of this process meet there. Ignored with Redis. */
  hub?: RepliesHub;
  nodeId: string;
  log: Logger;
  metrics: Metrics;
  offlineWindowS: number;
  /** Whether a reply frame goes out with uWS's `compress` flag (src/connections/compression.ts); default never. */
  compress?: (frame: string | Uint8Array) => boolean;
}): Replies {
  const { log, metrics, redis } = options;
  const hub = redis ? undefined : options.hub;
  const byUser = new Map<string, Set<Connection>>();
  /** Without Redis or a hub (one instance alone): replies kept for offline users. */
  const memoryInbox = createMemoryInbox(options.offlineWindowS);
  hub?.onDeliver((userId, envelope) => void sendToLocalSockets(userId, envelope));
  if (redis && !('autocodePublishOrKeep' in redis.cmd)) redis.cmd.defineCommand('autocodePublishOrKeep', { numberOfKeys: 1, lua: PUBLISH_OR_KEEP_LUA });

  /** Sends to this instance's sockets of the user; returns to how many. */
  function sendToLocalSockets(userId: string, envelope: Envelope): number {
    const conns = byUser.get(userId);
    if (!conns) return 0;
    let sent = 0;
    for (const conn of conns) {
      const frame = conn.codec.encode(envelope);
      if (sendTo(conn, frame, options.compress?.(frame) ?? false)) sent++;
    }
    return sent;
  }

  /** Inbox reads in flight per user: a second read waits for the first (which deletes what it sent), so nothing goes out twice. */
  const inboxReads = new Map<string, Promise<void>>();
  function readInbox(userId: string): Promise<void> {
    const read = (inboxReads.get(userId) ?? Promise.resolve()).catch(() => {}).then(() => takeInbox(userId));
    inboxReads.set(userId, read);
    const done = () => void (inboxReads.get(userId) === read && inboxReads.delete(userId));
    read.then(done, done);
    return read;
  }

  if (redis) {
    // The user channels are back after the subscriber reconnected: a reply published meanwhile found
    // no receiver and was kept in its user's inbox, though the user is connected here. Read them all.
    const warn = throttledWarn(log);
    redis.pubsub.onResubscribed(() => {
      for (const userId of byUser.keys()) {
        readInbox(userId).catch((err: unknown) => warn('agents relay: could not read a user\'s kept replies after Redis came back (read on their next connection)', err, { userId }));
      }
    });
  }

  async function takeInbox(userId: string): Promise<void> {
    if (!redis) {
      for (const envelope of memoryInbox.take(userId)) sendToLocalSockets(userId, envelope);
      return;
    }
    const key = userInboxKey(redis.prefix, userId);
    const entries = (await redis.cmd.call('XRANGE', key, '-', '+')) as [string, string[]][];
    if (!entries.length) return;
    for (const [, fields] of entries) {
      const relayed = parseRelayed(fields[1]);
      if (relayed && relayed.userId === userId) sendToLocalSockets(userId, relayed.envelope);
    }
    await redis.cmd.call('XDEL', key, ...entries.map((e) => e[0]));
  }

  /** A reply published on the channel of `userId` (registered while this instance holds a connection of theirs). */
  function onUserChannel(userId: string, message: string): void {
    const relayed = parseRelayed(message);
    if (!relayed || relayed.userId !== userId) {
      log.warn({ channel: userRepliesChannel(redis!.prefix, userId) }, 'agents relay: malformed reply on a user channel skipped');
      return;
    }
    sendToLocalSockets(userId, relayed.envelope);
  }

  function parseRelayed(message: string | undefined): RelayedReply | null {
    if (!message) return null;
    try {
      const r = JSON.parse(message) as RelayedReply;
      return r && typeof r.userId === 'string' && r.envelope && typeof r.envelope.type === 'string' ? r : null;
    } catch {
      return null;
    }
  }

  return {
    track(conn) {
      const userId = conn.principal.userId;
      let conns = byUser.get(userId);
      if (conns) {
        conns.add(conn);
        return;
      }
      conns = new Set([conn]);
      byUser.set(userId, conns);
      // The hub sends what it kept for the user right after it registers them, in order with later replies.
      if (hub) return hub.online(userId);
      const subscribed = redis ? redis.pubsub.subscribe(userRepliesChannel(redis.prefix, userId), (message) => onUserChannel(userId, message)) : Promise.resolve();
      // Subscribe first, then read the inbox: see PUBLISH_OR_KEEP_LUA for why nothing falls between.
      subscribed
        .then(() => readInbox(userId))
        .catch((err: unknown) => log.warn({ err: (err as Error).message, userId }, 'agents relay: could not subscribe to a user\'s replies (the user\'s replies reach their other connections, or are kept)'));
    },
    untrack(conn) {
      const userId = conn.principal.userId;
      const conns = byUser.get(userId);
      if (!conns?.delete(conn) || conns.size > 0) return;
      byUser.delete(userId);
      hub?.offline(userId);
      redis?.pubsub.unsubscribe(userRepliesChannel(redis.prefix, userId)).catch(() => {});
    },
    async send(userId, envelope) {
      let outcome: ReplyOutcome;
      if (hub) {
        outcome = await hub.send(userId, envelope);
      } else if (!redis) {
        outcome = sendToLocalSockets(userId, envelope) > 0 ? 'live' : memoryInbox.keep(userId, envelope);
      } else {
        const message = JSON.stringify({ origin: options.nodeId, userId, envelope } satisfies RelayedReply);
        const run = (redis.cmd as unknown as { autocodePublishOrKeep(key: string, channel: string, message: string, windowS: number, max: number): Promise<ReplyOutcome> }).autocodePublishOrKeep;
        outcome = await run.call(redis.cmd, userInboxKey(redis.prefix, userId), userRepliesChannel(redis.prefix, userId), message, options.offlineWindowS, OFFLINE_REPLIES_PER_USER);
      }
      metrics.agentReplies.inc({ outcome });
      return outcome;
    },
    close() {
      byUser.clear();
      memoryInbox.clear();
    },
  };
}
