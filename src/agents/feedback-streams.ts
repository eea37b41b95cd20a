import { feedbackStreamKey, FEEDBACK_GROUP, FIELD_FEEDBACK_BODY, FIELD_FEEDBACK_ID } from '../redis/keys.js';
import type { RedisClient } from '../redis/client.js';
import type { FeedbackRecord } from './outbox.js';

// The feedback streams in Redis and the commands the durable outbox (outbox-redis.ts) runs on them:
// `FEEDBACK_STREAM_SHARDS` streams, one consumer group read by every instance with a link.

// Append unless the stream already holds `max` entries (acked entries are deleted, so its length is
// the number of undelivered ones). KEYS[1] stream; ARGV max, feedback id, body. Returns the entry id or false.
const APPEND_LUA = `
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', '${FIELD_FEEDBACK_ID}', ARGV[2], '${FIELD_FEEDBACK_BODY}', ARGV[3])
`;

/** A stream entry; XAUTOCLAIM on Redis < 7 returns a deleted entry with nil fields. */
export type Entry = [id: string, fields: string[] | null];
export type GroupReply = [key: string, entries: Entry[]][];

/** A field/value reply (RESP2 flat list, or RESP3 map as a flat list or an object) as an object. */
function fieldsOf(row: unknown): Record<string, unknown> {
  if (Array.isArray(row)) {
    const out: Record<string, unknown> = {};
    for (let i = 0; i + 1 < row.length; i += 2) out[String(row[i])] = row[i + 1];
    return out;
  }
  return row && typeof row === 'object' ? (row as Record<string, unknown>) : {};
}

/**
 * XREADGROUP's reply as [key, entries] pairs. Over RESP2 it is a list of pairs; over RESP3 (a map)
 * ioredis flattens it to [key, entries, key, entries, …]. Both are accepted.
 */
function streamsOf(reply: unknown): GroupReply {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  if (Array.isArray(reply[0])) return reply as GroupReply;
  const pairs: GroupReply = [];
  for (let i = 0; i + 1 < reply.length; i += 2) pairs.push([reply[i] as string, reply[i + 1] as Entry[]]);
  return pairs;
}

/** The record an entry holds; null when the gateway did not write it. Anyone can XADD to the stream, so nothing in it is trusted. */
export function recordOf(fields: string[]): FeedbackRecord | null {
  let fid: string | undefined;
  let body: string | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === FIELD_FEEDBACK_ID) fid = fields[i + 1];
    else if (fields[i] === FIELD_FEEDBACK_BODY) body = fields[i + 1];
  }
  if (!fid || !body) return null;
  try {
    const r = JSON.parse(body) as Partial<FeedbackRecord> | null;
    if (!r || typeof r !== 'object' || r.feedbackId !== fid) return null;
    if (typeof r.projectGuid !== 'string' || typeof r.userId !== 'string' || typeof r.content !== 'string' || typeof r.acceptedAt !== 'string' || typeof r.origin !== 'string') return null;
    return r as FeedbackRecord;
  } catch {
    return null;
  }
}

export interface FeedbackStreams {
  readonly keys: readonly string[];
  /** A project's shard: a stable string hash of its GUID, so its feedback stays in order. */
  shardOf(projectGuid: string): string;
  /** Appends the record to its project's shard; null when the shard is at FEEDBACK_STREAM_MAX. */
  append(record: FeedbackRecord): Promise<string | null>;
  /** Creates the consumer group on every shard, once (again after forgetGroups()). */
  ensureGroups(): Promise<void>;
  /** Redis lost the groups (NOGROUP: restarted without persistence): create them again next time. */
  forgetGroups(): void;
  /** Acks and deletes entries: they are gone for good. */
  remove(key: string, ids: string[]): Promise<void>;
  /** XREADGROUP as this consumer, on the reader's connection: `ids` '>' for new entries, or an id to read this consumer's own pending entries after it. */
  readGroup(keys: readonly string[], ids: readonly string[], count: number, blockMs?: number): Promise<GroupReply>;
  /** XAUTOCLAIM: takes over up to 100 entries idle for claimIdleMs (any consumer's) from `cursor` on. */
  claim(key: string, cursor: string): Promise<[next: string, entries: Entry[]]>;
  /** Removes consumers that are gone (nothing pending, silent for long): XINFO stays readable. */
  removeGoneConsumers(): Promise<void>;
  /** Marks this consumer's pending entries as idle for the full claim time, so another instance claims them at once. */
  releaseOwnPending(): Promise<void>;
  /** Entries waiting on all shards (acked ones are deleted), and the oldest one's time (ms; Infinity: none). */
  sample(): Promise<{ pending: number; oldestMs: number }>;
}

export function createFeedbackStreams(options: {
  cmd: RedisClient;
  /** The outbox reader's own connection (blocking reads). */
  reader: RedisClient;
  prefix: string;
  shards: number;
  streamMax: number;
  /** The consumer name. */
  nodeId: string;
  claimIdleMs: number;
}): FeedbackStreams {
  const { cmd, reader, nodeId } = options;
  const keys = Array.from({ length: options.shards }, (_, i) => feedbackStreamKey(options.prefix, i));
  if (!('autocodeFeedbackAppend' in cmd)) cmd.defineCommand('autocodeFeedbackAppend', { numberOfKeys: 1, lua: APPEND_LUA });
  const appendScript = (cmd as unknown as { autocodeFeedbackAppend(key: string, max: number, fid: string, body: string): Promise<string | null> }).autocodeFeedbackAppend.bind(cmd);
  let groupsReady = false;

  function shardOf(projectGuid: string): string {
    let h = 0;
    for (let i = 0; i < projectGuid.length; i++) h = (h * 31 + projectGuid.charCodeAt(i)) | 0;
    return keys[Math.abs(h) % keys.length]!;
  }

  return {
    keys,
    shardOf,
    append: (record) => appendScript(shardOf(record.projectGuid), options.streamMax, record.feedbackId, JSON.stringify(record)),
    async ensureGroups() {
      if (groupsReady) return;
      for (const key of keys) {
        try {
          // From the beginning ('0'), not '$': feedback appended before the group existed must be read too.
          await cmd.call('XGROUP', 'CREATE', key, FEEDBACK_GROUP, '0', 'MKSTREAM');
        } catch (err) {
          if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
        }
      }
      groupsReady = true;
    },
    forgetGroups() {
      groupsReady = false;
    },
    async remove(key, ids) {
      if (!ids.length) return;
      await cmd.multi().call('XACK', key, FEEDBACK_GROUP, ...ids).call('XDEL', key, ...ids).exec();
    },
    async readGroup(streams, ids, count, blockMs) {
      const block = blockMs === undefined ? [] : ['BLOCK', blockMs];
      return streamsOf(await reader.call('XREADGROUP', 'GROUP', FEEDBACK_GROUP, nodeId, 'COUNT', count, ...block, 'STREAMS', ...streams, ...ids));
    },
    async claim(key, cursor) {
      return (await cmd.call('XAUTOCLAIM', key, FEEDBACK_GROUP, nodeId, options.claimIdleMs, cursor, 'COUNT', 100)) as [string, Entry[]];
    },
    // Consumers are never removed by Redis. One with nothing pending and silent for a long time is an
    // instance that is gone (a live one touches the group every second). A consumer with pending
    // entries is never removed (that would make them unclaimable).
    async removeGoneConsumers() {
      const goneAfterMs = Math.max(10 * options.claimIdleMs, 600_000);
      for (const key of keys) {
        const rows = (await cmd.call('XINFO', 'CONSUMERS', key, FEEDBACK_GROUP)) as unknown[];
        for (const row of rows) {
          const info = fieldsOf(row);
          const name = typeof info.name === 'string' ? info.name : null;
          if (name && name !== nodeId && Number(info.pending) === 0 && Number(info.idle) > goneAfterMs) {
            await cmd.call('XGROUP', 'DELCONSUMER', key, FEEDBACK_GROUP, name);
          }
        }
      }
    },
    // On a graceful shutdown (XCLAIM … IDLE): the next claim round of any other instance takes them
    // over at once instead of after FEEDBACK_CLAIM_IDLE_MS. They stay pending (nothing is lost if
    // nobody is there to take them).
    async releaseOwnPending() {
      if (cmd.status !== 'ready') return;
      for (const key of keys) {
        const rows = (await cmd.call('XPENDING', key, FEEDBACK_GROUP, '-', '+', 10000, nodeId)) as [string, ...unknown[]][];
        const ids = rows.map((r) => r[0]);
        for (let i = 0; i < ids.length; i += 500) {
          await cmd.call('XCLAIM', key, FEEDBACK_GROUP, nodeId, 0, ...ids.slice(i, i + 500), 'IDLE', options.claimIdleMs, 'JUSTID');
        }
      }
    },
    async sample() {
      const rows = await Promise.all(keys.map(async (key) => [await cmd.call('XLEN', key), await cmd.call('XRANGE', key, '-', '+', 'COUNT', 1)] as [number, Entry[]]));
      let pending = 0;
      let oldestMs = Infinity;
      for (const [len, first] of rows) {
        pending += len;
        const id = first[0]?.[0];
        if (id) oldestMs = Math.min(oldestMs, Number(id.slice(0, id.indexOf('-'))));
      }
      return { pending, oldestMs };
    },
  };
}
